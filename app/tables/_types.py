"""Column types shared by the tables."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Enum
from sqlalchemy.types import TypeDecorator, TypeEngine


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


class TZDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC timestamps on every backend.

    PostgreSQL keeps the offset; SQLite drops it and hands back naive values, which are UTC
    because that is all we write.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSONDict: TypeEngine[dict[str, Any]] = JSON()
