from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any

import numpy as np
import pytest
import torch

from models.checkpoint import CheckpointError, load_pipeline, save_pipeline
from models.config import Stage2Config
from models.data import FundusPair
from models.evaluate.segmenter import fov_loss, train_segmenter
from models.networks import Runtime
from models.phantom import phantom_pairs
from models.stage1 import DCGAN, vessel_map
from models.stage2 import Pix2Pix, condition
from models.train import TrainProgress, train_pipeline
from models.transforms import to_tensor
from tests.tiny import SIZE, assert_same_weights, tiny_config, weights


@pytest.fixture(scope="module")
def pairs() -> list[FundusPair]:
    return phantom_pairs(6, size=SIZE, seed=1)


@pytest.fixture(scope="module")
def large() -> list[FundusPair]:
    """Training pairs at twice the tiny size, for a pipeline that works at twice it."""
    return phantom_pairs(4, size=2 * SIZE, seed=1)


def plain_stage2(cfg: Stage2Config, **kwargs: Any) -> Pix2Pix:
    """A Stage II on the CPU's plain path, its weights drawn from seed 0."""
    return Pix2Pix(
        cfg,
        resolution=SIZE,
        runtime=Runtime.create(torch.device("cpu"), fast=False),
        init_generator=torch.Generator().manual_seed(0),
        **kwargs,
    )


