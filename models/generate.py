"""Generation: noise -> Stage I (mask, FOV) -> Stage II image, reproducible per sample.

Sample ``i`` of a run with seed ``s`` draws its noise (and its colouring, where the pipeline
has an appearance model) from generators seeded by ``sample_seed(s, i)``, and both stages
run in eval mode (batch norm uses its running statistics), so a sample does not depend on
``start``, ``batch_size`` or its batch-mates.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from models.appearance import restyle
from models.config import PipelineConfig, Stage1Config
from models.data import FundusPair, resized
from models.networks import Runtime, resolve_device
from models.seeds import stable_seed
from models.stage1 import decode_geometry, sample_noise
from models.stage2 import condition, condition_vessels, drawn_condition_vessels
from models.transforms import to_uint8_images

if TYPE_CHECKING:
    from models.train import TrainedPipeline


@dataclass(frozen=True)
class GeneratedSample:
    index: int
    seed: int
    image: np.ndarray  # (H, W, 3) uint8, black outside the FOV
    mask: np.ndarray  # (H, W) uint8 in {0, 1}, vessels
    fov: np.ndarray  # (H, W) uint8 in {0, 1}


def sample_seed(seed: int, index: int) -> int:
    """The seed of sample ``index`` in a run with ``seed``: stable across versions and hosts."""
    if index < 0:
        raise ValueError(f"sample index must be >= 0, got {index}")
    return stable_seed(f"synthmed-sample/{seed}/{index}")


def sample_noise_for(cfg: Stage1Config, seed: int, indices: range) -> Tensor:
    """Stage I noise for the given sample indices, one generator per sample."""
    rows = [
        sample_noise(cfg, 1, torch.Generator().manual_seed(sample_seed(seed, i))) for i in indices
    ]
    return torch.cat(rows)


def noise_batch(cfg: Stage1Config, *, seed: int, count: int) -> Tensor:
    return sample_noise_for(cfg, seed, range(count))


@torch.inference_mode()
def synthesize(
    stage1: Callable[[Tensor], Tensor],
    stage2: Callable[[Tensor], Tensor],
    config: PipelineConfig,
    z: Tensor,
    runtime: Runtime,
    appearance: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Noise -> (images in [-1, 1] with black outside the FOV, masks, FOVs in {0, 1}).

    The networks (modules or their compiled callables) must already be in eval mode and on
    ``runtime.device``. ``appearance``, one row per sample (``AppearanceModel.draw``),
    restyles each image to it.
    """
    with runtime.autocast():
        geometry = stage1(runtime.tensor(z)).float()
    mask, fov = decode_geometry(config.stage1, geometry)
    vessels = drawn_condition_vessels(config, geometry, mask, fov)
    return paint(stage2, config, vessels, fov, runtime, appearance), mask, fov


@torch.inference_mode()
def paint(
    stage2: Callable[[Tensor], Tensor],
    config: PipelineConfig,
    vessels: Tensor,
    fov: Tensor,
    runtime: Runtime,
    appearance: Tensor | None = None,
) -> Tensor:
    """Stage II alone: (vessels, FOV) batches in [0, 1] (``condition``) -> images in
    [-1, 1], black outside the FOV."""
    with runtime.autocast():
        image = stage2(runtime.tensor(condition(config.stage2, vessels, fov))).float()
    image = torch.where(fov > 0, image.clamp(-1.0, 1.0), torch.full_like(image, -1.0))
    if appearance is not None:
        image = restyle(image, fov, appearance)
    return image


