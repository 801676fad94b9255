from __future__ import annotations

import dataclasses
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models.config import CONFIG_NAMES, PipelineConfig, Stage1Config, Stage2Config, named_config
from models.data import load_pairs
from models.networks import (
    EMAGenerator,
    MultiScaleDiscriminator,
    Runtime,
    build_discriminator,
    build_generator,
    norm_layer,
    spectral_normalised,
)
from models.stage1 import (
    build_stage1_discriminator,
    build_stage1_generator,
    decode_geometry,
    drawn_vessel_map,
    gaussian_kernel,
    real_geometry,
    soften_vessels,
    vessel_map,
)
from models.stage2 import build_stage2_discriminator, build_stage2_generator
from models.transforms import to_tensor


@pytest.fixture(autouse=True)
def _no_grad() -> object:
    with torch.no_grad():
        yield


@pytest.mark.parametrize("resolution", [64, 128])
@pytest.mark.parametrize("name", CONFIG_NAMES)
class TestShapes:
    def test_stage1(self, name: str, resolution: int) -> None:
        cfg = named_config(name, resolution=resolution)
        size = cfg.train_resolution
        g = build_stage1_generator(cfg.stage1, resolution=size)
        d = build_stage1_discriminator(cfg.stage1, resolution=size)
        z = torch.rand(2, cfg.stage1.z_dim) * 2 - 1
        x = g(z)
        assert x.shape == (2, 2, size, size)
        assert x.min() >= -1 and x.max() <= 1
        assert d(x).shape == (2, cfg.stage1.d_scales)  # one logit per image and scale

    def test_stage2(self, name: str, resolution: int) -> None:
        cfg = named_config(name, resolution=resolution)
        c, size = cfg.stage2.cond_channels, cfg.train_resolution
        g = build_stage2_generator(cfg.stage2, resolution=size)
        d = build_stage2_discriminator(cfg.stage2, resolution=size)
        cond = torch.rand(2, c, size, size) * 2 - 1
        y = g(cond)
        assert y.shape == (2, 3, size, size)
        assert y.min() >= -1 and y.max() <= 1
        logits = d(torch.cat([cond, y], dim=1))
        assert logits.shape[:2] == (2, 1) and logits.shape[2] > 1  # a patch grid, not a scalar
        assert not any(isinstance(m, nn.ConvTranspose2d) for m in g.modules())


def test_default_stage1_has_no_transposed_convs() -> None:
    cfg = named_config("default", resolution=64)
    g = build_stage1_generator(cfg.stage1, resolution=64)
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in g.modules())


def test_unet_depth_follows_resolution() -> None:
    assert named_config("paper", resolution=512).stage2.depth == 8
    assert named_config("paper", resolution=64).stage2.depth == 5


def test_transposed_upsample_is_optional() -> None:
    g = build_generator("unet", in_ch=1, out_ch=3, resolution=64, width=8, upsample="transposed")
    assert any(isinstance(m, nn.ConvTranspose2d) for m in g.modules())
    assert g(torch.zeros(1, 1, 64, 64)).shape == (1, 3, 64, 64)


