"""CLI work that runs in this process rather than on a worker: export to a folder, evaluate a
pipeline, and load one to draw its audit again."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker
from tqdm import tqdm

from app.datasets.archive import ArchiveMember, metadata_csv
from app.db import session_scope
from app.pipelines.service import pipelines
from app.settings import Settings
from app.storage import storage_from_settings
from models.checkpoint import load_pipeline
from models.evaluate.report import Metric as EvaluationMetric
from models.evaluate.report import evaluate_dataset
from models.generate import generate, generate_pairs
from models.networks import usable_cores
from models.train import TrainedPipeline, resolve_device
from workers.realdata import real_splits, recorded_source
from workers.runs import encode_sample, metric_rows


def load_trained_pipeline(
    settings: Settings, sessions: sessionmaker[Session], pipeline_id: int, device: str
) -> tuple[TrainedPipeline, str]:
    """The pipeline's networks from its private checkpoint, and where its training data was
    read from."""
    with session_scope(sessions) as session:
        pipeline = pipelines.get(session, pipeline_id)
        data = pipelines.checkpoint(storage_from_settings(settings), pipeline)
        source = pipeline.data_source
    return load_pipeline(data, device=resolve_device(device)), source


def generate_to_folder(
    settings: Settings,
    sessions: sessionmaker[Session],
    *,
    pipeline_id: int,
    count: int,
    seed: int,
    out: Path,
    device: str,
) -> None:
    """Write images/, masks/ and metadata.csv: the same samples a dataset job would make.

    Encodes on one thread per usable core."""
    trained, _ = load_trained_pipeline(settings, sessions, pipeline_id, device)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    rows = []
    stream = generate(
        trained, count=count, seed=seed, device=resolve_device(device), compile=settings.compile
    )
    with ThreadPoolExecutor(max_workers=usable_cores()) as pool:
        for item in tqdm(pool.map(encode_sample, stream), total=count, desc="generating"):
            member = ArchiveMember(item.index, item.seed, item.image_png, item.mask_png, item.stats)
            (out / member.image_name).write_bytes(item.image_png)
            (out / member.mask_name).write_bytes(item.mask_png)
            rows.append(member.metadata_row())
    (out / "metadata.csv").write_bytes(metadata_csv(rows))


def evaluate_pipeline(
    settings: Settings,
    sessions: sessionmaker[Session],
    *,
    pipeline_id: int,
    real_train: str | None,
    real_test: str | None,
    count: int,
    seed: int,
    tstr_steps: int,
    seeds: int,
    device: str,
    crop: int = 128,
    width: int = 32,
    inception_weights: Path | None = None,
) -> list[EvaluationMetric]:
    """TSTR and the rest on `count` fresh samples; stored as the pipeline's metrics.

    `inception_weights` (pytorch-fid's FID Inception-v3 file) adds Inception-FID/KID."""
    trained, source = load_trained_pipeline(settings, sessions, pipeline_id, device)
    target = resolve_device(device)
    resolution = trained.config.resolution
    train_pairs, test_pairs, observer = real_splits(
        real_train or source, resolution=resolution, real_test=real_test
    )
    synthetic = generate_pairs(trained, count=count, seed=seed, device=target)
    bar = tqdm(total=100, desc="evaluating")

    def progress(fraction: float, message: str) -> None:
        bar.n = int(fraction * 100)
        bar.set_postfix_str(message, refresh=True)

    try:
        measured = evaluate_dataset(
            train_pairs,
            test_pairs,
            synthetic,
            tstr_steps=tstr_steps,
            seeds=tuple(range(seeds)),
            device=target,
            on_progress=progress,
            second_observer=observer,
            crop=crop,
            base=width,
            inception_weights=inception_weights,
        )
    finally:
        bar.close()
    training_source = recorded_source(real_train or source)
    audited = {"seed": seed, "count": count, "training_source": training_source}
    with session_scope(sessions) as session:
        rows = metric_rows(measured, audited_samples=audited)
        pipelines.replace_metrics(session, pipeline_id=pipeline_id, metrics=rows)
    return measured
