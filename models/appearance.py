"""Each generated image's own colouring, drawn from how the training images vary.

pix2pix's L1 loss pays for the average colour a mask is painted in, so Stage II paints every
mask alike: on DRIVE at 128 px the per-image mean of each channel inside the FOV spread a
third as wide over generated images as over the real ones (red 9.9 against 32.3 grey
levels), and their contrast (per-image std) about a third as wide. A segmenter trained on
such images has seen one camera and one eye colour.

The appearance model is a Gaussian over six numbers per image: each channel's mean and
standard deviation inside the FOV, fitted to the training images. Generation draws one
target per sample (from a generator seeded by the sample's own seed) and moves each
channel's mean and std inside the FOV to it; outside the FOV stays black. The model holds
aggregates over all training images, never one image's figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from models.seeds import stable_seed

STATS = 6  # mean of R, G, B, then std of R, G, B, inside the FOV
# A target std below one grey level (in [-1, 1] units) would flatten the image.
MIN_STD = 1 / 127.5


def image_stats(images: Tensor, fovs: Tensor) -> Tensor:
    """(N, 3, H, W) images and (N, 1, H, W) FOVs in {0, 1} -> (N, 6) float64: each
    channel's mean, then its standard deviation, over FOV pixels."""
    x = images.double()
    w = fovs.double().expand_as(x)
    n = w.sum(dim=(2, 3)).clamp_min(1.0)
    mean = (x * w).sum(dim=(2, 3)) / n
    var = (((x - mean[..., None, None]) ** 2) * w).sum(dim=(2, 3)) / n
    return torch.cat([mean, var.sqrt()], dim=1)


@dataclass(frozen=True)
class AppearanceModel:
    mean: Tensor  # (6,) float64
    scale_tril: Tensor  # (6, 6) float64, lower-triangular: covariance = L @ L.T

    @classmethod
    def fit(cls, images: Tensor, fovs: Tensor) -> AppearanceModel:
        """Fit to training images in [-1, 1]; needs at least two of them."""
        stats = image_stats(images, fovs)
        if len(stats) < 2:
            raise ValueError("an appearance model needs at least two training images")
        cov = torch.cov(stats.T)
        # A tiny ridge keeps the factorisation defined when images vary along fewer than
        # six directions (identical copies, a single-colour phantom).
        ridge = 1e-8 * torch.eye(STATS, dtype=torch.float64)
        return cls(mean=stats.mean(dim=0), scale_tril=torch.linalg.cholesky(cov + ridge))

    def draw(self, sample_seeds: Sequence[int]) -> Tensor:
        """One (6,) target per sample, each from a generator seeded by that sample's seed."""
        rows = []
        for seed in sample_seeds:
            # Its own stream: the sample seed itself would replay the Stage I noise.
            gen = torch.Generator().manual_seed(stable_seed(f"synthmed-appearance/{seed}"))
            z = torch.randn(STATS, generator=gen, dtype=torch.float64)
            rows.append(self.mean + self.scale_tril @ z)
        if not rows:
            return torch.zeros((0, STATS), dtype=torch.float64)
        return torch.stack(rows)

    def to_state(self) -> dict[str, Tensor]:
        return {"mean": self.mean.clone(), "scale_tril": self.scale_tril.clone()}

    @classmethod
    def from_state(cls, state: dict[str, Tensor]) -> AppearanceModel:
        mean = torch.as_tensor(state["mean"], dtype=torch.float64)
        tril = torch.as_tensor(state["scale_tril"], dtype=torch.float64)
        if mean.shape != (STATS,) or tril.shape != (STATS, STATS):
            raise ValueError(
                f"appearance model has shapes {tuple(mean.shape)} and {tuple(tril.shape)}"
            )
        return cls(mean=mean, scale_tril=tril)


def restyle(images: Tensor, fovs: Tensor, targets: Tensor) -> Tensor:
    """Move each image's per-channel mean and std inside its FOV to its row of ``targets``
    (as ``image_stats`` measures them); clipped to [-1, 1], -1 outside the FOV."""
    current = image_stats(images, fovs).to(images.device)
    targets = targets.to(device=images.device, dtype=torch.float64)
    mean, std = current[:, :3, None, None], current[:, 3:, None, None]
    t_mean, t_std = targets[:, :3, None, None], targets[:, 3:, None, None].clamp_min(MIN_STD)
    scaled = (images.double() - mean) / std.clamp_min(MIN_STD) * t_std + t_mean
    out = torch.where(fovs > 0, scaled.clamp(-1.0, 1.0), torch.full_like(scaled, -1.0))
    return out.to(images.dtype)
