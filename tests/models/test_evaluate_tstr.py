import numpy as np
import pytest

from models.evaluate import tstr
from models.evaluate.scores import SCORE_NAMES
from models.phantom import phantom_pairs

TINY = dict(steps=2, batch_size=2, crop=32, levels=2, base=4)


class TestRunTstr:
    def test_test_split_never_reaches_training(self, monkeypatch) -> None:
        real = phantom_pairs(3, size=64, seed=0)
        synthetic = phantom_pairs(3, size=64, seed=100)
        test = phantom_pairs(2, size=64, seed=200)
        test_arrays = {id(a) for p in test for a in (p.image, p.mask, p.fov)}
        trained_on: list[list[str]] = []
        groups: list[list[str] | None] = []
        real_train_segmenter = tstr.train_segmenter

        def spy(pairs, **kwargs):
            assert not {id(a) for p in pairs for a in (p.image, p.mask, p.fov)} & test_arrays
            trained_on.append([p.name for p in pairs])
            groups.append(kwargs.get("groups"))
            return real_train_segmenter(pairs, **kwargs)

        monkeypatch.setattr(tstr, "train_segmenter", spy)
        progress: list[float] = []
        result = tstr.run_tstr(
            real,
            synthetic,
            test,
            seeds=(0, 1),
            second_observer=[p.mask for p in test],
            on_progress=lambda f, m: progress.append(f),
            **TINY,
        )
        assert len(trained_on) == 6  # 3 arms x 2 seeds
        test_names = {p.name for p in test}
        assert all(not set(names) & test_names for names in trained_on)
        assert sorted(len(n) for n in trained_on) == [3, 3, 3, 3, 6, 6]
        # Only the mixed arm balances its batches, real first then synthetic.
        assert groups.count(None) == 4
        assert [g for g in groups if g] == [["real"] * 3 + ["synthetic"] * 3] * 2
        assert progress[-1] == pytest.approx(1.0)
        assert progress == sorted(progress)

        assert set(result.arms) == {"real", "synthetic", "mixed"}
        assert all(len(a.per_seed) == 2 for a in result.arms.values())
        assert result.real_model is not None
        assert result.second_observer is not None and result.second_observer["f1"] == 1.0

        rows = {name: (value, details) for name, value, details in result.to_metrics()}
        for arm in ("real", "synthetic", "mixed", "second_observer"):
            for score in SCORE_NAMES:
                assert f"tstr_{score}_{arm}" in rows
        value, details = rows["tstr_f1_synthetic"]
        assert value == pytest.approx(np.mean(details["per_seed"]))
        assert details["std"] == pytest.approx(np.std(details["per_seed"]))
        assert details["seeds"] == [0, 1] and details["n_train"] == 3
        assert "tstr_f1_ratio" in rows
        assert "farther than" in rows["tstr_stray_rate_real"][1]["definition"]
        assert "definition" not in rows["tstr_f1_real"][1]

    def test_progress_reports_are_bounded_per_run(self) -> None:
        # A worker commits every report to the job's row: not one per segmenter step.
        fractions: list[float] = []
        tstr.run_tstr(
            phantom_pairs(2, size=32, seed=0),
            [],
            phantom_pairs(1, size=32, seed=200),
            arms=("real",),
            seeds=(0,),
            on_progress=lambda f, m: fractions.append(f),
            **{**TINY, "steps": 4 * tstr.REPORTS_PER_RUN},
        )
        # REPORTS_PER_RUN while training, then one when the run is scored.
        assert len(fractions) == tstr.REPORTS_PER_RUN + 1
        assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)

    def test_empty_synthetic_skips_its_arms(self) -> None:
        real = phantom_pairs(2, size=32, seed=0)
        result = tstr.run_tstr(real, [], phantom_pairs(1, size=32, seed=9), seeds=(0,), **TINY)
        assert set(result.arms) == {"real", "mixed"}
        assert result.arms["mixed"].n_train == 2

    def test_rejects_bad_input(self) -> None:
        real = phantom_pairs(1, size=32, seed=0)
        with pytest.raises(ValueError):
            tstr.run_tstr(real, real, [], **TINY)
        with pytest.raises(ValueError):
            tstr.run_tstr(real, real, real, arms=("test",), **TINY)
