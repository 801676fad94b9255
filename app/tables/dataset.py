from __future__ import annotations

import enum
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import BigInteger, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db import Base
from app.tables._types import TZDateTime, str_enum, utcnow

if TYPE_CHECKING:
    from app.tables.metric import Metric
    from app.tables.pipeline import Pipeline


class DatasetStatus(enum.StrEnum):
    draft = "draft"
    generating = "generating"
    evaluating = "evaluating"
    ready = "ready"
    published = "published"
    failed = "failed"


DEFAULT_LICENCE = "CC-BY-4.0"


class Dataset(Base):
    __tablename__ = "dataset"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(80), unique=True)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[DatasetStatus] = mapped_column(
        str_enum(DatasetStatus), default=DatasetStatus.draft, index=True
    )
    licence: Mapped[str] = mapped_column(String(40), default=DEFAULT_LICENCE)
    pipeline_id: Mapped[int] = mapped_column(ForeignKey("pipeline.id"), index=True)
    seed: Mapped[int] = mapped_column(BigInteger)
    count: Mapped[int] = mapped_column(Integer)
    resolution: Mapped[int] = mapped_column(Integer)
    version: Mapped[int] = mapped_column(Integer, default=1)
    archive_key: Mapped[str | None] = mapped_column(String(300))
    archive_size: Mapped[int | None] = mapped_column(BigInteger)
    archive_sha256: Mapped[str | None] = mapped_column(String(64))
    # None until the memorisation audit has run; publishing requires True.
    audit_passed: Mapped[bool | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(TZDateTime, default=utcnow, index=True)
    published_at: Mapped[datetime | None] = mapped_column(TZDateTime)

    pipeline: Mapped[Pipeline] = relationship(lazy="joined")
    metrics: Mapped[list[Metric]] = relationship(
        back_populates="dataset", cascade="all, delete-orphan", order_by="Metric.name"
    )
