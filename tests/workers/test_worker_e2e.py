"""End to end on real parts: a Celery worker process on Redis generates and evaluates a
dataset into PostgreSQL and SeaweedFS; the archive is then downloaded through the API."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from alembic import command
from fastapi.testclient import TestClient
from PIL import Image

from app.datasets.service import datasets
from app.db import make_engine, make_sessionmaker, session_scope
from app.jobs.queue import task_sessions
from app.jobs.service import jobs
from app.main import create_app
from app.settings import Settings
from app.storage import storage_from_settings
from app.tables import DatasetStatus, JobKind, JobState
from models.phantom import phantom_pairs
from models.train import train_pipeline
from tests.conftest import REDIS_URL, ROOT, alembic_config, fresh_database
from tests.tiny import tiny_config
from workers.audit import CAPTION, GAP, TILE
from workers.training import register

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def e2e_db() -> Iterator[str]:
    """A database of its own: the worker process must see committed rows."""
    with fresh_database("synthmed_e2e") as url:
        command.upgrade(alembic_config(url), "head")
        yield url


@pytest.fixture(scope="module")
def broker_url() -> Iterator[str]:
    client = redis.Redis.from_url(REDIS_URL)
    client.ping()
    client.flushdb()
    yield REDIS_URL
    client.flushdb()


@pytest.fixture
def e2e_settings(e2e_db: str, s3_storage_url: tuple[str, str, str], broker_url: str) -> Settings:
    url, access_key, secret_key = s3_storage_url
    return Settings(
        database_url=e2e_db,
        storage_url=url,
        storage_access_key=access_key,
        storage_secret_key=secret_key,
        broker_url=broker_url,
        device="cpu",
        rate_limit_per_minute=0,
    )


def _env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        SYNTHMED_DATABASE_URL=settings.database_url,
        SYNTHMED_STORAGE_URL=settings.storage_url,
        SYNTHMED_STORAGE_ACCESS_KEY=settings.storage_access_key or "",
        SYNTHMED_STORAGE_SECRET_KEY=settings.storage_secret or "",
        SYNTHMED_BROKER_URL=settings.broker_url,
        SYNTHMED_DEVICE="cpu",
    )
    return env


@pytest.fixture
def worker(e2e_settings: Settings, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    log = (tmp_path / "worker.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "worker", "--loglevel", "INFO"],
        cwd=ROOT,
        env=_env(e2e_settings),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    yield proc
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


def _tiny_pipeline(settings: Settings) -> int:
    pairs = phantom_pairs(8, size=64, seed=0)
    trained = train_pipeline(pairs, tiny_config(), steps=4, seed=0, device="cpu")
    sessions = make_sessionmaker(make_engine(settings.database_url))
    return register(
        settings,
        sessions,
        storage_from_settings(settings),
        trained=trained,
        data="phantom",
        count=len(pairs),
        name="e2e",
        seconds=0.0,
        grid=None,
    )


def test_worker_generates_evaluates_and_publishes(
    e2e_settings: Settings, worker: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    pipeline_id = _tiny_pipeline(e2e_settings)
    sessions = task_sessions(make_engine(e2e_settings.database_url), e2e_settings.broker_url)
    count = 6
    with session_scope(sessions) as session:
        dataset = datasets.create_draft(
            session, pipeline_id=pipeline_id, title="E2E fundus", count=count, seed=7
        )
        job = datasets.start_generation(session, dataset=dataset, by="test")
        job.params = {**job.params, "publish": True, "tstr_steps": 0}
        dataset_id, slug = dataset.id, dataset.slug

    deadline = time.monotonic() + 240
    status = DatasetStatus.generating
    while time.monotonic() < deadline and worker.poll() is None:
        with session_scope(sessions) as session:
            status = datasets.get(session, dataset_id).status
        if status in (DatasetStatus.published, DatasetStatus.failed):
            break
        time.sleep(0.5)
    log = (tmp_path / "worker.log").read_text(errors="replace")
    assert status is DatasetStatus.published, f"dataset is {status}; worker log:\n{log[-4000:]}"

    with session_scope(sessions) as session:
        ran = jobs.list_for_dataset(session, dataset_id=dataset_id)
        assert [(j.kind, j.state) for j in ran] == [
            (JobKind.generate, JobState.succeeded),
            (JobKind.evaluate, JobState.succeeded),
        ]
        assert all(j.progress == 1.0 for j in ran)
        evaluate_job_id = ran[1].id
        dataset = datasets.get(session, dataset_id)
        assert dataset.audit_passed is True
        names = {m.name for m in dataset.metrics}
        assert {"memorisation_passed", "kl_real_syn", "vessel_fraction"} <= names

    # The admin's view through the real CLI: the list, the finished jobs, the audit's verdict
    # and its closest pairs drawn to a local file.
    def cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "workers.cli", *args],
            cwd=ROOT,
            env=_env(e2e_settings),
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    listed = cli("datasets").splitlines()
    assert listed[0].split() == ["slug", "status", "samples", "audit", "latest", "job"]
    row = next(line for line in listed if line.startswith(slug))
    assert row.split()[1:4] == ["published", str(count), "passed"]
    assert f"evaluate job {evaluate_job_id} succeeded 100%" in row
    assert f"dataset {slug} is published" in cli("watch", slug)
    sheet = tmp_path / "closest.png"
    shown = cli("audit", slug, "--sheet", str(sheet))
    assert f"memorisation audit passed, 0 of {count} samples flagged" in shown
    assert "phantom_" in shown  # the training images matched are named
    with Image.open(sheet) as drawn:
        assert drawn.format == "PNG" and drawn.height > drawn.width
    # The pipeline's own evaluation, and its audit drawn again from regenerated samples.
    table = cli(
        *("evaluate", "--pipeline", str(pipeline_id), "--count", "4", "--seed", "5"),
        *("--tstr-steps", "2", "--seeds", "1", "--crop", "32", "--width", "8"),
    )
    assert "F1, U-Net trained on real + synthetic" in table
    shown = cli("audit", "--pipeline", str(pipeline_id), "--sheet", str(sheet))
    assert f"pipeline {pipeline_id}'s evaluation: memorisation audit passed, 0 of 4" in shown
    with Image.open(sheet) as drawn:
        assert drawn.height == CAPTION + 4 * (CAPTION + TILE + GAP)

    with TestClient(create_app(e2e_settings)) as client:
        response = client.get(f"/datasets/{slug}/download")
    assert response.status_code == 200
    assert int(response.headers["content-length"]) == len(response.content)
    assert hashlib.sha256(response.content).hexdigest() == dataset.archive_sha256

    with zipfile.ZipFile(io.BytesIO(response.content)) as zf:
        assert zf.testzip() is None
        zf.extractall(tmp_path / "unzipped")
    out = tmp_path / "unzipped"
    images = sorted(p.name for p in (out / "images").iterdir())
    assert images == [f"{i:05d}.png" for i in range(count)]
    # The same check a researcher runs: sha256sum -c SHA256SUMS
    check = subprocess.run(
        ["sha256sum", "-c", "--strict", "SHA256SUMS"], cwd=out, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.count(": OK") == 2 * count + 3
