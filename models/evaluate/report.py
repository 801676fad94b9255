"""One call that evaluates a synthetic dataset and returns metric rows.

Used by the evaluation Celery task and the CLI; both store each `Metric` as a `metric` row
(name, value, details JSON). Metric names produced:

- ``memorisation_passed`` (1.0/0.0), ``memorisation_flagged``, ``memorisation_max_dice``,
  ``memorisation_max_similarity``: the privacy audit (details: thresholds, closest pairs,
  distributions, rule).
- ``kl_real_syn``, ``kl_syn_real``, ``kl_real_real``: paper-style intensity KL (details:
  per channel, histograms for plotting); the real set is the real training split.
- ``vessel_fraction``, ``vessel_width``, ``vessel_branch_points``, ``vessel_pieces``,
  ``vessel_connected_share``, ``vessel_tortuosity``, ``vessel_orientation``: synthetic
  summary as value, the real training split's in details with histograms and W1 (``real``:
  the real figure, or for a distribution its summaries, the value's named ``statistic``).
  ``vessel_sample_overlap``: the mean Dice between two synthetic masks, the real training
  split's in details with both distributions.
- ``tstr_<score>_<arm>`` for score in ``scores.SCORE_NAMES`` (f1, auc, accuracy,
  sensitivity, specificity, stray_rate) and arm in real, synthetic, mixed (real + synthetic,
  half of each batch, each half with its own batch norms; mean over seeds; std and per-seed
  in details), ``tstr_f1_ratio``,
  and ``tstr_<score>_second_observer`` when a second observer is given.
- ``seg_fid``, ``seg_kid``: synthetic vs real test images in the real-trained segmenter's
  feature space (baseline: real training vs real test, in details).
- ``inception_fid``, ``inception_kid``: the same comparison in the pool3 space of TF's FID
  Inception-v3, only when a weights file is given (``inception_weights``); details name the
  file and its SHA-256.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.evaluate.features import inception_feature_report, seg_feature_report
from models.evaluate.inception import FIDInceptionV3, load_fid_inception, weights_sha256
from models.evaluate.kl import kl_report
from models.evaluate.memorisation import MemorisationRule, audit
from models.evaluate.segmenter import PairLike
from models.evaluate.tstr import ARM_LABELS, ARMS, run_tstr
from models.evaluate.vessels import (
    AXIS_BAND,
    OVERLAP_SAMPLES,
    compare_vessel_stats,
    sample_overlap,
    vessel_stats,
)

ProgressFn = Callable[[float, str], None]


def _jsonable(value: Any) -> Any:
    """Plain JSON types only: numpy scalars/arrays unwrapped, NaN and inf become None."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass
class Metric:
    name: str
    value: float | None
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        value = _jsonable(self.value)
        self.value = None if value is None else float(value)
        self.details = _jsonable(self.details)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "details": self.details}


def _vessel_metrics(real: Sequence[PairLike], synthetic: Sequence[PairLike]) -> list[Metric]:
    r = vessel_stats([p.mask for p in real], [p.fov for p in real])
    s = vessel_stats([p.mask for p in synthetic], [p.fov for p in synthetic])
    cmp = compare_vessel_stats(r, s)

    def per_image(name: str, key: str) -> Metric:
        return Metric(
            f"vessel_{name}",
            s["summary"][f"{key}_mean"],
            {
                "real": r["summary"][f"{key}_mean"],
                "synthetic_per_image": s["per_image"][key],
                "real_per_image": r["per_image"][key],
            },
        )

    def distribution(key: str, value: str, label: str, extra: dict[str, Any]) -> Metric:
        real_hist, syn_hist = r[key]["histogram"], s[key]["histogram"]
        return Metric(
            f"vessel_{key}",
            s[key][value],
            {
                **extra,
                "statistic": value,
                "real": {k: v for k, v in r[key].items() if k != "histogram"},
                "synthetic": {k: v for k, v in s[key].items() if k != "histogram"},
                "real_histogram": real_hist,
                "synthetic_histogram": syn_hist,
                "w1": cmp[f"{key}_w1"],
                "definitions": r["definitions"],
                "plot": {
                    "kind": "histogram",
                    "title": f"Distribution of {label}",
                    "x_label": label,
                    "y_label": "fraction",
                    "edges": real_hist["edges"],
                    "series": {"real": real_hist["density"], "synthetic": syn_hist["density"]},
                },
            },
        )

    return [
        per_image("fraction", "vessel_fraction"),
        distribution(
            "width", "mean", "vessel width (px)", {"unit": "pixels at dataset resolution"}
        ),
        per_image("branch_points", "branch_points"),
        per_image("pieces", "pieces"),
        per_image("connected_share", "connected_share"),
        distribution("tortuosity", "median", "tortuosity", {}),
        distribution(
            "orientation",
            "axis_aligned",
            "edge angle off axis (°)",
            {"axis_band_degrees": AXIS_BAND},
        ),
        _overlap_metric(real, synthetic),
    ]