def test_dcgan_kernel_5() -> None:
    g = build_generator(
        "dcgan", in_ch=10, out_ch=2, resolution=64, width=8, kernel=5, upsample="transposed"
    )
    convs = [m for m in g.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert convs and all(m.kernel_size == (5, 5) and m.stride == (2, 2) for m in convs)


class TestFactories:
    def test_unknown_generator(self) -> None:
        with pytest.raises(ValueError, match="unknown generator 'resnet'"):
            build_generator("resnet", in_ch=1, out_ch=3, resolution=64)

    def test_unknown_discriminator(self) -> None:
        with pytest.raises(ValueError, match="unknown discriminator"):
            build_discriminator("pixel", in_ch=1, resolution=64)

    def test_unknown_norm(self) -> None:
        with pytest.raises(ValueError, match="unknown norm"):
            norm_layer("group")  # type: ignore[arg-type]

    def test_unknown_config_lists_names(self) -> None:
        with pytest.raises(ValueError, match="default.*paper"):
            named_config("fancy", resolution=64)

    @pytest.mark.parametrize("resolution", [32, 96, 1024])
    def test_bad_resolution(self, resolution: int) -> None:
        with pytest.raises(ValueError, match="power of two"):
            named_config("default", resolution=resolution)

    def test_init_is_seeded(self) -> None:
        a = build_generator(
            "unet",
            in_ch=1,
            out_ch=3,
            resolution=64,
            width=8,
            generator=torch.Generator().manual_seed(3),
        )
        b = build_generator(
            "unet",
            in_ch=1,
            out_ch=3,
            resolution=64,
            width=8,
            generator=torch.Generator().manual_seed(3),
        )
        for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
            assert torch.equal(pa, pb)


class TestConfig:
    @pytest.mark.parametrize("name", CONFIG_NAMES)
    def test_round_trip(self, name: str) -> None:
        cfg = named_config(name, resolution=128)
        assert PipelineConfig.from_dict(cfg.to_dict()) == cfg

    def test_paper_recipe(self) -> None:
        cfg = named_config("paper", resolution=512)
        assert (cfg.stage1.z_dim, cfg.stage1.z_dist, cfg.stage1.kernel) == (100, "uniform", 5)
        assert cfg.stage1.g_steps_per_d == 2
        assert cfg.stage2.lambda_l1 == 1.0 and cfg.stage2.lambda_fm == 0
        assert not cfg.stage2.use_fov

    def test_feature_matching_is_on_where_measured_and_off_for_older_pipelines(self) -> None:
        assert named_config("default", resolution=128).stage2.lambda_fm == 10.0
        assert named_config("default", resolution=256).stage2.lambda_fm == 0.0
        stored = named_config("default", resolution=128).to_dict()
        del stored["stage2"]["lambda_fm"]  # a pipeline trained before the field existed
        assert PipelineConfig.from_dict(stored).stage2.lambda_fm == 0.0

    def test_unknown_key(self) -> None:
        d = named_config("default", resolution=64).to_dict()
        d["stage2"]["dropout"] = 0.5
        with pytest.raises(ValueError, match="dropout"):
            PipelineConfig.from_dict(d)

    def test_too_deep(self) -> None:
        with pytest.raises(ValueError, match="depth"):
            PipelineConfig(name="x", resolution=64, stage2=Stage2Config(depth=7))

    def test_supersampled_is_the_default_working_at_twice_the_size(self) -> None:
        default = named_config("default", resolution=128)
        cfg = named_config("supersampled", resolution=128)
        assert (cfg.resolution, cfg.train_resolution, default.train_resolution) == (128, 256, 128)
        # Its EMA generator gets batch statistics of its own when Stage I stops.
        assert cfg.stage1 == dataclasses.replace(default.stage1, standing_stats=512)
        # One more level keeps the default's bottleneck, at twice the size.
        assert cfg.stage2 == dataclasses.replace(default.stage2, depth=default.stage2.depth + 1)
        assert (
            dataclasses.replace(
                cfg, name="default", supersample=1, stage1=default.stage1, stage2=default.stage2
            )
            == default
        )

    def test_standing_statistics_need_an_ema_generator(self) -> None:
        with pytest.raises(ValueError, match="needs an EMA generator"):
            Stage1Config(ema=0.0, standing_stats=64)
        with pytest.raises(ValueError, match="standing_stats must be >= 0"):
            Stage1Config(ema=0.995, standing_stats=-1)
        assert Stage1Config(ema=0.995, standing_stats=64).standing_stats == 64

    def test_supersampling_needs_room(self) -> None:
        with pytest.raises(ValueError, match="at most 256 px, got 512"):
            named_config("supersampled", resolution=512)
        with pytest.raises(ValueError, match="would work at 1024 px"):
            PipelineConfig(name="x", resolution=512, stage2=Stage2Config(depth=8), supersample=2)
        with pytest.raises(ValueError, match="supersample must be 1 or 2, got 3"):
            PipelineConfig(name="x", resolution=64, stage2=Stage2Config(depth=5), supersample=3)
        # Depth is checked against the training size: 7 levels fit 128 px, not 64.
        PipelineConfig(name="x", resolution=64, stage2=Stage2Config(depth=7), supersample=2)

    def test_a_retired_stage2_supersample_of_one_still_loads(self) -> None:
        d = named_config("default", resolution=64).to_dict()
        d["stage2"]["supersample"] = 1
        assert PipelineConfig.from_dict(d) == named_config("default", resolution=64)
        d["stage2"]["supersample"] = 2
        with pytest.raises(ValueError, match="stage2.supersample .* is retired"):
            PipelineConfig.from_dict(d)


def test_default_stage1_generator_samples_from_its_ema() -> None:
    cfg = named_config("default", resolution=64)
    g = build_stage1_generator(cfg.stage1, resolution=64)
    assert isinstance(g, EMAGenerator) and g.decay == cfg.stage1.ema
    assert {k.split(".")[0] for k in g.state_dict()} == {"net", "ema"}
    assert all(not p.requires_grad for p in g.ema.parameters())
    with torch.no_grad():
        for p in g.net.parameters():
            p.add_(1.0)
    g.update()
    for e, p in zip(g.ema.parameters(), g.net.parameters(), strict=True):
        assert not torch.equal(e, p)
    z = torch.rand(2, cfg.stage1.z_dim)
    g.eval()
    assert torch.equal(g(z), g.ema.eval()(z))
    assert named_config("paper", resolution=64).stage1.ema == 0


def test_settled_statistics_are_the_averages_own() -> None:
    torch.manual_seed(0)
    g = EMAGenerator(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4)), 0.9)
    with torch.no_grad():
        g.net[0].weight.add_(1.0)
        g.net[1].running_mean.fill_(5.0)
    g.update()
    assert torch.equal(g.ema[1].running_mean, torch.full((4,), 5.0))
    params = [p.clone() for p in g.ema.parameters()]
    batches = [torch.randn(6, 3), torch.randn(6, 3)]
    g.eval()
    g.settle_statistics(iter(batches))
    hidden = [g.ema[0](z).detach() for z in batches]
    # Pooled over both batches (equal sizes): the mean of all rows, the mean of the
    # batches' unbiased variances.
    assert torch.allclose(g.ema[1].running_mean, torch.cat(hidden).mean(0), atol=1e-6)
    variances = torch.stack([h.var(0) for h in hidden]).mean(0)
    assert torch.allclose(g.ema[1].running_var, variances, atol=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(params, g.ema.parameters(), strict=True))
    assert not g.ema.training and g.ema[1].momentum == 0.1
    g.update()
    assert torch.equal(g.ema[1].running_mean, torch.full((4,), 5.0))


