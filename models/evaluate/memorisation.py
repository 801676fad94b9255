"""Memorisation audit: does a synthetic set contain (near-)copies of training patients?

For every synthetic sample we find its nearest training sample under two similarities,
computed at a small fixed resolution (`MemorisationRule.size`, 128 by default, or the
smallest image side if that is smaller) so the audit costs milliseconds per sample whatever
the dataset resolution:

- **mask Dice**: vessel masks max-pooled to size x size (a vessel pixel anywhere in a cell
  marks it, so thin vessels survive and one-pixel shifts barely matter), Dice of the
  binary results.
- **image similarity**: normalised cross-correlation of high-passed greyscale images inside
  the (eroded) FOV. The high pass (minus a local mean taken inside the FOV only) removes
  what every fundus photograph shares (illumination, the bright disc, the FOV rim) and
  leaves vessels and texture, which identify a patient.

Each training sample is also compared flipped left-right, up-down and both, because a
mirrored copy of a patient is still that patient.

The same nearest-neighbour similarities are computed for real images the generator never
saw (a test split) against the training set: this is how close two *different* real
patients naturally are, and it calibrates the rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from models.evaluate.segmenter import PairLike

# The image axes each flip reverses: 0 is rows (up-down), 1 is columns (left-right).
_FLIP_AXES: dict[str, tuple[int, ...]] = {"none": (), "lr": (1,), "ud": (0,), "lr+ud": (0, 1)}
FLIPS: tuple[str, ...] = tuple(_FLIP_AXES)


@dataclass(frozen=True)
class MemorisationRule:
    """When a synthetic sample counts as a copy, and when a set fails.

    For each similarity s in {mask Dice, image similarity} the threshold is

        t_s = clamp(quantile_q(reference_s) + margin, floor_s, ceiling_s)

    where reference_s holds, for each unseen real image, its similarity to its nearest
    training image. In words: a synthetic sample is flagged when it is closer to some
    training sample than (nearly) every unseen real patient is to any training sample, by
    `margin`. `floor_s` keeps ordinary generalisation (being a bit closer to the training
    set than new patients are) from being flagged; `ceiling_s` flags near-identical samples
    even if the reference set happens to contain a near-duplicate of a training image.
    Without a reference set the threshold is `floor_s` (the strict end).

    A sample is flagged if either similarity reaches its threshold; the audit passes when
    at most `max_flagged` samples are flagged (0: a single copy fails the set).
    """

    size: int = 128
    dice_floor: float = 0.7
    dice_ceiling: float = 0.9
    similarity_floor: float = 0.7
    similarity_ceiling: float = 0.9
    margin: float = 0.05
    reference_quantile: float = 1.0
    max_flagged: int = 0
    flips: bool = True
    top_k: int = 10

    def threshold(self, reference: np.ndarray, floor: float, ceiling: float) -> float:
        if len(reference) == 0:
            return floor
        q = float(np.quantile(reference, self.reference_quantile)) + self.margin
        return float(min(max(q, floor), ceiling))


@dataclass
class ClosestPair:
    synthetic_index: int
    training_name: str  # nearest by the combined score (see AuditResult.closest)
    dice: float
    similarity: float
    nearest_by_dice: str
    nearest_by_similarity: str
    flip_dice: str
    flip_similarity: str
    flagged: bool

    def match(self, thresholds: dict[str, float]) -> tuple[str, str]:
        """(training sample, flip) the pair is ranked by, given the audit's thresholds."""
        if _ranked_by_dice(self.dice, self.similarity, thresholds):
            return self.nearest_by_dice, self.flip_dice
        return self.nearest_by_similarity, self.flip_similarity


def _ranked_by_dice(dice: float, similarity: float, thresholds: dict[str, float]) -> bool:
    """A pair is ranked by whichever of its mask Dice and image similarity is nearer its
    threshold: its score is the larger of the two ratios."""
    return dice / thresholds["dice"] >= similarity / thresholds["similarity"]


