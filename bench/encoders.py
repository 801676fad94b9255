"""PNG encoders compared on one fundus image and its vessel mask, in one run.

    python bench/encoders.py --repeat 20 --count 32

The sample is DRIVE's 21_training at 512 px (cropped and resized by the project's reader)
when ../shared/data/DRIVE/training is there, else a phantom. Each encoder writes the same
image (RGB) and mask (greyscale 0/255); the table gives the median milliseconds per file
and the file size, and checks that the files decode to the same pixels. Then ``encode_many``
encodes ``count`` samples (image and mask each) with 1 and 2 threads, with ``encode_png``
as the project uses it, with each level-1 encoder, and with a hash that releases the GIL as
a reference for what a second thread can gain on the machine; figures are samples per second.
These machines are noisy and shared: compare rows of one run, not figures across runs.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import io
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

# Runnable as a plain script from the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from models.data import FundusPair, load_pairs  # noqa: E402
from models.imageio import PngBackend, encode_many, encode_png  # noqa: E402
from models.phantom import make_phantom  # noqa: E402

DRIVE_TRAINING = Path(__file__).resolve().parents[2] / "shared/data/DRIVE/training"

Encoder = Callable[[np.ndarray], bytes]


def load_sample(folder: Path, size: int) -> tuple[str, FundusPair]:
    if (folder / "images" / "21_training.tif").is_file():
        return f"DRIVE {folder.name} 21", load_pairs(folder, resolution=size, limit=1)[0]
    return "phantom seed 0", make_phantom(0, size=size)


def encoder(backend: PngBackend, level: int) -> Encoder:
    return functools.partial(encode_png, level=level, backend=backend)


def ms_per_file(encode: Encoder, array: np.ndarray, repeat: int) -> float:
    encode(array)  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        encode(array)
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def samples_per_s(encode: Encoder, pair: FundusPair, count: int, workers: int) -> float:
    def arrays() -> object:
        for _ in range(count):
            yield pair.image
            yield pair.mask

    t0 = time.perf_counter()
    n_bytes = sum(len(b) for b in encode_many(arrays(), workers=workers, encode=encode))  # type: ignore[arg-type]
    elapsed = time.perf_counter() - t0
    assert n_bytes > 0
    return count / elapsed


def decoded(png: bytes) -> tuple[str, np.ndarray]:
    img = Image.open(io.BytesIO(png))
    return img.mode, np.asarray(img)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--data", type=Path, default=DRIVE_TRAINING, help="a DRIVE split")
    parser.add_argument("--repeat", type=int, default=20, help="timed encodes per file")
    parser.add_argument("--count", type=int, default=32, help="samples for encode_many")
    args = parser.parse_args(argv)

    source, pair = load_sample(args.data, args.size)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    sys.stdout.write(
        f"sample {source} at {args.size} px; {cpus} CPUs, load {load}; median of {args.repeat}\n"
    )
    encoders: list[tuple[str, Encoder]] = [
        ("PIL level 6 (default)", encoder("pil", 6)),
        ("PIL level 1", encoder("pil", 1)),
        ("OpenCV level 1", encoder("opencv", 1)),
    ]
    reference = {what: decoded(encode_png(a, backend="pil")) for what, a in _files(pair)}
    sys.stdout.write(
        f"{'encoder':<22} {'image ms':>9} {'mask ms':>8} {'image KiB':>10} {'mask KiB':>9}"
        f" {'same pixels':>12}\n"
    )
    for name, encode in encoders:
        ms = {what: ms_per_file(encode, a, args.repeat) for what, a in _files(pair)}
        out = {what: encode(a) for what, a in _files(pair)}
        same = all(
            decoded(out[what])[0] == reference[what][0]
            and np.array_equal(decoded(out[what])[1], reference[what][1])
            for what in out
        )
        sys.stdout.write(
            f"{name:<22} {ms['image']:>9.1f} {ms['mask']:>8.1f} {len(out['image']) / 1024:>10.0f}"
            f" {len(out['mask']) / 1024:>9.0f} {'yes' if same else 'NO':>12}\n"
        )

    sys.stdout.write(f"\nencode_many, {args.count} samples (image + mask), samples/s\n")
    sys.stdout.write(f"{'encoder':<22} {'1 thread':>9} {'2 threads':>10} {'2/1':>6}\n")
    rows: list[tuple[str, Encoder]] = [
        ("encode_png (OpenCV)", encode_png),
        *[(n, e) for n, e in encoders if n.endswith("level 1")],
        ("sha256 x10 (reference)", _hash),
    ]
    for name, encode in rows:
        encode(pair.image)  # warm-up
        one = samples_per_s(encode, pair, args.count, 1)
        two = samples_per_s(encode, pair, args.count, 2)
        sys.stdout.write(f"{name:<22} {one:>9.1f} {two:>10.1f} {two / one:>5.2f}x\n")
        sys.stdout.flush()


def _hash(array: np.ndarray) -> bytes:
    """Work that releases the GIL throughout: what a second thread can gain on this machine
    now (a shared machine may lend less than its CPU count)."""
    for _ in range(10):
        digest = hashlib.sha256(array).digest()
    return digest


def _files(pair: FundusPair) -> list[tuple[str, np.ndarray]]:
    return [("image", pair.image), ("mask", pair.mask)]


if __name__ == "__main__":
    main()
