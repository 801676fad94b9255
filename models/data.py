"""Readers for retinal vessel datasets: DRIVE, STARE, CHASE_DB1, HRF, a generic layout, phantoms.

Every reader returns `FundusPair`s already cropped and resized to a square `resolution`: one
square box (centred on the field of view, as large as the image allows) is cut from image,
vessel mask and FOV alike, so the three stay aligned; the image is resized with Lanczos and the
masks by area averaging then thresholding at one half, which keeps them binary and preserves
the vessel fraction better than nearest-neighbour sampling.

Bad input raises `DataError`, whose message always names the offending file or folder.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from models.transforms import fill_fov

PHANTOM_SOURCE = "phantom"
PHANTOM_DEFAULT_COUNT = 20

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gif", ".ppm", ".bmp")

# Inside the FOV the red channel of a fundus photograph stays well above this; outside it is
# near-black camera border. Used where a dataset ships no FOV masks (STARE, CHASE_DB1).
FOV_THRESHOLD = 25


@dataclass(frozen=True)
class FundusPair:
    name: str
    image: np.ndarray  # (H, W, 3) uint8 RGB
    mask: np.ndarray  # (H, W) uint8 in {0, 1}: vessels
    fov: np.ndarray  # (H, W) uint8 in {0, 1}: field of view


class DataError(ValueError):
    """Input data that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class _Entry:
    """Files for one pair before reading; `fov` None means derive it from the image."""

    name: str
    image: Path
    mask: Path
    fov: Path | None


# --------------------------------------------------------------------------- public API


def load_pairs(
    source: str | Path, *, resolution: int, limit: int | None = None
) -> list[FundusPair]:
    """Load (image, vessel mask, FOV) pairs from `"phantom"` or a dataset folder.

    Pairs come sorted by name; `limit` keeps the first `limit` of them.
    """
    if resolution < 8:
        raise ValueError(f"resolution must be at least 8, got {resolution}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be non-negative, got {limit}")
    if isinstance(source, str) and source == PHANTOM_SOURCE:
        # Imported here because phantom builds FundusPair from this module.
        from models.phantom import phantom_pairs

        count = PHANTOM_DEFAULT_COUNT if limit is None else limit
        return phantom_pairs(count, size=resolution, seed=0)
    entries = _discover(Path(source))
    if limit is not None:
        entries = entries[:limit]
    return [_load_entry(e, resolution) for e in entries]


def resized(pair: FundusPair, resolution: int) -> FundusPair:
    """A loaded pair at another square size, resized as the readers resize."""
    return FundusPair(
        name=pair.name,
        image=_resize_rgb(pair.image, resolution),
        mask=_resize_binary(pair.mask, resolution, keep_fraction=True),
        fov=_resize_binary(pair.fov, resolution),
    )


def fingerprint(pairs: Sequence[FundusPair]) -> str:
    """SHA-256 hex digest over names and pixel data, independent of the order of `pairs`."""
    digests = sorted(_pair_digest(p) for p in pairs)
    outer = hashlib.sha256(b"synthmed-pairs-v1")
    for d in digests:
        outer.update(d)
    return outer.hexdigest()


def second_observer(folder: str | Path, *, resolution: int) -> list[np.ndarray] | None:
    """DRIVE test `2nd_manual` masks, cropped exactly as `load_pairs` crops the same folder.

    Returns None when the folder has no `2nd_manual/` (DRIVE training, other datasets). The
    list is in `load_pairs` order; a missing file for any pair is a `DataError`.
    """
    folder = Path(folder)
    second = folder / "2nd_manual"
    if not second.is_dir() or not _is_drive_split(folder):
        return None
    entries = read_drive_split(folder)
    out: list[np.ndarray] = []
    for e in entries:
        number = e.name.split("_")[0]
        path = second / f"{number}_manual2.gif"
        if not path.is_file():
            raise DataError(f"{path}: missing second-observer mask for {e.image.name}")
        image = _read_rgb(e.image)
        fov = _read_binary(e.fov) if e.fov is not None else _threshold_fov(image)
        mask2 = _read_binary(path)
        _check_same_size(e.image, image.shape[:2], path, mask2.shape)
        box = _crop_box(fov)
        out.append(_resize_binary(_crop(mask2, box), resolution, keep_fraction=True))
    return out


