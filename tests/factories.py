"""Rows (and their stored objects) for tests, made through the same services the app uses."""

from __future__ import annotations

import io
import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image
from sqlalchemy.orm import Session

from app.datasets.archive import package_dataset
from app.datasets.service import datasets
from app.samples.service import samples
from app.storage import Storage
from app.tables import Dataset, DatasetStatus, Metric, Pipeline, PipelineStatus

_counter = itertools.count(1)


@dataclass
class RecordingSender:
    """Stands in for the broker client: remembers what would have been sent, and when."""

    sent: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def send(self, name: str, kwargs: dict[str, Any]) -> str | None:
        self.sent.append((name, kwargs))
        return None


SITE_URL = "http://testserver"


def make_pipeline(
    session: Session,
    *,
    resolution: int = 32,
    status: PipelineStatus = PipelineStatus.ready,
    config: dict[str, Any] | None = None,
) -> Pipeline:
    pipeline = Pipeline(
        name=f"test pipeline {next(_counter)}",
        status=status,
        config_name="default",
        config={"name": "default", "resolution": resolution, **(config or {})},
        resolution=resolution,
        training_data="phantom (20 procedural images)",
        data_source="phantom",
        data_fingerprint="0" * 64,
        steps=10,
    )
    session.add(pipeline)
    session.flush()
    return pipeline


def make_dataset(
    session: Session,
    *,
    pipeline: Pipeline | None = None,
    title: str | None = None,
    count: int = 4,
    status: DatasetStatus = DatasetStatus.draft,
    description: str = "",
) -> Dataset:
    pipeline = pipeline or make_pipeline(session)
    dataset = datasets.create_draft(
        session,
        pipeline_id=pipeline.id,
        title=title or f"Test dataset {next(_counter)}",
        count=count,
        seed=1234,
        description=description,
    )
    dataset.status = status
    session.flush()
    return dataset


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def webp_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="WEBP", quality=80)
    return buf.getvalue()


def fake_pair(rng: np.random.Generator, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    image = rng.integers(0, 256, size=(resolution, resolution, 3), dtype=np.uint8)
    mask = (rng.random((resolution, resolution)) < 0.1).astype(np.uint8) * 255
    return image, mask


def tstr_details(*, steps: int, seeds: int, n_train: int, n_test: int = 20) -> dict[str, Any]:
    """Details shaped as the evaluation stores them (``TSTRResult.to_metrics``)."""
    return {
        "std": 0.01,
        "per_seed": [0.7] * seeds,
        "seeds": list(range(seeds)),
        "steps": steps,
        "n_train": n_train,
        "n_test": n_test,
    }


def make_published_dataset(
    session: Session,
    storage: Storage,
    *,
    count: int = 4,
    resolution: int = 32,
    title: str | None = None,
    description: str = "",
    metrics: dict[str, float] | None = None,
    metric_details: dict[str, dict[str, Any]] | None = None,
    pipeline_config: dict[str, Any] | None = None,
    publish: bool = True,
) -> Dataset:
    """A dataset taken along the real path: samples stored, evaluated, packaged, published.

    ``metric_details`` gives some of ``metrics`` the details the evaluation stores;
    ``pipeline_config`` adds to its pipeline's stored config."""
    pipeline = make_pipeline(session, resolution=resolution, config=pipeline_config)
    dataset = make_dataset(
        session, pipeline=pipeline, title=title, count=count, description=description
    )
    dataset.status = DatasetStatus.generating
    rng = np.random.default_rng(dataset.id)
    for index in range(count):
        image, mask = fake_pair(rng, resolution)
        samples.store(
            session,
            storage,
            dataset=dataset,
            index=index,
            seed=1000 + index,
            image_png=png_bytes(image),
            mask_png=png_bytes(mask),
            thumb_webp=webp_bytes(image),
            stats={"vessel_fraction": float((mask > 0).mean())},
        )
    datasets.mark_evaluating(session, dataset=dataset)
    datasets.replace_metrics(
        session,
        dataset=dataset,
        metrics=[
            Metric(name=k, value=v, details=(metric_details or {}).get(k, {}))
            for k, v in (metrics or {}).items()
        ],
    )
    datasets.record_audit(session, dataset=dataset, passed=True)
    session.refresh(dataset)
    package_dataset(session, storage, dataset=dataset, site_url=SITE_URL)
    datasets.mark_ready(session, dataset=dataset)
    if publish:
        datasets.publish(session, dataset=dataset)
    return dataset
