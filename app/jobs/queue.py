"""Send Celery tasks by name, only after the transaction that made their rows commits.

The web process never imports `workers` (nor torch): it only needs a Celery client that
knows the broker URL and the task names below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from celery import Celery
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.db import make_sessionmaker

GENERATE_DATASET = "synthmed.generate_dataset"
EVALUATE_DATASET = "synthmed.evaluate_dataset"
GPU_QUEUE = "gpu"

_PENDING = "synthmed_pending_tasks"
QUEUE_KEY = "synthmed_queue"


class TaskSender(Protocol):
    def send(self, name: str, kwargs: dict[str, Any]) -> str | None: ...


def celery_config(broker_url: str) -> dict[str, Any]:
    """Celery settings shared by the web process (producer) and the workers.

    `filesystem:///path` is the embedded broker: kombu's filesystem transport in that
    folder, so `make demo` needs no server. Anything else (redis://...) is used as is.
    """
    config: dict[str, Any] = {
        "broker_url": broker_url,
        "task_default_queue": GPU_QUEUE,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_ignore_result": True,
        "worker_prefetch_multiplier": 1,
        "broker_connection_retry_on_startup": True,
    }
    if broker_url.startswith("filesystem://"):
        folder = Path(urlsplit(broker_url).path)
        folders = {
            "data_folder_in": folder / "queue",
            "data_folder_out": folder / "queue",
            "processed_folder": folder / "processed",
            # kombu's default is ./control: exchange tables in whatever folder it runs from.
            "control_folder": folder / "control",
        }
        for path in folders.values():
            path.mkdir(parents=True, exist_ok=True)
        config["broker_url"] = "filesystem://"
        config["broker_transport_options"] = {
            **{option: str(path) for option, path in folders.items()},
            "store_processed": False,
        }
    return config


class CeleryTaskSender:
    def __init__(self, broker_url: str) -> None:
        self._celery = Celery("synthmed-producer")
        self._celery.conf.update(celery_config(broker_url))

    def send(self, name: str, kwargs: dict[str, Any]) -> str | None:
        result = self._celery.send_task(name, kwargs=kwargs, queue=GPU_QUEUE)
        return result.id


def task_sessions(engine: Engine, broker_url: str) -> sessionmaker[Session]:
    """Sessions whose commits send the tasks queued on them to `broker_url`."""
    return make_sessionmaker(engine, info={QUEUE_KEY: CeleryTaskSender(broker_url)})


def enqueue_after_commit(session: Session, name: str, **kwargs: Any) -> None:
    session.info.setdefault(_PENDING, []).append((name, kwargs))


def send_pending(session: Session) -> None:
    pending = session.info.pop(_PENDING, [])
    sender: TaskSender | None = session.info.get(QUEUE_KEY)
    if pending and sender is None:
        raise RuntimeError("tasks were queued on a session that has no task sender")
    for name, kwargs in pending:
        assert sender is not None
        sender.send(name, kwargs)


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    send_pending(session)


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    # A task for a row that was rolled back must never reach a worker.
    session.info.pop(_PENDING, None)
