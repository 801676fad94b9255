"""The worker glue and task wrapper, called as plain functions on real Postgres + S3."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from sqlalchemy.orm import Session, sessionmaker

from app.datasets.service import datasets
from app.jobs.queue import EVALUATE_DATASET, QUEUE_KEY
from app.jobs.service import jobs
from app.samples.service import samples
from app.settings import Settings
from app.storage import Storage
from app.tables import DatasetStatus, JobKind, JobState
from tests.factories import RecordingSender
from tests.tiny import register_tiny
from workers import runs, tasks
from workers.celery_app import WorkerContext


@pytest.fixture
def ctx(
    worker_sessions: sessionmaker[Session], s3_storage: Storage, settings: Settings
) -> Iterator[WorkerContext]:
    settings = settings.model_copy(update={"device": "cpu"})
    yield WorkerContext(settings=settings, sessions=worker_sessions, storage=s3_storage)


def _queued_dataset(ctx: WorkerContext, trained, *, count: int = 5) -> tuple[int, int]:  # noqa: ANN001
    pipeline_id = register_tiny(ctx.settings, ctx.sessions, ctx.storage, trained)
    with ctx.sessions() as session, session.begin():
        dataset = datasets.create_draft(
            session, pipeline_id=pipeline_id, title="Runs", count=count, seed=3
        )
        job = datasets.start_generation(session, dataset=dataset, by="test")
        return dataset.id, job.id


class TestGenerate:
    def test_generates_every_sample_and_queues_evaluation(
        self,
        ctx: WorkerContext,
        tiny_pipeline,
        sender: RecordingSender,  # noqa: ANN001
    ) -> None:
        dataset_id, job_id = _queued_dataset(ctx, tiny_pipeline)
        runs.generate_dataset(ctx, job_id=job_id)
        with ctx.sessions() as session:
            rows = samples.list(session, dataset_id=dataset_id)
            assert [r.index for r in rows] == list(range(5))
            assert all(ctx.storage.exists(r.image_key) for r in rows)
            assert datasets.get(session, dataset_id).status is DatasetStatus.evaluating
            job = jobs.get(session, job_id)
            assert (job.state, job.progress) == (JobState.succeeded, 1.0)
        evaluations = [kw for name, kw in sender.sent if name == EVALUATE_DATASET]
        assert len(evaluations) == 1

    def test_a_retry_resumes_with_identical_samples(
        self,
        ctx: WorkerContext,
        tiny_pipeline,  # noqa: ANN001
    ) -> None:
        dataset_id, job_id = _queued_dataset(ctx, tiny_pipeline)
        runs.generate_dataset(ctx, job_id=job_id)
        with ctx.sessions() as session, session.begin():
            first = {r.index: r.image_sha256 for r in samples.list(session, dataset_id=dataset_id)}
            # A worker died after committing samples 0..2: the message is redelivered.
            for row in samples.list(session, dataset_id=dataset_id)[3:]:
                session.delete(row)
            datasets.get(session, dataset_id).status = DatasetStatus.generating
            jobs.get(session, job_id).state = JobState.running
        runs.generate_dataset(ctx, job_id=job_id)
        with ctx.sessions() as session:
            again = {r.index: r.image_sha256 for r in samples.list(session, dataset_id=dataset_id)}
            assert datasets.get(session, dataset_id).status is DatasetStatus.evaluating
        assert again == first


class TestTaskFailure:
    def test_a_broken_job_fails_cleanly(
        self,
        ctx: WorkerContext,
        tiny_pipeline,
        monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
    ) -> None:
        dataset_id, job_id = _queued_dataset(ctx, tiny_pipeline)
        with ctx.sessions() as session:
            key = datasets.get(session, dataset_id).pipeline.checkpoint_key
        ctx.storage.delete(key)  # the checkpoint is gone: not transient, not retryable
        monkeypatch.setattr(tasks, "context", lambda: ctx)
        fake_task = SimpleNamespace(request=SimpleNamespace(id="t-1", retries=0))
        with pytest.raises(KeyError):
            tasks._run(fake_task, job_id, lambda c, j: runs.generate_dataset(c, job_id=j))
        with ctx.sessions() as session:
            job = jobs.get(session, job_id)
            assert job.state is JobState.failed
            assert "ObjectNotFound" in (job.error or "")
            assert datasets.get(session, dataset_id).status is DatasetStatus.failed
            assert datasets.get_published(session, datasets.get(session, dataset_id).slug) is None

    def test_a_finished_job_is_not_run_again(
        self,
        ctx: WorkerContext,
        tiny_pipeline,
        monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
    ) -> None:
        _, job_id = _queued_dataset(ctx, tiny_pipeline)
        with ctx.sessions() as session, session.begin():
            jobs.succeed(session, job_id=job_id)
        monkeypatch.setattr(tasks, "context", lambda: ctx)
        called = []
        fake_task = SimpleNamespace(request=SimpleNamespace(id="t-2", retries=0))
        tasks._run(fake_task, job_id, lambda c, j: called.append(j))
        assert called == []


def test_job_kinds_chain(ctx: WorkerContext, tiny_pipeline) -> None:  # noqa: ANN001
    dataset_id, job_id = _queued_dataset(ctx, tiny_pipeline, count=3)
    runs.generate_dataset(ctx, job_id=job_id)
    with ctx.sessions() as session:
        kinds = [j.kind for j in jobs.list_for_dataset(session, dataset_id=dataset_id)]
    assert kinds == [JobKind.generate, JobKind.evaluate]
    assert QUEUE_KEY in ctx.sessions.kw["info"]