@dataclass
class AuditResult:
    passed: bool
    flagged_indices: list[int]
    thresholds: dict[str, float]
    # Top-k synthetic samples by max(dice / t_dice, similarity / t_similarity): the ones to
    # look at first, flagged or not.
    closest: list[ClosestPair]
    # Nearest-training similarities per synthetic sample and per unseen real sample.
    distributions: dict[str, list[float]]
    rule: MemorisationRule = field(default_factory=MemorisationRule)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "flagged_indices": self.flagged_indices,
            "thresholds": self.thresholds,
            "closest": [asdict(c) for c in self.closest],
            "distributions": self.distributions,
            "rule": asdict(self.rule),
        }

    def to_metrics(self) -> list[tuple[str, float | None, dict[str, Any]]]:
        d = self.distributions
        ref = {k: (max(d[k]) if d[k] else None) for k in ("reference_dice", "reference_similarity")}
        return [
            ("memorisation_passed", 1.0 if self.passed else 0.0, self.to_dict()),
            (
                "memorisation_flagged",
                float(len(self.flagged_indices)),
                {"flagged_indices": self.flagged_indices, "n_synthetic": len(d["synthetic_dice"])},
            ),
            (
                "memorisation_max_dice",
                max(d["synthetic_dice"], default=None),
                {"threshold": self.thresholds["dice"], "reference_max": ref["reference_dice"]},
            ),
            (
                "memorisation_max_similarity",
                max(d["synthetic_similarity"], default=None),
                {
                    "threshold": self.thresholds["similarity"],
                    "reference_max": ref["reference_similarity"],
                },
            ),
        ]


