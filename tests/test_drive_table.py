"""bench/drive_table.py evaluates a saved pipeline instead of training one (``--pipeline``).

The data is a DRIVE-layout folder of phantoms, so the test runs without the real dataset.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.checkpoint import load_pipeline, write_pipeline
from models.data import FundusPair, load_pairs
from models.generate import generate_pairs
from models.phantom import phantom_pairs
from models.train import TrainedPipeline, train_pipeline
from tests.drive_layout import write_drive_split
from tests.scripts import load_script
from tests.tiny import SIZE, tiny_config


def _drive_table():
    return load_script("bench/drive_table.py")


@pytest.fixture
def drive(tmp_path: Path) -> Path:
    root = tmp_path / "DRIVE"
    write_drive_split(root / "training", "training", phantom_pairs(4, size=SIZE, seed=0), 21)
    write_drive_split(root / "test", "test", phantom_pairs(3, size=SIZE, seed=7), 1)
    return root


def _checkpoint(pairs: list[FundusPair], path: Path) -> Path:
    pipeline = train_pipeline(pairs, tiny_config(), steps=2, seed=0, device="cpu")
    write_pipeline(pipeline, path)
    return path


def _assert_sheet_shows(out: Path, pipeline: TrainedPipeline) -> None:
    """samples.png holds the pipeline's own first samples (64 px tiles are not resized)."""
    own = generate_pairs(pipeline, count=4, seed=0)
    sheet = np.asarray(Image.open(out / "samples.png"))
    assert np.array_equal(sheet, np.concatenate([s.image for s in own], axis=1))


FAST_EVAL = ["--count", "4", "--tstr-steps", "50", "--batch", "2", "--crop", "32", "--width", "4"]


def test_evaluates_a_saved_pipeline_without_training(drive: Path, tmp_path: Path) -> None:
    train = load_pairs(drive / "training", resolution=SIZE)
    ckpt = _checkpoint(train, tmp_path / "pipeline.pt")
    out = tmp_path / "out"

    _drive_table().main(
        ["--drive", str(drive), "--pipeline", str(ckpt), "--out", str(out)] + FAST_EVAL
    )

    assert not list(out.glob("grid_*.png")), "it trained instead of loading the checkpoint"
    rows = {r["name"]: r for r in json.loads((out / "metrics.json").read_text())}
    assert rows["tstr_f1_real"]["value"] is not None
    assert rows["memorisation_passed"]["value"] in (0.0, 1.0)
    assert "F1, U-Net trained on synthetic" in (out / "table.txt").read_text()
    _assert_sheet_shows(out, load_pipeline(ckpt.read_bytes()))


def test_refuses_a_pipeline_trained_on_other_data(
    drive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = _checkpoint(phantom_pairs(4, size=SIZE, seed=3), tmp_path / "other.pt")
    with pytest.raises(SystemExit) as exit_info:
        _drive_table().main(
            ["--drive", str(drive), "--pipeline", str(ckpt), "--out", str(tmp_path / "o")]
        )
    assert exit_info.value.code == 2
    assert "was not trained on" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_refuses_a_file_that_is_no_checkpoint(
    drive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit):
        _drive_table().main(
            ["--drive", str(drive), "--pipeline", str(bad), "--out", str(tmp_path / "o")]
        )
    assert "not a readable pipeline checkpoint" in capsys.readouterr().err


def test_save_keeps_the_trained_pipeline(drive: Path, tmp_path: Path) -> None:
    script = _drive_table()
    # The narrow recipe: what is tested is the saving, not the default recipe's training time.
    script.named_config = lambda name, *, resolution: tiny_config(name)
    out = tmp_path / "out"
    args = ["--drive", str(drive), "--resolution", str(SIZE), "--steps", "1", "--save"]
    script.main(args + ["--out", str(out)] + FAST_EVAL)

    saved = load_pipeline((out / "pipeline.pt").read_bytes())
    assert saved.steps_done == 1
    assert saved.resumable
    assert [f.name for f in out.glob("pipeline.pt*")] == ["pipeline.pt"]
    _assert_sheet_shows(out, saved)


def test_save_with_pipeline_is_refused(
    drive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--drive", str(drive), "--pipeline", "x.pt", "--save", "--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit):
        _drive_table().main(args)
    assert "--pipeline trains none" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_paint_real_scores_stage_two_on_the_real_masks(drive: Path, tmp_path: Path) -> None:
    train = load_pairs(drive / "training", resolution=SIZE)
    ckpt = _checkpoint(train, tmp_path / "pipeline.pt")
    out = tmp_path / "out"

    _drive_table().main(
        ["--drive", str(drive), "--pipeline", str(ckpt), "--out", str(out), "--paint-real"]
        + FAST_EVAL
    )

    painted = json.loads((out / "painted_real.json").read_text())
    assert painted["count"] == 4 and painted["steps"] == 50
    f1s = [s["f1"] for s in painted["per_seed"]]
    assert len(f1s) == 1 and 0.0 <= f1s[0] <= 1.0
    line = (out / "table.txt").read_text().splitlines()[-1]
    assert line.startswith("F1, U-Net trained on Stage II's paintings of the real training masks")
    assert f"{f1s[0]:.4f} ± 0.0000" in line
    # The table before it is the usual one.
    assert "F1, U-Net trained on synthetic" in (out / "table.txt").read_text()
