"""All tables, imported together so the metadata is complete for Alembic and relationships."""

from app.tables.dataset import DEFAULT_LICENCE, Dataset, DatasetStatus
from app.tables.job import Job, JobKind, JobState
from app.tables.metric import Metric
from app.tables.pipeline import Pipeline, PipelineStatus
from app.tables.sample import Sample

__all__ = [
    "DEFAULT_LICENCE",
    "Dataset",
    "DatasetStatus",
    "Job",
    "JobKind",
    "JobState",
    "Metric",
    "Pipeline",
    "PipelineStatus",
    "Sample",
]
