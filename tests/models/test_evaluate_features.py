from pathlib import Path

import numpy as np
import pytest
import torch

from models.evaluate.features import (
    frechet_distance,
    inception_feature_report,
    kernel_inception_distance,
    mmd2_unbiased,
    seg_feature_report,
)
from models.evaluate.inception import (
    FIDInceptionV3,
    InceptionWeightsError,
    inception_features,
    load_fid_inception,
    pool_3x3,
)
from models.evaluate.segmenter import UNet


def _gauss(n: int, d: int, seed: int, shift: float = 0.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(shift, 1.0, (n, d))


class TestFrechet:
    def test_set_with_itself_is_zero(self) -> None:
        a = _gauss(100, 12, 0)
        assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)

    def test_grows_with_shift(self) -> None:
        a, b = _gauss(300, 8, 0), _gauss(300, 8, 1)
        near, far = frechet_distance(a, b), frechet_distance(a, b + 1.0)
        assert near < 1.0 < far
        # A mean shift of 1 in each of 8 dimensions adds ~8.
        assert far - near == pytest.approx(8.0, rel=0.25)

    def test_closed_form_for_diagonal_gaussians(self) -> None:
        # Exact covariances diag(1) and diag(4): FID = |mu|^2 + sum(1 + 4 - 2 * 2) = 0 + d.
        d = 3
        grid = np.array(np.meshgrid(*[[-1.0, 1.0]] * d)).reshape(d, -1).T  # cov = (n/(n-1)) I
        fid = frechet_distance(grid, 2 * grid)
        scale = len(grid) / (len(grid) - 1)
        assert fid == pytest.approx(d * scale * (1 + 4 - 4))

    def test_needs_two_samples(self) -> None:
        with pytest.raises(ValueError):
            frechet_distance(np.zeros((1, 3)), np.zeros((5, 3)))


class TestKid:
    def test_unbiased_estimator_by_loops(self) -> None:
        x = torch.as_tensor(_gauss(5, 4, 0))
        y = torch.as_tensor(_gauss(6, 4, 1))

        def k(a: torch.Tensor, b: torch.Tensor) -> float:
            return float((a @ b / 4 + 1) ** 3)

        xx = sum(k(x[i], x[j]) for i in range(5) for j in range(5) if i != j) / 20
        yy = sum(k(y[i], y[j]) for i in range(6) for j in range(6) if i != j) / 30
        xy = sum(k(x[i], y[j]) for i in range(5) for j in range(6)) / 30
        assert mmd2_unbiased(x, y) == pytest.approx(xx + yy - 2 * xy)

    def test_same_distribution_near_zero_shift_positive(self) -> None:
        a, b = _gauss(200, 16, 0), _gauss(200, 16, 1)
        same, spread = kernel_inception_distance(a, b, subset_size=50, subsets=30)
        shifted, _ = kernel_inception_distance(a, b + 0.5, subset_size=50, subsets=30)
        assert abs(same) < 3 * spread + 1e-3
        assert spread > 0
        assert shifted > 10 * abs(same)

    def test_small_sets_use_everything(self) -> None:
        a, b = _gauss(20, 4, 0), _gauss(20, 4, 1)
        value, std = kernel_inception_distance(a, b)
        assert std == 0.0
        assert value == pytest.approx(mmd2_unbiased(torch.as_tensor(a), torch.as_tensor(b)))


