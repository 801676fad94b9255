"""Glue between the job rows, object storage and the models library.

Each run is restartable: samples are reproducible from (pipeline, seed, index) and their
keys come from (dataset, index), so a retry overwrites what a dead attempt left behind.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.datasets.archive import package_dataset
from app.datasets.service import datasets
from app.db import session_scope
from app.jobs.queue import EVALUATE_DATASET, enqueue_after_commit
from app.jobs.service import jobs
from app.pipelines.service import pipelines
from app.samples.service import samples
from app.tables import Dataset, JobKind, Metric
from models.checkpoint import load_pipeline
from models.evaluate.report import Metric as EvaluationMetric
from models.generate import GeneratedSample, generate, generate_pairs
from models.imageio import encode_png, encode_thumbnail
from models.networks import usable_cores
from models.train import TrainedPipeline, resolve_device
from workers.celery_app import WorkerContext
from workers.realdata import real_splits

log = logging.getLogger("synthmed.runs")

BATCH = 32


@dataclass(frozen=True)
class EncodedSample:
    index: int
    seed: int
    image_png: bytes
    mask_png: bytes
    thumb_webp: bytes
    stats: dict[str, Any]


def sample_stats(sample: GeneratedSample) -> dict[str, float]:
    fov = sample.fov.astype(bool)
    inside = max(int(fov.sum()), 1)
    return {
        "vessel_fraction": round(float(sample.mask[fov].sum()) / inside, 5),
        "fov_fraction": round(float(fov.mean()), 5),
        "mean_intensity": round(float(sample.image[fov].mean()) if fov.any() else 0.0, 3),
    }


def encode_sample(sample: GeneratedSample) -> EncodedSample:
    return EncodedSample(
        index=sample.index,
        seed=sample.seed,
        image_png=encode_png(sample.image),
        mask_png=encode_png(sample.mask * np.uint8(255)),
        thumb_webp=encode_thumbnail(sample.image),
        stats=sample_stats(sample),
    )


def load_trained(ctx: WorkerContext, dataset: Dataset) -> TrainedPipeline:
    checkpoint = pipelines.checkpoint(ctx.storage, dataset.pipeline)
    return load_pipeline(checkpoint, device=resolve_device(ctx.settings.device))


def _batched(items: Iterator[GeneratedSample], size: int) -> Iterator[list[GeneratedSample]]:
    batch: list[GeneratedSample] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def generate_dataset(ctx: WorkerContext, *, job_id: int) -> None:
    """Generate every sample of the job's dataset, then hand it to evaluation.

    PNG encoding runs on one thread per usable core: at 512 px it is what limits a GPU
    worker (16 cores encoded 353 samples/s beside an H200)."""
    with session_scope(ctx.sessions) as session:
        job = jobs.get(session, job_id)
        dataset = datasets.get(session, job.dataset_id)
        trained = load_trained(ctx, dataset)
        # Samples are committed batch by batch in index order: a retry resumes after them.
        start = samples.count(session, dataset_id=dataset.id)
        count, seed = dataset.count, dataset.seed
    stream = generate(
        trained,
        count=count - start,
        seed=seed,
        start=start,
        batch_size=BATCH,
        device=resolve_device(ctx.settings.device),
        compile=ctx.settings.compile,
    )
    done = start
    # Encoding and uploads run in threads (zlib, libwebp and sockets release the GIL) while
    # the next batch is generated.
    with ThreadPoolExecutor(max_workers=usable_cores()) as pool:
        for batch in _batched(stream, BATCH):
            encoded = list(pool.map(encode_sample, batch))
            with session_scope(ctx.sessions) as session:
                dataset = datasets.get(session, dataset.id)
                for item in encoded:
                    samples.store(
                        session,
                        ctx.storage,
                        dataset=dataset,
                        index=item.index,
                        seed=item.seed,
                        image_png=item.image_png,
                        mask_png=item.mask_png,
                        thumb_webp=item.thumb_webp,
                        stats=item.stats,
                    )
                done += len(encoded)
                jobs.progress(
                    session, job_id=job_id, fraction=done / count, message=f"{done}/{count} samples"
                )
    with session_scope(ctx.sessions) as session:
        job = jobs.get(session, job_id)
        dataset = datasets.get(session, job.dataset_id)
        datasets.mark_evaluating(session, dataset=dataset)
        evaluation = jobs.create(
            session,
            kind=JobKind.evaluate,
            params=dict(job.params),
            requested_by=job.requested_by,
            dataset_id=dataset.id,
            pipeline_id=dataset.pipeline_id,
        )
        jobs.succeed(session, job_id=job_id, message=f"{count} samples generated")
        enqueue_after_commit(session, EVALUATE_DATASET, job_id=evaluation.id)
    log.info("dataset.generated dataset_id=%s count=%s", dataset.id, count)


AUDIT_PASSED = "memorisation_passed"
# Audit details that name or picture training images: kept for admins (`synthmed audit`) in
# a private row of this name, never public.
AUDIT_EVIDENCE = "memorisation_evidence"
PRIVATE_AUDIT_KEYS = ("closest",)
# In a pipeline's evidence row: which samples the audit compared with which training images,
# so they can be drawn again (a dataset keeps its samples, and its pipeline names the data).
AUDITED_SAMPLES = "audited_samples"


def metric_rows(
    measured: list[EvaluationMetric], *, audited_samples: dict[str, Any] | None = None
) -> list[Metric]:
    """Metric rows for a dataset or pipeline; the audit's evidence is split off into a private
    row, with ``audited_samples`` ({"seed", "count", "training_source"}) when given."""
    rows: list[Metric] = []
    evidence: dict[str, Any] = {} if audited_samples is None else {AUDITED_SAMPLES: audited_samples}
    for m in measured:
        details = dict(m.details)
        if m.name.startswith("memorisation_"):
            private = {k: details.pop(k) for k in PRIVATE_AUDIT_KEYS if k in details}
            if private:
                evidence[m.name] = private
        rows.append(Metric(name=m.name, value=m.value, details=details))
    if evidence:
        rows.append(Metric(name=AUDIT_EVIDENCE, value=None, details=evidence, private=True))
    return rows


def evaluate_dataset(
    ctx: WorkerContext,
    *,
    job_id: int,
    on_progress: Callable[[float, str], None] | None = None,
) -> None:
    """Measure the dataset, run the memorisation audit, package it and mark it ready."""
    from models.evaluate.report import evaluate_dataset as measure

    with session_scope(ctx.sessions) as session:
        job = jobs.get(session, job_id)
        params = dict(job.params)
        dataset = datasets.get(session, job.dataset_id)
        trained = load_trained(ctx, dataset)
        data_source = dataset.pipeline.data_source
    device = resolve_device(ctx.settings.device)
    real_train, real_test, observer = real_splits(
        data_source, resolution=dataset.resolution, real_test=params.get("real_test")
    )
    # Regenerated rather than decoded from storage: identical pixels (PNG is lossless), and
    # the FOV comes with them.
    synthetic = generate_pairs(trained, count=dataset.count, seed=dataset.seed, device=device)

    def progress(fraction: float, message: str) -> None:
        with session_scope(ctx.sessions) as session:
            jobs.progress(session, job_id=job_id, fraction=fraction, message=message)
        if on_progress is not None:
            on_progress(fraction, message)

    measured = measure(
        real_train,
        real_test,
        synthetic,
        tstr_steps=int(params.get("tstr_steps", 0)),
        seeds=tuple(range(int(params.get("tstr_seeds", 1)))),
        device=device,
        on_progress=progress,
        second_observer=observer,
        inception_weights=ctx.settings.inception_weights,
    )
    rows = metric_rows(measured)
    audit_passed = any(r.name == AUDIT_PASSED and r.value == 1.0 for r in rows)
    with session_scope(ctx.sessions) as session:
        dataset = datasets.get(session, dataset.id)
        datasets.replace_metrics(session, dataset=dataset, metrics=rows)
        datasets.record_audit(session, dataset=dataset, passed=audit_passed)
        session.refresh(dataset)
        package_dataset(session, ctx.storage, dataset=dataset, site_url=ctx.settings.site_url)
        datasets.mark_ready(session, dataset=dataset)
        if params.get("publish") and audit_passed:
            datasets.publish(session, dataset=dataset)
        jobs.succeed(session, job_id=job_id, message=f"dataset {dataset.status}")
    log.info("dataset.evaluated dataset_id=%s audit_passed=%s", dataset.id, audit_passed)
