import numpy as np
import pytest

from models.evaluate.scores import roc_auc, segmentation_scores

# Inside the FOV: TP at .9, .8, .5 (>= threshold); FP at .6; FN at .4; TN at .2, .1, .3.
PROB = np.array([[0.9, 0.2, 0.6], [0.4, 0.8, 0.1], [0.7, 0.3, 0.5]])
TRUTH = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1]], dtype=np.uint8)
FOV = np.array([[1, 1, 1], [1, 1, 1], [0, 1, 1]], dtype=np.uint8)  # (2, 0) outside


class TestSegmentationScores:
    def test_hand_computed_confusion(self) -> None:
        s = segmentation_scores(PROB, TRUTH, FOV)
        assert (s["tp"], s["fp"], s["fn"], s["tn"]) == (3, 1, 1, 3)
        assert s["f1"] == pytest.approx(6 / 8)
        assert s["accuracy"] == pytest.approx(6 / 8)
        assert s["sensitivity"] == pytest.approx(3 / 4)
        assert s["specificity"] == pytest.approx(3 / 4)
        # Positives .9 .4 .8 .5 against negatives .2 .6 .1 .3: 4 + 3 + 4 + 3 of 16 pairs won.
        assert s["auc"] == pytest.approx(14 / 16)

    def test_pixels_outside_fov_are_ignored(self) -> None:
        changed = PROB.copy()
        changed[2, 0] = 0.99  # would be a false positive if it counted
        assert segmentation_scores(changed, TRUTH, FOV) == segmentation_scores(PROB, TRUTH, FOV)
        all_in = segmentation_scores(changed, TRUTH, np.ones_like(FOV))
        assert all_in["fp"] == 2

    def test_threshold(self) -> None:
        s = segmentation_scores(PROB, TRUTH, FOV, threshold=0.55)
        assert (s["tp"], s["fn"]) == (2, 2)

    def test_images_are_pooled_not_averaged(self) -> None:
        a = segmentation_scores(PROB, TRUTH, FOV)
        b = segmentation_scores(np.array([[0.9, 0.1]]), np.array([[1, 1]]), np.ones((1, 2)))
        pooled = segmentation_scores(
            [PROB, np.array([[0.9, 0.1]])],
            [TRUTH, np.array([[1, 1]])],
            [FOV, np.ones((1, 2))],
        )
        for key in ("tp", "fp", "fn", "tn"):
            assert pooled[key] == a[key] + b[key]
        assert pooled["f1"] == pytest.approx(2 * 4 / (2 * 4 + 1 + 2))

    def test_undefined_scores_are_none(self) -> None:
        s = segmentation_scores(np.zeros((2, 2)), np.zeros((2, 2)), np.ones((2, 2)))
        assert s["sensitivity"] is None and s["auc"] is None and s["f1"] is None
        assert s["specificity"] == 1.0

    def test_shape_mismatch_raises(self) -> None:
        with pytest.raises(ValueError):
            segmentation_scores(np.zeros((2, 2)), np.zeros((2, 2)), np.ones((3, 3)))


class TestStrayRate:
    """Background calls away from every reference vessel, apart from those beside one."""

    def test_hand_computed(self) -> None:
        # 40 px wide: away means more than 1 px from the vessel in column 0, so columns 2+.
        truth = np.zeros((3, 40), dtype=np.uint8)
        truth[:, 0] = 1
        prob = np.zeros((3, 40))
        prob[0, 1] = 0.9  # beside the vessel: a false positive, not a stray one
        prob[1, 10] = prob[2, 20] = 0.9
        fov = np.ones_like(truth)
        fov[2, 30:] = 0  # 10 background pixels outside the FOV do not count
        s = segmentation_scores(prob, truth, fov)
        assert s["fp"] == 3
        assert s["stray_rate"] == pytest.approx(2 / (3 * 38 - 10))

    def test_distance_grows_with_the_image(self) -> None:
        # 200 px wide: 5 px, so column 5 is beside the vessel and column 6 away from it.
        truth = np.zeros((2, 200), dtype=np.uint8)
        truth[:, 0] = 1
        fov = np.ones_like(truth)
        beside, away = np.zeros((2, 200)), np.zeros((2, 200))
        beside[0, 5] = away[0, 6] = 1.0
        assert segmentation_scores(beside, truth, fov)["stray_rate"] == 0.0
        assert segmentation_scores(away, truth, fov)["stray_rate"] == pytest.approx(1 / (2 * 194))

    def test_pooled_over_images_and_none_without_background_away(self) -> None:
        truth = np.zeros((1, 40), dtype=np.uint8)
        truth[0, ::2] = 1  # every background pixel is beside a vessel
        s = segmentation_scores(np.ones((1, 40)), truth, np.ones((1, 40)))
        assert s["stray_rate"] is None
        other = np.zeros((1, 40), dtype=np.uint8)
        pooled = segmentation_scores(
            [np.ones((1, 40)), np.ones((1, 40))], [truth, other], [np.ones((1, 40))] * 2
        )
        assert pooled["stray_rate"] == 1.0


class TestRocAuc:
    def test_ties_count_half(self) -> None:
        # Positives {.5, .9}, negatives {.5, .5}: .5 ties both (2 x 0.5), .9 beats both.
        assert roc_auc(np.array([0.5, 0.5, 0.5, 0.9]), np.array([1, 0, 0, 1])) == 0.75

    def test_all_tied_is_half(self) -> None:
        assert roc_auc(np.ones(6), np.array([1, 0, 1, 0, 0, 1])) == 0.5

    def test_perfect_and_inverted(self) -> None:
        labels = np.array([0, 0, 1, 1])
        assert roc_auc(np.array([0.1, 0.2, 0.3, 0.4]), labels) == 1.0
        assert roc_auc(np.array([0.4, 0.3, 0.2, 0.1]), labels) == 0.0

    def test_matches_pair_count_on_random_data(self) -> None:
        rng = np.random.default_rng(0)
        scores = rng.integers(0, 5, 60) / 4.0  # many ties
        labels = rng.integers(0, 2, 60)
        pos, neg = scores[labels == 1], scores[labels == 0]
        wins = (pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()
        assert roc_auc(scores, labels) == pytest.approx(wins / (len(pos) * len(neg)))
