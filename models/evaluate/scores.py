"""Segmentation scores for the vessel class inside the field of view.

Every score is computed over all FOV pixels of all images pooled together (one confusion
matrix and one ROC curve for the whole set), not averaged per image: this is the usual
DRIVE convention and keeps small images from weighing as much as large ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SCORE_NAMES: tuple[str, ...] = (
    "f1",
    "auc",
    "accuracy",
    "sensitivity",
    "specificity",
    "stray_rate",
)
# Background farther than this share of the image's width from every reference vessel (3 px
# at 128 px, 13 at 512) is away from the vessels: a call there draws a vessel where there is
# none, where a call beside one only draws it too wide. It is where segmenters trained on
# synthetic pairs err most: on DRIVE at 128 px, 4.0-4.4% against 0.4% for real pairs
# (docs/drive.md, "Stray calls").
STRAY_DISTANCE = 1 / 40
SCORE_DEFINITIONS = {
    "stray_rate": f"share of the FOV's background farther than 1/{round(1 / STRAY_DISTANCE)} "
    "of the image width from every reference vessel that is predicted vessel",
}

ArrayOrList = np.ndarray | Sequence[np.ndarray]


def _pooled(values: ArrayOrList, fov: ArrayOrList) -> np.ndarray:
    """Concatenate the in-FOV pixels of one array or of a list of arrays."""
    if isinstance(values, np.ndarray):
        values, fov = [values], [fov]  # type: ignore[list-item]
    if len(values) != len(fov):
        raise ValueError(f"{len(values)} arrays but {len(fov)} FOV masks")
    parts = []
    for v, f in zip(values, fov, strict=True):
        v = np.asarray(v)
        f = np.asarray(f)
        if v.shape != f.shape:
            raise ValueError(f"array shape {v.shape} differs from FOV shape {f.shape}")
        parts.append(v[f.astype(bool)])
    if not parts:
        return np.zeros(0)
    return np.concatenate(parts)


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """``mask`` grown by ``radius`` pixels in every direction (a square structuring element)."""
    out = np.asarray(mask).astype(bool)
    for axis in (0, 1):
        pad = [(radius, radius) if a == axis else (0, 0) for a in (0, 1)]
        windows = np.lib.stride_tricks.sliding_window_view(
            np.pad(out, pad), 2 * radius + 1, axis=axis
        )
        out = windows.any(axis=-1)
    return out


def _away_from_vessels(truth: np.ndarray) -> np.ndarray:
    """The pixels farther than ``STRAY_DISTANCE`` of the width from every vessel of ``truth``
    (at least 1 px)."""
    radius = max(1, round(np.asarray(truth).shape[1] * STRAY_DISTANCE))
    return ~_dilate(truth, radius)


def _ratio(num: float, den: float) -> float | None:
    # 0/0 is undefined (e.g. sensitivity with no vessel pixel); None keeps it JSON-safe.
    return float(num) / float(den) if den > 0 else None


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Exact ROC AUC by the Mann–Whitney rank statistic; tied scores get their mean rank.

    Equals P(score_pos > score_neg) + 0.5 * P(score_pos == score_neg). None when one class
    is absent.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).astype(bool).ravel()
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    # 1-based mean rank of each distinct value: start of its block plus half its length.
    ends = np.cumsum(counts)
    mean_rank = ends - (counts - 1) / 2.0
    rank_sum = mean_rank[inverse][labels].sum()
    u = rank_sum - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def segmentation_scores(
    prob: ArrayOrList,
    truth: ArrayOrList,
    fov: ArrayOrList,
    *,
    threshold: float = 0.5,
) -> dict[str, float | int | None]:
    """Scores of vessel probabilities against a reference mask, inside the FOV only.

    `prob`, `truth` and `fov` are each one (H, W) array or a list of them (sizes may differ
    between images). A pixel is predicted vessel when prob >= threshold. Returns f1 (Dice),
    auc, accuracy, sensitivity, specificity, stray_rate (of the background farther than
    ``STRAY_DISTANCE`` of the width from every vessel, the share predicted vessel; None where
    undefined) and the pooled confusion counts tp, fp, tn, fn.
    """
    p = _pooled(prob, fov).astype(np.float64)
    t = _pooled(truth, fov).astype(bool)
    if p.shape != t.shape:
        raise ValueError("prob and truth differ in shape")
    pred = p >= threshold
    tp = int(np.count_nonzero(pred & t))
    fp = int(np.count_nonzero(pred & ~t))
    fn = int(np.count_nonzero(~pred & t))
    tn = int(np.count_nonzero(~pred & ~t))
    if isinstance(truth, np.ndarray):
        away = _pooled(_away_from_vessels(truth), fov)
    else:
        away = _pooled([_away_from_vessels(m) for m in truth], fov)
    return {
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "auc": roc_auc(p, t),
        "accuracy": _ratio(tp + tn, tp + tn + fp + fn),
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "stray_rate": _ratio(np.count_nonzero(pred & away), np.count_nonzero(away)),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }
