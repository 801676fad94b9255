"""The CUDA paths against plain fp32 and against the CPU.

Skipped where no GPU is visible (CI has none). On a GPU machine, only the model code and
torch are needed: ``python -m pytest -p no:cacheprovider --confcutdir=tests/models
tests/models/test_cuda.py`` leaves out the service fixtures of ``tests/conftest.py``.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from models.checkpoint import load_pipeline, save_pipeline
from models.data import FundusPair
from models.generate import generate
from models.phantom import phantom_pairs
from models.train import TrainedPipeline, TrainProgress, train_pipeline
from tests.tiny import (
    SIZE,
    DiscStage1,
    assert_fast_generation_close_to_plain,
    assert_same_weights,
    stack,
    tiny_config,
)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CUDA = torch.device("cuda")


@pytest.fixture(scope="module")
def pairs() -> list[FundusPair]:
    return phantom_pairs(6, size=SIZE, seed=1)


@pytest.fixture(scope="module")
def disc_pipeline(pairs: list[FundusPair]) -> TrainedPipeline:
    """Stage II trained a few steps on the GPU, behind a known geometry (see DiscStage1)."""
    p = train_pipeline(pairs, tiny_config(), steps=3, device=CUDA, fast=False)
    return dataclasses.replace(p, stage1_generator=DiscStage1().to(CUDA))


def first_step_losses(pairs: list[FundusPair], *, fast: bool) -> dict[str, float]:
    reports: list[TrainProgress] = []
    train_pipeline(
        pairs, tiny_config(), steps=1, seed=3, device=CUDA, fast=fast, on_progress=reports.append
    )
    return reports[-1].losses


class TestTrainingOnCuda:
    def test_plain_path_repeats_bit_for_bit(self, pairs: list[FundusPair]) -> None:
        a = train_pipeline(pairs, tiny_config(), steps=3, seed=7, device=CUDA, fast=False)
        # A fast run in between turns cuDNN autotuning on for the whole process.
        train_pipeline(pairs, tiny_config(), steps=1, seed=7, device=CUDA, fast=True)
        b = train_pipeline(pairs, tiny_config(), steps=3, seed=7, device=CUDA, fast=False)
        assert_same_weights(a, b)

    def test_bf16_losses_match_fp32(self, pairs: list[FundusPair]) -> None:
        plain = first_step_losses(pairs, fast=False)
        fast = first_step_losses(pairs, fast=True)
        assert plain.keys() == fast.keys()
        for k, v in plain.items():
            assert math.isfinite(fast[k]), k
            # bf16 keeps 8 bits of mantissa: about 0.4% per rounding, a few % over a network.
            assert fast[k] == pytest.approx(v, rel=0.05, abs=0.02), k

    def test_bf16_weights_stay_close_to_fp32(self, pairs: list[FundusPair]) -> None:
        a = train_pipeline(pairs, tiny_config(), steps=3, seed=2, device=CUDA, fast=True)
        b = train_pipeline(pairs, tiny_config(), steps=3, seed=2, device=CUDA, fast=False)
        for part in ("stage1_generator", "stage2_generator"):
            fast = dict(getattr(a, part).named_parameters())
            plain = dict(getattr(b, part).named_parameters())
            for k, v in plain.items():
                assert fast[k].dtype == torch.float32, k  # autocast leaves master weights fp32
                # Adam moves a weight by at most ~lr (2e-4) per step whichever way its
                # gradient points, so 3 steps of disagreement stay within 2e-3.
                assert torch.allclose(fast[k], v, atol=2e-3), k

    def test_fast_checkpoint_resumes_on_cpu(self, pairs: list[FundusPair]) -> None:
        p = train_pipeline(pairs, tiny_config(), steps=2, device=CUDA, fast=True)
        loaded = load_pipeline(save_pipeline(p), expect_config=p.config)
        resumed = train_pipeline(pairs, tiny_config(), steps=3, device="cpu", resume=loaded)
        assert resumed.steps_done == 3
        assert all(math.isfinite(v) for v in resumed.losses.values())


class TestGenerationOnCuda:
    def test_fast_close_to_plain(self, disc_pipeline: TrainedPipeline) -> None:
        assert_fast_generation_close_to_plain(disc_pipeline)

    def test_cuda_matches_cpu(self, disc_pipeline: TrainedPipeline) -> None:
        gpu = stack(list(generate(disc_pipeline, count=4, seed=5, fast=False)))
        cpu = stack(list(generate(disc_pipeline, count=4, seed=5, fast=False, device="cpu")))
        np.testing.assert_array_equal(gpu[1], cpu[1])
        np.testing.assert_array_equal(gpu[2], cpu[2])
        # cuDNN runs fp32 convolutions in TF32 (10-bit mantissa) by default.
        diff = np.abs(gpu[0].astype(int) - cpu[0].astype(int))
        assert diff.mean() < 0.5 and diff.max() <= 4, (diff.mean(), diff.max())

    @pytest.mark.parametrize("fast", [False, True])
    def test_sample_does_not_depend_on_batch(
        self, disc_pipeline: TrainedPipeline, fast: bool
    ) -> None:
        one = stack(list(generate(disc_pipeline, count=5, seed=1, batch_size=1, fast=fast)))
        five = stack(list(generate(disc_pipeline, count=5, seed=1, batch_size=5, fast=fast)))
        np.testing.assert_array_equal(one[1], five[1])
        # Other batch shapes may pick other cuDNN kernels, which round differently.
        diff = np.abs(one[0].astype(int) - five[0].astype(int))
        assert diff.mean() < 0.5 and diff.max() <= 4, (diff.mean(), diff.max())
