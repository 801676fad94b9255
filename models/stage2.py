"""Stage II: pix2pix, (vessel mask[, FOV]) -> RGB fundus image.

U-Net generator that upsamples by resize-then-convolve, PatchGAN discriminator on the
concatenation (condition, image), loss = adversarial + lambda_l1 * L1 (+ lambda_fm *
feature matching, + seg_weight * a vessel-consistency loss from a frozen segmenter, when one
is given). Trained on real (mask, image) pairs, as in the paper: it never sees Stage I's
output while training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.config import PipelineConfig, Stage2Config
from models.evaluate.segmenter import fov_loss
from models.networks import AdversarialPair, Runtime, build_discriminator, build_generator
from models.stage1 import drawn_vessel_map, vessel_map
from models.transforms import diff_augment

IMAGE_CHANNELS = 3


def build_stage2_generator(
    cfg: Stage2Config, *, resolution: int, generator: torch.Generator | None = None
) -> nn.Module:
    return build_generator(
        "unet",
        in_ch=cfg.cond_channels,
        out_ch=IMAGE_CHANNELS,
        resolution=resolution,
        width=cfg.width,
        max_width=cfg.max_width,
        norm=cfg.norm,
        depth=cfg.depth,
        upsample=cfg.upsample,
        generator=generator,
    )


def build_stage2_discriminator(
    cfg: Stage2Config, *, resolution: int, generator: torch.Generator | None = None
) -> nn.Module:
    return build_discriminator(
        "patch",
        in_ch=cfg.cond_channels + IMAGE_CHANNELS,
        resolution=resolution,
        width=cfg.d_width,
        max_width=cfg.max_width,
        norm=cfg.norm,
        n_layers=cfg.d_layers,
        generator=generator,
    )


def condition(cfg: Stage2Config, vessels: Tensor, fov: Tensor) -> Tensor:
    """(vessels, FOV) in [0, 1] -> the generator's [-1, 1] input. ``vessels`` is a binary
    mask, or with ``cfg.soft_condition`` a vessel map (``condition_vessels``)."""
    x = torch.cat([vessels, fov], dim=1) if cfg.use_fov else vessels
    return x * 2 - 1


def condition_vessels(config: PipelineConfig, mask: Tensor) -> Tensor:
    """What Stage II is conditioned on for binary vessel masks: the masks themselves, or
    with ``soft_condition`` the map Stage I learns to draw of them (``vessel_map``)."""
    return vessel_map(config.stage1, mask) if config.stage2.soft_condition else mask


def drawn_condition_vessels(
    config: PipelineConfig, geometry: Tensor, mask: Tensor, fov: Tensor
) -> Tensor:
    """What Stage II is conditioned on for a Stage I sample (its [-1, 1] ``geometry``, cut
    into ``mask`` and ``fov``): the cut mask, or with ``soft_condition`` Stage I's vessel
    map; with ``paint_labelled_only`` too, that map only on and beside (3 x 3) the cut's
    vessels, so the faint strokes the cut leaves out are not painted as unlabelled vessels.
    """
    if not config.stage2.soft_condition:
        return mask
    drawn = drawn_vessel_map(geometry, fov)
    if config.stage2.paint_labelled_only:
        drawn = drawn * F.max_pool2d(mask, 3, stride=1, padding=1)
    return drawn


class Pix2Pix(AdversarialPair):
    """Networks, optimisers and one training step. Losses are returned, not stored."""

    def __init__(
        self,
        cfg: Stage2Config,
        *,
        resolution: int,
        runtime: Runtime,
        init_generator: torch.Generator,
        generator_net: nn.Module | None = None,
        discriminator_net: nn.Module | None = None,
        segmenter: nn.Module | None = None,
        vessel_threshold: float = 0.0,
    ) -> None:
        """``segmenter``: a trained vessel segmenter for the consistency loss; it is frozen
        and kept in eval mode here. Required when ``cfg.seg_weight`` > 0.
        ``vessel_threshold``: the level in [-1, 1] above which the condition's vessel
        channel is a vessel, for that loss: Stage I's cut when Stage II is conditioned on
        its vessel map, any level for binary masks."""
        self.cfg = cfg
        self.vessel_threshold = vessel_threshold
        super().__init__(
            # Generator first: both draw their initial weights from init_generator.
            generator=generator_net
            or build_stage2_generator(cfg, resolution=resolution, generator=init_generator),
            discriminator=discriminator_net
            or build_stage2_discriminator(cfg, resolution=resolution, generator=init_generator),
            runtime=runtime,
            lr_g=cfg.lr,
            lr_d=cfg.lr,
            betas=(cfg.beta1, cfg.beta2),
        )
        c = cfg.cond_channels
        self._rgb = slice(c, c + IMAGE_CHANNELS)
        self.segmenter = None
        if cfg.seg_weight > 0:
            if segmenter is None:
                raise ValueError("stage2.seg_weight > 0 needs a trained segmenter")
            self.segmenter = runtime.module(segmenter).eval().requires_grad_(False)

    def _logits(self, cond: Tensor, image: Tensor, rng: torch.Generator) -> Tensor:
        # Augment condition and image together so translation/cutout keep them aligned;
        # colour jitter touches the RGB channels only.
        x = torch.cat([cond, image], dim=1)
        if self.cfg.diffaug:
            x = diff_augment(x, self.cfg.diffaug, rng, rgb_channels=self._rgb)
        with self.runtime.autocast():
            return self._d(x).float()

    def step(self, cond: Tensor, real: Tensor, rng: torch.Generator) -> dict[str, Tensor]:
        """D step on (real, detached fake) averaged, then G step with D frozen (pix2pix)."""
        with self.runtime.autocast():
            fake = self._g(cond)
        self.discriminator.requires_grad_(True)
        d_real = self._logits(cond, real, rng)
        d_fake = self._logits(cond, fake.detach(), rng)
        loss_d = 0.5 * (
            F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
            + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
        )
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()

        self.discriminator.requires_grad_(False)
        logits = self._logits(cond, fake, rng)
        loss_adv = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
        loss_l1 = F.l1_loss(fake.float(), real)
        loss_g = loss_adv + self.cfg.lambda_l1 * loss_l1
        losses = {"stage2_d": loss_d, "stage2_g": loss_adv, "stage2_l1": loss_l1}
        if self.cfg.lambda_fm > 0:
            losses["stage2_fm"] = self._feature_matching(cond, real, fake)
            loss_g = loss_g + self.cfg.lambda_fm * losses["stage2_fm"]
        if self.segmenter is not None:
            losses["stage2_seg"] = self._vessel_consistency(cond, fake)
            loss_g = loss_g + self.cfg.seg_weight * losses["stage2_seg"]
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        self.discriminator.requires_grad_(True)
        return {k: v.detach() for k, v in losses.items()}

    def _feature_matching(self, cond: Tensor, real: Tensor, fake: Tensor) -> Tensor:
        """Mean over the discriminator's hidden layers of L1 between its activations on the
        real and on the painted image. Neither is augmented: each augmentation is drawn per
        call, and matching features of two different crops would match nothing."""
        with torch.no_grad(), self.runtime.autocast():
            target = self.discriminator.features(torch.cat([cond, real], dim=1))
        with self.runtime.autocast():
            painted = self.discriminator.features(torch.cat([cond, fake], dim=1))
        return torch.stack(
            [F.l1_loss(p.float(), t.float()) for p, t in zip(painted, target, strict=True)]
        ).mean()

    def _vessel_consistency(self, cond: Tensor, fake: Tensor) -> Tensor:
        """How far the frozen segmenter's reading of `fake` is from the condition's mask
        (its vessel channel cut where a sample's published mask is).

        L1 alone lets thin vessels fade into the background (a blurred vessel costs little);
        a segmenter that cannot find them costs a lot, which is what keeps them drawable.
        """
        assert self.segmenter is not None
        mask = (cond[:, :1] > self.vessel_threshold).float()
        fov = (cond[:, 1:2] > 0).float() if self.cfg.use_fov else torch.ones_like(mask)
        with self.runtime.autocast():
            logits = self.segmenter(fake).float()
        return fov_loss(logits, mask, fov)["loss"]
