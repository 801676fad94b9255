"""`synthmed audit`'s evidence on real Postgres + S3: a planted copy of a training image is
named, flagged and drawn beside the training image it copies; nothing reaches storage."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy.orm import Session

from app.datasets.service import datasets
from app.samples.service import samples
from app.storage import Storage
from app.tables import Dataset
from models.evaluate.memorisation import FLIPS, audit, flipped_like_audit
from models.evaluate.report import Metric as EvaluationMetric
from models.imageio import encode_png, encode_thumbnail
from models.phantom import phantom_pairs
from tests.factories import make_dataset, make_pipeline
from workers.audit import CAPTION, GAP, TILE, audit_evidence, describe, write_dataset_sheet
from workers.realdata import training_split
from workers.runs import metric_rows

RESOLUTION = 64
PLANTED_AT = 3  # the synthetic sample that is a copy of a training image
COPIED = 2  # the training image it copies, flipped left-right


@pytest.fixture
def audited(session: Session, s3_storage: Storage) -> Dataset:
    """A phantom pipeline's dataset of five samples, one of them a mirrored training image,
    stored and audited as the evaluation task stores it."""
    training = training_split("phantom", resolution=RESOLUTION)
    synthetic = phantom_pairs(5, size=RESOLUTION, seed=9)
    copy = training[COPIED]
    synthetic[PLANTED_AT] = replace(
        copy, image=copy.image[:, ::-1].copy(), mask=copy.mask[:, ::-1].copy()
    )
    dataset = make_dataset(
        session, pipeline=make_pipeline(session, resolution=RESOLUTION), count=len(synthetic)
    )
    for index, pair in enumerate(synthetic):
        samples.store(
            session,
            s3_storage,
            dataset=dataset,
            index=index,
            seed=index,
            image_png=encode_png(pair.image),
            mask_png=encode_png(pair.mask),
            thumb_webp=encode_thumbnail(pair.image),
            stats={},
        )
    unseen = phantom_pairs(6, size=RESOLUTION, seed=1)
    result = audit(synthetic, training, unseen)
    measured = [EvaluationMetric(*row) for row in result.to_metrics()]
    datasets.replace_metrics(session, dataset=dataset, metrics=metric_rows(measured))
    session.refresh(dataset)
    return dataset


@pytest.mark.parametrize("flip", FLIPS)
def test_the_sheet_flips_as_the_audit_matched(flip: str) -> None:
    # The audit flips (N, H, W) tensors, the sheet (H, W, 3) arrays: a training image flipped
    # the sheet's way must be found by the audit under the same flip.
    training = phantom_pairs(3, size=RESOLUTION, seed=0)
    original = training[COPIED]
    copy = replace(
        original,
        image=flipped_like_audit(original.image, flip),
        mask=flipped_like_audit(original.mask, flip),
    )
    pair = audit([copy], training, []).closest[0]
    assert (pair.nearest_by_dice, pair.flip_dice) == (original.name, flip)
    assert (pair.nearest_by_similarity, pair.flip_similarity) == (original.name, flip)


def test_the_planted_copy_comes_first_named_and_flagged(audited: Dataset) -> None:
    evidence = audit_evidence(audited.metrics)
    assert evidence is not None
    assert not evidence.passed
    assert evidence.flagged == [PLANTED_AT]
    assert evidence.n_synthetic == 5
    first = evidence.closest[0]
    assert first.synthetic_index == PLANTED_AT and first.flagged
    name = training_split("phantom", resolution=RESOLUTION)[COPIED].name
    assert first.match(evidence.thresholds) == (name, "lr")
    text = describe("x", evidence)
    assert "x: memorisation audit FAILED, 1 of 5 samples flagged (at most 0 allowed)" in text
    row = next(line for line in text.splitlines() if f"{name} (flipped lr)" in line)
    assert row.split()[0] == str(PLANTED_AT) and row.endswith("FLAGGED")
    # The other four are listed too, unflagged, in the order the audit ranked them.
    assert [p.synthetic_index for p in evidence.closest[1:]] == [
        p.synthetic_index for p in evidence.closest if not p.flagged
    ]
    assert text.count(" no") == 4


def test_the_sheet_shows_the_copy_beside_its_original(
    session: Session, s3_storage: Storage, audited: Dataset, tmp_path: Path
) -> None:
    evidence = audit_evidence(audited.metrics)
    assert evidence is not None
    keys_before = sorted(s3_storage.list())
    path = tmp_path / "closest.png"
    write_dataset_sheet(session, s3_storage, audited, evidence, path)
    assert sorted(s3_storage.list()) == keys_before  # nothing private went to storage
    assert [p.name for p in tmp_path.iterdir()] == ["closest.png"]
    sheet = np.asarray(Image.open(path).convert("RGB"))
    assert sheet.shape == (CAPTION + 5 * (CAPTION + TILE + GAP), 4 * (TILE + GAP) + GAP, 3)

    def tile(row: int, col: int) -> np.ndarray:
        top = CAPTION + row * (CAPTION + TILE + GAP) + CAPTION
        left = GAP + col * (TILE + GAP)
        return sheet[top : top + TILE, left : left + TILE].astype(int)

    # Row 0 is the planted copy: the training image, flipped back as the audit matched it,
    # is the synthetic image, and so are the masks.
    assert (tile(0, 0) == tile(0, 1)).all()
    assert (tile(0, 2) == tile(0, 3)).all()
    assert tile(0, 2).max() == 255  # the mask tiles show vessels
    # Another row pairs two different phantom patients.
    assert np.abs(tile(1, 0) - tile(1, 1)).mean() > 5


def test_a_dataset_not_yet_audited_has_no_evidence(session: Session) -> None:
    assert audit_evidence(make_dataset(session).metrics) is None


def test_a_missing_training_folder_is_a_clear_error(
    session: Session, s3_storage: Storage, audited: Dataset, tmp_path: Path
) -> None:
    evidence = audit_evidence(audited.metrics)
    assert evidence is not None
    audited.pipeline.data_source = str(tmp_path / "moved")
    path = tmp_path / "closest.png"
    with pytest.raises(ValueError, match="moved"):
        write_dataset_sheet(session, s3_storage, audited, evidence, path)
    assert list(tmp_path.iterdir()) == []
