"""Dataset lifecycle: draft → generating → evaluating → ready → published (or failed).

Every status change goes through this service, whether the API, the CLI or a task asks.
"""

from __future__ import annotations

import re
import secrets

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.datasets import repository
from app.errors import BadRequest, Conflict, InvalidTransition, NotFound
from app.jobs.queue import GENERATE_DATASET, enqueue_after_commit
from app.jobs.service import jobs
from app.tables import Dataset, DatasetStatus, Job, JobKind, Metric, Pipeline, PipelineStatus
from app.tables._types import utcnow

MAX_COUNT = 100_000
_SLUG_CLEAN = re.compile(r"[^a-z0-9]+")


def slugify(title: str) -> str:
    slug = _SLUG_CLEAN.sub("-", title.lower()).strip("-")[:60]
    return slug or "dataset"


class DatasetService:
    def get(self, session: Session, dataset_id: int) -> Dataset:
        dataset = session.get(Dataset, dataset_id)
        if dataset is None:
            raise NotFound(f"no dataset {dataset_id}")
        return dataset

    def get_by_slug(self, session: Session, slug: str) -> Dataset | None:
        return session.scalars(select(Dataset).where(Dataset.slug == slug)).first()

    def get_published(self, session: Session, slug: str) -> Dataset | None:
        return repository.get_published(session, slug=slug)

    def list_all(self, session: Session) -> list[Dataset]:
        """Every dataset, drafts and failures too, newest first: the admin's list."""
        return list(session.scalars(select(Dataset).order_by(Dataset.id.desc())))

    def create_draft(
        self,
        session: Session,
        *,
        pipeline_id: int,
        title: str,
        count: int,
        seed: int | None = None,
        description: str = "",
        slug: str | None = None,
    ) -> Dataset:
        pipeline = session.get(Pipeline, pipeline_id)
        if pipeline is None:
            raise NotFound(f"no pipeline {pipeline_id}")
        if pipeline.status is not PipelineStatus.ready:
            raise Conflict(f"pipeline {pipeline_id} is {pipeline.status}, not ready")
        if not 1 <= count <= MAX_COUNT:
            raise BadRequest(f"count must be between 1 and {MAX_COUNT}")
        slug = slugify(slug or title)
        if self.get_by_slug(session, slug) is not None:
            slug = f"{slug}-{secrets.token_hex(3)}"
        dataset = Dataset(
            slug=slug,
            title=title,
            description=description,
            pipeline_id=pipeline.id,
            seed=secrets.randbits(31) if seed is None else seed,
            count=count,
            resolution=pipeline.resolution,
        )
        session.add(dataset)
        session.flush()
        return dataset

    def start_generation(self, session: Session, *, dataset: Dataset, by: str) -> Job:
        if dataset.status is not DatasetStatus.draft:
            raise InvalidTransition(dataset.status, DatasetStatus.generating)
        dataset.status = DatasetStatus.generating
        job = jobs.create(
            session,
            kind=JobKind.generate,
            params={"count": dataset.count, "seed": dataset.seed},
            requested_by=by,
            dataset_id=dataset.id,
            pipeline_id=dataset.pipeline_id,
        )
        enqueue_after_commit(session, GENERATE_DATASET, job_id=job.id)
        return job

    def mark_evaluating(self, session: Session, *, dataset: Dataset) -> None:
        self._move(dataset, DatasetStatus.generating, DatasetStatus.evaluating)
        session.flush()

    def mark_ready(self, session: Session, *, dataset: Dataset) -> None:
        # Ready means every object is written: the archive is the last of them.
        if dataset.archive_key is None:
            raise Conflict(f"dataset {dataset.id} has no archive yet")
        self._move(dataset, DatasetStatus.evaluating, DatasetStatus.ready)
        session.flush()

    def mark_failed(self, session: Session, *, dataset: Dataset) -> None:
        if dataset.status is DatasetStatus.published:
            raise InvalidTransition(dataset.status, DatasetStatus.failed)
        dataset.status = DatasetStatus.failed
        session.flush()

    def record_audit(self, session: Session, *, dataset: Dataset, passed: bool) -> None:
        dataset.audit_passed = passed
        session.flush()

    def publish(self, session: Session, *, dataset: Dataset) -> None:
        """The only door to the public: a ready dataset whose memorisation audit passed."""
        if dataset.status is not DatasetStatus.ready:
            raise InvalidTransition(dataset.status, DatasetStatus.published)
        if dataset.audit_passed is not True:
            raise Conflict(
                "the memorisation audit has not passed for this dataset; it cannot be published"
            )
        dataset.status = DatasetStatus.published
        dataset.published_at = utcnow()
        session.flush()

    def unpublish(self, session: Session, *, dataset: Dataset) -> None:
        """Take a published dataset off the site (a takedown): back to ready, so that it can
        be published again; its samples, metrics and archive are kept."""
        if dataset.status is not DatasetStatus.published:
            raise Conflict(f"the dataset is {dataset.status}, not published")
        dataset.status = DatasetStatus.ready
        dataset.published_at = None
        session.flush()

    def replace_metrics(self, session: Session, *, dataset: Dataset, metrics: list[Metric]) -> None:
        # A retried evaluation replaces its figures rather than duplicating them.
        session.execute(delete(Metric).where(Metric.dataset_id == dataset.id))
        for metric in metrics:
            metric.dataset_id = dataset.id
            session.add(metric)
        session.flush()

    @staticmethod
    def _move(dataset: Dataset, expected: DatasetStatus, new: DatasetStatus) -> None:
        # Retried tasks find the dataset already moved on: that is allowed and idempotent.
        if dataset.status in (expected, new):
            dataset.status = new
            return
        raise InvalidTransition(dataset.status, new)


datasets = DatasetService()
