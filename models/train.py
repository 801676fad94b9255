"""Train both stages of a pipeline, with progress, checkpoint and sample callbacks.

The two stages are trained interleaved: every step draws one augmented batch of real
(image, mask, FOV) and takes a Stage I step on its geometry and a Stage II step on the pair,
until Stage I's own step count (``Stage1Config.train_steps``) is reached; from there on
Stage II trains alone.
The stages are independent (Stage II learns from real masks, as in the paper), so
interleaving costs nothing over training them one after the other, and it buys three
things: one progress bar and one step count, a checkpoint at any step that is a complete,
usable pipeline, and sample grids that show both stages improving together.

Randomness comes only from explicit ``torch.Generator`` objects (weight init, batch choice
and joint augmentation, each stage's noise and DiffAugment); their states are saved in
checkpoints, so a resumed run continues exactly as an uninterrupted one would.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from models.appearance import AppearanceModel
from models.config import PipelineConfig
from models.data import FundusPair, fingerprint
from models.evaluate.segmenter import train_segmenter
from models.generate import noise_batch, sample_grid
from models.networks import Runtime, resolve_device
from models.seeds import stable_seed
from models.stage1 import DCGAN, real_geometry
from models.stage2 import Pix2Pix, condition, condition_vessels
from models.transforms import joint_augment, to_device, to_tensor

__all__ = ["TrainProgress", "TrainedPipeline", "resolve_device", "train_pipeline"]

GRID_SAMPLES = 8


@dataclass
class TrainProgress:
    step: int
    total: int
    losses: dict[str, float]
    images_per_s: float


@dataclass
class TrainedPipeline:
    """Both stages' networks plus what a resume needs.

    Discriminators, optimiser and RNG states are optional: a pipeline loaded only to
    generate does not need them, and ``train_pipeline`` refuses to resume without them.
    """

    config: PipelineConfig
    stage1_generator: nn.Module
    stage2_generator: nn.Module
    data_fingerprint: str
    steps_done: int
    stage1_discriminator: nn.Module | None = None
    stage2_discriminator: nn.Module | None = None
    optimizer_states: dict[str, dict[str, Any]] = field(default_factory=dict)
    rng_states: dict[str, Tensor] = field(default_factory=dict)
    losses: dict[str, float] = field(default_factory=dict)
    # Fitted to the training images when the config asks for it (Stage2Config.appearance).
    appearance: AppearanceModel | None = None

    @property
    def resolution(self) -> int:
        return self.config.resolution

    @property
    def resumable(self) -> bool:
        return (
            self.stage1_discriminator is not None
            and self.stage2_discriminator is not None
            and set(self.optimizer_states) >= set(OPTIMIZERS)
            and set(self.rng_states) >= set(RNGS)
        )


OPTIMIZERS = ("stage1_g", "stage1_d", "stage2_g", "stage2_d")
RNGS = ("data", "stage1", "stage2")


def derive_seed(seed: int, purpose: str) -> int:
    """A stable 63-bit seed per purpose, so the streams do not overlap."""
    return stable_seed(f"{seed}/{purpose}")


def train_pipeline(
    pairs: Sequence[FundusPair],
    config: PipelineConfig,
    *,
    steps: int,
    seed: int = 0,
    device: str | torch.device = "auto",
    on_progress: Callable[[TrainProgress], None] | None = None,
    progress_every: int = 10,
    resume: TrainedPipeline | None = None,
    on_checkpoint: Callable[[TrainedPipeline], None] | None = None,
    checkpoint_every: int = 0,
    on_samples: Callable[[int, np.ndarray], None] | None = None,
    sample_every: int = 0,
    fast: bool = True,
    compile: bool = False,
) -> TrainedPipeline:
    """Train until ``steps`` steps are done in total (a resume does the rest of them).

    ``on_checkpoint`` receives a pipeline that shares the live networks and optimiser
    state: serialise it (``save_pipeline``) before returning. ``on_samples(step, grid)``
    gets a uint8 RGB grid: generated masks on the top row, their images below, always from
    the same noise. ``fast`` picks the fast path (see ``Runtime``); ``compile`` adds
    torch.compile on CUDA. Deterministic for a seed on a device with ``fast=False``, and
    on CPU with either setting, given the same number of threads on the same machine
    (reductions split by thread round differently, and another host may pick other kernels;
    a GAN's training grows those last bits into other samples: seed 0 on DRIVE at 128 px
    drew vessel fraction 0.130 on one session's machine and 0.165 on another's).
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if not pairs:
        raise ValueError("train_pipeline needs at least one training pair")
    res = config.train_resolution
    shape = pairs[0].image.shape
    if shape[:2] != (res, res):
        raise ValueError(f"training pairs are {shape[1]}x{shape[0]} px; the config needs {res}")
    data_fp = fingerprint(pairs)
    if resume is not None:
        _check_resume(resume, config, data_fp)

    dev = resolve_device(device)
    runtime = Runtime.create(dev, fast=fast, compile=compile and dev.type == "cuda")
    init_rng = torch.Generator().manual_seed(derive_seed(seed, "init"))
    rngs = {name: torch.Generator().manual_seed(derive_seed(seed, name)) for name in RNGS}

    s1 = DCGAN(
        config.stage1,
        resolution=res,
        runtime=runtime,
        init_generator=init_rng,
    )
    s2 = Pix2Pix(
        config.stage2,
        resolution=res,
        runtime=runtime,
        init_generator=init_rng,
        segmenter=consistency_segmenter(pairs, config, seed=seed, device=dev),
        vessel_threshold=config.stage1.vessel_threshold,
    )
    start = 0
    if resume is not None:
        _restore(resume, s1, s2, rngs)
        start = resume.steps_done
        s1.steps_done = start  # keeps a lazy R1 penalty on the same steps
    s1.generator.train()
    s1.discriminator.train()
    s2.generator.train()
    s2.discriminator.train()

    images, masks, fovs = to_tensor(pairs)
    appearance = AppearanceModel.fit(images, fovs) if config.stage2.appearance else None
    images, masks, fovs = images.to(dev), masks.to(dev), fovs.to(dev)
    n, batch = images.shape[0], config.batch_size
    grid_z = grid_noise(config, seed)

    def snapshot(step: int, losses: dict[str, float]) -> TrainedPipeline:
        return TrainedPipeline(
            config=config,
            stage1_generator=s1.generator,
            stage2_generator=s2.generator,
            data_fingerprint=data_fp,
            steps_done=step,
            stage1_discriminator=s1.discriminator,
            stage2_discriminator=s2.discriminator,
            optimizer_states={
                "stage1_g": s1.opt_g.state_dict(),
                "stage1_d": s1.opt_d.state_dict(),
                "stage2_g": s2.opt_g.state_dict(),
                "stage2_d": s2.opt_d.state_dict(),
            },
            rng_states={name: g.get_state() for name, g in rngs.items()},
            losses=losses,
            appearance=appearance,
        )

    # Stage I's last step in this run: it may stop before the run does (0: it never does).
    stage1_last = min(steps, config.stage1.train_steps or steps)
    sums: dict[str, Tensor] = {}
    counts: dict[str, int] = {}
    since, t0 = 0, time.perf_counter()
    last_losses: dict[str, float] = dict(resume.losses) if resume is not None else {}
    for step in range(start + 1, steps + 1):
        # randperm without replacement: no pair twice in a batch when there are enough.
        if n >= batch:
            idx = torch.randperm(n, generator=rngs["data"])[:batch]
        else:
            idx = torch.randint(0, n, (batch,), generator=rngs["data"])
        idx = to_device(idx, dev)
        img, msk, fov = joint_augment(images[idx], masks[idx], fovs[idx], rngs["data"])
        out = {}
        if step <= stage1_last:
            out = s1.step(runtime.tensor(real_geometry(msk, fov)), rngs["stage1"])
            if step == stage1_last:
                # Its own stream, so the training streams (and a resume) are untouched.
                s1.settle(torch.Generator().manual_seed(derive_seed(seed, "standing")))
        out |= s2.step(
            runtime.tensor(condition(config.stage2, condition_vessels(config, msk), fov)),
            runtime.tensor(img),
            rngs["stage2"],
        )
        for k, v in out.items():
            sums[k] = sums[k] + v if k in sums else v
            counts[k] = counts.get(k, 0) + 1
        since += 1

        last = step == steps
        if since and (last or (progress_every > 0 and step % progress_every == 0)):
            # Averaging on the device and syncing once per report keeps CUDA steps async.
            # Merged, so a stage that has stopped training keeps reporting its last losses.
            last_losses = last_losses | {k: float(v) / counts[k] for k, v in sums.items()}
            elapsed = time.perf_counter() - t0
            if on_progress is not None:
                on_progress(
                    TrainProgress(
                        step=step,
                        total=steps,
                        losses=last_losses,
                        images_per_s=since * batch / elapsed if elapsed > 0 else 0.0,
                    )
                )
            sums, counts, since, t0 = {}, {}, 0, time.perf_counter()
        if on_samples is not None and (last or (sample_every > 0 and step % sample_every == 0)):
            on_samples(step, sample_grid(s1.generator, s2.generator, config, grid_z))
        if on_checkpoint is not None and checkpoint_every > 0 and step % checkpoint_every == 0:
            on_checkpoint(snapshot(step, last_losses))

    return snapshot(max(start, steps), last_losses)


