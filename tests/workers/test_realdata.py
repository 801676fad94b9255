from __future__ import annotations

from pathlib import Path

import pytest

from models.data import DataError
from workers.realdata import held_out_source, real_splits


def test_phantom_pipelines_are_tested_on_unseen_phantoms() -> None:
    train, test, observer = real_splits("phantom", resolution=64)
    assert len(train) == len(test) == 20
    assert observer is None
    assert not {p.image.tobytes() for p in train} & {p.image.tobytes() for p in test}


def test_the_training_folder_is_never_the_test_split(tmp_path: Path) -> None:
    (tmp_path / "training").mkdir()
    with pytest.raises(DataError, match="must not be the training data"):
        held_out_source(str(tmp_path / "training"), str(tmp_path / "training"))
    with pytest.raises(DataError, match="no held-out real test split"):
        held_out_source(str(tmp_path / "training"), None)


def test_drive_training_finds_its_test_split_and_second_observer(drive_dir: Path) -> None:
    train, test, observer = real_splits(str(drive_dir / "training"), resolution=64)
    assert (len(train), len(test)) == (20, 20)
    assert observer is not None and len(observer) == 20
    assert observer[0].shape == test[0].mask.shape