def read_drive_split(folder: str | Path) -> list[_Entry]:
    """Entries of a DRIVE `training/` or `test/` folder, sorted by name."""
    folder = Path(folder)
    images = folder / "images"
    manual = folder / "1st_manual"
    fovs = folder / "mask"
    entries: list[_Entry] = []
    pattern = re.compile(r"^(\d+)_(training|test)$")
    for path in _image_files(images):
        m = pattern.match(path.stem)
        if m is None:
            raise DataError(f"{path}: unexpected file in DRIVE images/ (expected NN_training.tif)")
        number = m.group(1)
        mask = manual / f"{number}_manual1.gif"
        fov = fovs / f"{path.stem}_mask.gif"
        _require_partner(path, mask, "vessel annotation")
        _require_partner(path, fov, "FOV mask")
        entries.append(_Entry(path.stem, path, mask, fov))
    known = {e.mask.name for e in entries}
    for path in _image_files(manual):
        if path.name not in known:
            raise DataError(f"{path}: missing partner: no matching image in {images}")
    if not entries:
        raise DataError(f"{images}: empty folder: no DRIVE images found")
    return entries


# --------------------------------------------------------------------------- layout detection


def _discover(folder: Path) -> list[_Entry]:
    if not folder.exists():
        raise DataError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder")
    if not any(folder.iterdir()):
        raise DataError(f"{folder}: empty folder")
    if _is_drive_split(folder):
        return read_drive_split(folder)
    splits = [s for s in ("training", "test") if _is_drive_split(folder / s)]
    if splits:
        raise DataError(
            f"{folder}: this is a DRIVE root; pass one split folder instead: "
            + " or ".join(str(folder / s) for s in splits)
            + " (training/ is for GAN training, test/ for evaluation only)"
        )
    if (folder / "images").is_dir() and (folder / "manual1").is_dir():
        return _read_hrf(folder)
    if (folder / "images").is_dir() and (folder / "masks").is_dir():
        return _read_generic(folder)
    names = [p.name for p in folder.iterdir() if p.is_file()]
    readers: list[tuple[Callable[[str], bool], Callable[[Path], list[_Entry]]]] = [
        (lambda n: _STARE_IMAGE.match(n) is not None, _read_stare),
        (lambda n: _CHASE_IMAGE.match(n) is not None, _read_chase),
        (lambda n: _HRF_FLAT_IMAGE.match(n) is not None, _read_hrf_flat),
    ]
    for matches, reader in readers:
        if any(matches(n) for n in names):
            return reader(folder)
    raise DataError(
        f"{folder}: unknown layout: expected a DRIVE split (images/, 1st_manual/, mask/), "
        "STARE (imNNNN.ppm + imNNNN.ah.ppm), CHASE_DB1 (Image_NNL.jpg + Image_NNL_1stHO.png), "
        "HRF (images/, manual1/, mask/ or flat NN_h.jpg + NN_h.tif) or a generic folder "
        "(images/ + masks/, optional fov/)"
    )


def _is_drive_split(folder: Path) -> bool:
    return (folder / "images").is_dir() and (folder / "1st_manual").is_dir()


_STARE_IMAGE = re.compile(r"^(im\d{4})\.ppm(\.gz)?$", re.IGNORECASE)
_STARE_MASK = re.compile(r"^(im\d{4})\.(ah|vk)\.ppm(\.gz)?$", re.IGNORECASE)
_CHASE_IMAGE = re.compile(r"^(Image_\d+[LR])\.jpe?g$", re.IGNORECASE)
_CHASE_MASK = re.compile(r"^(Image_\d+[LR])_1stHO\.png$", re.IGNORECASE)
_HRF_FLAT_IMAGE = re.compile(r"^(\d+_(h|g|dr))\.jpe?g$", re.IGNORECASE)


def _read_stare(folder: Path) -> list[_Entry]:
    # The first observer (Hoover, ".ah") is the usual ground truth; ".vk" is the second.
    images: dict[str, Path] = {}
    masks: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if m := _STARE_IMAGE.match(p.name):
            images[m.group(1).lower()] = p
        elif (m := _STARE_MASK.match(p.name)) and m.group(2).lower() == "ah":
            masks[m.group(1).lower()] = p
    return _pair_up(images, masks, folder, fovs=None, what="STARE .ah.ppm annotation")


def _read_chase(folder: Path) -> list[_Entry]:
    images: dict[str, Path] = {}
    masks: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if m := _CHASE_IMAGE.match(p.name):
            images[m.group(1)] = p
        elif m := _CHASE_MASK.match(p.name):
            masks[m.group(1)] = p
    return _pair_up(images, masks, folder, fovs=None, what="CHASE _1stHO.png annotation")


def _read_hrf(folder: Path) -> list[_Entry]:
    images = {p.stem: p for p in _image_files(folder / "images")}
    masks = {p.stem: p for p in _image_files(folder / "manual1")}
    fov_dir = folder / "mask"
    fovs: dict[str, Path] | None = None
    if fov_dir.is_dir():
        fovs = {}
        for p in _image_files(fov_dir):
            fovs[p.stem.removesuffix("_mask")] = p
    return _pair_up(images, masks, folder, fovs=fovs, what="HRF manual1/ annotation")


