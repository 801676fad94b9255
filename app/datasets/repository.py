"""Read queries over published datasets, shared by the REST API and the HTML pages.

Only datasets whose status is ``published`` are ever returned from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlalchemy import ColumnElement, Select, and_, func, or_, select
from sqlalchemy.orm import Session, aliased

from app.tables import Dataset, DatasetStatus, Metric

SortKey = Literal["date", "size", "score"]
SCORE_METRIC = "tstr_f1_synthetic"


@dataclass(frozen=True)
class DatasetFilters:
    resolution: int | None = None
    pipeline_id: int | None = None
    licence: str | None = None
    min_f1: float | None = None  # on the metric named "tstr_f1_synthetic"
    q: str | None = None  # case-insensitive text search in title and description
    sort: SortKey = "date"
    descending: bool = True


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _filtered(filters: DatasetFilters) -> tuple[Select[tuple[Dataset]], ColumnElement[float]]:
    score = aliased(Metric)
    query = (
        select(Dataset)
        .outerjoin(
            score,
            and_(
                score.dataset_id == Dataset.id,
                score.name == SCORE_METRIC,
                score.private.is_(False),
            ),
        )
        .where(Dataset.status == DatasetStatus.published)
    )
    if filters.resolution is not None:
        query = query.where(Dataset.resolution == filters.resolution)
    if filters.pipeline_id is not None:
        query = query.where(Dataset.pipeline_id == filters.pipeline_id)
    if filters.licence is not None:
        query = query.where(Dataset.licence == filters.licence)
    if filters.min_f1 is not None:
        query = query.where(score.value >= filters.min_f1)
    if filters.q:
        pattern = f"%{_escape_like(filters.q.strip())}%"
        query = query.where(
            or_(
                Dataset.title.ilike(pattern, escape="\\"),
                Dataset.description.ilike(pattern, escape="\\"),
            )
        )
    return query, score.value


def list_published(
    session: Session, *, filters: DatasetFilters, offset: int = 0, limit: int = 20
) -> tuple[list[Dataset], int]:
    """One page of published datasets matching ``filters``, and the total that match.

    One query: the total rides along as ``count(*) OVER ()``, which PostgreSQL and SQLite
    compute over every matching row before LIMIT/OFFSET. Only a page past the end (no rows
    to carry it) costs a second, plain count.
    """
    query, score = _filtered(filters)
    if limit <= 0:
        return [], _count(session, query)
    sort_column = {
        "date": func.coalesce(Dataset.published_at, Dataset.created_at),
        "size": Dataset.archive_size,
        "score": score,
    }[filters.sort]
    if filters.descending:
        order = [sort_column.desc().nulls_last(), Dataset.id.desc()]
    else:
        order = [sort_column.asc().nulls_last(), Dataset.id.asc()]
    rows = session.execute(
        query.add_columns(func.count().over().label("total"))
        .order_by(*order)
        .offset(offset)
        .limit(limit)
    ).all()
    if not rows:
        return [], _count(session, query) if offset > 0 else 0
    return [row[0] for row in rows], int(rows[0][1])


def _count(session: Session, query: Select[tuple[Dataset]]) -> int:
    return session.scalar(select(func.count()).select_from(query.subquery())) or 0


def metric_values(
    session: Session, *, dataset_ids: list[int]
) -> dict[int, dict[str, float | None]]:
    """Public metric values by dataset id (every given id has an entry, maybe empty)."""
    result: dict[int, dict[str, float | None]] = {i: {} for i in dataset_ids}
    if not dataset_ids:
        return result
    rows = session.execute(
        select(Metric.dataset_id, Metric.name, Metric.value)
        .where(Metric.dataset_id.in_(dataset_ids), Metric.private.is_(False))
        .order_by(Metric.dataset_id, Metric.name)
    )
    for dataset_id, name, value in rows:
        result[dataset_id][name] = value
    return result


def public_metrics(session: Session, *, dataset_id: int) -> list[Metric]:
    """The public metric rows of one dataset, with their details, ordered by name."""
    return list(
        session.scalars(
            select(Metric)
            .where(Metric.dataset_id == dataset_id, Metric.private.is_(False))
            .order_by(Metric.name)
        )
    )


def get_published(session: Session, *, slug: str) -> Dataset | None:
    return session.scalars(
        select(Dataset).where(Dataset.slug == slug, Dataset.status == DatasetStatus.published)
    ).first()


def published_resolutions(session: Session) -> list[int]:
    """Resolutions offered by the gallery's filter: those of published datasets."""
    query = select(Dataset.resolution).where(Dataset.status == DatasetStatus.published).distinct()
    return sorted(session.scalars(query))
