"""Train on Synthetic, Test on Real (TSTR).

Three arms train the same U-Net recipe on different data and are scored on the same real
test split:

- ``real``: real training pairs only (the reference the paper compares against),
- ``synthetic``: synthetic pairs only,
- ``mixed``: real + synthetic, every batch half real and half synthetic, each half through
  its own batch norms (the real half's are the ones the test split is read with). Pooling
  them and sampling uniformly lets a synthetic set twice the size of the real one fill two
  thirds of each batch: on DRIVE at 128 px that scored F1 0.672 against 0.691 balanced (2
  seeds). One synthetic patch in four, or four added to a batch of four real, scored no
  higher than the real arm either (docs/drive.md, "How much of each batch is synthetic");
  one set of batch norms for both halves cost 0.006 (docs/drive.md, "Batch norm for
  each group").

The test split only ever reaches `_score`, which has no access to an optimiser: the
training function is called with the arm's training pairs and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from models.evaluate.scores import SCORE_DEFINITIONS, SCORE_NAMES, segmentation_scores
from models.evaluate.segmenter import PairLike, UNet, predict, train_segmenter

# Each arm and what it trained on, in words for readers of plots and tables.
ARM_LABELS: dict[str, str] = {"real": "real", "synthetic": "synthetic", "mixed": "real + synthetic"}
ARMS: tuple[str, ...] = tuple(ARM_LABELS)

# (fraction done in [0, 1], message)
StageProgress = Callable[[float, str], None]

# Progress reports per segmenter run. The worker commits each one to the job's row: one
# per step took some 4 ms on PostgreSQL against 21 ms for the step itself (512 px, H200),
# and read the loss off the GPU every step. 50 move a progress bar in 2% ticks.
REPORTS_PER_RUN = 50


@dataclass
class ArmResult:
    """Scores of one arm on the real test split, one dict per seed."""

    arm: str
    n_train: int
    per_seed: list[dict[str, float | int | None]] = field(default_factory=list)

    def values(self, score: str) -> list[float]:
        return [float(s[score]) for s in self.per_seed if s.get(score) is not None]

    def mean(self, score: str) -> float | None:
        v = self.values(score)
        return float(np.mean(v)) if v else None

    def std(self, score: str) -> float | None:
        # Population std (ddof=0): with 3 seeds it describes the spread seen, nothing more.
        v = self.values(score)
        return float(np.std(v)) if v else None


@dataclass
class TSTRResult:
    seeds: tuple[int, ...]
    steps: int
    n_test: int
    arms: dict[str, ArmResult]
    second_observer: dict[str, float | int | None] | None = None
    # The real-arm model of the first seed: reused as the seg-FID/KID feature encoder.
    real_model: UNet | None = field(default=None, repr=False)

    def to_metrics(self) -> list[tuple[str, float | None, dict[str, Any]]]:
        """Metric rows: ``tstr_<score>_<arm>`` = mean over seeds, with std and per-seed."""
        rows: list[tuple[str, float | None, dict[str, Any]]] = []
        for arm in self.arms.values():
            for score in SCORE_NAMES:
                rows.append(
                    (
                        f"tstr_{score}_{arm.arm}",
                        arm.mean(score),
                        {
                            "std": arm.std(score),
                            "per_seed": [s.get(score) for s in arm.per_seed],
                            "seeds": list(self.seeds),
                            "steps": self.steps,
                            "n_train": arm.n_train,
                            "n_test": self.n_test,
                            **_definition(score),
                        },
                    )
                )
        real, syn = self.arms.get("real"), self.arms.get("synthetic")
        if real is not None and syn is not None:
            r, s = real.mean("f1"), syn.mean("f1")
            rows.append(
                (
                    "tstr_f1_ratio",
                    s / r if r and s is not None else None,
                    {"definition": "mean F1 synthetic arm / mean F1 real arm"},
                )
            )
        if self.second_observer is not None:
            for score in SCORE_NAMES:
                rows.append(
                    (
                        f"tstr_{score}_second_observer",
                        self.second_observer.get(score),  # type: ignore[arg-type]
                        {"n_test": self.n_test, "definition": "2nd observer vs 1st, in FOV"},
                    )
                )
        return rows


def _definition(score: str) -> dict[str, str]:
    return {"definition": SCORE_DEFINITIONS[score]} if score in SCORE_DEFINITIONS else {}


def _score(model: UNet, test: Sequence[PairLike], device: str | torch.device) -> dict:
    probs = predict(model, test, device=device)
    return segmentation_scores(probs, [p.mask for p in test], [p.fov for p in test])


def _step_progress(
    on_progress: StageProgress | None, arm: str, seed: int, done: int, total: int, steps: int
) -> Callable[[int, dict[str, float]], None] | None:
    """Map one training run's steps onto the whole protocol's [0, 1] progress."""
    if on_progress is None or steps == 0:
        return None

    def progress(step: int, losses: dict[str, float]) -> None:
        frac = (done + step / steps) / total
        on_progress(frac, f"tstr {arm} seed {seed}: loss {losses['loss']:.3f}")

    return progress


def run_tstr(
    real_train: Sequence[PairLike],
    synthetic: Sequence[PairLike],
    real_test: Sequence[PairLike],
    *,
    seeds: Sequence[int] = (0, 1, 2),
    steps: int = 2000,
    batch_size: int = 4,
    crop: int = 128,
    levels: int = 4,
    base: int = 32,
    lr: float = 1e-3,
    device: str | torch.device = "cpu",
    second_observer: Sequence[np.ndarray] | None = None,
    arms: Sequence[str] = ARMS,
    on_progress: StageProgress | None = None,
) -> TSTRResult:
    """Train each arm once per seed, score on `real_test`, return means ± std over seeds.

    Arms without training data (e.g. no synthetic pairs) are skipped. `second_observer`, if
    given, holds one binary mask per test pair (same order) and is scored against the test
    masks as a human-level reference.
    """
    if not real_test:
        raise ValueError("no test pairs")
    unknown = set(arms) - set(ARMS)
    if unknown:
        raise ValueError(f"unknown arms {sorted(unknown)}; expected a subset of {ARMS}")
    train_sets: dict[str, list[PairLike]] = {
        "real": list(real_train),
        "synthetic": list(synthetic),
        "mixed": list(real_train) + list(synthetic),
    }
    mixed_groups = ["real"] * len(real_train) + ["synthetic"] * len(synthetic)
    plan = [a for a in arms if train_sets[a]]
    results = {a: ArmResult(arm=a, n_train=len(train_sets[a])) for a in plan}
    total = max(len(plan) * len(seeds), 1)
    real_model: UNet | None = None
    done = 0
    for arm in plan:
        for seed in seeds:
            progress = _step_progress(on_progress, arm, seed, done, total, steps)
            model = train_segmenter(
                train_sets[arm],
                steps=steps,
                batch_size=batch_size,
                crop=crop,
                seed=seed,
                device=device,
                levels=levels,
                base=base,
                lr=lr,
                groups=mixed_groups if arm == "mixed" else None,
                on_progress=progress,
                progress_every=max(1, steps // REPORTS_PER_RUN),
            )
            results[arm].per_seed.append(_score(model, real_test, device))
            if arm == "real" and real_model is None:
                real_model = model
            done += 1
            if on_progress is not None:
                on_progress(done / total, f"tstr {arm} seed {seed} scored")
    observer = None
    if second_observer is not None:
        if len(second_observer) != len(real_test):
            raise ValueError("second_observer needs one mask per test pair")
        observer = segmentation_scores(
            [np.asarray(m, dtype=np.float64) for m in second_observer],
            [p.mask for p in real_test],
            [p.fov for p in real_test],
        )
    return TSTRResult(
        seeds=tuple(seeds),
        steps=steps,
        n_test=len(real_test),
        arms=results,
        second_observer=observer,
        real_model=real_model,
    )
