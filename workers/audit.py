"""The memorisation audit's evidence, for the admin who decides whether a dataset is published
(or whether a pipeline is fit to publish from): the verdict, the rule, and the samples that
came closest to a training image.

The closest pairs name and picture private training images. They are kept in a private
metric row and leave it only through this module: as text on the admin's terminal, and as a
contact sheet written to a file the admin names, never to object storage.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from sqlalchemy.orm import Session

from app.samples.service import samples
from app.storage import Storage
from app.tables import Dataset, Metric
from models.data import FundusPair
from models.evaluate.memorisation import ClosestPair, flipped_like_audit
from models.evaluate.table import text_columns
from models.generate import generate
from models.imageio import to_pil
from models.train import TrainedPipeline
from workers.realdata import training_split
from workers.runs import AUDIT_EVIDENCE, AUDIT_PASSED, AUDITED_SAMPLES

# The contact sheet: one row per closest pair, four tiles a row, a caption line above each.
TILE = 160
GAP = 8
CAPTION = 22
COLUMNS = ("synthetic image", "nearest training image", "synthetic mask", "training mask")


@dataclass(frozen=True)
class AuditEvidence:
    passed: bool
    flagged: list[int]
    n_synthetic: int
    max_flagged: int
    thresholds: dict[str, float]  # "dice" and "similarity"
    # How near the unseen real images came to the training set: what the thresholds are
    # calibrated on (None without a reference set).
    reference_max: dict[str, float | None]
    closest: list[ClosestPair]  # nearest first; empty if the evidence was not kept
    # A pipeline's evaluation: {"seed", "count", "training_source"} of what it compared.
    # None for a dataset, whose samples are stored and whose pipeline names its data.
    audited_samples: dict[str, Any] | None = None


def audit_evidence(metrics: Iterable[Metric]) -> AuditEvidence | None:
    """The audit in a dataset's or pipeline's metric rows, or None if they hold none."""
    by_name = {m.name: m for m in metrics}
    verdict = by_name.get(AUDIT_PASSED)
    if verdict is None:
        return None
    details = verdict.details
    dist = details["distributions"]
    private = by_name[AUDIT_EVIDENCE].details if AUDIT_EVIDENCE in by_name else {}
    return AuditEvidence(
        passed=verdict.value == 1.0,
        flagged=list(details["flagged_indices"]),
        n_synthetic=len(dist["synthetic_dice"]),
        max_flagged=int(details["rule"]["max_flagged"]),
        thresholds=dict(details["thresholds"]),
        reference_max={
            "dice": max(dist["reference_dice"], default=None),
            "similarity": max(dist["reference_similarity"], default=None),
        },
        closest=[ClosestPair(**c) for c in private.get(AUDIT_PASSED, {}).get("closest", [])],
        audited_samples=private.get(AUDITED_SAMPLES),
    )


def describe(subject: str, evidence: AuditEvidence) -> str:
    """The audit of `subject` ("dataset SLUG (draft)", say) in words and a table, nearest pair
    first."""
    t = evidence.thresholds
    verdict = "passed" if evidence.passed else "FAILED"
    lines = [
        f"{subject}: memorisation audit {verdict}, "
        f"{len(evidence.flagged)} of {evidence.n_synthetic} samples flagged "
        f"(at most {evidence.max_flagged} allowed)",
        f"A sample is flagged at mask Dice >= {t['dice']:.3f} or image similarity >= "
        f"{t['similarity']:.3f} to a training image.",
    ]
    ref = evidence.reference_max
    if ref["dice"] is not None and ref["similarity"] is not None:
        lines.append(
            f"Unseen real images came as close as Dice {ref['dice']:.3f} and similarity "
            f"{ref['similarity']:.3f}."
        )
    if not evidence.closest:
        lines.append("The closest pairs were not kept for this dataset.")
        return "\n".join(lines)
    rows = [("sample", "nearest training image", "mask Dice", "image similarity", "flagged")]
    for pair in evidence.closest:
        name, flip = pair.match(evidence.thresholds)
        shown = name if flip == "none" else f"{name} (flipped {flip})"
        flagged = "FLAGGED" if pair.flagged else "no"
        rows.append(
            (
                str(pair.synthetic_index),
                shown,
                f"{pair.dice:.3f}",
                f"{pair.similarity:.3f}",
                flagged,
            )
        )
    lines.append("The samples closest to a training image, nearest first:")
    lines += ["  " + line for line in text_columns(rows, "><>><")]
    return "\n".join(lines)


def _decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image)


def _tile(array: np.ndarray) -> Image.Image:
    image = to_pil(array)
    resample = Image.Resampling.NEAREST if image.width <= TILE else Image.Resampling.BOX
    return image.convert("RGB").resize((TILE, TILE), resample)


def closest_pairs_sheet(
    evidence: AuditEvidence,
    synthetic: dict[int, tuple[np.ndarray, np.ndarray]],
    training: dict[str, FundusPair],
) -> Image.Image:
    """A picture of each closest pair: the synthetic image and mask beside the training image
    and mask they matched, flipped as the audit matched them, so a copy looks like one."""
    font = ImageFont.load_default(size=14)
    width = len(COLUMNS) * (TILE + GAP) + GAP
    row_height = CAPTION + TILE + GAP
    sheet = Image.new("RGB", (width, CAPTION + len(evidence.closest) * row_height), "white")
    draw = ImageDraw.Draw(sheet)
    for col, title in enumerate(COLUMNS):
        draw.text((GAP + col * (TILE + GAP), 4), title, fill="black", font=font)
    for row, pair in enumerate(evidence.closest):
        top = CAPTION + row * row_height
        name, flip = pair.match(evidence.thresholds)
        caption = f"sample {pair.synthetic_index} vs {name}"
        caption += "" if flip == "none" else f" (flipped {flip})"
        caption += f": Dice {pair.dice:.3f}, similarity {pair.similarity:.3f}"
        draw.text(
            (GAP, top + 4),
            caption + (", FLAGGED" if pair.flagged else ""),
            fill="firebrick" if pair.flagged else "black",
            font=font,
        )
        image, mask = synthetic[pair.synthetic_index]
        match = training[name]
        tiles = (
            image,
            flipped_like_audit(match.image, flip),
            mask,
            flipped_like_audit(match.mask, flip),
        )
        for col, array in enumerate(tiles):
            sheet.paste(_tile(array), (GAP + col * (TILE + GAP), top + CAPTION))
    return sheet


def write_dataset_sheet(
    session: Session,
    storage: Storage,
    dataset: Dataset,
    evidence: AuditEvidence,
    path: Path,
) -> None:
    """Draw a dataset's closest pairs to `path` (PNG), its samples as stored and published."""
    synthetic = {}
    for pair in evidence.closest:
        sample = samples.get(session, dataset_id=dataset.id, index=pair.synthetic_index)
        if sample is None:
            raise ValueError(f"dataset {dataset.slug} has no sample {pair.synthetic_index}")
        synthetic[pair.synthetic_index] = (
            _decode(storage.get_bytes(sample.image_key)),
            _decode(storage.get_bytes(sample.mask_key)),
        )
    training_source = dataset.pipeline.data_source
    _write_sheet(evidence, synthetic, training_source, dataset.resolution, path)


