from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base
from app.tables._types import JSONDict, TZDateTime, str_enum, utcnow


class PipelineStatus(enum.StrEnum):
    training = "training"
    ready = "ready"
    failed = "failed"


class Pipeline(Base):
    """A trained Stage I + Stage II pair. Its checkpoint lives in private storage."""

    __tablename__ = "pipeline"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    status: Mapped[PipelineStatus] = mapped_column(
        str_enum(PipelineStatus), default=PipelineStatus.training
    )
    config_name: Mapped[str] = mapped_column(String(40))
    config: Mapped[dict[str, Any]] = mapped_column(JSONDict, default=dict)
    resolution: Mapped[int] = mapped_column(Integer)
    # Describes the training data for the public card; never the data itself.
    training_data: Mapped[str] = mapped_column(String(200))
    # Where the private training data was read from ("phantom" or a path): admin-only,
    # used again to evaluate datasets against the same data.
    data_source: Mapped[str] = mapped_column(String(500), default="phantom")
    data_fingerprint: Mapped[str] = mapped_column(String(64))
    steps: Mapped[int] = mapped_column(Integer, default=0)
    checkpoint_key: Mapped[str | None] = mapped_column(String(300))
    training_metrics: Mapped[dict[str, Any]] = mapped_column(JSONDict, default=dict)
    created_at: Mapped[datetime] = mapped_column(TZDateTime, default=utcnow)
