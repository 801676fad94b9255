"""Celery entry points: take a job id, claim it, run the glue, record the outcome."""

from __future__ import annotations

import logging
from collections.abc import Callable

from botocore.exceptions import BotoCoreError
from celery import Task
from sqlalchemy.exc import OperationalError

from app.datasets.service import datasets
from app.db import session_scope
from app.jobs.queue import EVALUATE_DATASET, GENERATE_DATASET, GPU_QUEUE
from app.jobs.service import jobs
from workers import runs
from workers.celery_app import WorkerContext, celery_app, context

log = logging.getLogger("synthmed.tasks")

# Worth another attempt: the database or object store was briefly unreachable.
TRANSIENT = (OperationalError, BotoCoreError, ConnectionError, TimeoutError)
MAX_RETRIES = 3


def _run(task: Task, job_id: int, work: Callable[[WorkerContext, int], None]) -> None:
    ctx = context()
    with session_scope(ctx.sessions) as session:
        job = jobs.claim(session, job_id=job_id)
        if job is None:
            log.info("job.skipped job_id=%s (missing or already finished)", job_id)
            return
        if job.celery_id is None:
            job.celery_id = task.request.id
    try:
        work(ctx, job_id)
    except TRANSIENT as exc:
        if task.request.retries < MAX_RETRIES:
            log.warning("job.retry job_id=%s error=%s", job_id, type(exc).__name__)
            raise task.retry(exc=exc, countdown=2**task.request.retries * 5) from exc
        _fail(ctx, job_id, exc)
        raise
    except Exception as exc:
        _fail(ctx, job_id, exc)
        raise


def _fail(ctx: WorkerContext, job_id: int, exc: BaseException) -> None:
    # Nothing half-made is published: the dataset is failed along with its job.
    log.error("job.failed job_id=%s error=%s", job_id, type(exc).__name__)
    with session_scope(ctx.sessions) as session:
        jobs.fail(session, job_id=job_id, error=f"{type(exc).__name__}: {exc}")
        job = jobs.get(session, job_id)
        if job.dataset_id is not None:
            datasets.mark_failed(session, dataset=datasets.get(session, job.dataset_id))


@celery_app.task(
    name=GENERATE_DATASET, bind=True, queue=GPU_QUEUE, acks_late=True, reject_on_worker_lost=True
)
def generate_dataset(self: Task, *, job_id: int) -> None:
    _run(self, job_id, lambda ctx, jid: runs.generate_dataset(ctx, job_id=jid))


@celery_app.task(
    name=EVALUATE_DATASET, bind=True, queue=GPU_QUEUE, acks_late=True, reject_on_worker_lost=True
)
def evaluate_dataset(self: Task, *, job_id: int) -> None:
    _run(self, job_id, lambda ctx, jid: runs.evaluate_dataset(ctx, job_id=jid))
