from pathlib import Path

import numpy as np
import pytest
import torch

from models.data import load_pairs
from models.phantom import phantom_pairs
from models.transforms import (
    diff_augment,
    fill_fov,
    joint_augment,
    largest_region,
    to_tensor,
    to_uint8_image,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _coded_batch(n: int = 16, h: int = 16, w: int = 16) -> tuple[torch.Tensor, ...]:
    """Image whose channels encode mask and FOV, so any misalignment shows up exactly."""
    g = _gen(123)
    mask = (torch.rand(n, 1, h, w, generator=g) < 0.3).float()
    fov = (torch.rand(n, 1, h, w, generator=g) < 0.7).float()
    image = torch.cat([mask * 2 - 1, fov * 2 - 1, mask * fov * 2 - 1], dim=1)
    return image, mask, fov


def test_to_tensor_ranges_and_round_trip() -> None:
    pairs = phantom_pairs(3, size=32)
    images, masks, fovs = to_tensor(pairs)
    assert images.shape == (3, 3, 32, 32) and images.dtype == torch.float32
    assert masks.shape == fovs.shape == (3, 1, 32, 32)
    assert images.min() >= -1 and images.max() <= 1
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    assert set(fovs.unique().tolist()) == {0.0, 1.0}
    for i, p in enumerate(pairs):
        np.testing.assert_array_equal(to_uint8_image(images[i]), p.image)
        np.testing.assert_array_equal(masks[i, 0].numpy().astype(np.uint8), p.mask)


def test_to_uint8_image_rejects_batches() -> None:
    with pytest.raises(ValueError):
        to_uint8_image(torch.zeros(1, 3, 4, 4))


def test_joint_augment_applies_the_same_geometry_to_all_three() -> None:
    image, mask, fov = _coded_batch()
    a_img, a_mask, a_fov = joint_augment(image, mask, fov, _gen(1))
    assert a_img.shape == image.shape and a_mask.shape == mask.shape
    torch.testing.assert_close(a_img[:, 0:1], a_mask * 2 - 1, rtol=0, atol=0)
    torch.testing.assert_close(a_img[:, 1:2], a_fov * 2 - 1, rtol=0, atol=0)
    torch.testing.assert_close(a_img[:, 2:3], a_mask * a_fov * 2 - 1, rtol=0, atol=0)
    assert set(a_mask.unique().tolist()) <= {0.0, 1.0}
    # Per-sample transforms: some samples change, and not all in the same way.
    changed = [(a_mask[i] != mask[i]).any().item() for i in range(len(mask))]
    assert any(changed)


def test_joint_augment_is_reproducible() -> None:
    image, mask, fov = _coded_batch()
    first = joint_augment(image, mask, fov, _gen(5))
    second = joint_augment(image, mask, fov, _gen(5))
    for a, b in zip(first, second, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_joint_augment_covers_all_eight_symmetries() -> None:
    # A single asymmetric pixel lands in 8 distinct places under flips and quarter turns.
    mask = torch.zeros(64, 1, 8, 8)
    mask[:, 0, 1, 2] = 1
    image = mask.repeat(1, 3, 1, 1) * 2 - 1
    _, out, _ = joint_augment(image, mask, mask.clone(), _gen(2))
    places = {tuple(torch.nonzero(out[i, 0])[0].tolist()) for i in range(64)}
    assert len(places) == 8


def test_joint_augment_small_angle_keeps_masks_binary_and_aligned() -> None:
    pairs = phantom_pairs(4, size=64)
    image, mask, fov = to_tensor(pairs)
    coded = torch.cat([mask * 2 - 1, fov * 2 - 1, image[:, 2:3]], dim=1)
    a_img, a_mask, a_fov = joint_augment(coded, mask, fov, _gen(3), max_angle=15.0)
    assert set(a_mask.unique().tolist()) <= {0.0, 1.0}
    assert set(a_fov.unique().tolist()) <= {0.0, 1.0}
    agree = ((a_img[:, 0:1] > 0).float() == a_mask).float().mean()
    assert agree > 0.97
    assert not torch.equal(a_fov, fov)


def test_joint_augment_non_square_keeps_shape() -> None:
    image, mask, fov = _coded_batch(8, 12, 20)
    a_img, a_mask, a_fov = joint_augment(image, mask, fov, _gen(4))
    assert a_img.shape == (8, 3, 12, 20) and a_mask.shape == a_fov.shape == (8, 1, 12, 20)
    torch.testing.assert_close(a_img[:, 0:1], a_mask * 2 - 1, rtol=0, atol=0)


def test_diff_augment_is_differentiable_and_shape_preserving() -> None:
    x = torch.randn(4, 5, 32, 32, requires_grad=True)
    y = diff_augment(x, generator=_gen(0), rgb_channels=slice(2, 5))
    assert y.shape == x.shape
    y.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_diff_augment_colour_leaves_mask_channels_untouched() -> None:
    mask = (torch.rand(4, 2, 16, 16, generator=_gen(9)) < 0.5).float()
    rgb = torch.rand(4, 3, 16, 16, generator=_gen(10)) * 2 - 1
    x = torch.cat([mask, rgb], dim=1)
    y = diff_augment(x, "color", _gen(1), rgb_channels=slice(2, 5))
    torch.testing.assert_close(y[:, :2], mask, rtol=0, atol=0)
    assert not torch.allclose(y[:, 2:], rgb)


def test_diff_augment_geometry_moves_all_channels_together() -> None:
    mask = (torch.rand(4, 1, 16, 16, generator=_gen(9)) < 0.5).float()
    x = torch.cat([mask, mask * 2 - 1, mask * 2 - 1, mask * 2 - 1], dim=1)
    y = diff_augment(x, "translation", _gen(2), rgb_channels=slice(1, 4))
    # Zero fill shows up as 0 in every channel; elsewhere channel 1 is still 2 * mask - 1.
    moved = y[:, 0:1]
    filled = y[:, 1:2] == 0
    torch.testing.assert_close(y[:, 1:2][~filled], (moved * 2 - 1)[~filled], rtol=0, atol=0)
    assert set(moved.unique().tolist()) <= {0.0, 1.0}


def test_diff_augment_reproducible_and_rejects_unknown_policy() -> None:
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(
        diff_augment(x, generator=_gen(7)), diff_augment(x, generator=_gen(7))
    )
    with pytest.raises(ValueError, match="unknown"):
        diff_augment(x, "colour")


def test_diff_augment_cutout_zeroes_a_square() -> None:
    x = torch.ones(8, 1, 16, 16)
    y = diff_augment(x, "cutout", _gen(3))
    zeros = (y == 0).flatten(1).sum(1)
    assert (zeros > 0).all() and (zeros <= 64).all()


def test_fill_fov_fills_holes_not_dents() -> None:
    fov = torch.tensor(
        [
            [0, 0, 0, 0, 0, 0],
            [0, 1, 1, 1, 0, 0],  # a dent at the right end of a row
            [0, 1, 0, 0, 1, 0],  # a two-pixel hole
            [0, 1, 1, 1, 1, 0],
            [0, 0, 1, 0, 1, 0],  # a dent from below
            [0, 0, 0, 0, 0, 0],
        ],
        dtype=torch.float32,
    ).view(1, 1, 6, 6)
    expected = fov.clone()
    expected[0, 0, 2, 2:4] = 1  # the hole
    assert torch.equal(fill_fov(fov), expected)
    # A convex FOV, like a real one, stays as it is.
    diamond = (torch.arange(5).view(5, 1) - 2).abs() + (torch.arange(5).view(1, 5) - 2).abs()
    diamond = (diamond <= 2).float().view(1, 1, 5, 5)
    assert torch.equal(fill_fov(diamond), diamond)
    assert fill_fov(torch.zeros(1, 1, 4, 4)).sum() == 0


def test_largest_region_keeps_each_images_largest_4_connected_region() -> None:
    fov = torch.zeros(3, 1, 6, 6)
    fov[0, 0, 0:2, 0:2] = 1  # 4 px
    fov[0, 0, 2, 2] = 1  # 1 px, touching both others only at corners
    fov[0, 0, 3:6, 3:6] = 1  # 9 px: the largest
    fov[1, 0, 0:2, 0:3] = 1  # 6 px: the largest in this image
    fov[1, 0, 4:6, 4:6] = 1  # 4 px
    expected = torch.zeros_like(fov)
    expected[0, 0, 3:6, 3:6] = 1
    expected[1, 0, 0:2, 0:3] = 1
    assert torch.equal(largest_region(fov), expected)  # the third image is empty: stays so
    # A spiral one pixel wide, whose ends meet only through its whole length, beside a
    # 10 px block: it takes rounds of merging, and is kept whole.
    spiral = torch.zeros(1, 1, 9, 12)
    for (r0, c0), (r1, c1) in (  # segments from point to point (row, column)
        ((0, 0), (0, 8)),  # clockwise from the outer end: right along the top,
        ((0, 8), (8, 8)),  # down,
        ((8, 8), (8, 0)),  # left along the bottom,
        ((8, 0), (2, 0)),  # up,
        ((2, 0), (2, 6)),
        ((2, 6), (6, 6)),
        ((6, 6), (6, 2)),
        ((6, 2), (4, 2)),
        ((4, 2), (4, 4)),  # to the inner end
    ):
        spiral[0, 0, min(r0, r1) : max(r0, r1) + 1, min(c0, c1) : max(c0, c1) + 1] = 1
    with_block = spiral.clone()
    with_block[0, 0, 0:5, 10:12] = 1  # 10 px
    assert torch.equal(largest_region(with_block), spiral)
    assert largest_region(fov.to(torch.uint8)).dtype == torch.uint8


def test_phantom_fovs_are_already_filled_and_whole() -> None:
    _, _, fovs = to_tensor(load_pairs("phantom", resolution=64, limit=4))
    assert torch.equal(fill_fov(fovs), fovs)
    assert torch.equal(largest_region(fovs), fovs)


def test_drive_fovs_are_already_filled_and_whole(drive_dir: Path) -> None:
    for resolution in (128, 512):
        _, _, fovs = to_tensor(load_pairs(drive_dir / "training", resolution=resolution))
        assert torch.equal(fill_fov(fovs), fovs)
        # One region each, but for a few resized edges: at 512 px three of the forty
        # (training and test) have a speck of 1 to 3 px beside the disc.
        specks = (fovs - largest_region(fovs)).flatten(1).sum(1)
        assert specks.max() <= (0 if resolution == 128 else 3)
