import copy

import numpy as np
import pytest
import torch

from models.data import FundusPair
from models.evaluate.segmenter import (
    GroupBatchNorm,
    UNet,
    _random_batch,
    encoder_features,
    fov_loss,
    predict,
    train_segmenter,
)
from models.phantom import phantom_pairs


@pytest.fixture(scope="module")
def pairs() -> list:
    return phantom_pairs(3, size=48, seed=0)


class TestUNet:
    def test_shapes(self) -> None:
        net = UNet(levels=3, base=4)
        assert net(torch.zeros(2, 3, 32, 40)).shape == (2, 1, 32, 40)
        bottleneck, skips = net.encode(torch.zeros(1, 3, 32, 40))
        assert bottleneck.shape == (1, 32, 4, 5) and len(skips) == 3
        assert net.feature_dim == 32

    def test_bad_config(self) -> None:
        with pytest.raises(ValueError):
            UNet(levels=0)
        with pytest.raises(ValueError):
            UNet(norm_groups=0)


class TestLoss:
    def test_outside_fov_does_not_count(self) -> None:
        logits = torch.randn(1, 1, 8, 8)
        mask = (torch.rand(1, 1, 8, 8) > 0.7).float()
        fov = torch.zeros(1, 1, 8, 8)
        fov[..., 2:6, 2:6] = 1
        changed = logits.clone()
        changed[..., 0, :] = 50.0
        a, b = fov_loss(logits, mask, fov), fov_loss(changed, mask, fov)
        assert torch.allclose(a["loss"], b["loss"])
        assert a["loss"] > 0


class TestBatches:
    def test_groups_share_every_batch_equally(self) -> None:
        # One small group of 1 item beside a big one of 9: uniform sampling would give the
        # small group a tenth of the patches, groups give it half of every batch.
        data = [torch.full((5, 8, 8), float(i)) for i in range(10)]
        gen = torch.Generator().manual_seed(0)
        for _ in range(20):
            batch = _random_batch(data, 4, 8, gen, groups=[[0], list(range(1, 10))])
            sources = batch[:, 0, 0, 0].tolist()
            assert sources[0] == sources[2] == 0.0
            assert 0.0 not in (sources[1], sources[3])
        uniform = torch.cat([_random_batch(data, 4, 8, gen)[:, 0, 0, 0] for _ in range(50)])
        assert (uniform == 0).float().mean() < 0.25

    def test_group_labels_must_match_pairs(self, pairs) -> None:
        with pytest.raises(ValueError, match="group labels"):
            train_segmenter(pairs, steps=1, crop=16, levels=2, base=4, groups=["real"])
        with pytest.raises(ValueError, match="below the 2 groups"):
            labels = ["real", "synthetic", "real"]
            train_segmenter(pairs, steps=1, batch_size=1, crop=16, levels=2, base=4, groups=labels)


def _flat_pairs(value: int, count: int) -> list[FundusPair]:
    mask = np.zeros((32, 32), dtype=np.uint8)
    mask[8:24, 15:17] = 1
    return [
        FundusPair(
            name=f"flat-{value}-{i}",
            image=np.full((32, 32, 3), value, dtype=np.uint8),
            mask=mask,
            fov=np.ones((32, 32), dtype=np.uint8),
        )
        for i in range(count)
    ]


@pytest.fixture(scope="module")
def two_group_model() -> UNet:
    # Black "real" images and white "synthetic" ones: every patch of a group is the same.
    real, synthetic = _flat_pairs(0, 2), _flat_pairs(255, 3)
    labels = ["real"] * 2 + ["synthetic"] * 3
    return train_segmenter(
        real + synthetic, steps=1, batch_size=4, crop=16, levels=2, base=4, seed=5, groups=labels
    )


