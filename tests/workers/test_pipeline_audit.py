"""`synthmed evaluate`'s figures on a pipeline, and its audit's evidence, on real Postgres + S3:
one row per figure, the closest pairs kept apart in a private row, and the sheet drawn from
the very samples the audit compared."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy.orm import Session, sessionmaker

from app.pipelines.service import pipelines
from app.settings import Settings
from app.storage import storage_from_settings
from app.tables import Metric
from models.evaluate.memorisation import flipped_like_audit
from models.generate import generate_pairs
from models.imageio import to_pil
from models.train import TrainedPipeline
from tests.tiny import SIZE, register_tiny
from workers.audit import CAPTION, GAP, TILE, audit_evidence, describe, write_pipeline_sheet
from workers.local import evaluate_pipeline, load_trained_pipeline
from workers.realdata import training_split
from workers.runs import AUDIT_EVIDENCE, AUDITED_SAMPLES

COUNT = 6
SEED = 5


@dataclass
class Evaluated:
    settings: Settings
    sessions: sessionmaker[Session]
    pipeline_id: int

    def evaluate(self, *, seed: int) -> None:
        evaluate_pipeline(
            self.settings,
            self.sessions,
            pipeline_id=self.pipeline_id,
            real_train=None,
            real_test=None,
            count=COUNT,
            seed=seed,
            tstr_steps=2,
            seeds=1,
            device="cpu",
            crop=32,
            width=8,
        )


@pytest.fixture
def evaluated(
    worker_sessions: sessionmaker[Session],
    pg_url: str,
    s3_storage_url: tuple[str, str, str],
    tiny_pipeline: TrainedPipeline,
) -> Evaluated:
    """A pipeline registered with its checkpoint in S3 and evaluated as the CLI evaluates it."""
    url, access_key, secret_key = s3_storage_url
    settings = Settings(
        database_url=pg_url,
        storage_url=url,
        storage_access_key=access_key,
        storage_secret_key=secret_key,
        broker_url="memory://",
        device="cpu",
    )
    storage = storage_from_settings(settings)
    pipeline_id = register_tiny(settings, worker_sessions, storage, tiny_pipeline)
    run = Evaluated(settings, worker_sessions, pipeline_id)
    run.evaluate(seed=SEED)
    return run


def _metrics(session: Session, run: Evaluated) -> list[Metric]:
    return pipelines.metrics(session, pipeline_id=run.pipeline_id)


def test_the_figures_belong_to_the_pipeline_and_the_pairs_stay_private(
    session: Session, evaluated: Evaluated
) -> None:
    rows = _metrics(session, evaluated)
    names = [m.name for m in rows]
    assert len(names) == len(set(names))
    assert {"tstr_f1_real", "kl_real_syn", "memorisation_passed"} <= set(names)
    private = [m for m in rows if m.private]
    assert [m.name for m in private] == [AUDIT_EVIDENCE]
    evidence = private[0].details
    assert evidence[AUDITED_SAMPLES] == {"seed": SEED, "count": COUNT, "training_source": "phantom"}
    assert evidence["memorisation_passed"]["closest"]
    public = json.dumps([m.details for m in rows if not m.private])
    assert "closest" not in public and "phantom_" not in public

    # Evaluated again, its figures replace the first run's: one row per name, the new seed.
    evaluated.evaluate(seed=SEED + 1)
    session.expire_all()
    again = _metrics(session, evaluated)
    assert sorted(m.name for m in again) == sorted(names)
    evidence = next(m for m in again if m.private).details
    assert evidence[AUDITED_SAMPLES]["seed"] == SEED + 1


def test_the_sheet_draws_the_samples_the_audit_compared(
    session: Session, evaluated: Evaluated, tmp_path: Path
) -> None:
    evidence = audit_evidence(_metrics(session, evaluated))
    assert evidence is not None
    assert evidence.n_synthetic == COUNT
    assert len(evidence.closest) == COUNT
    text = describe(f"pipeline {evaluated.pipeline_id}", evidence)
    assert f"pipeline {evaluated.pipeline_id}: memorisation audit " in text
    assert f"of {COUNT} samples flagged" in text

    trained, _ = load_trained_pipeline(
        evaluated.settings, evaluated.sessions, evaluated.pipeline_id, "cpu"
    )
    path = tmp_path / "closest.png"
    write_pipeline_sheet(trained, evidence, path)
    assert [p.name for p in tmp_path.iterdir()] == ["closest.png"]
    sheet = np.asarray(Image.open(path).convert("RGB"))

    def tile(row: int, col: int) -> np.ndarray:
        top = CAPTION + row * (CAPTION + TILE + GAP) + CAPTION
        left = GAP + col * (TILE + GAP)
        return sheet[top : top + TILE, left : left + TILE]

    def drawn(array: np.ndarray) -> np.ndarray:
        # SIZE px scaled up to a tile: every pixel repeated, nothing blended.
        image = to_pil(array).convert("RGB").resize((TILE, TILE), Image.Resampling.NEAREST)
        return np.asarray(image)

    samples = generate_pairs(trained, count=COUNT, seed=SEED)
    training = {p.name: p for p in training_split("phantom", resolution=SIZE)}
    for row, pair in enumerate(evidence.closest):
        name, flip = pair.match(evidence.thresholds)
        sample = samples[pair.synthetic_index]
        assert (tile(row, 0) == drawn(sample.image)).all(), row
        assert (tile(row, 1) == drawn(flipped_like_audit(training[name].image, flip))).all()
        assert (tile(row, 2) == drawn(sample.mask)).all(), row
    # Each row shows its own sample: the tiles of two samples differ.
    assert (tile(0, 0) != tile(1, 0)).any()


def test_an_audit_that_did_not_record_its_samples_is_not_drawn(
    session: Session, evaluated: Evaluated, tmp_path: Path
) -> None:
    evidence = audit_evidence(_metrics(session, evaluated))
    assert evidence is not None
    trained, _ = load_trained_pipeline(
        evaluated.settings, evaluated.sessions, evaluated.pipeline_id, "cpu"
    )
    with pytest.raises(ValueError, match="did not record which samples"):
        write_pipeline_sheet(trained, replace(evidence, audited_samples=None), tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []
