"""What the pages read: the dataset repository shared with the REST API, plus one page-only
query (the resolutions offered by the gallery's filter)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.datasets.repository import (
    SCORE_METRIC,
    DatasetFilters,
    list_published,
    metric_values,
    public_metrics,
)
from app.tables import Dataset, DatasetStatus

KEY_METRIC = SCORE_METRIC

__all__ = [
    "KEY_METRIC",
    "DatasetFilters",
    "list_published",
    "metric_values",
    "public_metrics",
    "published_resolutions",
]


def published_resolutions(session: Session) -> list[int]:
    """Resolutions offered by the gallery's filter: those of published datasets."""
    query = select(Dataset.resolution).where(Dataset.status == DatasetStatus.published).distinct()
    return sorted(session.scalars(query))