def _overlap_metric(real: Sequence[PairLike], synthetic: Sequence[PairLike]) -> Metric:
    syn = sample_overlap([p.mask for p in synthetic]).tolist()
    ref = sample_overlap([p.mask for p in real]).tolist()
    spread = {"synthetic": _quartiles(syn), "real": _quartiles(ref)}
    return Metric(
        "vessel_sample_overlap",
        float(np.mean(syn)) if syn else None,
        {
            "real": float(np.mean(ref)) if ref else None,
            "pairs": len(syn),
            "real_pairs": len(ref),
            "samples_compared": min(len(synthetic), OVERLAP_SAMPLES),
            "plot": {
                "kind": "distribution",
                "title": "Vessel overlap between two masks of a set",
                "x_label": "mask Dice",
                "series": {k: v for k, v in spread.items() if v is not None},
            },
        },
    )


def evaluate_dataset(
    real_train: Sequence[PairLike],
    real_test: Sequence[PairLike],
    synthetic: Sequence[PairLike],
    *,
    tstr_steps: int = 2000,
    seeds: Sequence[int] = (0, 1, 2),
    device: str | torch.device = "cpu",
    rule: MemorisationRule | None = None,
    on_progress: ProgressFn | None = None,
    second_observer: Sequence[np.ndarray] | None = None,
    batch_size: int = 4,
    crop: int = 128,
    levels: int = 4,
    base: int = 32,
    inception_weights: str | Path | None = None,
) -> list[Metric]:
    """Evaluate `synthetic` against the real splits; see the module docstring for names.

    `real_train` is what the generator learned from; `real_test` was seen by nothing
    (it is only scored on and used as the memorisation reference). `on_progress(fraction,
    message)` reports progress in [0, 1]. `inception_weights`: pytorch-fid's FID
    Inception-v3 state dict; without it the Inception metrics are skipped, and a file that
    cannot be used raises InceptionWeightsError (a ValueError) before anything is measured.
    """
    if not synthetic:
        raise ValueError("no synthetic pairs to evaluate")
    weights = None if inception_weights is None else Path(inception_weights)
    inception = None if weights is None else load_fid_inception(weights, device=device)

    def report(fraction: float, message: str) -> None:
        if on_progress is not None:
            on_progress(min(max(fraction, 0.0), 1.0), message)

    metrics: list[Metric] = []
    report(0.0, "memorisation audit")
    result = audit(synthetic, real_train, real_test, rule=rule, device=device)
    metrics += [Metric(*row) for row in result.to_metrics()]

    report(0.03, "intensity KL")
    kl = kl_report(real_train, synthetic)
    shared = {k: kl[k] for k in ("bins", "eps", "reduction", "n_real", "n_synthetic")}
    metrics.append(
        Metric(
            "kl_real_syn",
            kl["kl_real_syn"],
            {
                **shared,
                "per_channel": kl["per_channel"]["real_syn"],
                "histograms": kl["histograms"],
            },
        )
    )
    metrics.append(
        Metric(
            "kl_syn_real",
            kl["kl_syn_real"],
            {**shared, "per_channel": kl["per_channel"]["syn_real"]},
        )
    )
    metrics.append(
        Metric(
            "kl_real_real",
            kl["kl_real_real"],
            {
                **shared,
                "per_channel": kl["per_channel"].get("real_real"),
                "reverse": kl.get("kl_real_real_reverse"),
                "split": kl.get("split"),
            },
        )
    )

    report(0.05, "vessel statistics")
    metrics += _vessel_metrics(real_train, synthetic)

    if tstr_steps > 0:
        metrics += _tstr_and_features(
            real_train,
            real_test,
            synthetic,
            report=report,
            tstr_steps=tstr_steps,
            seeds=seeds,
            device=device,
            second_observer=second_observer,
            batch_size=batch_size,
            crop=crop,
            levels=levels,
            base=base,
        )
    if inception is not None and weights is not None:
        report(0.97 if tstr_steps > 0 else 0.1, "Inception-FID / Inception-KID")
        metrics += _inception_metrics(
            inception, weights, real_train, real_test, synthetic, device=device
        )
    attach_plots(metrics)
    report(1.0, "evaluation done")
    return metrics