def generate(
    pipeline: TrainedPipeline,
    *,
    count: int,
    seed: int,
    start: int = 0,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    fast: bool = True,
    compile: bool = False,
) -> Iterator[GeneratedSample]:
    """Samples ``start .. start + count - 1``, batched on the device.

    ``device=None`` runs where the pipeline's networks are. The pipeline's own modules are
    left untouched (copies are moved and switched to eval mode). ``compile`` (with ``fast``)
    runs both networks through torch.compile: on an H200 at 512 px it took the default
    recipe's networks from 1,613 to 4,366 images/s, for a compilation of some seconds at
    the start, so it pays for large counts.
    """
    if count < 0 or start < 0:
        raise ValueError(f"count and start must be >= 0, got count={count}, start={start}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    runtime, stage1, stage2 = _eval_copies(pipeline, device, fast=fast, compile=compile)
    cfg = pipeline.config
    rows = min(batch_size, count)
    for first in range(start, start + count, batch_size):
        indices = range(first, min(first + batch_size, start + count))
        z = sample_noise_for(cfg.stage1, seed, indices)
        looks = None
        if pipeline.appearance is not None:
            looks = pipeline.appearance.draw([sample_seed(seed, i) for i in indices])
        if runtime.compile and len(z) < rows:
            # One batch shape for compiled networks: a short last batch would compile anew.
            # Eval-mode samples do not depend on their batch-mates, so padding is harmless.
            z = _pad_rows(z, rows)
            looks = None if looks is None else _pad_rows(looks, rows)
        image, mask, fov = synthesize(stage1, stage2, cfg, z, runtime, looks)
        images = to_uint8_images(image)
        masks = mask[:, 0].to(torch.uint8).cpu().numpy()
        fovs = fov[:, 0].to(torch.uint8).cpu().numpy()
        for j, i in enumerate(indices):
            p = published(cfg, FundusPair(name="", image=images[j], mask=masks[j], fov=fovs[j]))
            yield GeneratedSample(
                index=i, seed=sample_seed(seed, i), image=p.image, mask=p.mask, fov=p.fov
            )


def published(config: PipelineConfig, drawn: FundusPair) -> FundusPair:
    """A pair drawn at the pipeline's training size, at its published size: shrunk (with
    ``supersample``) as the readers shrink a photograph, and black outside its FOV."""
    if config.supersample == 1:
        return drawn
    small = resized(drawn, config.resolution)
    image = np.where(small.fov[..., None] > 0, small.image, 0)
    return dataclasses.replace(small, image=image)


def _eval_copies(
    pipeline: TrainedPipeline, device: str | torch.device | None, *, fast: bool, compile: bool
) -> tuple[Runtime, Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]:
    """A runtime and eval-mode copies of both networks on its device (``None``: where the
    pipeline's networks are), so the pipeline's own modules are left untouched."""
    if pipeline.config.stage2.appearance and pipeline.appearance is None:
        raise ValueError("the pipeline's config asks for an appearance model it does not have")
    if device is None:
        dev = next(pipeline.stage1_generator.parameters()).device
    else:
        dev = resolve_device(device)
    runtime = Runtime.create(dev, fast=fast, compile=compile)
    stage1 = runtime.compiled(runtime.module(copy.deepcopy(pipeline.stage1_generator)).eval())
    stage2 = runtime.compiled(runtime.module(copy.deepcopy(pipeline.stage2_generator)).eval())
    return runtime, stage1, stage2


def _pad_rows(x: Tensor, rows: int) -> Tensor:
    return torch.cat([x, x.new_zeros((rows - len(x), *x.shape[1:]))])


def generate_pairs(
    pipeline: TrainedPipeline, *, count: int, seed: int, device: str | torch.device | None = None
) -> list[FundusPair]:
    """Samples ``0 .. count - 1`` as pairs named by index, as the evaluation takes them."""
    return [
        FundusPair(name=f"{s.index:05d}", image=s.image, mask=s.mask, fov=s.fov)
        for s in generate(pipeline, count=count, seed=seed, device=device)
    ]


def paint_masks(
    pipeline: TrainedPipeline,
    pairs: Sequence[FundusPair],
    *,
    count: int,
    seed: int,
    batch_size: int = 32,
    device: str | torch.device | None = None,
) -> list[FundusPair]:
    """Stage II painting the given pairs' masks, for measuring Stage II apart from Stage I.

    Painting ``i`` is of pair ``i % len(pairs)`` in the ``i // len(pairs)``-th of its eight
    turns and flips (so ``count`` can exceed the masks there are), coloured like sample
    ``i`` of a run with ``seed``. The pairs are at the pipeline's training size, and the
    paintings come at its published size (``published``). Painted training masks are as
    private as the training set: they are for benchmarks, never for a published dataset.
    """
    if not pairs:
        raise ValueError("no masks to paint")
    if count < 0 or batch_size < 1:
        raise ValueError(f"count must be >= 0 and batch_size >= 1, got {count}, {batch_size}")
    runtime, _, stage2 = _eval_copies(pipeline, device, fast=True, compile=False)
    out: list[FundusPair] = []
    for first in range(0, count, batch_size):
        indices = range(first, min(first + batch_size, count))
        sources = [pairs[i % len(pairs)] for i in indices]
        masks = [_dihedral(p.mask, i // len(pairs)) for p, i in zip(sources, indices, strict=True)]
        fovs = [_dihedral(p.fov, i // len(pairs)) for p, i in zip(sources, indices, strict=True)]
        looks = None
        if pipeline.appearance is not None:
            looks = pipeline.appearance.draw([sample_seed(seed, i) for i in indices])
        mask, fov = runtime.tensor(_binary(masks)), runtime.tensor(_binary(fovs))
        vessels = condition_vessels(pipeline.config, mask)
        images = to_uint8_images(paint(stage2, pipeline.config, vessels, fov, runtime, looks))
        for j, i in enumerate(indices):
            name = f"{i:05d}-{sources[j].name}"
            drawn = FundusPair(name=name, image=images[j], mask=masks[j], fov=fovs[j])
            out.append(published(pipeline.config, drawn))
    return out


def _dihedral(a: np.ndarray, k: int) -> np.ndarray:
    """The k-th (mod 8) of an array's four rotations, each unflipped and flipped."""
    a = np.rot90(np.asarray(a, dtype=np.uint8), k % 4)
    return np.ascontiguousarray(a[:, ::-1] if k % 8 >= 4 else a)


def _binary(arrays: list[np.ndarray]) -> Tensor:
    return torch.from_numpy(np.stack(arrays)).clamp(0, 1).float()[:, None]


def sample_grid(
    stage1: nn.Module, stage2: nn.Module, config: PipelineConfig, z: Tensor
) -> np.ndarray:
    """A uint8 RGB grid: generated masks on the top row (vessels white, FOV grey), their
    images below. Switches the networks to eval mode for the duration only."""
    dev = next(stage1.parameters()).device
    with _eval_mode(stage1, stage2):
        image, mask, fov = synthesize(stage1, stage2, config, z, Runtime(device=dev))
    shown = (mask * 215 + fov * 40).expand(-1, 3, -1, -1)  # vessel 255, FOV 40, outside 0
    top = torch.cat(list(shown.round().to(torch.uint8).cpu()), dim=2)
    bottom = torch.cat(list(torch.from_numpy(to_uint8_images(image)).permute(0, 3, 1, 2)), dim=2)
    return torch.cat([top, bottom], dim=1).permute(1, 2, 0).contiguous().numpy()


@contextlib.contextmanager
def _eval_mode(*nets: nn.Module) -> Iterator[None]:
    modes = [n.training for n in nets]
    for n in nets:
        n.eval()
    try:
        yield
    finally:
        for n, mode in zip(nets, modes, strict=True):
            n.train(mode)
