from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import Float, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db import Base
from app.tables._types import JSONDict

if TYPE_CHECKING:
    from app.tables.dataset import Dataset


class Metric(Base):
    """One named figure about a dataset (or a pipeline), with its evidence in `details`."""

    __tablename__ = "metric"
    __table_args__ = (
        UniqueConstraint("dataset_id", "name"),
        UniqueConstraint("pipeline_id", "name"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int | None] = mapped_column(
        ForeignKey("dataset.id", ondelete="CASCADE"), index=True
    )
    pipeline_id: Mapped[int | None] = mapped_column(
        ForeignKey("pipeline.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(80))
    value: Mapped[float | None] = mapped_column(Float)
    details: Mapped[dict[str, Any]] = mapped_column(JSONDict, default=dict)
    # Private evidence (e.g. nearest training images) is never rendered on public pages.
    private: Mapped[bool] = mapped_column(default=False)

    dataset: Mapped[Dataset | None] = relationship(back_populates="metrics")
