import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models.evaluate.inception import FIDInceptionV3, InceptionWeightsError
from models.evaluate.report import Metric, evaluate_dataset
from models.evaluate.tstr import ARMS
from models.phantom import phantom_pairs
from tests.scripts import load_script


def _paper_table():
    return load_script("bench/paper_table.py")


class TestMetric:
    def test_values_become_plain_json(self) -> None:
        m = Metric("x", np.float32(0.5), {"a": np.arange(2), "b": float("nan"), "c": (1, 2)})
        assert m.to_dict() == {
            "name": "x",
            "value": 0.5,
            "details": {"a": [0, 1], "b": None, "c": [1, 2]},
        }
        assert Metric("y", float("inf")).value is None


class TestEvaluateDataset:
    def test_tiny_run_produces_every_metric(self) -> None:
        real_train = phantom_pairs(4, size=64, seed=0)
        real_test = phantom_pairs(3, size=64, seed=50)
        synthetic = phantom_pairs(4, size=64, seed=90)
        progress: list[tuple[float, str]] = []
        metrics = evaluate_dataset(
            real_train,
            real_test,
            synthetic,
            tstr_steps=2,
            seeds=(0,),
            batch_size=2,
            crop=32,
            levels=2,
            base=4,
            second_observer=[p.mask for p in real_test],
            on_progress=lambda f, m: progress.append((f, m)),
        )
        names = [m.name for m in metrics]
        assert len(names) == len(set(names))
        expected = {
            "memorisation_passed",
            "memorisation_flagged",
            "memorisation_max_dice",
            "memorisation_max_similarity",
            "kl_real_syn",
            "kl_syn_real",
            "kl_real_real",
            "vessel_fraction",
            "vessel_width",
            "vessel_branch_points",
            "vessel_pieces",
            "vessel_connected_share",
            "vessel_tortuosity",
            "vessel_orientation",
            "vessel_sample_overlap",
            "tstr_f1_real",
            "tstr_f1_synthetic",
            "tstr_f1_mixed",
            "tstr_auc_synthetic",
            "tstr_auc_mixed",
            "tstr_f1_ratio",
            "tstr_f1_second_observer",
            "seg_fid",
            "seg_kid",
        }
        assert expected <= set(names)
        by_name = {m.name: m for m in metrics}
        assert by_name["memorisation_passed"].value == 1.0
        rows = [m.to_dict() for m in metrics]
        json.dumps(rows, allow_nan=False)
        assert progress[0][0] == 0.0 and progress[-1][0] == 1.0
        assert [f for f, _ in progress] == sorted(f for f, _ in progress)

        table = _paper_table().format_table(rows)
        assert "0.8877" in table and "4.759" in table
        assert "not measured" not in table

    def test_requires_synthetic(self) -> None:
        real = phantom_pairs(2, size=32, seed=0)
        with pytest.raises(ValueError):
            evaluate_dataset(real, real, [], tstr_steps=1)


class TestPaperTable:
    def test_missing_and_present_rows(self, tmp_path, capsys) -> None:
        module = _paper_table()
        rows = [{"name": "tstr_f1_real", "value": 0.8, "details": {"std": 0.01}}]
        table = module.format_table(rows)
        assert "0.8000 ± 0.0100" in table
        assert table.count("not measured") == 3
        path = tmp_path / "m.json"
        path.write_text(json.dumps(rows))
        assert module.main(["--metrics", str(path)]) == 0
        assert "0.8988" in capsys.readouterr().out


