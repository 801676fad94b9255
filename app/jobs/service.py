"""Job rows: the one place their state changes. Callers flush; the session owner commits."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.errors import NotFound
from app.tables import Job, JobKind, JobState
from app.tables._types import utcnow

MAX_ERROR = 2000


class JobService:
    def create(
        self,
        session: Session,
        *,
        kind: JobKind,
        params: dict,
        requested_by: str,
        dataset_id: int | None = None,
        pipeline_id: int | None = None,
    ) -> Job:
        job = Job(
            kind=kind,
            params=params,
            requested_by=requested_by,
            dataset_id=dataset_id,
            pipeline_id=pipeline_id,
        )
        session.add(job)
        session.flush()
        return job

    def get(self, session: Session, job_id: int) -> Job:
        job = session.get(Job, job_id)
        if job is None:
            raise NotFound(f"no job {job_id}")
        return job

    def claim(self, session: Session, *, job_id: int) -> Job | None:
        """Lock the job and mark it running; None when it has already finished.

        A redelivered message (worker lost, acks_late) finds a running job and takes it
        over: every step it repeats overwrites the same keys.
        """
        job = session.scalars(select(Job).where(Job.id == job_id).with_for_update()).first()
        if job is None or job.state.final:
            return None
        job.state = JobState.running
        job.attempts += 1
        job.started_at = job.started_at or utcnow()
        job.error = None
        session.flush()
        return job

    def progress(self, session: Session, *, job_id: int, fraction: float, message: str) -> None:
        job = self.get(session, job_id)
        job.progress = max(0.0, min(1.0, fraction))
        job.message = message[:200]
        session.flush()

    def succeed(self, session: Session, *, job_id: int, message: str = "done") -> None:
        job = self.get(session, job_id)
        job.state = JobState.succeeded
        job.progress = 1.0
        job.message = message[:200]
        job.finished_at = utcnow()
        session.flush()

    def fail(self, session: Session, *, job_id: int, error: str) -> None:
        job = self.get(session, job_id)
        job.state = JobState.failed
        job.error = error[:MAX_ERROR]
        job.message = "failed"
        job.finished_at = utcnow()
        session.flush()

    def latest_for_datasets(self, session: Session, *, dataset_ids: list[int]) -> dict[int, Job]:
        """Each dataset's newest job, in one query; datasets without a job are left out."""
        found = session.scalars(select(Job).where(Job.dataset_id.in_(dataset_ids)).order_by(Job.id))
        return {job.dataset_id: job for job in found}

    def list_for_dataset(self, session: Session, *, dataset_id: int) -> list[Job]:
        return list(
            session.scalars(select(Job).where(Job.dataset_id == dataset_id).order_by(Job.id))
        )


jobs = JobService()