def write_pipeline_sheet(trained: TrainedPipeline, evidence: AuditEvidence, path: Path) -> None:
    """Draw a pipeline evaluation's closest pairs to `path` (PNG). Its samples were never
    stored: they are generated again, all of them with the evaluation's seed, so each comes
    out of the same batch it did then: pixel for pixel on the kind of device that evaluated
    (another kind may round a few pixels differently)."""
    audited = evidence.audited_samples
    if audited is None:
        raise ValueError("this audit did not record which samples it compared")
    wanted = {pair.synthetic_index for pair in evidence.closest}
    synthetic = {
        s.index: (s.image, s.mask)
        for s in generate(trained, count=int(audited["count"]), seed=int(audited["seed"]))
        if s.index in wanted
    }
    resolution = trained.config.resolution
    _write_sheet(evidence, synthetic, audited["training_source"], resolution, path)


def _write_sheet(
    evidence: AuditEvidence,
    synthetic: dict[int, tuple[np.ndarray, np.ndarray]],
    training_source: str,
    resolution: int,
    path: Path,
) -> None:
    """The sheet, written beside `path` and renamed into place, so a failure leaves no
    half-written file."""
    if not evidence.closest:
        raise ValueError("the closest pairs were not kept for this audit")
    training = {p.name: p for p in training_split(training_source, resolution=resolution)}
    missing = {pair.match(evidence.thresholds)[0] for pair in evidence.closest} - training.keys()
    if missing:
        raise ValueError(f"{training_source} no longer holds the training images {sorted(missing)}")
    sheet = closest_pairs_sheet(evidence, synthetic, training)
    partial = path.with_name(f".{path.name}.part")
    try:
        sheet.save(partial, format="PNG")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