class TestSpectralNorm:
    def _d(self, seed: int) -> nn.Module:
        return build_discriminator(
            "dcgan",
            in_ch=2,
            resolution=64,
            width=8,
            norm="none",
            spectral_norm=True,
            generator=torch.Generator().manual_seed(seed),
        )

    def test_every_layer_is_1_lipschitz(self) -> None:
        d = self._d(0).train()
        x = torch.rand(4, 2, 64, 64) * 2 - 1
        for _ in range(30):  # power iterations run in training forwards
            d(x)
        d.eval()
        layers = [m for m in d.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
        assert layers and all(nn.utils.parametrize.is_parametrized(m) for m in layers)
        for m in layers:
            sigma = torch.linalg.matrix_norm(m.weight.flatten(1), ord=2)
            assert sigma == pytest.approx(1.0, abs=0.05)

    def test_seeded_without_touching_the_global_rng(self) -> None:
        net = nn.Sequential(nn.Conv2d(2, 4, 3), nn.Flatten(), nn.Linear(4 * 62 * 62, 1))
        state = torch.random.get_rng_state()
        spectral_normalised(net, generator=torch.Generator().manual_seed(0))
        assert torch.equal(torch.random.get_rng_state(), state)
        a, b, c = self._d(1), self._d(1), self._d(2)
        x = torch.rand(2, 2, 64, 64)
        assert torch.equal(a.train()(x), b.train()(x))
        assert not torch.equal(a(x), c.train()(x))

    def test_stage1_discriminator_drops_batch_norm_for_it(self) -> None:
        cfg = dataclasses.replace(named_config("paper", resolution=64).stage1, d_spectral_norm=True)
        d = build_stage1_discriminator(cfg, resolution=64)
        assert not any(isinstance(m, nn.BatchNorm2d) for m in d.modules())
        assert any(nn.utils.parametrize.is_parametrized(m) for m in d.modules())


class TestMultiScaleDiscriminator:
    def test_each_scale_judges_the_input_pooled_once_more(self) -> None:
        cfg = dataclasses.replace(named_config("default", resolution=64).stage1, d_scales=3)
        d = build_stage1_discriminator(
            cfg, resolution=64, generator=torch.Generator().manual_seed(0)
        )
        assert isinstance(d, MultiScaleDiscriminator) and len(d.nets) == 3
        d.eval()
        x = torch.rand(2, 2, 64, 64) * 2 - 1
        logits = d(x)
        assert logits.shape == (2, 3)
        half, quarter = F.avg_pool2d(x, 2), F.avg_pool2d(x, 4)
        assert torch.allclose(logits[:, 0:1], d.nets[0](x))
        assert torch.allclose(logits[:, 1:2], d.nets[1](half))
        assert torch.allclose(logits[:, 2:3], d.nets[2](quarter))
        # One stride-2 layer fewer per scale, each spectrally normalised like the single one.
        depths = [sum(isinstance(m, nn.Conv2d) for m in n.modules()) for n in d.nets]
        assert depths == [4, 3, 2]
        assert all(nn.utils.parametrize.is_parametrized(n.head) for n in d.nets)

    def test_one_scale_is_the_plain_discriminator(self) -> None:
        cfg = dataclasses.replace(named_config("default", resolution=64).stage1, d_scales=1)
        d = build_stage1_discriminator(cfg, resolution=64)
        assert not isinstance(d, MultiScaleDiscriminator)
        assert d(torch.zeros(1, 2, 64, 64)).shape == (1, 1)

    @pytest.mark.parametrize("scales", [0, 4])
    def test_config_check(self, scales: int) -> None:
        with pytest.raises(ValueError, match="d_scales"):
            Stage1Config(d_scales=scales)


class TestSoftVessels:
    def test_blur_of_one_vessel_pixel_by_hand(self) -> None:
        kernel = gaussian_kernel(0.5)
        # 3 sigma = 1.5 -> radius 2: weights exp(-x^2 / 0.5) for x = -2..2, normalised.
        raw = torch.exp(-torch.tensor([4.0, 1.0, 0.0, 1.0, 4.0]) / 0.5)
        assert torch.allclose(kernel, raw / raw.sum())
        mask = torch.zeros(1, 1, 9, 9)
        mask[0, 0, 4, 4] = 1
        fov = torch.ones(1, 1, 9, 9)
        geometry = torch.cat([mask, fov], 1) * 2 - 1
        out = soften_vessels(geometry, kernel, gain=2.0)
        vessels = (out[0, 0] + 1) / 2
        k = kernel.tolist()
        assert vessels[4, 4] == pytest.approx(min(1.0, 2 * k[2] * k[2]))
        assert vessels[4, 5] == pytest.approx(2 * k[2] * k[3])
        assert vessels[3, 5] == pytest.approx(2 * k[1] * k[3])
        assert vessels[0, 0] == 0
        assert torch.equal(out[:, 1:], geometry[:, 1:])  # the FOV stays binary
        assert out.min() >= -1 and out.max() <= 1

    def test_decoding_cuts_vessels_at_the_threshold_inside_the_fov(self) -> None:
        # Four pixels: faint ridge, strong ridge, background, strong ridge outside the eye.
        vessels = torch.tensor([0.3, 0.7, -0.2, 0.9]).view(1, 1, 1, 4)
        fov = torch.tensor([1.0, 1.0, 1.0, -1.0]).view(1, 1, 1, 4)
        geometry = torch.cat([vessels, fov], dim=1)
        for threshold, expected in ((0.5, [0, 1, 0, 0]), (0.0, [1, 1, 0, 0])):
            mask, fov01 = decode_geometry(Stage1Config(vessel_threshold=threshold), geometry)
            assert mask.flatten().tolist() == expected
            assert fov01.flatten().tolist() == [1, 1, 1, 0]

    def test_decoding_fills_the_fov_where_the_config_asks(self) -> None:
        fov = -torch.ones(1, 1, 5, 5)
        fov[..., 1:4, 1:4] = 1
        fov[..., 2, 2] = -1  # a hole, where the vessel channel draws a vessel
        geometry = torch.cat([torch.ones_like(fov), fov], dim=1)
        _, plain = decode_geometry(Stage1Config(), geometry)
        mask, filled = decode_geometry(Stage1Config(fill_fov=True), geometry)
        assert plain[0, 0, 2, 2] == 0 and plain.sum() == 8
        assert filled[0, 0, 2, 2] == 1 and filled.sum() == 9
        assert torch.equal(mask, filled)  # vessels everywhere inside, the filled hole too
        assert named_config("default", resolution=64).stage1.fill_fov

    def test_decoding_drops_fov_islands_where_the_config_asks(self) -> None:
        fov = -torch.ones(1, 1, 6, 6)
        fov[..., 1:5, 1:5] = 1
        fov[..., 0, 5] = 1  # a speck in the corner, where the vessel channel draws a vessel
        geometry = torch.cat([torch.ones_like(fov), fov], dim=1)
        _, plain = decode_geometry(Stage1Config(), geometry)
        mask, whole = decode_geometry(Stage1Config(drop_fov_islands=True), geometry)
        assert plain[0, 0, 0, 5] == 1 and plain.sum() == 17
        assert whole[0, 0, 0, 5] == 0 and whole.sum() == 16
        assert torch.equal(mask, whole)  # no vessel left on the speck
        assert named_config("default", resolution=64).stage1.drop_fov_islands

    def test_the_recipe_threshold_undoes_its_blur(self) -> None:
        cfg = named_config("default", resolution=64).stage1
        _, masks, fovs = to_tensor(load_pairs("phantom", resolution=64, limit=8))
        soft = soften_vessels(
            real_geometry(masks, fovs), gaussian_kernel(cfg.soft_sigma), cfg.soft_gain
        )

        def dice(threshold: float) -> float:
            mask, _ = decode_geometry(dataclasses.replace(cfg, vessel_threshold=threshold), soft)
            return float(2 * (mask * masks).sum() / (mask.sum() + (masks * fovs).sum()))

        # Measured 0.97 at the recipe's 0.5 and 0.77 at 0, where the blur's skirts pass.
        assert dice(cfg.vessel_threshold) > 0.95
        assert dice(0.0) < 0.8

    def test_vessel_map_is_what_the_discriminator_sees_of_a_real_mask(self) -> None:
        cfg = named_config("default", resolution=64).stage1
        _, masks, fovs = to_tensor(load_pairs("phantom", resolution=64, limit=2))
        seen = soften_vessels(
            real_geometry(masks, fovs), gaussian_kernel(cfg.soft_sigma), cfg.soft_gain
        )
        assert torch.equal(vessel_map(cfg, masks) * 2 - 1, seen[:, :1])
        assert torch.equal(vessel_map(dataclasses.replace(cfg, soft_sigma=0.0), masks), masks)

    def test_drawn_vessel_map_is_the_channel_before_the_cut_inside_the_fov(self) -> None:
        # Faint ridge, strong ridge, tanh overshoot, strong ridge outside the eye.
        vessels = torch.tensor([0.3, 0.7, 1.2, 0.9]).view(1, 1, 1, 4)
        fov = torch.tensor([1.0, 1.0, 1.0, -1.0]).view(1, 1, 1, 4)
        geometry = torch.cat([vessels, fov], dim=1)
        _, fov01 = decode_geometry(Stage1Config(), geometry)
        drawn = drawn_vessel_map(geometry, fov01).flatten().tolist()
        assert drawn == pytest.approx([0.65, 0.85, 1.0, 0.0])

    def test_config_checks(self) -> None:
        with pytest.raises(ValueError, match="vessel_threshold"):
            Stage1Config(vessel_threshold=1.0)
        with pytest.raises(ValueError, match="soft_sigma"):
            Stage1Config(soft_sigma=-1)
        with pytest.raises(ValueError, match="soft_gain"):
            Stage1Config(soft_gain=0.5)
        with pytest.raises(ValueError, match="train_steps"):
            Stage1Config(train_steps=-1)


class TestRuntimeSwitches:
    def test_plain_path_undoes_flushed_denormals(self) -> None:
        Runtime.create(torch.device("cpu"), fast=False)
        denormal = torch.tensor([1e-40])  # below float32's smallest normal, 1.2e-38
        assert denormal.item() > 0.0
        Runtime.create(torch.device("cpu"), fast=True)
        assert (denormal * 1.0).item() == 0.0
        Runtime.create(torch.device("cpu"), fast=False)
        assert (denormal * 1.0).item() > 0.0

    def test_fast_path_uses_every_core(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1, 2}, raising=False)
        Runtime.create(torch.device("cpu"), fast=True)
        assert torch.get_num_threads() == 3

    def test_omp_num_threads_is_respected(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1, 2}, raising=False)
        Runtime.create(torch.device("cpu"), fast=True)
        assert torch.get_num_threads() == 1
