"""Tensor conversion and augmentation for (image, vessel mask, FOV) batches.

Conventions: images are float (N, 3, H, W) in [-1, 1]; vessel masks and FOVs are float
(N, 1, H, W) in {0, 1}. The augmentations work on whole batches with torch ops only, drawing
their randomness from an explicit `torch.Generator` so a training run is reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from models.regions import component_labels

if TYPE_CHECKING:
    from models.data import FundusPair


def to_tensor(pairs: Sequence[FundusPair]) -> tuple[Tensor, Tensor, Tensor]:
    """Stack pairs into (images in [-1, 1], masks in {0, 1}, FOVs in {0, 1}) float32 tensors."""
    if not pairs:
        raise ValueError("to_tensor needs at least one pair")
    shape = pairs[0].image.shape
    for p in pairs:
        if p.image.shape != shape or p.mask.shape != shape[:2] or p.fov.shape != shape[:2]:
            raise ValueError(
                f"pair {p.name!r} has image {p.image.shape}, mask {p.mask.shape}, "
                f"fov {p.fov.shape}; expected image {shape} and masks {shape[:2]}"
            )
    images = torch.from_numpy(np.stack([p.image for p in pairs])).permute(0, 3, 1, 2)
    images = images.float().div_(127.5).sub_(1.0).contiguous()
    masks = torch.from_numpy(np.stack([p.mask for p in pairs]) > 0).float().unsqueeze(1)
    fovs = torch.from_numpy(np.stack([p.fov for p in pairs]) > 0).float().unsqueeze(1)
    return images, masks, fovs


def to_device(x: Tensor, device: torch.device) -> Tensor:
    """``x`` on ``device``; a CPU tensor bound for a GPU goes there without a host sync.

    Training draws its randomness from CPU generators (so a run repeats on any device) and
    moves some 40 draws a step. From pageable memory each ``.to("cuda")`` makes the host
    wait for every kernel already queued; from pinned memory the copy is queued like a
    kernel, and the caching host allocator keeps the source alive until it has run.
    """
    if device.type == "cuda" and x.device.type == "cpu":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


def to_uint8_images(x: Tensor) -> np.ndarray:
    """(N, 3, H, W) in [-1, 1] -> (N, H, W, 3) uint8: the inverse of `to_tensor`'s images."""
    y = ((x.detach().float().clamp(-1.0, 1.0) + 1.0) * 127.5).round()
    return y.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def to_uint8_image(x: Tensor) -> np.ndarray:
    """One (3, H, W) image in [-1, 1] -> an (H, W, 3) uint8 array."""
    if x.dim() != 3 or x.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) tensor, got shape {tuple(x.shape)}")
    return to_uint8_images(x[None])[0]


# --------------------------------------------------------------------------- joint geometry


def fill_fov(fov: Tensor) -> Tensor:
    """A {0, 1} (..., H, W) FOV with its holes filled: each pixel that lies between FOV
    pixels both along its row and along its column becomes FOV. Same dtype as ``fov``.

    Every pixel of a hole meets the FOV in all four directions, so every hole fills; a dent
    in the edge stays. A real field of view is a disc, convex and whole: it stays as it is.
    """
    inside = fov > 0
    filled = _between_first_and_last(inside, -1) & _between_first_and_last(inside, -2)
    return filled.to(fov.dtype)


def largest_region(fov: Tensor) -> Tensor:
    """A {0, 1} (..., H, W) FOV with only its largest 4-connected region kept, per image
    (one of them where two tie). Same dtype and device as ``fov``; an empty FOV stays empty.
    """
    h, w = fov.shape[-2:]
    inside = (fov > 0).reshape(-1, h, w).cpu().numpy()
    keep = np.zeros_like(inside)
    for one, kept in zip(inside, keep, strict=True):
        coords = np.argwhere(one)
        if len(coords):
            labels = component_labels(coords, (h, w), connectivity=4)
            ids, sizes = np.unique(labels, return_counts=True)
            kept[tuple(coords[labels == ids[sizes.argmax()]].T)] = True
    return torch.from_numpy(keep).to(fov.device).reshape(fov.shape).to(fov.dtype)


def _between_first_and_last(inside: Tensor, dim: int) -> Tensor:
    """True from the first to the last True along ``dim``, gaps included."""
    seen_before = inside.cumsum(dim) > 0
    seen_after = inside.flip(dim).cumsum(dim).flip(dim) > 0
    return seen_before & seen_after


