"""Narrow versions of the named recipes, so CPU tests of training stay fast."""

from __future__ import annotations

import dataclasses

from models.config import PipelineConfig, named_config

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
