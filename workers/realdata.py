"""Which real pairs a pipeline's datasets are measured against."""

from __future__ import annotations

from pathlib import Path

from models.data import DataError, FundusPair, load_pairs
from models.phantom import phantom_pairs

PHANTOM = "phantom"
# Phantom "patients" the pipeline never saw: the held-out split for phantom pipelines.
PHANTOM_TEST_SEED = 1
PHANTOM_TEST_COUNT = 20


def real_splits(
    data_source: str, *, resolution: int, real_test: str | None = None
) -> tuple[list[FundusPair], list[FundusPair]]:
    """(training pairs the pipeline learnt from, unseen real pairs for testing).

    A DRIVE-style `training/` folder finds its `test/` sibling; anything else needs
    `real_test` named explicitly.
    """
    train = load_pairs(data_source, resolution=resolution)
    if real_test is None:
        if data_source == PHANTOM:
            test = phantom_pairs(PHANTOM_TEST_COUNT, size=resolution, seed=PHANTOM_TEST_SEED)
            return train, test
        sibling = Path(data_source).parent / "test"
        if not sibling.is_dir():
            raise DataError(
                f"{data_source}: no held-out real test split found; name one with --real-test"
            )
        real_test = str(sibling)
    if Path(real_test).resolve() == Path(data_source).resolve():
        raise DataError(f"{real_test}: the test split must not be the training data")
    return train, load_pairs(real_test, resolution=resolution)
