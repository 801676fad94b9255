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
