"""Shared fixtures: a real PostgreSQL database per test run, migrated with Alembic.

Each test's session is bound to a connection whose outer transaction is rolled back at
teardown; code under test that commits only releases a savepoint.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn
from alembic import command
from alembic.config import Config
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session

from app.db import get_session, make_engine
from app.deps import get_storage
from app.jobs.queue import QUEUE_KEY
from app.main import create_app
from app.settings import Settings
from app.storage import Storage
from tests.factories import RecordingSender

pytest_plugins = ["tests.fixtures_storage"]

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get(
    "SYNTHMED_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("SYNTHMED_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
DRIVE_DIR = Path(os.environ.get("SYNTHMED_DRIVE_DIR", ROOT.parent / "shared" / "data" / "DRIVE"))


def alembic_config(url: str) -> Config:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.attributes["database_url"] = url
    return cfg


@contextmanager
def fresh_database(prefix: str) -> Iterator[str]:
    """A new, empty PostgreSQL database, dropped afterwards: tests never share one."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    with fresh_database("synthmed_test") as url:
        yield url


@pytest.fixture(scope="session")
def engine(pg_url: str) -> Iterator[Engine]:
    command.upgrade(alembic_config(pg_url), "head")
    engine = make_engine(pg_url)
    yield engine
    engine.dispose()


@pytest.fixture
def sender() -> RecordingSender:
    return RecordingSender()


@pytest.fixture
def session(engine: Engine, sender: RecordingSender) -> Iterator[Session]:
    conn = engine.connect()
    outer = conn.begin()
    session = Session(
        bind=conn,
        join_transaction_mode="create_savepoint",
        expire_on_commit=False,
        info={QUEUE_KEY: sender},
    )
    yield session
    session.close()
    outer.rollback()
    conn.close()


@pytest.fixture
def settings(pg_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=pg_url,
        storage_url=f"file://{tmp_path / 'objects'}",
        broker_url="memory://",
        rate_limit_per_minute=0,
    )


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
def client(app: FastAPI, session: Session, s3_storage: Storage) -> Iterator[TestClient]:
    app.dependency_overrides[get_session] = lambda: session
    app.dependency_overrides[get_storage] = lambda: s3_storage
    with TestClient(app) as c:
        yield c
    app.dependency_overrides.clear()


@pytest.fixture
def live_url(app: FastAPI, session: Session, s3_storage: Storage) -> Iterator[str]:
    """The app served by a real uvicorn on a free loopback port, on the test's session."""
    app.dependency_overrides[get_session] = lambda: session
    app.dependency_overrides[get_storage] = lambda: s3_storage
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    app.dependency_overrides.clear()


@pytest.fixture
def drive_dir() -> Path:
    if not (DRIVE_DIR / "training").is_dir():
        pytest.skip(f"DRIVE not found at {DRIVE_DIR}")
    return DRIVE_DIR
