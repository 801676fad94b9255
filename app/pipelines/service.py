"""Trained pipelines: the row is public metadata, the checkpoint lives in private storage."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app import keys
from app.errors import NotFound
from app.storage import Storage
from app.tables import Metric, Pipeline, PipelineStatus


class PipelineService:
    def register(
        self,
        session: Session,
        storage: Storage,
        *,
        name: str,
        config_name: str,
        config: dict[str, Any],
        resolution: int,
        training_data: str,
        data_source: str,
        data_fingerprint: str,
        steps: int,
        checkpoint: bytes,
        training_metrics: dict[str, Any],
    ) -> Pipeline:
        pipeline = Pipeline(
            name=name,
            status=PipelineStatus.training,
            config_name=config_name,
            config=config,
            resolution=resolution,
            training_data=training_data,
            data_source=data_source,
            data_fingerprint=data_fingerprint,
            steps=steps,
            training_metrics=training_metrics,
        )
        session.add(pipeline)
        session.flush()
        # The row only becomes ready once its checkpoint is safely stored.
        pipeline.checkpoint_key = keys.checkpoint(pipeline.id)
        storage.put_bytes(pipeline.checkpoint_key, checkpoint)
        pipeline.status = PipelineStatus.ready
        session.flush()
        return pipeline

    def get(self, session: Session, pipeline_id: int) -> Pipeline:
        pipeline = session.get(Pipeline, pipeline_id)
        if pipeline is None:
            raise NotFound(f"no pipeline {pipeline_id}")
        return pipeline

    def list_all(self, session: Session) -> list[Pipeline]:
        """Every pipeline, newest first: the admin's list."""
        return list(session.scalars(select(Pipeline).order_by(Pipeline.id.desc())))

    def latest_ready(self, session: Session, *, resolution: int | None = None) -> Pipeline | None:
        query = select(Pipeline).where(Pipeline.status == PipelineStatus.ready)
        if resolution is not None:
            query = query.where(Pipeline.resolution == resolution)
        return session.scalars(query.order_by(Pipeline.id.desc())).first()

    def metrics(self, session: Session, *, pipeline_id: int) -> list[Metric]:
        """The figures of the pipeline's latest `synthmed evaluate`, private rows included."""
        query = select(Metric).where(Metric.pipeline_id == pipeline_id).order_by(Metric.name)
        return list(session.scalars(query))

    def metric_values(
        self, session: Session, *, pipeline_ids: list[int], names: tuple[str, ...]
    ) -> dict[int, dict[str, float | None]]:
        """The named figures of several pipelines in one query: {pipeline id: {name: value}}."""
        query = select(Metric.pipeline_id, Metric.name, Metric.value).where(
            Metric.pipeline_id.in_(pipeline_ids), Metric.name.in_(names)
        )
        values: dict[int, dict[str, float | None]] = {}
        for pipeline_id, name, value in session.execute(query):
            values.setdefault(pipeline_id, {})[name] = value
        return values

    def replace_metrics(self, session: Session, *, pipeline_id: int, metrics: list[Metric]) -> None:
        # An evaluation run again replaces its figures rather than mixing two runs' rows.
        session.execute(delete(Metric).where(Metric.pipeline_id == pipeline_id))
        for metric in metrics:
            metric.pipeline_id = pipeline_id
        session.add_all(metrics)
        session.flush()

    def checkpoint(self, storage: Storage, pipeline: Pipeline) -> bytes:
        if pipeline.checkpoint_key is None or pipeline.status is not PipelineStatus.ready:
            raise NotFound(f"pipeline {pipeline.id} has no checkpoint")
        return storage.get_bytes(pipeline.checkpoint_key)


pipelines = PipelineService()
