"""Stage I: a DCGAN that maps noise to vessel geometry, a 2-channel (vessel mask, FOV) image.

Both channels are in [-1, 1] while training (real masks are mapped 0 -> -1, 1 -> 1) and are
thresholded when sampling (``decode_geometry``). The default recipe blurs the real vessel
channel first (``soft_sigma``): the generator learns smooth ridges, which thresholding
turns back into thin connected vessels. Generating the FOV too lets Stage II and the
sample writer blacken everything outside the disc, as in real fundus photographs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.config import Stage1Config
from models.networks import (
    AdversarialPair,
    EMAGenerator,
    MultiScaleDiscriminator,
    Runtime,
    build_discriminator,
    build_generator,
)
from models.transforms import diff_augment, fill_fov, largest_region, to_device

CHANNELS = 2  # vessel mask, FOV


def sample_noise(cfg: Stage1Config, n: int, generator: torch.Generator) -> Tensor:
    """(n, z_dim) noise on the generator's device: U[-1, 1] (the paper) or N(0, 1)."""
    if cfg.z_dist == "uniform":
        return torch.rand(n, cfg.z_dim, generator=generator, device=generator.device) * 2 - 1
    return torch.randn(n, cfg.z_dim, generator=generator, device=generator.device)


def build_stage1_generator(
    cfg: Stage1Config, *, resolution: int, generator: torch.Generator | None = None
) -> nn.Module:
    net = build_generator(
        "dcgan",
        in_ch=cfg.z_dim,
        out_ch=CHANNELS,
        resolution=resolution,
        width=cfg.width,
        max_width=cfg.max_width,
        norm=cfg.norm,
        kernel=cfg.kernel,
        upsample=cfg.upsample,
        generator=generator,
    )
    return EMAGenerator(net, cfg.ema) if cfg.ema > 0 else net


def build_stage1_discriminator(
    cfg: Stage1Config, *, resolution: int, generator: torch.Generator | None = None
) -> nn.Module:
    nets = [
        build_discriminator(
            "dcgan",
            in_ch=CHANNELS,
            resolution=resolution >> scale,
            width=cfg.width,
            max_width=cfg.max_width,
            norm="none" if cfg.d_spectral_norm else cfg.norm,
            kernel=cfg.kernel,
            spectral_norm=cfg.d_spectral_norm,
            generator=generator,
        )
        for scale in range(cfg.d_scales)
    ]
    return nets[0] if len(nets) == 1 else MultiScaleDiscriminator(nets)


def real_geometry(mask: Tensor, fov: Tensor) -> Tensor:
    """Real (mask, FOV) in {0, 1} -> the generator's 2-channel [-1, 1] target."""
    return torch.cat([mask, fov], dim=1) * 2 - 1


def gaussian_kernel(sigma: float) -> Tensor:
    """A normalised 1-D Gaussian over +-3 sigma."""
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    weights = torch.exp(-(x**2) / (2 * sigma**2))
    return weights / weights.sum()


