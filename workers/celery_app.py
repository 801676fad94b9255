"""The Celery application and the per-process context its tasks run in.

`celery -A workers.celery_app worker -Q gpu --concurrency 1` runs one worker; run one per
GPU. The engine and storage client are built once per worker process, on first use.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from app.db import make_engine
from app.jobs.queue import celery_config, task_sessions
from app.settings import Settings, get_settings
from app.storage import Storage, storage_from_settings

log = logging.getLogger("synthmed.worker")

celery_app = Celery("synthmed", include=["workers.tasks"])
celery_app.conf.update(celery_config(get_settings().broker_url))


@dataclass(frozen=True)
class WorkerContext:
    settings: Settings
    sessions: sessionmaker[Session]
    storage: Storage


@lru_cache
def context() -> WorkerContext:
    settings = get_settings()
    sessions = task_sessions(make_engine(settings.database_url), settings.broker_url)
    return WorkerContext(
        settings=settings, sessions=sessions, storage=storage_from_settings(settings)
    )
