"""Train a pipeline from the CLI: progress bar, resumable local checkpoint, sample grids,
then register it with its checkpoint in private storage."""

from __future__ import annotations

import io
import time
from pathlib import Path

from PIL import Image
from sqlalchemy.orm import Session, sessionmaker
from tqdm import tqdm

from app import keys
from app.db import session_scope
from app.pipelines.service import pipelines
from app.settings import DEFAULT_VAR, Settings
from app.storage import Storage, storage_from_settings
from models.checkpoint import load_pipeline, save_pipeline, write_pipeline
from models.config import named_config
from models.data import fingerprint, load_pairs
from models.train import TrainedPipeline, TrainProgress, resolve_device, train_pipeline
from workers.realdata import recorded_source


def describe_source(data: str, count: int) -> str:
    # Public description of the training data: its kind and size, never a private path.
    if data == "phantom":
        return f"built-in procedural phantom fundus images ({count} pairs)"
    return f"{Path(data).name or 'private'} folder of real fundus photographs ({count} pairs)"


def train_and_register(
    settings: Settings,
    sessions: sessionmaker[Session],
    *,
    data: str,
    resolution: int,
    config_name: str,
    steps: int,
    seed: int,
    device: str,
    name: str | None,
    checkpoint: Path | None,
    resume: bool,
    checkpoint_every: int,
    sample_every: int,
    samples_dir: Path | None,
) -> int:
    config = named_config(config_name, resolution=resolution)
    pairs = load_pairs(data, resolution=config.train_resolution)
    data_fingerprint = fingerprint(pairs)
    run_dir = DEFAULT_VAR / "train" / f"{config_name}-{resolution}-{data_fingerprint[:12]}"
    checkpoint = checkpoint or run_dir / "checkpoint.pt"
    samples_dir = samples_dir or checkpoint.parent / "samples"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    samples_dir.mkdir(parents=True, exist_ok=True)
    target = resolve_device(device if device != "auto" else settings.device)

    previous: TrainedPipeline | None = None
    if resume and checkpoint.exists():
        previous = load_pipeline(checkpoint.read_bytes(), device=target, expect_config=config)

    def save(pipeline: TrainedPipeline) -> None:
        write_pipeline(pipeline, checkpoint)

    last_grid: list[bytes] = []

    def save_grid(step: int, grid) -> None:  # noqa: ANN001 - (H, W, 3) uint8 array
        buf = io.BytesIO()
        Image.fromarray(grid).save(buf, format="PNG")
        (samples_dir / f"step-{step:06d}.png").write_bytes(buf.getvalue())
        last_grid[:] = [buf.getvalue()]

    start = previous.steps_done if previous else 0
    bar = tqdm(total=steps, initial=min(start, steps), desc="training", unit="step")

    def progress(p: TrainProgress) -> None:
        bar.n = p.step
        bar.set_postfix(
            {k: f"{v:.3f}" for k, v in p.losses.items()} | {"img/s": f"{p.images_per_s:.0f}"},
            refresh=True,
        )

    if config.stage2.seg_weight > 0:
        # It trains before step 1; without a word the bar would look stuck at 0.
        bar.set_postfix_str(
            f"training the vessel-consistency segmenter ({config.stage2.seg_steps} steps)",
            refresh=True,
        )
    began = time.monotonic()
    trained = train_pipeline(
        pairs,
        config,
        steps=steps,
        seed=seed,
        device=target,
        on_progress=progress,
        resume=previous,
        on_checkpoint=save,
        checkpoint_every=checkpoint_every,
        on_samples=save_grid,
        sample_every=sample_every,
    )
    bar.n = steps
    bar.close()
    save(trained)
    return register(
        settings,
        sessions,
        storage_from_settings(settings),
        trained=trained,
        data=data,
        count=len(pairs),
        name=name
        or f"{config_name} {resolution}px on {'phantom' if data == 'phantom' else 'real'} data",
        seconds=time.monotonic() - began,
        grid=last_grid[0] if last_grid else None,
    )


def register(
    settings: Settings,
    sessions: sessionmaker[Session],
    storage: Storage,
    *,
    trained: TrainedPipeline,
    data: str,
    count: int,
    name: str,
    seconds: float,
    grid: bytes | None,
) -> int:
    with session_scope(sessions) as session:
        pipeline = pipelines.register(
            session,
            storage,
            name=name,
            config_name=trained.config.name,
            config=trained.config.to_dict(),
            resolution=trained.config.resolution,
            training_data=describe_source(data, count),
            data_source=recorded_source(data),
            data_fingerprint=trained.data_fingerprint,
            steps=trained.steps_done,
            checkpoint=save_pipeline(trained),
            training_metrics={"seconds": round(seconds, 1), "steps": trained.steps_done},
        )
        if grid is not None:
            storage.put_bytes(keys.training_grid(pipeline.id), grid, content_type="image/png")
        return pipeline.id
