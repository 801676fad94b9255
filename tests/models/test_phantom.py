import numpy as np
import pytest

from models.data import FundusPair
from models.phantom import FOV_RADIUS, make_phantom, phantom_pairs


def test_same_seed_gives_identical_arrays() -> None:
    a, b = make_phantom(7, 64), make_phantom(7, 64)
    assert a.name == b.name
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_array_equal(a.fov, b.fov)


def test_different_seeds_differ() -> None:
    a, b = make_phantom(1, 64), make_phantom(2, 64)
    assert not np.array_equal(a.image, b.image)
    assert not np.array_equal(a.mask, b.mask)


@pytest.mark.parametrize("size", [64, 128])
def test_shapes_dtypes_and_binary_masks(size: int) -> None:
    p = make_phantom(3, size)
    assert isinstance(p, FundusPair)
    assert p.image.shape == (size, size, 3) and p.image.dtype == np.uint8
    assert p.mask.shape == (size, size) and p.mask.dtype == np.uint8
    assert p.fov.shape == (size, size) and p.fov.dtype == np.uint8
    assert set(np.unique(p.mask)) <= {0, 1}
    assert set(np.unique(p.fov)) == {0, 1}


@pytest.mark.parametrize("size", [64, 128, 256])
def test_vessel_fraction_in_fov_is_drive_like(size: int) -> None:
    for seed in range(5):
        p = make_phantom(seed, size)
        frac = p.mask[p.fov > 0].mean()
        assert 0.07 <= frac <= 0.13, (seed, size, frac)


def test_vessels_only_inside_fov_and_outside_is_black() -> None:
    p = make_phantom(4, 128)
    outside = p.fov == 0
    assert p.mask[outside].sum() == 0
    assert p.image[outside].max() == 0


@pytest.mark.parametrize("size", [64, 256])
def test_fov_is_a_centred_circle(size: int) -> None:
    fov = make_phantom(0, size).fov.astype(bool)
    expected_area = np.pi * (FOV_RADIUS * size) ** 2
    assert abs(fov.sum() - expected_area) / expected_area < 0.03
    # Symmetric under both flips and a transpose: centred and round.
    np.testing.assert_array_equal(fov, fov[::-1])
    np.testing.assert_array_equal(fov, fov[:, ::-1])
    np.testing.assert_array_equal(fov, fov.T)
    assert not fov[0].any() and not fov[:, 0].any()


def test_vessels_are_darker_than_background() -> None:
    p = make_phantom(5, 128)
    green = p.image[..., 1].astype(float)
    inside = p.fov > 0
    assert green[(p.mask > 0) & inside].mean() < green[(p.mask == 0) & inside].mean() - 10


def test_phantom_pairs_are_distinct_and_reproducible() -> None:
    pairs = phantom_pairs(4, size=32, seed=1)
    again = phantom_pairs(4, size=32, seed=1)
    assert len(pairs) == 4
    assert len({p.name for p in pairs}) == 4
    for a, b in zip(pairs, again, strict=True):
        np.testing.assert_array_equal(a.image, b.image)
    other = phantom_pairs(4, size=32, seed=2)
    assert {p.name for p in pairs}.isdisjoint({p.name for p in other})


def test_rejects_tiny_size() -> None:
    with pytest.raises(ValueError):
        make_phantom(0, 8)