def _box(x: torch.Tensor, k: int) -> torch.Tensor:
    """k x k box sum as two 1-D passes (2k instead of k^2 reads per pixel)."""
    x = F.avg_pool2d(x, (1, k), 1, (0, k // 2))
    return F.avg_pool2d(x, (k, 1), 1, (k // 2, 0))


def _embed_batch(
    images: torch.Tensor, masks: torch.Tensor, fovs: torch.Tensor, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same-size batch: (B, H, W, 3) uint8, (B, H, W), (B, H, W) -> small masks, images."""
    small_masks = F.adaptive_max_pool2d((masks * fovs)[:, None].float(), size)[:, 0]
    # Downsample before the greyscale weights: fewer multiplications on large images.
    rgb = F.interpolate(images.permute(0, 3, 1, 2).float(), size=(size, size), mode="area")
    weights = torch.tensor([0.299, 0.587, 0.114], device=rgb.device).view(1, 3, 1, 1)
    g = (rgb * weights).sum(1, keepdim=True)
    fov = F.interpolate(fovs[:, None].float(), size=(size, size), mode="area")
    # Erode so neither the FOV rim nor the high pass's rim effects are compared.
    fov = (fov > 0.999).float()
    fov = -F.max_pool2d(-fov, 5, stride=1, padding=2)
    k = max(size // 16, 3) | 1
    local = _box(g * fov, k) / _box(fov, k).clamp_min(1e-6)
    hp = (g - local) * fov
    n = fov.sum(dim=(1, 2, 3), keepdim=True).clamp_min(1.0)
    hp = (hp - hp.sum(dim=(1, 2, 3), keepdim=True) / n) * fov
    hp = hp / hp.flatten(1).norm(dim=1).clamp_min(1e-8).view(-1, 1, 1, 1)
    return (small_masks > 0).float(), hp[:, 0]


def _embed(
    pairs: Sequence[PairLike], size: int, device: torch.device, chunk: int = 32
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, size, size) binary masks and (N, size, size) unit-norm high-passed images."""
    if not pairs:
        empty = torch.zeros((0, size, size), device=device)
        return empty, empty
    masks: list[torch.Tensor] = [torch.empty(0)] * len(pairs)
    images: list[torch.Tensor] = [torch.empty(0)] * len(pairs)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, pair in enumerate(pairs):
        by_shape.setdefault(np.shape(pair.mask), []).append(i)
    for indices in by_shape.values():
        for start in range(0, len(indices), chunk):
            idx = indices[start : start + chunk]

            def stack(field_name: str, idx: list[int] = idx) -> torch.Tensor:
                arrays = [np.asarray(getattr(pairs[i], field_name)) for i in idx]
                return torch.from_numpy(np.stack(arrays)).to(device)

            m, im = _embed_batch(stack("image"), stack("mask"), stack("fov"), size)
            for j, i in enumerate(idx):
                masks[i], images[i] = m[j], im[j]
    return torch.stack(masks), torch.stack(images)


def _flipped(x: torch.Tensor, flip: str) -> torch.Tensor:
    """A (N, H, W) batch flipped as `flip` says."""
    dims = [axis + 1 for axis in _FLIP_AXES[flip]]
    return x.flip(dims) if dims else x


def flipped_like_audit(array: np.ndarray, flip: str) -> np.ndarray:
    """An (H, W) or (H, W, C) array flipped as the audit flipped the training sample it
    matched (`ClosestPair.flip_dice` / `flip_similarity`), so it lines up with the sample."""
    return np.ascontiguousarray(np.flip(array, _FLIP_AXES[flip]))


def _nearest(
    q_masks: torch.Tensor,
    q_images: torch.Tensor,
    t_masks: torch.Tensor,
    t_images: torch.Tensor,
    flips: Sequence[str],
) -> dict[str, torch.Tensor]:
    """Per query: best Dice and similarity over training samples x flips, and where."""
    qm, qi = q_masks.flatten(1), q_images.flatten(1)
    qm_sum = qm.sum(1, keepdim=True)
    dices, sims = [], []
    for flip in flips:
        tm = _flipped(t_masks, flip).flatten(1)
        ti = _flipped(t_images, flip).flatten(1)
        inter = qm @ tm.T
        dices.append(2 * inter / (qm_sum + tm.sum(1)[None]).clamp_min(1e-8))
        sims.append(qi @ ti.T)
    dice = torch.stack(dices)  # (flips, Q, T)
    sim = torch.stack(sims)
    n_t = t_masks.shape[0]
    width = len(flips) * n_t
    best_dice, arg_d = dice.permute(1, 0, 2).reshape(len(qm), width).max(dim=1)
    best_sim, arg_s = sim.permute(1, 0, 2).reshape(len(qm), width).max(dim=1)
    return {
        "dice": best_dice,
        "dice_train": arg_d % n_t,
        "dice_flip": arg_d // n_t,
        "sim": best_sim,
        "sim_train": arg_s % n_t,
        "sim_flip": arg_s // n_t,
    }


def audit(
    synthetic: Sequence[PairLike],
    training: Sequence[PairLike],
    reference_unseen: Sequence[PairLike],
    *,
    rule: MemorisationRule | None = None,
    device: str | torch.device = "cpu",
) -> AuditResult:
    """Run the memorisation audit of `synthetic` against `training` (see MemorisationRule).

    `reference_unseen` are real images not used to train the generator (e.g. the test
    split); they are compared with `training` only, to calibrate the thresholds.
    """
    rule = rule or MemorisationRule()
    if not training:
        raise ValueError("no training pairs to audit against")
    device = torch.device(device)
    flips = FLIPS if rule.flips else FLIPS[:1]
    # Never upsample: below rule.size, compare at the smallest side present.
    size = min(
        [rule.size] + [min(np.shape(p.mask)) for p in (*training, *synthetic, *reference_unseen)]
    )
    t_masks, t_images = _embed(training, size, device)
    names = [p.name for p in training]
    s_masks, s_images = _embed(synthetic, size, device)
    syn = _nearest(s_masks, s_images, t_masks, t_images, flips)
    if reference_unseen:
        r_masks, r_images = _embed(reference_unseen, size, device)
        ref = _nearest(r_masks, r_images, t_masks, t_images, flips)
        ref_dice = ref["dice"].cpu().numpy()
        ref_sim = ref["sim"].cpu().numpy()
    else:
        ref_dice = ref_sim = np.zeros(0)
    t_dice = rule.threshold(ref_dice, rule.dice_floor, rule.dice_ceiling)
    t_sim = rule.threshold(ref_sim, rule.similarity_floor, rule.similarity_ceiling)
    dice = syn["dice"].cpu().numpy()
    sim = syn["sim"].cpu().numpy()
    thresholds = {"dice": t_dice, "similarity": t_sim}
    flagged = (dice >= t_dice) | (sim >= t_sim)
    score = np.maximum(dice / t_dice, sim / t_sim)
    closest = []
    for i in np.argsort(-score, kind="stable")[: rule.top_k]:
        by_dice = _ranked_by_dice(dice[i], sim[i], thresholds)
        d_train, s_train = int(syn["dice_train"][i]), int(syn["sim_train"][i])
        closest.append(
            ClosestPair(
                synthetic_index=int(i),
                training_name=names[d_train if by_dice else s_train],
                dice=float(dice[i]),
                similarity=float(sim[i]),
                nearest_by_dice=names[d_train],
                nearest_by_similarity=names[s_train],
                flip_dice=flips[int(syn["dice_flip"][i])],
                flip_similarity=flips[int(syn["sim_flip"][i])],
                flagged=bool(flagged[i]),
            )
        )
    flagged_indices = np.nonzero(flagged)[0].tolist()
    return AuditResult(
        passed=len(flagged_indices) <= rule.max_flagged,
        flagged_indices=flagged_indices,
        thresholds=thresholds,
        closest=closest,
        distributions={
            "synthetic_dice": dice.round(6).tolist(),
            "synthetic_similarity": sim.round(6).tolist(),
            "reference_dice": ref_dice.round(6).tolist(),
            "reference_similarity": ref_sim.round(6).tolist(),
        },
        rule=rule,
    )