class TestTraining:
    def test_losses_finite_and_l1_falls(self, pairs: list[FundusPair]) -> None:
        reports: list[TrainProgress] = []
        grids: list[tuple[int, np.ndarray]] = []
        cfg = tiny_config()
        p = train_pipeline(
            pairs,
            cfg,
            steps=20,
            seed=0,
            device="cpu",
            on_progress=reports.append,
            progress_every=1,
            on_samples=lambda s, g: grids.append((s, g)),
            sample_every=10,
        )
        assert p.steps_done == 20
        assert [r.step for r in reports] == list(range(1, 21))
        assert all(r.total == 20 and r.images_per_s > 0 for r in reports)
        # The default recipe includes Stage II's feature matching and vessel-consistency loss.
        keys = {
            "stage1_d",
            "stage1_g",
            "stage2_d",
            "stage2_g",
            "stage2_l1",
            "stage2_fm",
            "stage2_seg",
        }
        for r in reports:
            assert set(r.losses) == keys
            assert all(math.isfinite(v) for v in r.losses.values())
            assert r.losses["stage2_seg"] > 0 and r.losses["stage2_fm"] > 0
        l1 = [r.losses["stage2_l1"] for r in reports]
        assert np.mean(l1[-5:]) < np.mean(l1[:5])

        assert [s for s, _ in grids] == [10, 20]
        grid = grids[-1][1]
        assert grid.dtype == np.uint8 and grid.shape == (2 * SIZE, 8 * SIZE, 3)

    def test_same_seed_same_weights(self, pairs: list[FundusPair]) -> None:
        a = train_pipeline(pairs, tiny_config(), steps=3, seed=7, device="cpu")
        b = train_pipeline(pairs, tiny_config(), steps=3, seed=7, device="cpu")
        c = train_pipeline(pairs, tiny_config(), steps=3, seed=8, device="cpu")
        assert_same_weights(a, b)
        assert not torch.equal(
            next(a.stage2_generator.parameters()), next(c.stage2_generator.parameters())
        )

    def test_plain_path_matches_fast_on_cpu(self, pairs: list[FundusPair]) -> None:
        a = train_pipeline(pairs, tiny_config(), steps=3, seed=2, device="cpu", fast=True)
        b = train_pipeline(pairs, tiny_config(), steps=3, seed=2, device="cpu", fast=False)
        # Fused Adam and flushed denormals round differently; where a gradient is ~0 Adam's
        # normalised step can still move a weight by up to lr (2e-4) per step either way.
        for (k, va), vb in zip(weights(a).items(), weights(b).values(), strict=True):
            assert torch.allclose(va.float(), vb.float(), atol=2e-3), k

    def test_consistency_segmenter_stays_frozen(self, pairs: list[FundusPair]) -> None:
        cfg = tiny_config().stage2
        segmenter = train_segmenter(pairs, steps=1, crop=32, levels=2, base=4)
        before = copy.deepcopy(segmenter.state_dict())
        with pytest.raises(ValueError, match="segmenter"):
            plain_stage2(dataclasses.replace(cfg, seg_weight=1.0))
        s2 = plain_stage2(dataclasses.replace(cfg, seg_weight=1.0), segmenter=segmenter)
        images, masks, fovs = to_tensor(pairs[:4])
        losses = s2.step(condition(cfg, masks, fovs), images, torch.Generator().manual_seed(1))
        assert losses["stage2_seg"] > 0
        for k, v in segmenter.state_dict().items():
            assert torch.equal(v, before[k]), k  # running stats included: eval mode

    def test_soft_condition_trains_stage2_on_the_vessel_map(
        self, pairs: list[FundusPair], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        seen: list[tuple[torch.Tensor, float]] = []
        step = Pix2Pix.step

        def spy(self: Pix2Pix, cond: torch.Tensor, *args: object) -> dict:
            seen.append((cond.clone(), self.vessel_threshold))
            return step(self, cond, *args)

        monkeypatch.setattr(Pix2Pix, "step", spy)
        cfg = tiny_config()
        assert cfg.stage2.soft_condition  # the default recipe
        binary = dataclasses.replace(
            cfg,
            stage2=dataclasses.replace(cfg.stage2, soft_condition=False, paint_labelled_only=False),
        )
        train_pipeline(pairs, cfg, steps=1, seed=2, device="cpu")
        train_pipeline(pairs, binary, steps=1, seed=2, device="cpu")
        (soft_cond, soft_cut), (binary_cond, binary_cut) = seen
        # One seed, so one batch: the soft condition is the binary one's vessel map.
        masks = (binary_cond[:, :1] + 1) / 2
        assert torch.equal(soft_cond[:, :1], vessel_map(cfg.stage1, masks) * 2 - 1)
        assert torch.equal(soft_cond[:, 1:], binary_cond[:, 1:])
        assert soft_cut == binary_cut == cfg.stage1.vessel_threshold == 0.5

    def test_consistency_target_is_the_condition_cut_at_the_threshold(
        self, pairs: list[FundusPair]
    ) -> None:
        cfg = tiny_config().stage2
        segmenter = train_segmenter(pairs, steps=1, crop=32, levels=2, base=4)
        _, masks, fovs = to_tensor(pairs[:2])
        # A soft map: faint skirts (0.2 in [0, 1], -0.6 as a condition) around each vessel.
        vessels = torch.where(masks > 0, torch.ones_like(masks), 0.2 * fovs)
        cond = condition(cfg, vessels, fovs)
        fake = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            logits = segmenter(fake)

        def consistency(threshold: float) -> float:
            s2 = plain_stage2(
                dataclasses.replace(cfg, seg_weight=1.0),
                segmenter=segmenter,
                vessel_threshold=threshold,
            )
            return float(s2._vessel_consistency(cond, fake))

        assert consistency(0.5) == pytest.approx(float(fov_loss(logits, masks, fovs)["loss"]))
        skirts_too = (vessels > 0).float()
        assert consistency(-0.9) == pytest.approx(float(fov_loss(logits, skirts_too, fovs)["loss"]))
        assert consistency(0.5) != pytest.approx(consistency(-0.9))

    def test_feature_matching_is_l1_between_the_discriminators_hidden_layers(
        self, pairs: list[FundusPair]
    ) -> None:
        cfg = dataclasses.replace(tiny_config().stage2, lambda_fm=10.0, seg_weight=0.0)
        s2 = plain_stage2(cfg)
        images, masks, fovs = to_tensor(pairs[:2])
        cond = condition(cfg, masks, fovs)
        d = s2.discriminator.eval()  # batch norm on running statistics: one input, one answer
        with torch.no_grad():
            real = d.features(torch.cat([cond, images], dim=1))
            assert torch.equal(d.body[-1](real[-1]), d(torch.cat([cond, images], dim=1)))
        assert len(real) == cfg.d_layers + 1

        fake = (images * 0.5).requires_grad_(True)
        with torch.no_grad():
            painted = d.features(torch.cat([cond, fake], dim=1))
        gaps = [float((p - r).abs().mean()) for p, r in zip(painted, real, strict=True)]
        by_hand = sum(gaps) / len(gaps)
        loss = s2._feature_matching(cond, images, fake)
        assert float(loss.detach()) == pytest.approx(by_hand, rel=1e-5)
        with torch.no_grad():
            assert float(s2._feature_matching(cond, images, images)) == 0.0
        loss.backward()
        assert fake.grad is not None and fake.grad.abs().sum() > 0

    def test_feature_matching_joins_the_generator_loss_only_when_weighted(
        self, pairs: list[FundusPair]
    ) -> None:
        images, masks, fovs = to_tensor(pairs[:4])
        for weight in (0.0, 10.0):
            cfg = dataclasses.replace(tiny_config().stage2, lambda_fm=weight, seg_weight=0.0)
            s2 = plain_stage2(cfg)
            losses = s2.step(condition(cfg, masks, fovs), images, torch.Generator().manual_seed(1))
            assert ("stage2_fm" in losses) == (weight > 0)
        assert losses["stage2_fm"] > 0
        with pytest.raises(ValueError, match="lambda_fm"):
            dataclasses.replace(cfg, lambda_fm=-1.0)

    def test_stage1_stops_at_its_own_step_count(self, pairs: list[FundusPair]) -> None:
        cfg = tiny_config()
        stopping = dataclasses.replace(cfg, stage1=dataclasses.replace(cfg.stage1, train_steps=2))
        reports: list[TrainProgress] = []
        run = train_pipeline(
            pairs,
            stopping,
            steps=4,
            seed=5,
            device="cpu",
            on_progress=reports.append,
            progress_every=1,
        )
        stage1_alone = train_pipeline(pairs, cfg, steps=2, seed=5, device="cpu")
        both_on = train_pipeline(pairs, cfg, steps=4, seed=5, device="cpu")
        for k, v in weights(run).items():
            # Stage I is where two steps left it (EMA and discriminator included); Stage II
            # trained all four on the same batches as a run where Stage I never stopped.
            expected = weights(stage1_alone if k.startswith("stage1") else both_on)[k]
            assert torch.equal(v, expected), k
        assert not torch.equal(
            next(run.stage2_generator.parameters()),
            next(stage1_alone.stage2_generator.parameters()),
        )
        stage1_keys = ("stage1_d", "stage1_g")
        assert [r.step for r in reports] == [1, 2, 3, 4]
        # A stopped stage reports the losses of its last step.
        for r in reports[2:]:
            assert {k: r.losses[k] for k in stage1_keys} == {
                k: reports[1].losses[k] for k in stage1_keys
            }
            assert r.losses["stage2_l1"] != reports[1].losses["stage2_l1"]
        assert run.losses["stage1_g"] == reports[1].losses["stage1_g"]

    def test_standing_statistics_settle_only_the_averages_batch_norms(
        self, pairs: list[FundusPair]
    ) -> None:
        cfg = tiny_config()
        live = dataclasses.replace(cfg, stage1=dataclasses.replace(cfg.stage1, standing_stats=0))
        standing = dataclasses.replace(
            cfg, stage1=dataclasses.replace(cfg.stage1, standing_stats=40)
        )
        a, b = (train_pipeline(pairs, c, steps=3, seed=4, device="cpu") for c in (live, standing))
        ema_buffers = a.stage1_generator.ema.named_buffers()
        settled = {f"stage1_generator.ema.{name}" for name, _ in ema_buffers}
        assert settled
        without = weights(a)
        for k, v in weights(b).items():
            # Its own noise stream: everything else trained as without it.
            assert torch.equal(v, without[k]) is (k not in settled), k
        for run, copied in ((a, True), (b, False)):
            g = run.stage1_generator
            pairs_of_buffers = zip(g.ema.buffers(), g.net.buffers(), strict=True)
            assert all(torch.equal(e, n) for e, n in pairs_of_buffers) is copied

    def test_paper_config_trains(self, pairs: list[FundusPair]) -> None:
        cfg = tiny_config("paper")
        p = train_pipeline(pairs, cfg, steps=2, device="cpu")
        assert all(math.isfinite(v) for v in p.losses.values())
        # The paper has neither a consistency loss nor feature matching.
        assert not {"stage2_seg", "stage2_fm"} & set(p.losses)

    def test_rejects_wrong_resolution(self, pairs: list[FundusPair]) -> None:
        cfg = dataclasses.replace(tiny_config(), resolution=128)
        with pytest.raises(ValueError, match="64x64 px; the config needs 128"):
            train_pipeline(pairs, cfg, steps=1, device="cpu")


# The eight flips and quarter turns of a (C, H, W) tensor.
TURNS = [
    lambda x, k=k, flip=flip: torch.rot90(x.flip(-1) if flip else x, k, dims=(-2, -1))
    for k in range(4)
    for flip in (False, True)
]


class TestSupersampled:
    """A pipeline whose stages work at twice the published size."""

    def test_both_stages_learn_the_pairs_as_loaded(
        self, large: list[FundusPair], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        geometries: list[torch.Tensor] = []
        pairs_seen: list[tuple[torch.Tensor, torch.Tensor]] = []
        stage1_step, stage2_step = DCGAN.step, Pix2Pix.step

        def stage1(self: DCGAN, real: torch.Tensor, rng: Any) -> Any:
            geometries.append(real.clone())
            return stage1_step(self, real, rng)

        def stage2(self: Pix2Pix, cond: torch.Tensor, real: torch.Tensor, rng: Any) -> Any:
            pairs_seen.append((cond.clone(), real.clone()))
            return stage2_step(self, cond, real, rng)

        monkeypatch.setattr(DCGAN, "step", stage1)
        monkeypatch.setattr(Pix2Pix, "step", stage2)
        trained = train_pipeline(large, tiny_config("supersampled"), steps=2, seed=0, device="cpu")
        assert trained.config.resolution == SIZE
        assert [g.shape[2:] for g in geometries] == [(2 * SIZE, 2 * SIZE)] * 2
        images = to_tensor(large)[0]
        for cond, real in pairs_seen:
            assert cond.shape[2:] == (2 * SIZE, 2 * SIZE)
            # Every target is a loaded pair, turned or flipped: nothing was resized.
            for r in real:
                assert any(torch.equal(r, t(im)) for im in images for t in TURNS)

    def test_refuses_pairs_at_the_published_size(self, pairs: list[FundusPair]) -> None:
        with pytest.raises(ValueError, match="64x64 px; the config needs 128"):
            train_pipeline(pairs, tiny_config("supersampled"), steps=1, device="cpu")


class TestResume:
    @pytest.mark.parametrize(
        ("recipe", "r1", "seg_weight", "stage1_steps"),
        [
            ("default", 0.0, 0.0, 0),
            ("default", 1.0, 0.0, 0),
            ("default", 0.0, 5.0, 0),
            ("default", 0.0, 0.0, 6),
            ("supersampled", 0.0, 5.0, 0),
        ],
    )
    def test_resume_continues_exactly(
        self,
        pairs: list[FundusPair],
        large: list[FundusPair],
        recipe: str,
        r1: float,
        seg_weight: float,
        stage1_steps: int,
    ) -> None:
        cfg = tiny_config(recipe)
        # A lazy R1 penalty every 3 steps: the resumed run must apply it on the same steps.
        # The consistency segmenter is not in the checkpoint: the resume must rebuild it.
        # Stage I stopping at step 6 must stop there in the resumed run too. A supersampled
        # pipeline's checkpoint must rebuild both stages at twice the published size.
        training = large if cfg.train_resolution != cfg.resolution else pairs
        cfg = dataclasses.replace(
            cfg,
            stage1=dataclasses.replace(
                cfg.stage1, r1_gamma=r1, r1_every=3, train_steps=stage1_steps
            ),
            stage2=dataclasses.replace(cfg.stage2, seg_weight=seg_weight, seg_steps=3),
        )
        checkpoints: list[bytes] = []
        straight = train_pipeline(
            training,
            cfg,
            steps=8,
            seed=3,
            device="cpu",
            on_checkpoint=lambda p: checkpoints.append(save_pipeline(p)),
            checkpoint_every=5,
        )
        assert len(checkpoints) == 1
        half = load_pipeline(checkpoints[0], expect_config=cfg)
        assert half.steps_done == 5
        resumed = train_pipeline(training, cfg, steps=8, seed=3, device="cpu", resume=half)
        assert resumed.steps_done == 8
        assert_same_weights(straight, resumed)

    def test_resume_refuses_other_data(self, pairs: list[FundusPair]) -> None:
        cfg = tiny_config()
        p = train_pipeline(pairs, cfg, steps=1, device="cpu")
        other = phantom_pairs(6, size=SIZE, seed=2)
        with pytest.raises(ValueError, match="different data"):
            train_pipeline(other, cfg, steps=2, device="cpu", resume=p)

    def test_resume_refuses_other_config(self, pairs: list[FundusPair]) -> None:
        cfg = tiny_config()
        p = train_pipeline(pairs, cfg, steps=1, device="cpu")
        other = dataclasses.replace(cfg, batch_size=2)
        with pytest.raises(ValueError, match="config"):
            train_pipeline(pairs, other, steps=2, device="cpu", resume=p)

    def test_generation_only_checkpoint_cannot_resume(self, pairs: list[FundusPair]) -> None:
        cfg = tiny_config()
        p = train_pipeline(pairs, cfg, steps=1, device="cpu")
        slim = dataclasses.replace(
            p, stage1_discriminator=None, stage2_discriminator=None, optimizer_states={}
        )
        with pytest.raises(ValueError, match="generation only"):
            resume = load_pipeline(save_pipeline(slim))
            train_pipeline(pairs, cfg, steps=2, device="cpu", resume=resume)


@pytest.fixture(scope="module")
def blob(pairs: list[FundusPair]) -> bytes:
    return save_pipeline(train_pipeline(pairs, tiny_config(), steps=1, device="cpu"))


class TestCheckpointErrors:
    def test_round_trip_fields(self, blob: bytes, pairs: list[FundusPair]) -> None:
        p = load_pipeline(blob)
        assert p.config == tiny_config()
        assert p.steps_done == 1 and p.resumable
        assert p.data_fingerprint

    def test_mismatched_config(self, blob: bytes) -> None:
        with pytest.raises(CheckpointError, match="expected"):
            load_pipeline(blob, expect_config=tiny_config("paper"))

    @pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
    def test_corrupt(self, blob: bytes, damage: str) -> None:
        data = {
            "garbage": b"not a checkpoint" * 10,
            "truncated": blob[: len(blob) // 2],
            "empty": b"",
        }[damage]
        with pytest.raises(CheckpointError):
            load_pipeline(data)

    def test_foreign_torch_file(self) -> None:
        import io

        buf = io.BytesIO()
        torch.save({"weights": torch.zeros(3)}, buf)
        with pytest.raises(CheckpointError, match="not a SynthMed"):
            load_pipeline(buf.getvalue())

    def test_is_value_error(self) -> None:
        assert issubclass(CheckpointError, ValueError)