def _read_hrf_flat(folder: Path) -> list[_Entry]:
    images: dict[str, Path] = {}
    masks: dict[str, Path] = {}
    fovs: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if m := _HRF_FLAT_IMAGE.match(p.name):
            images[m.group(1)] = p
        elif p.suffix.lower() in (".tif", ".tiff"):
            if p.stem.endswith("_mask"):
                fovs[p.stem.removesuffix("_mask")] = p
            else:
                masks[p.stem] = p
    return _pair_up(images, masks, folder, fovs=fovs or None, what="HRF .tif annotation")


def _read_generic(folder: Path) -> list[_Entry]:
    images = {p.stem: p for p in _image_files(folder / "images")}
    masks = {p.stem: p for p in _image_files(folder / "masks")}
    fov_dir = folder / "fov"
    fovs = {p.stem: p for p in _image_files(fov_dir)} if fov_dir.is_dir() else None
    return _pair_up(images, masks, folder, fovs=fovs, what="mask in masks/")


def _pair_up(
    images: dict[str, Path],
    masks: dict[str, Path],
    folder: Path,
    *,
    fovs: dict[str, Path] | None,
    what: str,
) -> list[_Entry]:
    """Match images to masks (and FOVs) by key; any unmatched file is a `DataError`."""
    if not images and not masks:
        raise DataError(f"{folder}: empty folder: no images found")
    for key, path in sorted(images.items()):
        if key not in masks:
            raise DataError(f"{path}: missing partner: no {what} for this image")
        if fovs is not None and key not in fovs:
            raise DataError(f"{path}: missing partner: no FOV mask for this image")
    for key, path in sorted(masks.items()):
        if key not in images:
            raise DataError(f"{path}: missing partner: no image for this annotation")
    return [
        _Entry(key, images[key], masks[key], None if fovs is None else fovs[key])
        for key in sorted(images)
    ]


def _image_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )


def _require_partner(image: Path, partner: Path, what: str) -> None:
    if not partner.is_file():
        raise DataError(f"{image.name}: missing partner: expected {what} at {partner}")


# --------------------------------------------------------------------------- reading


def _open(path: Path) -> Image.Image:
    """Open and fully decode an image; truncated or unreadable files become `DataError`."""
    try:
        if path.suffix.lower() == ".gz":
            # STARE ships its files gzipped.
            with gzip.open(path, "rb") as fh:
                data = fh.read()
            img = Image.open(io.BytesIO(data))
        else:
            img = Image.open(path)
        img.load()
    except (OSError, SyntaxError, ValueError, EOFError, UnidentifiedImageError) as exc:
        raise DataError(f"{path}: unreadable or truncated image file ({exc})") from exc
    except Image.DecompressionBombError as exc:
        raise DataError(f"{path}: image too large ({exc})") from exc
    return img