class TestSegFeatures:
    def test_report_with_a_tiny_encoder(self) -> None:
        torch.manual_seed(0)
        encoder = UNet(levels=2, base=4).eval()
        rng = np.random.default_rng(0)
        real = [rng.integers(0, 255, (24, 20, 3), dtype=np.uint8) for _ in range(6)]
        r = seg_feature_report(encoder, real, real, baseline=real[:3])
        assert r["feature_dim"] == 16
        assert r["seg_fid"] == pytest.approx(0.0, abs=1e-6)
        assert r["baseline_fid"] is not None and r["baseline_fid"] >= 0
        dark = [im // 4 for im in real]
        assert seg_feature_report(encoder, real, dark)["seg_fid"] > 100 * r["seg_fid"] + 1e-9


# The layout of pytorch-fid's pt_inception-2015-12-05-6726825d.pth, written down
# independently of models/evaluate/inception.py. Sources: pytorch-fid's
# src/pytorch_fid/inception.py (fid_inception_v3 builds torchvision's Inception3 with
# num_classes=1008, aux_logits=False, so no AuxLogits.* keys, then swaps in FIDInceptionA/C/
# E_1/E_2 blocks that keep torchvision's submodule names) and torchvision's
# models/inception.py (BasicConv2d = conv without bias + bn; each block's branch widths).
# The file keeps the BatchNorm counters: pytorch-fid issue #34 shows torch 0.4.0 refusing
# "Conv2d_1a_3x3.bn.num_batches_tracked", "Mixed_5b.branch1x1.bn.num_batches_tracked", ...
# as unexpected keys of that file. 94 conv+bn units x 6 tensors + fc.weight, fc.bias = 566.
def _reference_convs() -> dict[str, tuple[int, ...]]:
    convs: dict[str, tuple[int, ...]] = {
        "Conv2d_1a_3x3": (32, 3, 3, 3),
        "Conv2d_2a_3x3": (32, 32, 3, 3),
        "Conv2d_2b_3x3": (64, 32, 3, 3),
        "Conv2d_3b_1x1": (80, 64, 1, 1),
        "Conv2d_4a_3x3": (192, 80, 3, 3),
    }
    for name, cin, pool in (("Mixed_5b", 192, 32), ("Mixed_5c", 256, 64), ("Mixed_5d", 288, 64)):
        convs |= {
            f"{name}.branch1x1": (64, cin, 1, 1),
            f"{name}.branch5x5_1": (48, cin, 1, 1),
            f"{name}.branch5x5_2": (64, 48, 5, 5),
            f"{name}.branch3x3dbl_1": (64, cin, 1, 1),
            f"{name}.branch3x3dbl_2": (96, 64, 3, 3),
            f"{name}.branch3x3dbl_3": (96, 96, 3, 3),
            f"{name}.branch_pool": (pool, cin, 1, 1),
        }
    convs |= {
        "Mixed_6a.branch3x3": (384, 288, 3, 3),
        "Mixed_6a.branch3x3dbl_1": (64, 288, 1, 1),
        "Mixed_6a.branch3x3dbl_2": (96, 64, 3, 3),
        "Mixed_6a.branch3x3dbl_3": (96, 96, 3, 3),
    }
    for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
        convs |= {
            f"{name}.branch1x1": (192, 768, 1, 1),
            f"{name}.branch7x7_1": (c7, 768, 1, 1),
            f"{name}.branch7x7_2": (c7, c7, 1, 7),
            f"{name}.branch7x7_3": (192, c7, 7, 1),
            f"{name}.branch7x7dbl_1": (c7, 768, 1, 1),
            f"{name}.branch7x7dbl_2": (c7, c7, 7, 1),
            f"{name}.branch7x7dbl_3": (c7, c7, 1, 7),
            f"{name}.branch7x7dbl_4": (c7, c7, 7, 1),
            f"{name}.branch7x7dbl_5": (192, c7, 1, 7),
            f"{name}.branch_pool": (192, 768, 1, 1),
        }
    convs |= {
        "Mixed_7a.branch3x3_1": (192, 768, 1, 1),
        "Mixed_7a.branch3x3_2": (320, 192, 3, 3),
        "Mixed_7a.branch7x7x3_1": (192, 768, 1, 1),
        "Mixed_7a.branch7x7x3_2": (192, 192, 1, 7),
        "Mixed_7a.branch7x7x3_3": (192, 192, 7, 1),
        "Mixed_7a.branch7x7x3_4": (192, 192, 3, 3),
    }
    for name, cin in (("Mixed_7b", 1280), ("Mixed_7c", 2048)):
        convs |= {
            f"{name}.branch1x1": (320, cin, 1, 1),
            f"{name}.branch3x3_1": (384, cin, 1, 1),
            f"{name}.branch3x3_2a": (384, 384, 1, 3),
            f"{name}.branch3x3_2b": (384, 384, 3, 1),
            f"{name}.branch3x3dbl_1": (448, cin, 1, 1),
            f"{name}.branch3x3dbl_2": (384, 448, 3, 3),
            f"{name}.branch3x3dbl_3a": (384, 384, 1, 3),
            f"{name}.branch3x3dbl_3b": (384, 384, 3, 1),
            f"{name}.branch_pool": (192, cin, 1, 1),
        }
    return convs


def _reference_shapes() -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for unit, conv in _reference_convs().items():
        shapes[f"{unit}.conv.weight"] = conv
        for stat in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{unit}.bn.{stat}"] = (conv[0],)
        shapes[f"{unit}.bn.num_batches_tracked"] = ()
    return shapes | {"fc.weight": (1008, 2048), "fc.bias": (1008,)}


def _random_inception(seed: int = 0) -> FIDInceptionV3:
    """Random weights scaled so activations neither vanish nor explode through the depth."""
    torch.manual_seed(seed)
    net = FIDInceptionV3()
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    return net.eval()


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("inception") / "pt_inception-random.pth"
    # The pre-1.6 (non-zip) serialisation, which a file ported in 2019 (pytorch-fid PR #16)
    # may use; torch.load(weights_only=True) must read it. The report test covers zip files.
    torch.save(_random_inception().state_dict(), path, _use_new_zipfile_serialization=False)
    return path


def _images(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:36, 0:40]
    disc = ((yy - 18) ** 2 + (xx - 20) ** 2 < 15**2)[..., None]
    return [(disc * rng.integers(60, 200, (36, 40, 3))).astype(np.uint8) for _ in range(n)]


class TestInceptionNetwork:
    def test_state_dict_is_the_reference_layout(self) -> None:
        with torch.device("meta"):
            state = FIDInceptionV3().state_dict()
        reference = _reference_shapes()
        assert len(reference) == 566
        assert reference["Conv2d_1a_3x3.conv.weight"] == (32, 3, 3, 3)
        assert reference["Mixed_7c.branch_pool.conv.weight"] == (192, 2048, 1, 1)
        assert {k: tuple(v.shape) for k, v in state.items()} == reference
        assert list(state)[:6] == [
            "Conv2d_1a_3x3.conv.weight",
            "Conv2d_1a_3x3.bn.weight",
            "Conv2d_1a_3x3.bn.bias",
            "Conv2d_1a_3x3.bn.running_mean",
            "Conv2d_1a_3x3.bn.running_var",
            "Conv2d_1a_3x3.bn.num_batches_tracked",
        ]

    def test_tf_pooling(self) -> None:
        # TF's avg_pool leaves zero padding out of the mean: a constant stays constant.
        ones = torch.ones(1, 2, 5, 5)
        assert torch.equal(pool_3x3(ones, "avg"), ones)
        x = torch.arange(25.0).reshape(1, 1, 5, 5)
        assert pool_3x3(x, "max")[0, 0, 0, 0] == 6.0  # max of the top-left 2x2
        net = FIDInceptionV3()
        pools = {name: getattr(net, name).pool for name in ("Mixed_5b", "Mixed_6e", "Mixed_7b")}
        assert pools == {"Mixed_5b": "avg", "Mixed_6e": "avg", "Mixed_7b": "avg"}
        assert net.Mixed_7c.pool == "max"

    def test_loads_strictly_and_gives_pool3_features(self, weights_file: Path) -> None:
        net = load_fid_inception(weights_file)
        reference = _random_inception()
        assert not net.training
        assert torch.equal(
            net.Mixed_7c.branch_pool.conv.weight, reference.Mixed_7c.branch_pool.conv.weight
        )
        images = _images(2, 0) + [np.zeros((50, 30, 3), np.uint8)]  # sizes may differ
        feats = inception_features(net, images, batch_size=2)
        assert feats.shape == (3, 2048) and feats.dtype == np.float64
        assert np.isfinite(feats).all() and (feats >= 0).all()  # means of ReLU outputs
        again = inception_features(net, images[:1])
        np.testing.assert_allclose(again[0], feats[0], rtol=1e-5, atol=1e-6)


class TestInceptionFid:
    def test_same_set_is_zero_and_a_colour_shift_is_not(self, weights_file: Path) -> None:
        real = _images(3, 0)
        tinted = [np.clip(im.astype(int) + [60, 0, -40], 0, 255).astype(np.uint8) for im in real]
        net = load_fid_inception(weights_file)
        same = inception_feature_report(net, real, real)["inception_fid"]
        shifted = inception_feature_report(net, real, tinted)["inception_fid"]
        assert shifted > 0
        assert same == pytest.approx(0.0, abs=1e-6 * shifted)

    def test_report_with_baseline(self, weights_file: Path) -> None:
        net = load_fid_inception(weights_file)
        real, other = _images(3, 0), _images(3, 1)
        dark = [im // 3 for im in other]
        r = inception_feature_report(net, real, dark, baseline=other)
        assert r["feature_dim"] == 2048
        assert (r["n_real"], r["n_synthetic"], r["n_baseline"]) == (3, 3, 3)
        assert r["inception_fid"] > r["baseline_fid"] > 0
        assert r["inception_kid"] > r["baseline_kid"]
        assert r["inception_kid_std"] == 0.0  # sets smaller than a KID subset

    def test_missing_file_is_named(self, tmp_path: Path) -> None:
        path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
        with pytest.raises(InceptionWeightsError, match="does not exist") as err:
            load_fid_inception(path)
        assert str(path) in str(err.value)

    def test_unreadable_file_is_named(self, tmp_path: Path) -> None:
        path = tmp_path / "weights.pth"
        path.write_bytes(b"not a torch file")
        with pytest.raises(InceptionWeightsError, match="cannot read") as err:
            load_fid_inception(path)
        assert str(path) in str(err.value)

    def test_another_networks_weights_are_refused(self, tmp_path: Path) -> None:
        path = tmp_path / "unet.pth"
        torch.save(UNet(levels=2, base=4).state_dict(), path)
        with pytest.raises(InceptionWeightsError, match="566 missing keys") as err:
            load_fid_inception(path)
        assert str(path) in str(err.value) and "unexpected keys" in str(err.value)

    def test_torchvision_style_head_is_refused(self, tmp_path: Path) -> None:
        # torchvision's own Inception-v3 checkpoint: 1000 classes and an aux classifier.
        state = FIDInceptionV3().state_dict()
        state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 2048), torch.zeros(1000)
        state["AuxLogits.fc.weight"] = torch.zeros(1000, 768)
        path = tmp_path / "inception_v3_google.pth"
        torch.save(state, path)
        with pytest.raises(InceptionWeightsError) as err:
            load_fid_inception(path)
        message = str(err.value)
        assert "1 unexpected keys (AuxLogits.fc.weight)" in message
        assert "fc.weight (1000, 2048) != (1008, 2048)" in message
