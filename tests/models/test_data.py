import gzip
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.data import (
    DataError,
    FundusPair,
    fingerprint,
    load_pairs,
    resized,
    second_observer,
)
from tests.drive_layout import write_drive_split

# --------------------------------------------------------------------------- fixtures


def _fundus(h: int, w: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A tiny fundus-like triple: circular FOV, blocky vessels, image dark exactly on them.

    Vessels are thick blocks at asymmetric places so that any flip, shift or misaligned crop
    moves them away from the mask even after downsampling.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    fov = (yy - h / 2 + 0.5) ** 2 + (xx - w / 2 + 0.5) ** 2 <= (0.46 * min(h, w)) ** 2
    mask = np.zeros((h, w), dtype=bool)
    mask[h // 4 : h // 4 + 4, w // 5 : w // 2] = True
    mask[h // 3 : 2 * h // 3, 3 * w // 5 : 3 * w // 5 + 4] = True
    mask &= fov
    image = np.zeros((h, w, 3), dtype=np.uint8)
    image[fov] = (200, 100, 50)
    image[mask] = (60, 20, 10)
    image = np.clip(image.astype(int) + rng.integers(0, 3, image.shape) * fov[..., None], 0, 255)
    return image.astype(np.uint8), mask.astype(np.uint8), fov.astype(np.uint8)


def _save(arr: np.ndarray, path: Path, **kw: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, **kw)
    return path


def _write_drive(
    split: Path, numbers: range, kind: str = "training", h: int = 48, w: int = 44
) -> None:
    pairs = [FundusPair(f"{i:02d}", *_fundus(h, w, seed=i)) for i in numbers]
    write_drive_split(split, kind, pairs, first=numbers.start)


def _write_generic(
    folder: Path, names: list[str], h: int = 40, w: int = 40, with_fov: bool = True
) -> None:
    for k, name in enumerate(names):
        image, mask, fov = _fundus(h, w, seed=k)
        _save(image, folder / "images" / f"{name}.png")
        _save(mask, folder / "masks" / f"{name}.png")  # 0/1 storage is accepted too
        if with_fov:
            _save(fov * 255, folder / "fov" / f"{name}.png")


def _assert_valid(pairs: list[FundusPair], resolution: int) -> None:
    for p in pairs:
        assert p.image.shape == (resolution, resolution, 3) and p.image.dtype == np.uint8
        assert p.mask.shape == p.fov.shape == (resolution, resolution)
        assert p.mask.dtype == p.fov.dtype == np.uint8
        assert set(np.unique(p.mask)) <= {0, 1}
        assert set(np.unique(p.fov)) <= {0, 1}


def _assert_aligned(pair: FundusPair, exact: bool = False) -> None:
    """Image is dark where the mask is: exact at native size, by agreement after resampling."""
    dark = pair.image[..., 0] < 130
    inside = pair.fov > 0
    if exact:
        np.testing.assert_array_equal(dark & inside, (pair.mask > 0) & inside)
        return
    # Resampling blurs block edges, so compare where the darkness is rather than pixel sets:
    # the dark-weighted centroid must sit on the mask's centroid, and the mask must be dark.
    red = pair.image[..., 0].astype(float)
    # The resampled FOV rim is dark too; leave it out so it does not pull the centroid.
    inside = _erode(inside, 2)
    darkness = np.clip(190.0 - red, 0, None) * inside
    ys, xs = np.mgrid[0 : red.shape[0], 0 : red.shape[1]]
    mask = pair.mask.astype(float) * inside
    for grid in (ys, xs):
        dark_c = (grid * darkness).sum() / darkness.sum()
        mask_c = (grid * mask).sum() / mask.sum()
        assert abs(dark_c - mask_c) < 0.75, (dark_c, mask_c)
    on, off = red[(pair.mask > 0) & inside].mean(), red[(pair.mask == 0) & inside].mean()
    assert on < off - 50, (on, off)
    assert (dark == (pair.mask > 0))[inside].mean() > 0.85


def _erode(region: np.ndarray, steps: int) -> np.ndarray:
    out = region.astype(bool)
    for _ in range(steps):
        p = np.pad(out, 1)
        out = out & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return out


# --------------------------------------------------------------------------- DRIVE


def test_drive_split_loads_sorted_binary_and_square(tmp_path: Path) -> None:
    _write_drive(tmp_path / "training", range(21, 24))
    pairs = load_pairs(tmp_path / "training", resolution=32)
    assert [p.name for p in pairs] == ["21_training", "22_training", "23_training"]
    _assert_valid(pairs, 32)
    assert load_pairs(str(tmp_path / "training"), resolution=32, limit=2)[1].name == "22_training"


@pytest.mark.parametrize("resolution", [44, 22, 88])
def test_drive_alignment_survives_crop_and_resize(tmp_path: Path, resolution: int) -> None:
    _write_drive(tmp_path / "training", range(21, 22))
    (pair,) = load_pairs(tmp_path / "training", resolution=resolution)
    _assert_valid([pair], resolution)
    _assert_aligned(pair, exact=resolution == 44)


def test_a_loaded_pair_resized_to_half_keeps_its_vessel_fraction(tmp_path: Path) -> None:
    # A supersampling pipeline loads its pairs at the painted size and resizes them to the
    # published one for Stage I.
    _write_drive(tmp_path / "training", range(21, 22))
    (large,) = load_pairs(tmp_path / "training", resolution=88)
    half = resized(large, 44)
    _assert_valid([half], 44)
    _assert_aligned(half, exact=False)
    assert half.mask.sum() == round(large.mask.mean() * 44 * 44)
    same = resized(large, 88)
    for a, b in ((same.image, large.image), (same.mask, large.mask), (same.fov, large.fov)):
        np.testing.assert_array_equal(a, b)


def test_drive_root_asks_for_a_split(tmp_path: Path) -> None:
    _write_drive(tmp_path / "DRIVE" / "training", range(21, 22))
    _write_drive(tmp_path / "DRIVE" / "test", range(1, 2), kind="test")
    with pytest.raises(DataError, match="training") as info:
        load_pairs(tmp_path / "DRIVE", resolution=32)
    assert "DRIVE" in str(info.value) and "test" in str(info.value)


def test_second_observer_matches_load_pairs_order(tmp_path: Path) -> None:
    split = tmp_path / "test"
    _write_drive(split, range(1, 4), kind="test")
    for i in range(1, 4):
        _, mask, _ = _fundus(48, 44, seed=i)
        _save(mask * 255, split / "2nd_manual" / f"{i:02d}_manual2.gif")
    pairs = load_pairs(split, resolution=32)
    second = second_observer(split, resolution=32)
    assert second is not None and len(second) == len(pairs)
    for p, m in zip(pairs, second, strict=True):
        np.testing.assert_array_equal(p.mask, m)
    _write_drive(tmp_path / "training", range(21, 22))
    assert second_observer(tmp_path / "training", resolution=32) is None


# --------------------------------------------------------------------------- other formats


def test_stare_ppm_with_threshold_fov(tmp_path: Path) -> None:
    for i in (1, 2):
        image, mask, _ = _fundus(40, 50, seed=i)
        _save(image, tmp_path / f"im{i:04d}.ppm")
        _save(np.repeat(mask[..., None] * 255, 3, axis=2), tmp_path / f"im{i:04d}.ah.ppm")
    pairs = load_pairs(tmp_path, resolution=40)
    assert [p.name for p in pairs] == ["im0001", "im0002"]
    _assert_valid(pairs, 40)
    _, _, fov = _fundus(40, 50, seed=1)
    expected = fov[:, 5:45]
    iou = (pairs[0].fov & expected).sum() / (pairs[0].fov | expected).sum()
    assert iou > 0.97
    _assert_aligned(pairs[0], exact=True)


def test_stare_gzipped_as_distributed(tmp_path: Path) -> None:
    image, mask, _ = _fundus(40, 50)
    for arr, name in ((image, "im0077.ppm"), (mask * 255, "im0077.ah.ppm")):
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PPM")
        (tmp_path / f"{name}.gz").write_bytes(gzip.compress(buf.getvalue()))
    (pair,) = load_pairs(tmp_path, resolution=40)
    assert pair.name == "im0077"
    _assert_aligned(pair, exact=True)


def test_chase_jpg_png(tmp_path: Path) -> None:
    for name in ("Image_01L", "Image_01R"):
        image, mask, _ = _fundus(48, 52)
        _save(image, tmp_path / f"{name}.jpg", quality=95)
        _save(mask * 255, tmp_path / f"{name}_1stHO.png")
    pairs = load_pairs(tmp_path, resolution=24)
    assert [p.name for p in pairs] == ["Image_01L", "Image_01R"]
    _assert_valid(pairs, 24)
    _assert_aligned(pairs[0])


def test_hrf_nested_layout(tmp_path: Path) -> None:
    for name in ("01_h", "02_g"):
        image, mask, fov = _fundus(40, 60)
        _save(image, tmp_path / "images" / f"{name}.jpg", quality=95)
        _save(mask * 255, tmp_path / "manual1" / f"{name}.tif")
        _save(fov * 255, tmp_path / "mask" / f"{name}_mask.tif")
    pairs = load_pairs(tmp_path, resolution=20)
    assert [p.name for p in pairs] == ["01_h", "02_g"]
    _assert_valid(pairs, 20)
    _assert_aligned(pairs[1])


def test_hrf_flat_names(tmp_path: Path) -> None:
    image, mask, _ = _fundus(40, 60)
    _save(image, tmp_path / "01_h.jpg", quality=95)
    _save(mask * 255, tmp_path / "01_h.tif")
    (pair,) = load_pairs(tmp_path, resolution=40)
    assert pair.name == "01_h"
    _assert_valid([pair], 40)
    _assert_aligned(pair)


def test_generic_layout_with_and_without_fov(tmp_path: Path) -> None:
    _write_generic(tmp_path / "a", ["b", "a"])
    pairs = load_pairs(tmp_path / "a", resolution=40)
    assert [p.name for p in pairs] == ["a", "b"]
    _assert_valid(pairs, 40)
    _assert_aligned(pairs[0], exact=True)
    _write_generic(tmp_path / "nofov", ["x"], with_fov=False)
    (pair,) = load_pairs(tmp_path / "nofov", resolution=20)
    _assert_valid([pair], 20)
    assert pair.fov.mean() > 0.5


def test_phantom_source() -> None:
    pairs = load_pairs("phantom", resolution=32, limit=3)
    assert len(pairs) == 3
    _assert_valid(pairs, 32)
    assert len(load_pairs("phantom", resolution=16)) == 20


# --------------------------------------------------------------------------- bad input


def test_missing_partner_names_the_file(tmp_path: Path) -> None:
    _write_generic(tmp_path, ["a", "b"])
    (tmp_path / "masks" / "b.png").unlink()
    with pytest.raises(DataError, match="b.png") as info:
        load_pairs(tmp_path, resolution=16)
    assert "missing partner" in str(info.value)


def test_missing_drive_annotation_names_the_image(tmp_path: Path) -> None:
    _write_drive(tmp_path, range(21, 23))
    (tmp_path / "1st_manual" / "22_manual1.gif").unlink()
    with pytest.raises(DataError, match="22_training.tif"):
        load_pairs(tmp_path, resolution=16)


def test_orphan_annotation_names_the_file(tmp_path: Path) -> None:
    image, mask, _ = _fundus(40, 40)
    _save(mask * 255, tmp_path / "Image_02L_1stHO.png")
    _save(image, tmp_path / "Image_01L.jpg")
    _save(mask * 255, tmp_path / "Image_01L_1stHO.png")
    with pytest.raises(DataError, match="Image_02L_1stHO.png"):
        load_pairs(tmp_path, resolution=16)


def test_size_mismatch(tmp_path: Path) -> None:
    _write_generic(tmp_path, ["a"])
    _save(np.zeros((30, 40), dtype=np.uint8), tmp_path / "masks" / "a.png")
    with pytest.raises(DataError, match="size mismatch") as info:
        load_pairs(tmp_path, resolution=16)
    assert "a.png" in str(info.value)


def test_non_binary_mask(tmp_path: Path) -> None:
    _write_generic(tmp_path, ["a"])
    grey = np.zeros((40, 40), dtype=np.uint8)
    grey[:10] = 128
    grey[10:20] = 255
    _save(grey, tmp_path / "masks" / "a.png")
    with pytest.raises(DataError, match="not binary") as info:
        load_pairs(tmp_path, resolution=16)
    assert "a.png" in str(info.value)


@pytest.mark.parametrize("suffix", ["png", "jpg"])
def test_truncated_file(tmp_path: Path, suffix: str) -> None:
    image, mask, _ = _fundus(64, 64)
    _save(mask * 255, tmp_path / "masks" / "a.png")
    path = _save(image, tmp_path / "images" / f"a.{suffix}")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=f"a.{suffix}") as info:
        load_pairs(tmp_path, resolution=16)
    assert "truncated" in str(info.value)


def test_garbage_file(tmp_path: Path) -> None:
    _write_generic(tmp_path, ["a"])
    (tmp_path / "fov" / "a.png").write_bytes(b"not an image at all")
    with pytest.raises(DataError, match="a.png"):
        load_pairs(tmp_path, resolution=16)


def test_empty_folder(tmp_path: Path) -> None:
    empty = tmp_path / "nothing_here"
    empty.mkdir()
    with pytest.raises(DataError, match="nothing_here") as info:
        load_pairs(empty, resolution=16)
    assert "empty" in str(info.value)
    (tmp_path / "gen" / "images").mkdir(parents=True)
    (tmp_path / "gen" / "masks").mkdir()
    with pytest.raises(DataError, match="empty"):
        load_pairs(tmp_path / "gen", resolution=16)


def test_unknown_layout_and_missing_folder(tmp_path: Path) -> None:
    odd = tmp_path / "odd_layout"
    odd.mkdir()
    (odd / "readme.txt").write_text("hello")
    _save(np.zeros((8, 8), dtype=np.uint8), odd / "picture.png")
    with pytest.raises(DataError, match="odd_layout") as info:
        load_pairs(odd, resolution=16)
    assert "unknown layout" in str(info.value)
    with pytest.raises(DataError, match="does_not_exist"):
        load_pairs(tmp_path / "does_not_exist", resolution=16)


# --------------------------------------------------------------------------- fingerprint


def test_fingerprint_is_order_independent_and_content_sensitive() -> None:
    pairs = load_pairs("phantom", resolution=16, limit=3)
    fp = fingerprint(pairs)
    assert len(fp) == 64 and int(fp, 16) >= 0
    assert fingerprint(pairs[::-1]) == fp
    changed_image = pairs[0].image.copy()
    changed_image[0, 0, 0] ^= 1
    changed = [FundusPair(pairs[0].name, changed_image, pairs[0].mask, pairs[0].fov), *pairs[1:]]
    assert fingerprint(changed) != fp
    renamed = [FundusPair("other", pairs[0].image, pairs[0].mask, pairs[0].fov), *pairs[1:]]
    assert fingerprint(renamed) != fp
    assert fingerprint(pairs[:2]) != fp


# --------------------------------------------------------------------------- real DRIVE


def test_real_drive_training_at_64(drive_dir: Path) -> None:
    pairs = load_pairs(drive_dir / "training", resolution=64)
    assert len(pairs) == 20
    assert pairs[0].name == "21_training"
    _assert_valid(pairs, 64)
    for p in pairs:
        frac = p.mask[p.fov > 0].mean()
        assert 0.05 < frac < 0.2, (p.name, frac)
        assert p.image[p.fov == 0].mean() < 20  # camera border stays dark after the crop
    test = drive_dir / "test"
    if (test / "2nd_manual").is_dir():
        second = second_observer(test, resolution=64)
        assert second is not None and len(second) == 20