def _tstr_and_features(
    real_train: Sequence[PairLike],
    real_test: Sequence[PairLike],
    synthetic: Sequence[PairLike],
    *,
    report: ProgressFn,
    tstr_steps: int,
    seeds: Sequence[int],
    device: str | torch.device,
    second_observer: Sequence[np.ndarray] | None,
    batch_size: int,
    crop: int,
    levels: int,
    base: int,
) -> list[Metric]:
    """TSTR, then seg-FID/KID in the real-trained segmenter's feature space."""
    metrics: list[Metric] = []

    def tstr_progress(fraction: float, message: str) -> None:
        report(0.1 + 0.85 * fraction, message)

    tstr = run_tstr(
        real_train,
        synthetic,
        real_test,
        seeds=seeds,
        steps=tstr_steps,
        batch_size=batch_size,
        crop=crop,
        levels=levels,
        base=base,
        device=device,
        second_observer=second_observer,
        on_progress=tstr_progress,
    )
    metrics += [Metric(*row) for row in tstr.to_metrics()]

    report(0.95, "seg-FID / seg-KID")
    if tstr.real_model is not None and len(real_test) >= 2 and len(synthetic) >= 2:
        feats = seg_feature_report(
            tstr.real_model,
            [p.image for p in real_test],
            [p.image for p in synthetic],
            baseline=[p.image for p in real_train],
            device=device,
        )
        metrics += _distance_metrics("seg", feats)
    return metrics


def _distance_metrics(name: str, feats: dict[str, Any], **extra: Any) -> list[Metric]:
    """``{name}_fid`` and ``{name}_kid`` rows from a ``distance_report``, sharing details."""
    fid, kid = f"{name}_fid", f"{name}_kid"
    details = {k: v for k, v in feats.items() if k not in (fid, kid)}
    details["real"] = "real test split"
    details["baseline"] = "real training split vs real test split"
    details.update(extra)
    return [Metric(fid, feats[fid], details), Metric(kid, feats[kid], details)]


def _inception_metrics(
    network: FIDInceptionV3,
    weights: Path,
    real_train: Sequence[PairLike],
    real_test: Sequence[PairLike],
    synthetic: Sequence[PairLike],
    *,
    device: str | torch.device,
) -> list[Metric]:
    """Inception-FID/KID of synthetic vs real test images (baseline: real training)."""
    if len(real_test) < 2 or len(synthetic) < 2:
        return []
    feats = inception_feature_report(
        network,
        [p.image for p in real_test],
        [p.image for p in synthetic],
        baseline=[p.image for p in real_train],
        device=device,
    )
    return _distance_metrics(
        "inception", feats, weights=weights.name, weights_sha256=weights_sha256(weights)
    )


def _quartiles(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    q = np.quantile(np.asarray(values, dtype=np.float64), [0.0, 0.25, 0.5, 0.75, 1.0])
    keys = ("min", "q1", "median", "q3", "max")
    return {k: float(v) for k, v in zip(keys, q, strict=True)} | {"mean": float(np.mean(values))}


def attach_plots(metrics: list[Metric]) -> None:
    """Add `details["plot"]` specs (histogram, bars, distribution) that pages draw.

    The contract is documented where it is drawn (app/pages/plots.py); here we only point
    it at evidence that is already in the details, so a plot never shows more than the
    figures it illustrates.
    """
    by_name = {m.name: m for m in metrics}
    kl = by_name.get("kl_real_syn")
    if kl is not None and "histograms" in kl.details:
        hist = kl.details["histograms"]
        bins = len(next(iter(hist["real"].values())))
        edges = [i * 256 / bins for i in range(bins + 1)]
        kl.details["plots"] = [
            {
                "kind": "histogram",
                "title": f"{channel.upper()} intensity inside the FOV",
                "x_label": "pixel value",
                "y_label": "fraction of pixels",
                "edges": edges,
                "series": {"real": hist["real"][channel], "synthetic": hist["synthetic"][channel]},
            }
            for channel in hist["real"]
        ]
    f1 = {arm: by_name.get(f"tstr_f1_{arm}") for arm in ARMS}
    if f1["synthetic"] is not None:
        arms = [arm for arm, m in f1.items() if m is not None]
        f1["synthetic"].details["plot"] = {
            "kind": "bars",
            "title": "Segmenter F1 on the real test split, by training data",
            "y_label": "F1 (mean ± std over seeds)",
            "labels": [f"trained on {ARM_LABELS[arm]}" for arm in arms],
            "values": [f1[arm].value for arm in arms],
            "errors": [f1[arm].details.get("std") for arm in arms],
        }
    passed = by_name.get("memorisation_passed")
    if passed is not None and "distributions" in passed.details:
        dist = passed.details["distributions"]
        series = {
            "synthetic → nearest training (mask Dice)": _quartiles(dist["synthetic_dice"]),
            "unseen real → nearest training (mask Dice)": _quartiles(dist["reference_dice"]),
            "synthetic → nearest training (image similarity)": _quartiles(
                dist["synthetic_similarity"]
            ),
            "unseen real → nearest training (image similarity)": _quartiles(
                dist["reference_similarity"]
            ),
        }
        passed.details["plot"] = {
            "kind": "distribution",
            "title": "Nearest-training-image similarity (the memorisation audit)",
            "x_label": "similarity",
            "series": {k: v for k, v in series.items() if v is not None},
        }
