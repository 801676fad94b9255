"""Train a recipe on DRIVE for a wall-clock budget, then evaluate it: the #4 table from scratch.

    python bench/drive_table.py --drive ../shared/data/DRIVE --resolution 512 \
        --train-minutes 4 --tstr-minutes 2 --out var/drive512

It needs torch, numpy and Pillow only (no database, broker or storage), so it runs as it is
on a GPU machine without the web stack. The training and evaluation are the functions the
CLI and the worker call (``train_pipeline``, ``generate``, ``evaluate_dataset``); what this
adds is the clock: training stops at its budget, and TSTR trains each segmenter for as many
steps as its budget allows (measured on the machine, never more than ``--tstr-steps``).

Writes to ``--out``: ``grid_<step>.png`` sample grids while training, ``samples.png`` and
``masks.png`` (16 generated samples), ``metrics.json`` (the rows ``synthmed evaluate``
stores), ``table.txt`` (the paper's figures beside ours) and, with ``--save``,
``pipeline.pt``: the trained pipeline, resumable. ``--pipeline FILE`` evaluates such a file
instead of training, so a change to generation or evaluation is measured on the same
networks without the half hour (on a 2-core CPU at 128 px) that training them again takes.
``--paint-real`` adds one more synthetic-only TSTR arm, on Stage II's paintings of the real
training masks (``painted_real.json`` and a line in ``table.txt``): beside the synthetic-only
arm it splits the gap to the real arm into what Stage I's masks cost and what Stage II's
painting costs, where Stage II paints from the cut mask (not with ``soft_condition``: see
the README).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

# Runnable as a plain script from the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from models.checkpoint import CheckpointError, load_pipeline, write_pipeline  # noqa: E402
from models.config import CONFIG_NAMES, PipelineConfig, named_config  # noqa: E402
from models.data import FundusPair, fingerprint, load_pairs, second_observer  # noqa: E402
from models.evaluate.report import evaluate_dataset  # noqa: E402
from models.evaluate.segmenter import train_segmenter  # noqa: E402
from models.evaluate.table import format_table  # noqa: E402
from models.evaluate.tstr import ARMS, run_tstr  # noqa: E402
from models.generate import generate_pairs, paint_masks, sample_grid  # noqa: E402
from models.train import (  # noqa: E402
    TrainedPipeline,
    TrainProgress,
    grid_noise,
    resolve_device,
    train_pipeline,
)

SHEET = 16  # samples on the contact sheets


class _BudgetSpent(Exception):
    pass


def log(message: str) -> None:
    sys.stdout.write(f"[{time.strftime('%H:%M:%S')}] {message}\n")
    sys.stdout.flush()


def train_for(
    pairs: list[FundusPair],
    cfg: PipelineConfig,
    args: argparse.Namespace,
    device: torch.device,
    out: Path,
) -> TrainedPipeline:
    """Train until --steps or --train-minutes, whichever comes first; save sample grids."""
    deadline = time.perf_counter() + args.train_minutes * 60
    latest: list[TrainedPipeline] = []

    def progress(p: TrainProgress) -> None:
        losses = " ".join(f"{k} {v:.3f}" for k, v in sorted(p.losses.items()))
        log(f"step {p.step}: {p.images_per_s:.0f} img/s; {losses}")

    def checkpoint(p: TrainedPipeline) -> None:
        # The snapshot shares the live networks: keeping it is free.
        latest[:] = [p]
        if time.perf_counter() > deadline:
            raise _BudgetSpent

    def samples(step: int, grid: np.ndarray) -> None:
        Image.fromarray(grid).save(out / f"grid_{step:06d}.png", compress_level=1)

    log(f"training {cfg.name} at {cfg.resolution} px on {len(pairs)} pairs, device {device}")
    try:
        final = train_pipeline(
            pairs,
            cfg,
            steps=args.steps,
            seed=args.seed,
            device=device,
            fast=True,
            on_progress=progress,
            progress_every=args.every,
            on_checkpoint=checkpoint,
            checkpoint_every=args.every,
            on_samples=samples,
            sample_every=args.grid_every,
        )
    except _BudgetSpent:
        final = latest[0]
        log(f"training budget spent after {final.steps_done} steps")
        noise = grid_noise(cfg, args.seed)
        grid = sample_grid(final.stage1_generator, final.stage2_generator, cfg, noise)
        samples(final.steps_done, grid)
    return final


def contact_sheet(tiles: list[np.ndarray], size: int) -> np.ndarray:
    """Tiles resized to size x size, four to a row."""
    rows = []
    for start in range(0, len(tiles), 4):
        row = [Image.fromarray(t).resize((size, size)) for t in tiles[start : start + 4]]
        rows.append(np.concatenate([np.asarray(t) for t in row], axis=1))
    return np.concatenate(rows, axis=0)


def tstr_steps_for(
    pairs: list[FundusPair], args: argparse.Namespace, device: torch.device, runs: int
) -> int:
    """As many segmenter steps per TSTR run as --tstr-minutes allows, timed here."""
    kwargs = {"batch_size": args.batch, "crop": args.crop, "base": args.width, "device": device}
    train_segmenter(pairs, steps=5, **kwargs)  # warm-up: allocator, kernels
    t0 = time.perf_counter()
    train_segmenter(pairs, steps=30, **kwargs)
    per_step = (time.perf_counter() - t0) / 30
    fits = int(args.tstr_minutes * 60 / (runs * per_step * 1.15)) // 50 * 50
    steps = max(50, min(args.tstr_steps, fits))
    log(f"segmenter: {per_step * 1000:.1f} ms/step; {runs} TSTR runs of {steps} steps")
    return steps


def painted_real_arm(
    pipeline: TrainedPipeline,
    train: list[FundusPair],
    large_train: list[FundusPair],
    test: list[FundusPair],
    args: argparse.Namespace,
    device: torch.device,
    *,
    steps: int,
    seeds: tuple[int, ...],
) -> None:
    """Synthetic-only TSTR on Stage II painting the real training masks, as the table ran:
    ``large_train`` holds them at the size the pipeline trained at."""
    painted = paint_masks(pipeline, large_train, count=args.count, seed=args.seed, device=device)
    t0 = time.perf_counter()
    result = run_tstr(
        train,
        painted,
        test,
        arms=("synthetic",),
        seeds=seeds,
        steps=steps,
        batch_size=args.batch,
        crop=args.crop,
        base=args.width,
        device=device,
    )
    arm = result.arms["synthetic"]
    log(f"painted real masks evaluated in {time.perf_counter() - t0:.0f} s")
    (args.out / "painted_real.json").write_text(
        json.dumps({"steps": steps, "count": len(painted), "per_seed": arm.per_seed}, indent=1)
    )
    f1, spread, auc = arm.mean("f1"), arm.std("f1"), arm.mean("auc")
    line = (
        "F1, U-Net trained on Stage II's paintings of the real training masks: "
        + ("undefined" if f1 is None else f"{f1:.4f} ± {spread:.4f}")
        + ("" if auc is None else f" (AUC {auc:.4f})")
    )
    with (args.out / "table.txt").open("a") as table:
        table.write(line + "\n")
    sys.stdout.write(line + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--drive", type=Path, required=True, help="folder with training/, test/")
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--config", default="default", choices=CONFIG_NAMES)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=100_000, help="at most this many steps")
    parser.add_argument("--train-minutes", type=float, default=10.0)
    parser.add_argument("--every", type=int, default=100, help="steps between reports")
    parser.add_argument("--grid-every", type=int, default=1000, help="steps between grids")
    parser.add_argument("--count", type=int, default=40, help="synthetic samples to evaluate")
    parser.add_argument("--tstr-steps", type=int, default=2000, help="at most this many")
    parser.add_argument("--tstr-minutes", type=float, default=10.0)
    parser.add_argument("--tstr-seeds", type=int, default=1)
    parser.add_argument("--batch", type=int, default=8, help="segmenter batch size")
    parser.add_argument("--crop", type=int, default=None, help="segmenter crop (default: res/2)")
    parser.add_argument("--width", type=int, default=32, help="segmenter base width")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--save", action="store_true", help="after training, write --out/pipeline.pt"
    )
    parser.add_argument(
        "--pipeline", type=Path, help="evaluate this checkpoint (from --save) instead of training"
    )
    parser.add_argument(
        "--paint-real",
        action="store_true",
        help="also train segmenters on Stage II's paintings of the real training masks",
    )
    args = parser.parse_args(argv)
    if args.save and args.pipeline is not None:
        parser.error("--save keeps a pipeline this run trains; --pipeline trains none")

    device = resolve_device(args.device)
    pipeline = None
    if args.pipeline is not None:
        try:
            pipeline = load_pipeline(args.pipeline.read_bytes(), device=device)
        except (OSError, CheckpointError) as exc:
            parser.error(f"--pipeline {args.pipeline}: {exc}")
        # The checkpoint knows its resolution; the data is read at it.
        args.resolution = pipeline.resolution
    args.crop = args.crop or args.resolution // 2
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    log(f"device {name}; torch {torch.__version__}")
    train = load_pairs(args.drive / "training", resolution=args.resolution)
    test = load_pairs(args.drive / "test", resolution=args.resolution)
    observer = second_observer(args.drive / "test", resolution=args.resolution)
    # A supersampling pipeline trains on the pairs at twice the published size.
    config = (
        pipeline.config
        if pipeline is not None
        else named_config(args.config, resolution=args.resolution)
    )
    trained_at = config.train_resolution
    large_train = (
        train
        if trained_at == args.resolution
        else load_pairs(args.drive / "training", resolution=trained_at)
    )
    if pipeline is not None and pipeline.data_fingerprint != fingerprint(large_train):
        # The audit and the real arm would then measure it against data it never saw.
        parser.error(f"--pipeline {args.pipeline} was not trained on {args.drive / 'training'}")
    args.out.mkdir(parents=True, exist_ok=True)

    if pipeline is None:
        t0 = time.perf_counter()
        pipeline = train_for(large_train, config, args, device, args.out)
        log(f"trained {pipeline.steps_done} steps in {time.perf_counter() - t0:.0f} s")
        if args.save:
            write_pipeline(pipeline, args.out / "pipeline.pt")
    else:
        log(f"evaluating {args.pipeline}: {pipeline.config.name}, {pipeline.steps_done} steps")

    t0 = time.perf_counter()
    synthetic = generate_pairs(pipeline, count=args.count, seed=args.seed, device=device)
    log(f"generated {len(synthetic)} samples in {time.perf_counter() - t0:.1f} s")
    size = min(args.resolution, 256)
    Image.fromarray(contact_sheet([s.image for s in synthetic[:SHEET]], size)).save(
        args.out / "samples.png"
    )
    masks = [s.mask * 215 + s.fov * 40 for s in synthetic[:SHEET]]
    Image.fromarray(contact_sheet(masks, size)).save(args.out / "masks.png")

    seeds = tuple(range(args.tstr_seeds))
    arms = len(ARMS) + int(args.paint_real)
    steps = tstr_steps_for(train, args, device, runs=arms * len(seeds))
    t0 = time.perf_counter()
    last = [-1.0]

    def progress(fraction: float, message: str) -> None:
        if fraction - last[0] >= 0.1 or fraction >= 1.0:
            last[0] = fraction
            log(f"evaluate {fraction:.0%}: {message}")

    metrics = evaluate_dataset(
        train,
        test,
        synthetic,
        tstr_steps=steps,
        seeds=seeds,
        device=device,
        on_progress=progress,
        second_observer=observer,
        batch_size=args.batch,
        crop=args.crop,
        base=args.width,
    )
    log(f"evaluated in {time.perf_counter() - t0:.0f} s")
    rows = [m.to_dict() for m in metrics]
    (args.out / "metrics.json").write_text(json.dumps(rows, indent=1))
    table = format_table(rows)
    (args.out / "table.txt").write_text(table + "\n")
    sys.stdout.write(table + "\n")
    if args.paint_real:
        painted_real_arm(pipeline, train, large_train, test, args, device, steps=steps, seeds=seeds)
    by_name = {r["name"]: r for r in rows}
    for key in sorted(by_name):
        if key.startswith(("tstr_sensitivity", "tstr_specificity", "memorisation_")):
            log(f"{key} {by_name[key]['value']}")


if __name__ == "__main__":
    main()
