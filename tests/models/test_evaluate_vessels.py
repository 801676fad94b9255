import numpy as np
import pytest

from models.evaluate.vessels import (
    AXIS_BAND,
    compare_vessel_stats,
    edge_orientations,
    histogram_w1,
    mask_stats,
    sample_overlap,
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

    def test_pieces_are_8_connected(self) -> None:
        ones = np.ones((40, 60))
        two = _line(3)
        two[30:33, 5:55] = 1
        s = mask_stats(two, ones)
        assert (s["pieces"], s["connected_share"]) == (2, 1.0)
        # A one-pixel diagonal touches only at corners: still one piece.
        assert mask_stats(np.eye(30, dtype=np.uint8), np.ones((30, 30)))["pieces"] == 1

    def test_connected_share_counts_short_pieces_out(self) -> None:
        m = _line(3)  # 150 px
        m[2:5, 2] = 1  # a 3 px fleck
        s = mask_stats(m, np.ones((40, 60)))
        assert s["pieces"] == 2
        assert s["connected_share"] == pytest.approx(150 / 153)
        assert mask_stats(m, np.ones((40, 60)), min_piece=2)["connected_share"] == 1.0
        assert (
            mask_stats(m, np.ones((40, 60)), min_piece=150)["connected_share"]
            == s["connected_share"]
        )
        assert mask_stats(m, np.ones((40, 60)), min_piece=151)["connected_share"] == 0.0

    def test_empty_mask_has_no_connected_share(self) -> None:
        s = vessel_stats([np.zeros((20, 20)), _line(3)], [np.ones((20, 20)), np.ones((40, 60))])
        assert s["per_image"]["pieces"] == [0, 1]
        assert s["per_image"]["connected_share"] == [None, 1.0]
        assert s["summary"]["pieces_mean"] == 0.5
        assert s["summary"]["connected_share_mean"] == 1.0


def _tilted_line(degrees: float, size: int = 96) -> np.ndarray:
    """A 4 px wide line through the centre at `degrees` from the x axis, 80 px long."""
    yy, xx = np.mgrid[:size, :size] - size / 2
    t = np.radians(degrees)
    across = np.abs(yy * np.cos(t) - xx * np.sin(t))
    return ((across < 2) & (np.hypot(yy, xx) < 40)).astype(np.uint8)


class TestOrientation:
    @pytest.mark.parametrize("degrees", [20.0, 30.0, 45.0, 120.0])
    def test_tilted_line_edges_lie_at_its_angle(self, degrees: float) -> None:
        angles, weights = edge_orientations(_tilted_line(degrees))
        # 120 degrees is 30 from the nearest axis; the round ends add a few other angles.
        want = min(degrees % 90, 90 - degrees % 90)
        assert np.average(angles, weights=weights) == pytest.approx(want, abs=2.5)

    def test_axis_aligned_fraction(self) -> None:
        bar = np.zeros((96, 96), np.uint8)
        bar[40:44, 10:86] = 1
        ones = np.ones((96, 96))
        assert mask_stats(bar, ones)["edge_angles"].max() < 45
        assert vessel_stats([bar], [ones])["orientation"]["axis_aligned"] > 0.85
        tilted = vessel_stats([_tilted_line(30.0)], [ones])["orientation"]
        assert tilted["axis_aligned"] < 0.05
        # A ring has edges at every angle: the band's share of 45 degrees.
        yy, xx = np.mgrid[:96, :96]
        r = np.hypot(yy - 48, xx - 48)
        ring = ((r > 31) & (r < 35)).astype(np.uint8)
        uniform = vessel_stats([ring], [ones])["orientation"]
        assert uniform["axis_aligned"] == pytest.approx(AXIS_BAND / 45, abs=0.04)
        assert sum(uniform["histogram"]["density"]) == pytest.approx(1.0, abs=1e-5)

    def test_empty_mask_has_no_orientation(self) -> None:
        empty = vessel_stats([np.zeros((20, 20))], [np.ones((20, 20))])["orientation"]
        assert empty["axis_aligned"] is None
        assert sum(empty["histogram"]["density"]) == 0


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


class TestSampleOverlap:
    def test_dice_of_every_pair(self) -> None:
        a = np.zeros((4, 4), np.uint8)
        a[0, :] = 1  # 4 px
        b = np.zeros((4, 4), np.uint8)
        b[0, :2] = 1  # 2 px, both in a
        c = np.zeros((4, 4), np.uint8)
        c[3, 3] = 1  # 1 px, in neither
        # Pairs in order (a, b), (a, c), (b, c).
        assert sample_overlap([a, b, c]).tolist() == pytest.approx([2 * 2 / 6, 0.0, 0.0])

    def test_one_layout_for_every_sample_scores_one(self) -> None:
        assert sample_overlap([_tee()] * 5).tolist() == [1.0] * 10

    def test_pairs_of_empty_masks_are_left_out(self) -> None:
        empty = np.zeros((40, 60), np.uint8)
        assert sample_overlap([empty, empty, _line()]).tolist() == [0.0, 0.0]
        assert sample_overlap([empty, empty]).size == 0

    def test_compares_the_first_limit_masks(self) -> None:
        masks = [_line(), _line(), _tee()]
        assert sample_overlap(masks, limit=2).tolist() == [1.0]
        assert sample_overlap(masks).size == 3
        assert sample_overlap(masks[:1]).size == 0

    def test_rejects_masks_of_two_shapes_and_a_limit_below_two(self) -> None:
        with pytest.raises(ValueError, match="one shape"):
            sample_overlap([_line(), _arc()])
        with pytest.raises(ValueError, match="at least 2"):
            sample_overlap([_line(), _line()], limit=1)