def blur_vessels(vessels: Tensor, kernel: Tensor, gain: float) -> Tensor:
    """A [0, 1] vessel channel blurred by the separable ``kernel``, times ``gain``, clipped."""
    k = kernel.to(vessels.device, vessels.dtype)
    r = k.numel() // 2
    vessels = F.conv2d(F.pad(vessels, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    vessels = F.conv2d(F.pad(vessels, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))
    return (vessels * gain).clamp(0, 1)


def soften_vessels(geometry: Tensor, kernel: Tensor, gain: float) -> Tensor:
    """Blur the vessel channel of a [-1, 1] (mask, FOV) batch, scale by ``gain``, clip.

    The FOV is left binary: its edge is one smooth curve already.
    """
    vessels = blur_vessels((geometry[:, :1] + 1) / 2, kernel, gain)
    return torch.cat([vessels * 2 - 1, geometry[:, 1:]], dim=1)


def vessel_map(cfg: Stage1Config, mask: Tensor) -> Tensor:
    """Binary vessel masks in {0, 1} -> the [0, 1] map Stage I learns to draw of them."""
    if cfg.soft_sigma <= 0:
        return mask
    return blur_vessels(mask, gaussian_kernel(cfg.soft_sigma), cfg.soft_gain)


def drawn_vessel_map(geometry: Tensor, fov: Tensor) -> Tensor:
    """The generator's [-1, 1] output -> its vessel channel in [0, 1] before the cut, zero
    outside the (decoded) FOV: the sample's counterpart of ``vessel_map``."""
    return (geometry[:, :1].clamp(-1.0, 1.0) + 1) / 2 * fov


def decode_geometry(cfg: Stage1Config, geometry: Tensor) -> tuple[Tensor, Tensor]:
    """The generator's [-1, 1] output -> (vessel mask, FOV) in {0, 1}, vessels only inside.

    The vessel channel is cut at ``cfg.vessel_threshold``, where the blur of
    ``soften_vessels`` is best undone; the binary FOV at 0, then kept to its largest region
    and filled where ``cfg.drop_fov_islands`` and ``cfg.fill_fov`` ask.
    """
    fov = (geometry[:, 1:2] > 0).to(geometry.dtype)
    if cfg.drop_fov_islands:
        fov = largest_region(fov)
    if cfg.fill_fov:
        fov = fill_fov(fov)
    # Vessels exist only inside the eye; Stage I occasionally paints a few outside it.
    mask = (geometry[:, 0:1] > cfg.vessel_threshold).to(geometry.dtype) * fov
    return mask, fov


class DCGAN(AdversarialPair):
    """Networks, optimisers and one training step. Losses are returned, not stored."""

    def __init__(
        self,
        cfg: Stage1Config,
        *,
        resolution: int,
        runtime: Runtime,
        init_generator: torch.Generator,
        generator_net: nn.Module | None = None,
        discriminator_net: nn.Module | None = None,
    ) -> None:
        self.cfg = cfg
        super().__init__(
            # Generator first: both draw their initial weights from init_generator.
            generator=generator_net
            or build_stage1_generator(cfg, resolution=resolution, generator=init_generator),
            discriminator=discriminator_net
            or build_stage1_discriminator(cfg, resolution=resolution, generator=init_generator),
            runtime=runtime,
            lr_g=cfg.lr,
            lr_d=cfg.d_lr,
            betas=(cfg.beta1, cfg.beta2),
        )
        self.steps_done = 0
        self.soft_kernel = gaussian_kernel(cfg.soft_sigma) if cfg.soft_sigma > 0 else None

    def _augment(self, x: Tensor, rng: torch.Generator) -> Tensor:
        if self.cfg.diffaug:
            x = diff_augment(x, self.cfg.diffaug, rng)
        if self.cfg.instance_noise > 0:
            noise = torch.randn(x.shape, generator=rng, device=rng.device, dtype=x.dtype)
            x = x + self.cfg.instance_noise * to_device(noise, x.device)
        return x

    def _rotate(self, real: Tensor, rng: torch.Generator) -> Tensor:
        """Each real (mask, FOV) rotated by a uniform angle about the centre, nearest."""
        n = real.shape[0]
        angles = to_device(torch.rand(n, generator=rng, device=rng.device), real.device)
        angles = angles * (2 * math.pi)
        cos, sin, zero = angles.cos(), angles.sin(), torch.zeros_like(angles)
        theta = torch.stack(
            [torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1
        ).to(real.dtype)
        grid = F.affine_grid(theta, list(real.shape), align_corners=False)
        # In {0, 1} so the corners that come from outside the image are background.
        out = F.grid_sample((real + 1) / 2, grid, mode="nearest", align_corners=False)
        return out * 2 - 1

    def _fake(self, n: int, rng: torch.Generator) -> Tensor:
        z = self.runtime.tensor(sample_noise(self.cfg, n, rng))
        with self.runtime.autocast():
            return self._g(z)

    def _logits(self, x: Tensor, rng: torch.Generator) -> Tensor:
        with self.runtime.autocast():
            return self._d(self._augment(x, rng)).float()

    def settle(self, rng: torch.Generator) -> None:
        """After Stage I's last step: the EMA generator's batch-norm statistics from
        ``cfg.standing_stats`` noise draws, batches of 32 (nothing when that is 0)."""
        total = self.cfg.standing_stats
        if total == 0 or not isinstance(self.generator, EMAGenerator):
            return
        sizes = [min(32, total - first) for first in range(0, total, 32)]
        noise = (self.runtime.tensor(sample_noise(self.cfg, n, rng)) for n in sizes)
        with self.runtime.autocast():
            self.generator.settle_statistics(noise)

    def step(self, real: Tensor, rng: torch.Generator) -> dict[str, Tensor]:
        """One discriminator step, then ``g_steps_per_d`` generator steps (the paper uses 2:
        a DCGAN discriminator on few images otherwise wins too quickly)."""
        cfg = self.cfg
        n = real.shape[0]
        if cfg.rotate_real:
            real = self.runtime.tensor(self._rotate(real, rng))
        if self.soft_kernel is not None:
            real = self.runtime.tensor(soften_vessels(real, self.soft_kernel, cfg.soft_gain))
        fake = self._fake(n, rng)
        self.discriminator.requires_grad_(True)
        self.steps_done += 1
        r1 = cfg.r1_gamma > 0 and self.steps_done % cfg.r1_every == 0
        if r1:
            real = real.detach().requires_grad_(True)
        d_real = self._logits(real, rng)
        d_fake = self._logits(fake.detach(), rng)
        loss_d = 0.5 * (
            F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
            + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
        )
        loss = loss_d
        if r1:
            (grad,) = torch.autograd.grad(d_real.sum(), real, create_graph=True)
            penalty = grad.float().pow(2).flatten(1).sum(1).mean()
            loss = loss + 0.5 * cfg.r1_gamma * cfg.r1_every * penalty
        self.opt_d.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_d.step()

        # Frozen D: its gradients would be wasted work during the generator steps.
        self.discriminator.requires_grad_(False)
        loss_g = torch.zeros((), device=real.device)
        for i in range(self.cfg.g_steps_per_d):
            if i > 0:
                fake = self._fake(n, rng)
            logits = self._logits(fake, rng)
            loss_g = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
            self.opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            self.opt_g.step()
            if isinstance(self.generator, EMAGenerator):
                self.generator.update()
        self.discriminator.requires_grad_(True)
        return {"stage1_d": loss_d.detach(), "stage1_g": loss_g.detach()}
