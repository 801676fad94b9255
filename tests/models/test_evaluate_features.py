import numpy as np
import pytest
import torch

from models.evaluate.features import (
    frechet_distance,
    inception_fid,
    kernel_inception_distance,
    mmd2_unbiased,
    seg_feature_report,
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

    def test_inception_is_not_implemented(self, tmp_path) -> None:
        with pytest.raises(NotImplementedError, match="seg-FID"):
            inception_fid([], [], weights_path=tmp_path / "pt_inception.pth")
