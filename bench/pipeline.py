"""Training and generation throughput: plain fp32 eager vs the fast path, in one run.

    python bench/pipeline.py --resolutions 128 256 --steps 4 --repeats 3 --device auto

For each recipe (``--configs``, default "default") and resolution it trains on phantoms for
a few steps with ``fast=False`` and ``fast=True``, then generates with each path, and
finally generates end to end with PNG encoding (level 1, ``encode_many``, one thread per
core). Figures are images per second; the ratio column is fast / plain measured in the
same run (these machines are noisy). On CUDA the default resolutions are 256 and 512, and
generation runs 2,048 samples in batches of 128 so that a fast card is timed for more
than a few batches. ``--compile`` adds a row: the fast path's generation against the same
with torch.compile (``generate(compile=True)``, ``SYNTHMED_COMPILE``).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys
import time
from pathlib import Path

# Runnable as a plain script from the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from models.config import CONFIG_NAMES, named_config  # noqa: E402
from models.generate import generate  # noqa: E402
from models.imageio import encode_many  # noqa: E402
from models.networks import usable_cores  # noqa: E402
from models.phantom import phantom_pairs  # noqa: E402
from models.train import TrainedPipeline, resolve_device, train_pipeline  # noqa: E402


def train_rate(
    pairs: list, config: str, resolution: int, steps: int, device: torch.device, fast: bool
) -> tuple[float, TrainedPipeline]:
    """Images/s over a window of ``steps`` steps after as many that pay for warm-up.

    One report per window: each report reads the losses off the device, and a report per
    step would time a GPU that waits for the host after every step, as training does not.
    """
    rates: list[float] = []
    cfg = named_config(config, resolution=resolution)
    # The rate is per step, and a step of the consistency loss costs the same whatever the
    # segmenter learnt: one step of it spares each run its 400-step training up front.
    cfg = dataclasses.replace(cfg, stage2=dataclasses.replace(cfg.stage2, seg_steps=1))
    pipeline = train_pipeline(
        pairs,
        cfg,
        steps=2 * steps,
        device=device,
        fast=fast,
        on_progress=lambda p: rates.append(p.images_per_s),
        progress_every=steps,
    )
    return rates[-1], pipeline


def generate_rate(
    pipeline: TrainedPipeline,
    count: int,
    batch: int,
    device: torch.device,
    fast: bool,
    compile: bool = False,
) -> float:
    """Images/s over ``count`` samples, timed from the end of a first batch that pays for
    warm-up (and compilation) in the same call."""
    stream = generate(
        pipeline,
        count=count + batch,
        seed=1,
        batch_size=batch,
        device=device,
        fast=fast,
        compile=compile,
    )
    t0 = time.perf_counter()
    for i, _ in enumerate(stream):
        if i == batch - 1:
            _sync(device)
            t0 = time.perf_counter()
    _sync(device)
    return count / (time.perf_counter() - t0)


def end_to_end_rate(
    pipeline: TrainedPipeline, count: int, batch: int, device: torch.device, workers: int
) -> float:
    """Generate and PNG-encode image and mask of every sample, encoding in a thread pool."""

    def arrays() -> object:
        for s in generate(pipeline, count=count, seed=2, batch_size=batch, device=device):
            yield s.image
            yield s.mask

    t0 = time.perf_counter()
    n_bytes = sum(len(b) for b in encode_many(arrays(), workers=workers))  # type: ignore[arg-type]
    elapsed = time.perf_counter() - t0
    assert n_bytes > 0
    return count / elapsed


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="+", default=["default"], choices=CONFIG_NAMES)
    parser.add_argument("--resolutions", type=int, nargs="+", default=None)
    parser.add_argument("--steps", type=int, default=None, help="timed training steps")
    parser.add_argument("--count", type=int, default=None, help="samples to generate")
    parser.add_argument("--batch", type=int, default=None, help="generation batch size")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3, help="runs per path")
    parser.add_argument(
        "--compile", action="store_true", help="add a row: generation, fast vs torch.compile"
    )
    args = parser.parse_args(argv)

    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    resolutions = args.resolutions or ([256, 512] if cuda else [128, 256])
    steps = args.steps or (20 if cuda else 3)
    count = args.count or (2048 if cuda else 32)
    batch = args.batch or (128 if cuda else 32)
    workers = usable_cores()
    name = torch.cuda.get_device_name(device) if cuda else f"cpu x{torch.get_num_threads()}"
    sys.stdout.write(
        f"device {name}; torch {torch.__version__}; {steps} timed training steps; "
        f"{count} generated samples, batch {batch}, best of {args.repeats}\n"
    )
    header = (
        f"{'config':<12} {'res':>5} {'what':<26} {'plain img/s':>12} {'fast img/s':>12} "
        f"{'fast/plain':>11}\n"
    )
    sys.stdout.write(header)
    for config, res in itertools.product(args.configs, resolutions):
        try:
            trained_at = named_config(config, resolution=res).train_resolution
        except ValueError as exc:  # supersampled at 512 px would train at 1,024
            sys.stdout.write(f"{config:<12} {res:>5} skipped: {exc}\n")
            continue
        # A supersampling recipe trains on pairs at twice the published size.
        pairs = phantom_pairs(8, size=trained_at)
        # Interleaved, best of --repeats each: a few CPU steps take seconds, and the
        # machine's other work moves such a figure by more than the paths differ.
        train_plain = train_fast = gen_plain = gen_fast = 0.0
        for _ in range(args.repeats):
            rate, pipeline = train_rate(pairs, config, res, steps, device, fast=False)
            train_plain = max(train_plain, rate)
            rate = train_rate(pairs, config, res, steps, device, fast=True)[0]
            train_fast = max(train_fast, rate)
        for _ in range(args.repeats):
            gen_plain = max(gen_plain, generate_rate(pipeline, count, batch, device, False))
            gen_fast = max(gen_fast, generate_rate(pipeline, count, batch, device, True))
        e2e = end_to_end_rate(pipeline, count, batch, device, workers)
        rows = [
            ("train (both stages)", train_plain, train_fast),
            ("generate", gen_plain, gen_fast),
        ]
        if args.compile:
            compiled = generate_rate(pipeline, count, batch, device, True, compile=True)
            rows.append(("generate: fast, compiled", gen_fast, compiled))
        for what, plain, fast in rows:
            sys.stdout.write(
                f"{config:<12} {res:>5} {what:<26} {plain:>12.1f} {fast:>12.1f} "
                f"{fast / plain:>10.2f}x\n"
            )
        sys.stdout.write(
            f"{config:<12} {res:>5} {f'generate + PNG ({workers} thr)':<26} {'':>12} {e2e:>12.1f} "
            f"{e2e / gen_fast:>10.2f}x of generate\n"
        )
        sys.stdout.flush()


if __name__ == "__main__":
    main()