def test_without_tstr_gives_audit_kl_vessels_and_plots() -> None:
    train = phantom_pairs(6, size=64, seed=0)
    test = phantom_pairs(4, size=64, seed=1)
    synthetic = phantom_pairs(4, size=64, seed=2)
    metrics = evaluate_dataset(train, test, synthetic, tstr_steps=0, device="cpu")
    names = {m.name for m in metrics}
    assert {"memorisation_passed", "kl_real_syn", "kl_real_real", "vessel_width"} <= names
    assert not any(n.startswith(("tstr_", "seg_", "inception_")) for n in names)
    by_name = {m.name: m for m in metrics}
    assert by_name["memorisation_passed"].value == 1.0
    assert [p["kind"] for p in by_name["kl_real_syn"].details["plots"]] == ["histogram"] * 3
    assert by_name["vessel_width"].details["plot"]["kind"] == "histogram"
    assert by_name["memorisation_passed"].details["plot"]["kind"] == "distribution"
    text = json.dumps([m.to_dict() for m in metrics])
    # Only the audit's closest-pair evidence may name training images (it is kept private).
    public = json.dumps(
        [m.to_dict() for m in metrics if not m.name.startswith("memorisation_passed")]
    )
    assert not any(p.name in public for p in train)
    assert text  # every detail is JSON-serialisable


def test_sample_overlap_sees_one_layout_drawn_for_every_sample() -> None:
    train = phantom_pairs(6, size=64, seed=0)
    test = phantom_pairs(4, size=64, seed=1)
    varied = phantom_pairs(4, size=64, seed=2)
    for synthetic, expected in ((varied, None), ([varied[0]] * 4, 1.0)):
        metrics = evaluate_dataset(train, test, synthetic, tstr_steps=0, device="cpu")
        overlap = {m.name: m for m in metrics}["vessel_sample_overlap"]
        assert overlap.details["pairs"] == 6 and overlap.details["real_pairs"] == 15
        assert 0.0 < overlap.details["real"] < 0.5
        if expected is None:
            assert 0.0 < overlap.value < 0.5
        else:
            assert overlap.value == expected
        plot = overlap.details["plot"]
        assert plot["kind"] == "distribution"
        assert plot["series"]["real"]["mean"] == pytest.approx(overlap.details["real"])


def test_with_tstr_adds_the_f1_bars() -> None:
    train = phantom_pairs(4, size=64, seed=0)
    test = phantom_pairs(2, size=64, seed=1)
    synthetic = phantom_pairs(4, size=64, seed=2)
    metrics = evaluate_dataset(
        train, test, synthetic, tstr_steps=2, seeds=(0,), device="cpu", crop=32, base=8
    )
    by_name = {m.name: m for m in metrics}
    plot = by_name["tstr_f1_synthetic"].details["plot"]
    assert plot["kind"] == "bars"
    assert plot["labels"] == [
        "trained on real",
        "trained on synthetic",
        "trained on real + synthetic",
    ]
    assert plot["values"] == [by_name[f"tstr_f1_{arm}"].value for arm in ARMS]
    assert "seg_fid" in by_name


def test_inception_metrics_only_with_a_weights_file(tmp_path: Path) -> None:
    train = phantom_pairs(3, size=64, seed=0)
    test = phantom_pairs(2, size=64, seed=1)
    synthetic = phantom_pairs(2, size=64, seed=2)
    weights = tmp_path / "pt_inception.pth"
    torch.manual_seed(0)
    torch.save(FIDInceptionV3().state_dict(), weights)
    metrics = evaluate_dataset(train, test, synthetic, tstr_steps=0, inception_weights=weights)
    by_name = {m.name: m for m in metrics}
    fid, kid = by_name["inception_fid"], by_name["inception_kid"]
    assert fid.value is not None and fid.value >= 0 and kid.value is not None
    assert fid.details["weights"] == "pt_inception.pth"
    assert len(fid.details["weights_sha256"]) == 64
    assert fid.details["baseline_fid"] is not None and fid.details["feature_dim"] == 2048
    json.dumps([m.to_dict() for m in metrics])
    # A missing file stops the evaluation before anything is measured.
    progress: list[str] = []
    with pytest.raises(InceptionWeightsError, match="missing.pth"):
        evaluate_dataset(
            train,
            test,
            synthetic,
            tstr_steps=0,
            inception_weights=tmp_path / "missing.pth",
            on_progress=lambda _f, message: progress.append(message),
        )
    assert progress == []