class TestGroupNorms:
    def test_each_group_keeps_its_own_statistics(self, two_group_model) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(5)
            first_conv = UNet(levels=2, base=4, norm_groups=2).down[0][0]

        def after_one_step(value: float) -> torch.Tensor:
            # BatchNorm2d's running mean after one batch of 2 patches (momentum 0.1).
            with torch.no_grad():
                return 0.1 * first_conv(torch.full((2, 3, 16, 16), value)).mean(dim=(0, 2, 3))

        real_norm, synthetic_norm = two_group_model.down[0][1].norms
        assert torch.allclose(real_norm.running_mean, after_one_step(-1.0), atol=1e-6)
        assert torch.allclose(synthetic_norm.running_mean, after_one_step(1.0), atol=1e-6)
        assert not torch.allclose(real_norm.running_mean, synthetic_norm.running_mean)

    def test_the_first_groups_norms_read_new_images(self, two_group_model) -> None:
        model = copy.deepcopy(two_group_model)  # the fixture is shared: spoil a copy
        x = torch.randn(1, 3, 16, 16)
        with torch.no_grad():
            before = model(x)
            group_norms = [m for m in model.modules() if isinstance(m, GroupBatchNorm)]
            assert len(group_norms) == 2 * 5  # two per block, 2 down + bottleneck + 2 up
            for m in group_norms:
                m.norms[1].running_mean.fill_(100.0)
            assert torch.equal(model(x), before)
            for m in group_norms:
                m.norms[0].running_mean.fill_(100.0)
            assert not torch.allclose(model(x), before)


class TestTrainAndPredict:
    def test_train_is_reproducible_and_finite(self, pairs) -> None:
        seen: list[dict[str, float]] = []
        kwargs = dict(steps=3, batch_size=2, crop=32, levels=2, base=4)
        a = train_segmenter(pairs, seed=1, on_progress=lambda s, loss: seen.append(loss), **kwargs)
        b = train_segmenter(pairs, seed=1, **kwargs)
        assert len(seen) == 3 and all(np.isfinite(v["loss"]) for v in seen)
        for pa, pb in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
            assert torch.equal(pa, pb)
        assert not a.training

    def test_progress_averages_losses_between_reports(self, pairs) -> None:
        kwargs = dict(steps=5, batch_size=2, crop=32, levels=2, base=4, seed=2)
        every_step: list[tuple[int, dict[str, float]]] = []
        sparse: list[tuple[int, dict[str, float]]] = []
        train_segmenter(pairs, on_progress=lambda s, loss: every_step.append((s, loss)), **kwargs)
        train_segmenter(
            pairs, on_progress=lambda s, loss: sparse.append((s, loss)), progress_every=2, **kwargs
        )
        assert [s for s, _ in sparse] == [2, 4, 5]  # and always after the last step
        per_step = [loss["loss"] for _, loss in every_step]
        expected = [np.mean(per_step[0:2]), np.mean(per_step[2:4]), per_step[4]]
        assert [loss["loss"] for _, loss in sparse] == pytest.approx(expected, rel=1e-5)
        with pytest.raises(ValueError, match="progress_every"):
            train_segmenter(pairs, progress_every=0, **kwargs)

    def test_crop_must_fit_levels(self, pairs) -> None:
        with pytest.raises(ValueError, match="multiple"):
            train_segmenter(pairs, steps=1, crop=30, levels=2, base=4)

    def test_predict_whole_images_of_odd_size(self, pairs) -> None:
        model = train_segmenter(pairs, steps=1, batch_size=1, crop=16, levels=3, base=4)
        odd = [
            type(pairs[0])(
                name="odd",
                image=pairs[0].image[:45, :37],
                mask=pairs[0].mask[:45, :37],
                fov=pairs[0].fov[:45, :37],
            )
        ]
        (prob,) = predict(model, odd)
        assert prob.shape == (45, 37) and prob.dtype == np.float32
        assert ((prob >= 0) & (prob <= 1)).all()

    def test_encoder_features(self, pairs) -> None:
        model = UNet(levels=2, base=4).eval()
        feats = encoder_features(model, [p.image for p in pairs])
        assert feats.shape == (3, 16) and feats.dtype == np.float64