def grid_noise(config: PipelineConfig, seed: int) -> Tensor:
    """The fixed Stage I noise behind a training run's sample grids."""
    return noise_batch(config.stage1, seed=derive_seed(seed, "grid"), count=GRID_SAMPLES)


def consistency_segmenter(
    pairs: Sequence[FundusPair], config: PipelineConfig, *, seed: int, device: torch.device
) -> nn.Module | None:
    """The frozen segmenter behind Stage II's vessel-consistency loss, or None when off.

    Trained from the seed on the same real pairs, so a resumed run rebuilds the same one
    instead of storing it in every checkpoint.
    """
    cfg = config.stage2
    if cfg.seg_weight <= 0:
        return None
    res = config.train_resolution
    return train_segmenter(
        pairs,
        steps=cfg.seg_steps,
        # Three-quarter crops (a multiple of 16 for its 4 levels) leave room to shift.
        crop=max(16, res * 3 // 4 // 16 * 16),
        base=16 if res <= 128 else 32,
        seed=derive_seed(seed, "segmenter"),
        device=device,
    )


def _check_resume(resume: TrainedPipeline, config: PipelineConfig, data_fp: str) -> None:
    if resume.config.to_dict() != config.to_dict():
        raise ValueError(
            f"cannot resume: the checkpoint was trained with config {resume.config.name!r} "
            f"({resume.config.to_dict()}), not the requested {config.to_dict()}"
        )
    if resume.data_fingerprint != data_fp:
        raise ValueError(
            "cannot resume: the checkpoint was trained on different data (fingerprint "
            f"{resume.data_fingerprint[:12]}, these pairs are {data_fp[:12]})"
        )
    if not resume.resumable:
        raise ValueError(
            "cannot resume: the checkpoint holds no discriminator, optimiser or RNG state "
            "(it was saved for generation only)"
        )


def _restore(
    resume: TrainedPipeline, s1: DCGAN, s2: Pix2Pix, rngs: dict[str, torch.Generator]
) -> None:
    assert resume.stage1_discriminator is not None and resume.stage2_discriminator is not None
    s1.generator.load_state_dict(resume.stage1_generator.state_dict())
    s1.discriminator.load_state_dict(resume.stage1_discriminator.state_dict())
    s2.generator.load_state_dict(resume.stage2_generator.state_dict())
    s2.discriminator.load_state_dict(resume.stage2_discriminator.state_dict())
    for name, opt in (
        ("stage1_g", s1.opt_g),
        ("stage1_d", s1.opt_d),
        ("stage2_g", s2.opt_g),
        ("stage2_d", s2.opt_d),
    ):
        load_optimizer_state(opt, resume.optimizer_states[name])
    for name, g in rngs.items():
        g.set_state(resume.rng_states[name].cpu())


def load_optimizer_state(opt: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load hyper-parameters and moments, but keep this run's implementation flags.

    A checkpoint from a CUDA fast run says fused=True; loading it as is on CPU, or the other
    way round, would put Adam's step counters on the wrong device.
    """
    flags = ("fused", "foreach", "capturable", "differentiable")
    current = [{k: g.get(k) for k in flags if k in g} for g in opt.param_groups]
    groups = [dict(g) for g in state["param_groups"]]
    if len(groups) != len(current):
        raise ValueError("optimiser state does not match the network's parameter groups")
    for g, keep in zip(groups, current, strict=True):
        g.update(keep)
    opt.load_state_dict({"state": state["state"], "param_groups": groups})
