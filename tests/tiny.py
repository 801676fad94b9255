"""Narrow versions of the named recipes, so CPU tests of training stay fast, the helpers the
model tests share to compare pipelines and their samples, and the registration of a tiny
pipeline for the worker tests."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from sqlalchemy.orm import Session, sessionmaker
from torch import Tensor, nn

from app.settings import Settings
from app.storage import Storage
from models.config import PipelineConfig, named_config
from models.generate import GeneratedSample, generate
from models.train import TrainedPipeline
from workers.training import register

SIZE = 64


def tiny_config(name: str = "default") -> PipelineConfig:
    cfg = named_config(name, resolution=SIZE)
    return dataclasses.replace(
        cfg,
        batch_size=4,
        stage1=dataclasses.replace(cfg.stage1, width=8, max_width=64),
        # A few steps of the consistency segmenter: the loss runs, the tests stay fast.
        stage2=dataclasses.replace(cfg.stage2, width=8, d_width=8, max_width=64, seg_steps=5),
    )


def weights(p: TrainedPipeline) -> dict[str, Tensor]:
    """Every tensor of both stages' generators and discriminators, buffers included."""
    out = {}
    for part in (
        "stage1_generator",
        "stage2_generator",
        "stage1_discriminator",
        "stage2_discriminator",
    ):
        net = getattr(p, part)
        out |= {f"{part}.{k}": v for k, v in net.state_dict().items()}
    return out


def assert_same_weights(a: TrainedPipeline, b: TrainedPipeline) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


class DiscStage1(nn.Module):
    """A stand-in Stage I whose FOV is a centred disc and whose vessels depend on z, so the
    FOV handling can be checked on a known geometry."""

    def __init__(self, size: int = SIZE) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        r = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2).sqrt()
        self.register_buffer("fov", (r < size * 0.4).float() * 2 - 1)
        self.register_buffer("wave", torch.sin(xx / 3.0) * torch.cos(yy / 5.0))

    def forward(self, z: Tensor) -> Tensor:
        vessels = self.scale * self.wave + z[:, :1, None] * 0.5
        return torch.stack([vessels, self.fov.expand_as(vessels)], dim=1)


def stack(samples: list[GeneratedSample]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images, masks and FOVs of a list of samples, each as one array."""
    return (
        np.stack([s.image for s in samples]),
        np.stack([s.mask for s in samples]),
        np.stack([s.fov for s in samples]),
    )


def assert_fast_generation_close_to_plain(pipeline: TrainedPipeline) -> None:
    """The fast path's samples against plain fp32's, on the pipeline's own device."""
    fast = stack(list(generate(pipeline, count=4, seed=2, fast=True)))
    plain = stack(list(generate(pipeline, count=4, seed=2, fast=False)))
    assert (fast[1] == plain[1]).mean() > 0.99
    assert (fast[2] == plain[2]).mean() > 0.99
    same = (fast[1] == plain[1]) & (fast[2] == plain[2])
    diff = np.abs(fast[0].astype(int) - plain[0].astype(int))[same]
    assert diff.mean() < 2


def register_tiny(
    settings: Settings, sessions: sessionmaker[Session], storage: Storage, trained: TrainedPipeline
) -> int:
    """Register `trained` as a phantom pipeline, its checkpoint in `storage`; its id."""
    return register(
        settings,
        sessions,
        storage,
        trained=trained,
        data="phantom",
        count=4,
        name="tiny",
        seconds=0.0,
        grid=None,
    )
