import math
from dataclasses import dataclass

import numpy as np
import pytest

from models.evaluate.kl import channel_histograms, kl_divergence, kl_report, normalise


@dataclass(frozen=True)
class Pair:
    name: str
    image: np.ndarray
    mask: np.ndarray
    fov: np.ndarray


def _pair(name: str, values: np.ndarray, fov: np.ndarray | None = None) -> Pair:
    image = np.asarray(values, dtype=np.uint8)
    h, w = image.shape[:2]
    return Pair(
        name, image, np.zeros((h, w), np.uint8), np.ones((h, w), np.uint8) if fov is None else fov
    )


def _random_pair(name: str, seed: int, shift: int = 0) -> Pair:
    rng = np.random.default_rng(seed)
    values = np.clip(rng.normal(100 + shift, 20, (16, 16, 3)), 0, 255)
    return _pair(name, values)


class TestKlDivergence:
    def test_two_bins_by_hand(self) -> None:
        p, q = np.array([0.5, 0.5]), np.array([0.25, 0.75])
        assert kl_divergence(p, q) == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(2 / 3))
        assert kl_divergence(q, p) == pytest.approx(0.25 * math.log(0.5) + 0.75 * math.log(1.5))
        assert kl_divergence(p, q) != pytest.approx(kl_divergence(q, p))

    def test_identical_is_zero(self) -> None:
        p = normalise(np.array([3, 0, 5, 2]))
        assert kl_divergence(p, p) == pytest.approx(0.0, abs=1e-12)

    def test_smoothing_keeps_empty_bins_finite(self) -> None:
        p, q = normalise(np.array([1, 0])), normalise(np.array([0, 1]))
        assert np.isfinite(kl_divergence(p, q))
        assert p.sum() == pytest.approx(1.0)
        eps = 1e-6
        assert p[1] == pytest.approx(eps / (1 + 2 * eps))


class TestHistograms:
    def test_counts_only_fov_pixels(self) -> None:
        image = np.zeros((2, 2, 3), np.uint8)
        image[0, 0] = (10, 20, 30)
        image[1, 1] = (255, 255, 255)
        fov = np.array([[1, 1], [1, 0]], np.uint8)
        counts = channel_histograms([_pair("a", image, fov)])
        assert counts.sum(axis=1).tolist() == [3, 3, 3]
        assert counts[0, 10] == 1 and counts[1, 20] == 1 and counts[2, 30] == 1
        assert counts[:, 255].sum() == 0


class TestKlReport:
    def test_same_set_is_zero_and_shift_is_not(self) -> None:
        real = [_random_pair(f"r{i}", i) for i in range(6)]
        same = kl_report(real, real)
        assert same["kl_real_syn"] == pytest.approx(0.0, abs=1e-12)
        assert same["kl_syn_real"] == pytest.approx(0.0, abs=1e-12)
        shifted = kl_report(real, [_random_pair(f"s{i}", 50 + i, shift=60) for i in range(6)])
        assert shifted["kl_real_syn"] > 1.0
        assert shifted["kl_real_syn"] > 10 * shifted["kl_real_real"]

    def test_directions_differ_and_details(self) -> None:
        real = [_pair("r", np.full((4, 4, 3), 100))]
        # Synthetic covers real's value and another one: only KL(syn || real) sees the extra.
        syn = [_pair("s", np.concatenate([np.full((4, 2, 3), 100), np.full((4, 2, 3), 200)], 1))]
        r = kl_report(real, syn)
        assert r["kl_real_syn"] == pytest.approx(math.log(2), rel=1e-3)
        assert r["kl_syn_real"] > 5.0
        assert set(r["per_channel"]["real_syn"]) == {"r", "g", "b"}
        assert len(r["histograms"]["real"]["g"]) == 256
        assert r["kl_real_real"] is None  # one real image: no halves

    def test_real_real_baseline_uses_halves(self) -> None:
        real = [_random_pair(f"r{i}", i) for i in range(8)]
        r = kl_report(real, real, seed=3)
        assert (r["split"]["n_a"], r["split"]["n_b"]) == (4, 4)
        # Training image names are private; the report must not carry them.
        assert not any(p.name in repr(r) for p in real)
        assert r["kl_real_real"] > 0
        assert r == kl_report(real, real, seed=3)
