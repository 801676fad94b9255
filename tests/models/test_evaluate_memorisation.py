import dataclasses
import time

import numpy as np
import pytest

from models.evaluate.memorisation import MemorisationRule, audit
from models.phantom import phantom_pairs

SIZE = 96


@pytest.fixture(scope="module")
def training() -> list:
    return phantom_pairs(8, size=SIZE, seed=0)


@pytest.fixture(scope="module")
def unseen() -> list:
    return phantom_pairs(5, size=SIZE, seed=1000)


@pytest.fixture(scope="module")
def fresh() -> list:
    return phantom_pairs(10, size=SIZE, seed=2000)


def _noisy_mirror(pair, seed: int = 0):
    rng = np.random.default_rng(seed)
    image = pair.image.astype(np.float64) + rng.normal(0, 6, pair.image.shape)
    image = np.clip(image, 0, 255).astype(np.uint8)[:, ::-1]
    return dataclasses.replace(
        pair,
        name="copy",
        image=np.ascontiguousarray(image),
        mask=np.ascontiguousarray(pair.mask[:, ::-1]),
        fov=np.ascontiguousarray(pair.fov[:, ::-1]),
    )


class TestAudit:
    def test_passes_different_images(self, training, unseen, fresh) -> None:
        result = audit(fresh, training, unseen)
        assert result.passed
        assert result.flagged_indices == []
        assert max(result.distributions["synthetic_dice"]) < result.thresholds["dice"]
        assert len(result.distributions["reference_dice"]) == len(unseen)
        assert len(result.closest) == min(len(fresh), MemorisationRule().top_k)

    def test_flags_a_planted_mirrored_noisy_copy(self, training, unseen, fresh) -> None:
        synthetic = list(fresh)
        synthetic.insert(4, _noisy_mirror(training[3]))
        result = audit(synthetic, training, unseen)
        assert not result.passed
        assert result.flagged_indices == [4]
        top = result.closest[0]
        assert top.synthetic_index == 4 and top.flagged
        assert top.training_name == training[3].name
        assert top.flip_dice == "lr"
        assert top.dice > 0.95

    def test_flags_an_image_copy_with_a_different_mask(self, training, unseen, fresh) -> None:
        # Only the photograph is copied: the image similarity alone must catch it.
        copy = dataclasses.replace(fresh[0], image=training[5].image, fov=training[5].fov)
        result = audit([copy, *fresh[1:]], training, unseen)
        assert result.flagged_indices == [0]
        assert result.distributions["synthetic_similarity"][0] >= result.thresholds["similarity"]

    def test_rule_thresholds(self) -> None:
        rule = MemorisationRule(dice_floor=0.5, dice_ceiling=0.9, margin=0.05)
        assert rule.threshold(np.array([0.2, 0.3]), 0.5, 0.9) == 0.5
        assert rule.threshold(np.array([0.6, 0.7]), 0.5, 0.9) == pytest.approx(0.75)
        assert rule.threshold(np.array([0.99]), 0.5, 0.9) == 0.9
        assert rule.threshold(np.zeros(0), 0.5, 0.9) == 0.5

    def test_max_flagged_and_no_flips(self, training, unseen, fresh) -> None:
        synthetic = [*fresh, _noisy_mirror(training[1])]
        lenient = audit(synthetic, training, unseen, rule=MemorisationRule(max_flagged=1))
        assert lenient.passed and lenient.flagged_indices == [len(fresh)]
        no_flips = audit(synthetic, training, unseen, rule=MemorisationRule(flips=False))
        assert no_flips.distributions["synthetic_dice"][-1] < 0.9

    def test_metrics_are_json_friendly(self, training, unseen, fresh) -> None:
        import json

        rows = audit(fresh, training, unseen).to_metrics()
        assert [r[0] for r in rows] == [
            "memorisation_passed",
            "memorisation_flagged",
            "memorisation_max_dice",
            "memorisation_max_similarity",
        ]
        json.dumps([list(r) for r in rows], allow_nan=False)

    def test_hundreds_of_samples_are_fast(self, training) -> None:
        rng = np.random.default_rng(0)
        base = training[0]
        synthetic = [
            dataclasses.replace(
                base,
                image=rng.integers(0, 255, base.image.shape, dtype=np.uint8),
                mask=(rng.random(base.mask.shape) < 0.1).astype(np.uint8),
            )
            for _ in range(200)
        ]
        start = time.perf_counter()
        audit(synthetic, training, training[:3])
        # Generous: the bound guards against an accidental O(N^2) or per-pixel loop, not noise.
        assert time.perf_counter() - start < 30