def joint_augment(
    image: Tensor,
    mask: Tensor,
    fov: Tensor,
    generator: torch.Generator,
    *,
    max_angle: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Apply one random geometric transform per sample to image, mask and FOV alike.

    Each sample gets a horizontal flip and a vertical flip with probability 1/2 each and a
    rotation by k * 90 degrees (k uniform in 0..3; only 0 or 2 for non-square images). These
    are exact pixel permutations, so masks stay binary and aligned. With `max_angle` > 0
    (degrees) a further rotation uniform in [-max_angle, max_angle] is resampled: bilinear for
    the image, nearest for the masks; corners that come from outside are black / 0.
    """
    _check_batch(image, mask, fov)
    n, _, h, w = image.shape
    dev = image.device
    # The draws stay where the generator made them until used, so deciding which turns to
    # compute reads no device memory.
    u = torch.rand(n, 3, generator=generator, device=generator.device)
    hflip = u[:, 0] < 0.5
    vflip = u[:, 1] < 0.5
    ks = (u[:, 2] * 4).floor().long().clamp(max=3)
    if h != w:
        # A quarter turn would change the shape of a non-square batch.
        ks = (ks // 2) * 2

    def per_sample(flags: Tensor) -> Tensor:
        return to_device(flags, dev).view(n, 1, 1, 1)

    x = torch.cat([image, mask, fov], dim=1)
    x = torch.where(per_sample(hflip), x.flip(3), x)
    x = torch.where(per_sample(vflip), x.flip(2), x)
    rotated = x
    for k in (1, 2, 3):
        sel = ks == k
        if bool(sel.any()):
            rotated = torch.where(per_sample(sel), torch.rot90(x, k, dims=(2, 3)), rotated)
    x = rotated

    c = image.shape[1]
    img, msk, fv = x[:, :c], x[:, c : c + mask.shape[1]], x[:, c + mask.shape[1] :]
    if max_angle > 0:
        angles = to_device(torch.rand(n, generator=generator, device=generator.device), dev)
        angles = (angles * 2 - 1) * math.radians(max_angle)
        grid = _rotation_grid(angles, h, w, image.dtype)
        img = F.grid_sample(img + 1.0, grid, mode="bilinear", align_corners=False) - 1.0
        msks = torch.cat([msk, fv], dim=1)
        msks = F.grid_sample(msks, grid.to(msks.dtype), mode="nearest", align_corners=False)
        msk, fv = msks[:, : mask.shape[1]], msks[:, mask.shape[1] :]
    return img.contiguous(), msk.contiguous(), fv.contiguous()


def _rotation_grid(angles: Tensor, h: int, w: int, dtype: torch.dtype) -> Tensor:
    cos, sin = torch.cos(angles), torch.sin(angles)
    # Normalised coordinates stretch non-square images; scale so the rotation is rigid in
    # pixels.
    aspect = w / h
    zeros = torch.zeros_like(angles)
    theta = torch.stack(
        [
            torch.stack([cos, -sin / aspect, zeros], dim=1),
            torch.stack([sin * aspect, cos, zeros], dim=1),
        ],
        dim=1,
    ).to(dtype)
    return F.affine_grid(theta, [angles.shape[0], 1, h, w], align_corners=False)


def _check_batch(image: Tensor, mask: Tensor, fov: Tensor) -> None:
    for name, t in (("image", image), ("mask", mask), ("fov", fov)):
        if t.dim() != 4:
            raise ValueError(f"{name} must be (N, C, H, W), got shape {tuple(t.shape)}")
    if not (image.shape[0] == mask.shape[0] == fov.shape[0]) or not (
        image.shape[2:] == mask.shape[2:] == fov.shape[2:]
    ):
        raise ValueError(
            f"image {tuple(image.shape)}, mask {tuple(mask.shape)} and fov {tuple(fov.shape)} "
            "must share batch size and spatial size"
        )


# --------------------------------------------------------------------------- DiffAugment


def diff_augment(
    x: Tensor,
    policy: str = "color,translation,cutout",
    generator: torch.Generator | None = None,
    *,
    rgb_channels: slice | None = None,
) -> Tensor:
    """Differentiable augmentation for discriminator inputs (Zhao et al., NeurIPS 2020).

    `policy` is a comma-separated list of `color`, `translation` and `cutout`. Colour ops
    (brightness, saturation, contrast) touch only `rgb_channels` when given, so vessel-mask or
    FOV channels concatenated to the image keep their values; geometric ops move all channels
    together. Apply the same call to real and fake batches. Gradients flow to `x`.
    """
    if x.dim() != 4:
        raise ValueError(f"diff_augment expects (N, C, H, W), got shape {tuple(x.shape)}")
    for op in (p.strip() for p in policy.split(",") if p.strip()):
        if op not in _POLICIES:
            raise ValueError(
                f"unknown DiffAugment policy {op!r}; expected one of {sorted(_POLICIES)}"
            )
        for fn in _POLICIES[op]:
            x = fn(x, generator, rgb_channels)
    return x


def _rand(shape: Sequence[int], generator: torch.Generator | None, like: Tensor) -> Tensor:
    # Draw on the generator's device, then move: a CPU generator can drive a GPU batch.
    device = generator.device if generator is not None else like.device
    r = torch.rand(*shape, generator=generator, device=device)
    return to_device(r, like.device).to(like.dtype)


def _randint(
    low: int, high: int, shape: Sequence[int], generator: torch.Generator | None, like: Tensor
) -> Tensor:
    device = generator.device if generator is not None else like.device
    r = torch.randint(low, high, tuple(shape), generator=generator, device=device)
    return to_device(r, like.device)


def _on_rgb(x: Tensor, rgb: slice | None, fn: Callable[[Tensor], Tensor]) -> Tensor:
    if rgb is None:
        return fn(x)
    out = x.clone()
    out[:, rgb] = fn(x[:, rgb])
    return out


def _brightness(x: Tensor, g: torch.Generator | None, rgb: slice | None) -> Tensor:
    shift = _rand((x.shape[0], 1, 1, 1), g, x) - 0.5
    return _on_rgb(x, rgb, lambda c: c + shift)


def _saturation(x: Tensor, g: torch.Generator | None, rgb: slice | None) -> Tensor:
    factor = _rand((x.shape[0], 1, 1, 1), g, x) * 2

    def apply(c: Tensor) -> Tensor:
        mean = c.mean(dim=1, keepdim=True)
        return (c - mean) * factor + mean

    return _on_rgb(x, rgb, apply)


def _contrast(x: Tensor, g: torch.Generator | None, rgb: slice | None) -> Tensor:
    factor = _rand((x.shape[0], 1, 1, 1), g, x) + 0.5

    def apply(c: Tensor) -> Tensor:
        mean = c.mean(dim=[1, 2, 3], keepdim=True)
        return (c - mean) * factor + mean

    return _on_rgb(x, rgb, apply)


def _translation(
    x: Tensor, g: torch.Generator | None, rgb: slice | None, ratio: float = 0.125
) -> Tensor:
    """Shift each sample by up to `ratio` of its size, filling with zeros."""
    n, _, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = _randint(-sy, sy + 1, (n, 1, 1), g, x)
    tx = _randint(-sx, sx + 1, (n, 1, 1), g, x)
    gb, gy, gx = torch.meshgrid(
        torch.arange(n, device=x.device),
        torch.arange(h, device=x.device),
        torch.arange(w, device=x.device),
        indexing="ij",
    )
    # Index into a one-pixel zero border: out-of-range sources clamp onto it.
    gy = torch.clamp(gy + ty + 1, 0, h + 1)
    gx = torch.clamp(gx + tx + 1, 0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1])
    return padded.permute(0, 2, 3, 1)[gb, gy, gx].permute(0, 3, 1, 2).contiguous()


def _cutout(x: Tensor, g: torch.Generator | None, rgb: slice | None, ratio: float = 0.5) -> Tensor:
    """Zero one square of `ratio` times the image size per sample."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = _randint(0, h + (1 - ch % 2), (n, 1, 1), g, x)
    ox = _randint(0, w + (1 - cw % 2), (n, 1, 1), g, x)
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (
        (ys >= oy - ch // 2)
        & (ys < oy - ch // 2 + ch)
        & (xs >= ox - cw // 2)
        & (xs < ox - cw // 2 + cw)
    )
    keep = (~inside).to(x.dtype).unsqueeze(1)
    return x * keep


_Op = Callable[[Tensor, "torch.Generator | None", "slice | None"], Tensor]
_POLICIES: dict[str, list[_Op]] = {
    "color": [_brightness, _saturation, _contrast],
    "translation": [_translation],
    "cutout": [_cutout],
}
