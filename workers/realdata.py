"""Which real pairs a pipeline's datasets are measured against."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.data import DataError, FundusPair, load_pairs, second_observer
from models.phantom import phantom_pairs

PHANTOM = "phantom"
# Phantom "patients" the pipeline never saw: the held-out split for phantom pipelines.
PHANTOM_TEST_SEED = 1
PHANTOM_TEST_COUNT = 20


def recorded_source(data: str) -> str:
    """How a training source is recorded: "phantom", or the folder's absolute path, so it can be
    read again from any working directory."""
    return data if data == PHANTOM else str(Path(data).resolve())


def held_out_source(data_source: str, real_test: str | None) -> str:
    """The held-out split: as named, or a DRIVE-style `training/` folder's `test/` sibling."""
    if real_test is None:
        if data_source == PHANTOM:
            return PHANTOM
        sibling = Path(data_source).parent / "test"
        if not sibling.is_dir():
            raise DataError(
                f"{data_source}: no held-out real test split found; name one with --real-test"
            )
        real_test = str(sibling)
    if real_test != PHANTOM and Path(real_test).resolve() == Path(data_source).resolve():
        raise DataError(f"{real_test}: the test split must not be the training data")
    return real_test


def training_split(data_source: str, *, resolution: int) -> list[FundusPair]:
    """The training pairs a pipeline learnt from, as its datasets are measured and audited
    against them."""
    return load_pairs(data_source, resolution=resolution)


def real_splits(
    data_source: str, *, resolution: int, real_test: str | None = None
) -> tuple[list[FundusPair], list[FundusPair], list[np.ndarray] | None]:
    """(training pairs the pipeline learnt from, unseen real test pairs, the test split's
    second-observer masks when it has them)."""
    train = training_split(data_source, resolution=resolution)
    source = held_out_source(data_source, real_test)
    if source == PHANTOM:
        test = phantom_pairs(PHANTOM_TEST_COUNT, size=resolution, seed=PHANTOM_TEST_SEED)
        return train, test, None
    return (
        train,
        load_pairs(source, resolution=resolution),
        second_observer(source, resolution=resolution),
    )
