"""Encoding samples to PNG, and thumbnails to WebP/JPEG, off the generating thread.

Masks (2-D arrays in {0, 1}) are written as 8-bit greyscale 0/255 so that any viewer shows
them; images are RGB. PNG level 1 is the default: at these sizes it is several times faster
than level 6 for files a few percent larger.

PNGs are written with OpenCV: its level 1 took about 18 ms for a 512 px fundus image against
PIL's 25 ms (``bench/encoders.py``). PIL stays available for comparison; both give the same
pixels, modes and bit depth when decoded, but not the same bytes, which is why OpenCV is a
dependency of every install rather than used where present.
"""

from __future__ import annotations

import functools
import io
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from types import ModuleType
from typing import Literal

import numpy as np
from PIL import Image

ThumbFormat = Literal["webp", "jpeg"]
PngBackend = Literal["opencv", "pil"]


def to_pixels(array: np.ndarray) -> np.ndarray:
    """The contiguous uint8 array that is written: (H, W, 3) RGB as is; (H, W) greyscale, with
    a {0, 1} mask scaled to 0/255."""
    if array.dtype != np.uint8:
        raise ValueError(f"expected a uint8 array, got {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 3:
        return np.ascontiguousarray(array)
    if array.ndim == 2:
        if array.size and array.max() <= 1:
            array = array * np.uint8(255)
        return np.ascontiguousarray(array)
    raise ValueError(f"expected (H, W, 3) or (H, W), got shape {array.shape}")


def to_pil(array: np.ndarray) -> Image.Image:
    """(H, W, 3) uint8 -> RGB; (H, W) -> L, with a {0, 1} mask scaled to 0/255."""
    return Image.fromarray(to_pixels(array))


@functools.cache
def _cv2() -> ModuleType:
    """OpenCV, imported on first use: importing it takes a while."""
    import cv2

    return cv2


def encode_png(array: np.ndarray, *, level: int = 1, backend: PngBackend = "opencv") -> bytes:
    """PNG bytes of an RGB image or a greyscale mask (see ``to_pixels``), zlib ``level`` 0..9.

    ``backend="pil"`` is for comparisons.
    """
    if not 0 <= level <= 9:
        raise ValueError(f"PNG compress level must be 0..9, got {level}")
    if backend not in ("opencv", "pil"):
        raise ValueError(f"unknown PNG backend {backend!r}; expected 'opencv' or 'pil'")
    pixels = to_pixels(array)
    if backend == "pil":
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="PNG", compress_level=level)
        return buf.getvalue()
    cv2 = _cv2()
    if pixels.ndim == 3:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)  # OpenCV writes BGR as RGB
    ok, buf = cv2.imencode(".png", pixels, [cv2.IMWRITE_PNG_COMPRESSION, level])
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {pixels.shape} array as PNG")
    return buf.tobytes()


def encode_thumbnail(
    array: np.ndarray, *, size: int = 128, fmt: ThumbFormat = "webp", quality: int = 80
) -> bytes:
    """Fit within ``size`` x ``size`` (never upscaled), encoded as WebP or JPEG."""
    if fmt not in ("webp", "jpeg"):
        raise ValueError(f"unknown thumbnail format {fmt!r}; expected 'webp' or 'jpeg'")
    if size < 1:
        raise ValueError(f"thumbnail size must be >= 1, got {size}")
    img = to_pil(array)
    img.thumbnail((size, size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="WEBP" if fmt == "webp" else "JPEG", quality=quality)
    return buf.getvalue()


def encode_many(
    arrays: Iterable[np.ndarray],
    *,
    workers: int,
    encode: Callable[[np.ndarray], bytes] = encode_png,
) -> Iterator[bytes]:
    """Encode in a thread pool, yielding results in input order.

    Threads suffice: OpenCV and PIL release the GIL while zlib (and libwebp/libjpeg)
    compress. At most ``2 * workers`` encodes are in flight, so a lazy producer such as
    ``generate`` is not drained into memory ahead of the consumer.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if workers == 1:
        for a in arrays:
            yield encode(a)
        return
    pending: deque[Future[bytes]] = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="encode") as pool:
        try:
            for a in arrays:
                pending.append(pool.submit(encode, a))
                if len(pending) >= 2 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for f in pending:
                f.cancel()
