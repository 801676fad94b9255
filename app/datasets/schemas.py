"""Response bodies of the public datasets API. Nothing private: no storage keys, no
checkpoint, no training data beyond its one-line description, no private metrics."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    detail: str = Field(examples=["no published dataset with that slug"])


class PipelineSummary(BaseModel):
    id: int
    name: str
    config_name: str
    resolution: int
    steps: int
    training_data: str = Field(description="What the pipeline was trained on, in words.")


class Licence(BaseModel):
    code: str = Field(examples=["CC-BY-4.0"])
    name: str
    url: str


class Citation(BaseModel):
    bibtex: str
    cff: str


class Archive(BaseModel):
    filename: str
    size: int = Field(description="Exact size of the zip in bytes.")
    sha256: str
    media_type: str = "application/zip"


class DatasetLinks(BaseModel):
    self: str
    page: str
    download: str
    samples: str
    croissant: str
    sha256sums: str
    metrics: str
    thumbnail: str | None = Field(description="Thumbnail of the first sample.")


class DatasetSummary(BaseModel):
    slug: str
    title: str
    description: str
    licence: str
    resolution: int
    count: int
    version: int
    pipeline_id: int
    archive_size: int | None
    archive_sha256: str | None
    created_at: datetime
    published_at: datetime | None
    metrics: dict[str, float | None] = Field(description="Public metric values by name.")
    links: DatasetLinks


class DatasetList(BaseModel):
    items: list[DatasetSummary]
    total: int = Field(description="How many published datasets match the filters.")
    limit: int
    offset: int


class MetricSummary(BaseModel):
    name: str
    value: float | None


class MetricRead(MetricSummary):
    details: dict[str, Any]


class DatasetRead(BaseModel):
    """The dataset card."""

    slug: str
    title: str
    description: str
    licence: Licence
    citation: Citation
    pipeline: PipelineSummary
    count: int
    resolution: int
    version: int
    seed: int
    archive: Archive | None
    created_at: datetime
    published_at: datetime | None
    metrics: list[MetricSummary]
    links: DatasetLinks


class SampleLinks(BaseModel):
    self: str
    image: str
    mask: str
    thumbnail: str


class SampleRead(BaseModel):
    index: int
    seed: int
    image_sha256: str
    mask_sha256: str
    stats: dict[str, Any]
    links: SampleLinks


class SampleList(BaseModel):
    items: list[SampleRead]
    total: int
    limit: int
    offset: int
