"""Migrations run up and down on a real PostgreSQL, and match the tables' metadata."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from app.db import Base
from tests.conftest import alembic_config

TABLES = {"pipeline", "dataset", "sample", "metric", "job"}


def test_upgrade_downgrade_upgrade(pg_url: str, engine) -> None:  # noqa: ANN001
    # `engine` has already migrated this database to head.
    cfg = alembic_config(pg_url)
    check = create_engine(pg_url)
    try:
        assert TABLES <= set(inspect(check).get_table_names())
        with check.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == [], f"tables and migrations disagree: {diff}"

        command.downgrade(cfg, "base")
        check.dispose()
        assert set(inspect(check).get_table_names()) <= {"alembic_version"}

        command.upgrade(cfg, "head")
        check.dispose()
        assert TABLES <= set(inspect(check).get_table_names())
    finally:
        check.dispose()
