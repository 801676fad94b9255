"""Column types shared by the tables."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Enum
from sqlalchemy.types import TypeEngine


def utcnow() -> datetime:
    return datetime.now(UTC)


def str_enum(cls: type[enum.Enum]) -> Enum:
    # Stored as VARCHAR + CHECK rather than a native enum: the same migration runs on
    # SQLite and PostgreSQL, and adding a state later is a plain constraint change.
    return Enum(
        cls,
        native_enum=False,
        validate_strings=True,
        length=16,
        values_callable=lambda e: [m.value for m in e],
        name=cls.__name__.lower(),
    )


TZDateTime: TypeEngine[datetime] = DateTime(timezone=True)
JSONDict: TypeEngine[dict[str, Any]] = JSON()