def _read_rgb(path: Path) -> np.ndarray:
    img = _open(path)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit scans: scale to 8 bits rather than clip.
        arr = np.asarray(img, dtype=np.float64)
        peak = max(float(arr.max()), 1.0)
        gray = np.rint(arr / peak * 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def _read_binary(path: Path) -> np.ndarray:
    """Read a mask stored as 0/1 or 0/255 (any two values): returns uint8 {0, 1}."""
    img = _open(path)
    if img.mode == "P":
        img = img.convert("L")
    arr = np.asarray(img)
    if arr.ndim == 3:
        # RGB(A) annotations (STARE .ppm): a pixel is foreground if any colour channel is.
        arr = arr[..., :3].max(axis=2)
    values = np.unique(arr)
    if values.size > 2:
        shown = ", ".join(str(v) for v in values[:6]) + (", ..." if values.size > 6 else "")
        raise DataError(
            f"{path}: mask is not binary: {values.size} distinct values ({shown}); "
            "expected 0/1 or 0/255"
        )
    if values.size == 2:
        return (arr == values[1]).astype(np.uint8)
    # A single value: an all-background mask is legitimate, all-foreground (e.g. FOV) too.
    return (arr > 0).astype(np.uint8)


def _threshold_fov(image: np.ndarray) -> np.ndarray:
    """FOV from the camera's black border: threshold red, then fill its holes.

    The fill keeps dark lesions or vessels inside the field from becoming holes.
    """
    bright = torch.from_numpy(image[..., 0] > FOV_THRESHOLD)
    return fill_fov(bright).numpy().astype(np.uint8)


def _check_same_size(
    image_path: Path, image_shape: tuple[int, ...], other_path: Path, other_shape: tuple[int, ...]
) -> None:
    if tuple(image_shape[:2]) != tuple(other_shape[:2]):
        h, w = image_shape[:2]
        oh, ow = other_shape[:2]
        raise DataError(
            f"{other_path}: size mismatch: {ow}x{oh} but image {image_path.name} is {w}x{h}"
        )


def _load_entry(entry: _Entry, resolution: int) -> FundusPair:
    image = _read_rgb(entry.image)
    mask = _read_binary(entry.mask)
    _check_same_size(entry.image, image.shape, entry.mask, mask.shape)
    if entry.fov is not None:
        fov = _read_binary(entry.fov)
        _check_same_size(entry.image, image.shape, entry.fov, fov.shape)
    else:
        fov = _threshold_fov(image)
    box = _crop_box(fov)
    cropped = FundusPair(
        name=entry.name, image=_crop(image, box), mask=_crop(mask, box), fov=_crop(fov, box)
    )
    return resized(cropped, resolution)


# --------------------------------------------------------------------------- geometry


def _crop_box(fov: np.ndarray) -> tuple[int, int, int]:
    """(top, left, side) of the largest square that fits the image, centred on the FOV.

    Centring on the FOV rather than the frame keeps off-centre fields (CHASE_DB1, HRF) whole
    where the frame allows; with no FOV it falls back to the frame centre.
    """
    h, w = fov.shape
    side = min(h, w)
    ys, xs = np.nonzero(fov)
    if ys.size:
        cy = (int(ys.min()) + int(ys.max()) + 1) / 2
        cx = (int(xs.min()) + int(xs.max()) + 1) / 2
    else:
        cy, cx = h / 2, w / 2
    top = int(round(cy - side / 2))
    left = int(round(cx - side / 2))
    top = min(max(top, 0), h - side)
    left = min(max(left, 0), w - side)
    return top, left, side


def _crop(arr: np.ndarray, box: tuple[int, int, int]) -> np.ndarray:
    top, left, side = box
    return arr[top : top + side, left : left + side]


def _resize_rgb(arr: np.ndarray, resolution: int) -> np.ndarray:
    if arr.shape[0] == resolution and arr.shape[1] == resolution:
        return np.ascontiguousarray(arr)
    img = Image.fromarray(np.ascontiguousarray(arr), "RGB")
    img = img.resize((resolution, resolution), Image.Resampling.LANCZOS)
    return np.asarray(img, dtype=np.uint8).copy()


def _resize_binary(arr: np.ndarray, resolution: int, *, keep_fraction: bool = False) -> np.ndarray:
    """Resize a {0, 1} mask by area averaging (bilinear when enlarging), then threshold.

    With `keep_fraction`, the threshold is chosen so the foreground fraction matches the
    source's: a fixed cut at one half erases vessels thinner than about two output pixels
    (DRIVE at 64 px loses half its vessel pixels that way), while taking the best-covered
    pixels keeps thin vessels as 1-px lines and the vessel statistics resolution-independent.
    """
    if arr.shape[0] == resolution and arr.shape[1] == resolution:
        return np.ascontiguousarray(arr, dtype=np.uint8)
    src = np.ascontiguousarray(arr, dtype=np.uint8)
    img = Image.fromarray(src * 255, "L")
    method = Image.Resampling.BOX if arr.shape[0] > resolution else Image.Resampling.BILINEAR
    cover = np.asarray(img.resize((resolution, resolution), method))
    if not keep_fraction:
        return (cover >= 128).astype(np.uint8)
    k = int(round(float(src.mean()) * resolution * resolution))
    if k == 0:
        return np.zeros((resolution, resolution), dtype=np.uint8)
    # Ties are common (a 2-px vessel in 2.2-px boxes gives many exact halves), so rank by
    # coverage first and by the 3x3 neighbourhood's coverage second, then keep exactly k.
    c = cover.astype(np.float64)
    padded = np.pad(c, 1)
    neigh = sum(
        padded[dy : dy + resolution, dx : dx + resolution] for dy in range(3) for dx in range(3)
    )
    score = c + neigh / (9 * 256.0)
    score[cover == 0] = -1.0
    flat = score.ravel()
    keep = np.argpartition(flat, flat.size - k)[flat.size - k :]
    out = np.zeros(flat.size, dtype=np.uint8)
    out[keep[flat[keep] > 0]] = 1
    return out.reshape(resolution, resolution)


def _pair_digest(pair: FundusPair) -> bytes:
    h = hashlib.sha256()
    h.update(pair.name.encode("utf-8"))
    for arr in (pair.image, pair.mask, pair.fov):
        a = np.ascontiguousarray(arr)
        h.update(f"|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.digest()
