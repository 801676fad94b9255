import numpy as np
import pytest

from models.evaluate.vessels import (
    compare_vessel_stats,
    histogram_w1,
    mask_stats,
    skeletonize,
    vessel_stats,
)


def _line(width: int = 3) -> np.ndarray:
    m = np.zeros((40, 60), np.uint8)
    m[18 : 18 + width, 5:55] = 1
    return m


def _tee() -> np.ndarray:
    m = _line()
    m[18:38, 29:32] = 1
    return m


def _arc(radius: int = 20) -> np.ndarray:
    yy, xx = np.mgrid[:60, :60]
    r = np.hypot(yy - 10, xx - 30)
    # Lower half of a ring of width ~3: a semicircle, arc / chord = pi / 2.
    return ((np.abs(r - radius) <= 1.2) & (yy >= 10)).astype(np.uint8)


class TestSkeleton:
    def test_line_thins_to_one_pixel(self) -> None:
        skel = skeletonize(_line(5))
        assert skel[:, 10].sum() == 1
        assert skel.sum() >= 40

    def test_empty(self) -> None:
        assert not skeletonize(np.zeros((5, 5))).any()


class TestMaskStats:
    def test_straight_line(self) -> None:
        s = mask_stats(_line(3), np.ones((40, 60)))
        assert np.median(s["widths"]) == pytest.approx(3.0)
        assert s["branch_points"] == 0
        assert len(s["tortuosity"]) == 1
        assert s["tortuosity"][0] == pytest.approx(1.0, abs=0.02)
        assert s["vessel_fraction"] == pytest.approx(150 / 2400)

    def test_wider_line(self) -> None:
        assert np.median(mask_stats(_line(7), np.ones((40, 60)))["widths"]) == pytest.approx(7.0)

    def test_tee_has_one_branch_point(self) -> None:
        s = mask_stats(_tee(), np.ones((40, 60)))
        assert s["branch_points"] == 1
        assert len(s["tortuosity"]) == 3
        assert np.allclose(s["tortuosity"], 1.0, atol=0.05)

    def test_semicircle_tortuosity(self) -> None:
        t = mask_stats(_arc(), np.ones((60, 60)))["tortuosity"]
        assert len(t) == 1
        assert t[0] == pytest.approx(np.pi / 2, rel=0.1)

    def test_outside_fov_is_ignored(self) -> None:
        fov = np.zeros((40, 60), np.uint8)
        fov[:, :30] = 1
        s = mask_stats(_line(3), fov)
        assert s["vessel_fraction"] == pytest.approx(75 / 1200)


class TestVesselStats:
    def test_summary_and_comparison(self) -> None:
        fovs = [np.ones((40, 60))] * 2
        real = vessel_stats([_line(3), _tee()], fovs)
        assert real["n_images"] == 2
        assert real["per_image"]["branch_points"] == [0, 1]
        assert real["summary"]["branch_points_mean"] == 0.5
        assert real["summary"]["width_median"] == pytest.approx(3.0)
        same = compare_vessel_stats(real, real)
        assert same["width_w1"] == 0.0
        assert same["difference"]["vessel_fraction_mean"] == 0.0
        wide = vessel_stats([_line(7), _line(7)], fovs)
        assert compare_vessel_stats(real, wide)["width_w1"] == pytest.approx(4.0, abs=0.6)

    def test_histogram_w1_by_hand(self) -> None:
        a = {"edges": [0.0, 1.0, 2.0, 3.0], "density": [1.0, 0.0, 0.0]}
        b = {"edges": [0.0, 1.0, 2.0, 3.0], "density": [0.0, 0.0, 1.0]}
        assert histogram_w1(a, b) == 2.0
