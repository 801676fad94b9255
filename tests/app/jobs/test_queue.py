"""The embedded broker (`filesystem://`) on kombu's real filesystem transport."""

from __future__ import annotations

from pathlib import Path

import pytest
from celery import Celery

from app.jobs.queue import GENERATE_DATASET, GPU_QUEUE, CeleryTaskSender, celery_config


def test_filesystem_broker_keeps_everything_in_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # kombu writes its exchange tables to ./control unless told otherwise; `make demo`
    # runs from the repository root, so that folder landed beside the code.
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    broker_url = f"filesystem://{tmp_path / 'broker'}"

    CeleryTaskSender(broker_url).send(GENERATE_DATASET, {"dataset_id": 7})

    assert list(cwd.iterdir()) == []
    assert [p.name for p in (tmp_path / "broker" / "control").iterdir()] == ["gpu.exchange"]
    # A consumer configured like the worker reads the task back from the same folder.
    consumer = Celery("consumer")
    consumer.conf.update(celery_config(broker_url))
    with consumer.connection_for_read() as conn:
        message = conn.SimpleQueue(GPU_QUEUE).get(timeout=5)
        assert message.headers["task"] == GENERATE_DATASET
        assert message.payload[1] == {"dataset_id": 7}
        message.ack()
    assert list(cwd.iterdir()) == []
