"""What the worker tests share: a tiny trained pipeline, and sessions for code that commits."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session, sessionmaker

from models.phantom import phantom_pairs
from models.train import TrainedPipeline, train_pipeline
from tests.tiny import SIZE, tiny_config


@pytest.fixture(scope="module")
def tiny_pipeline() -> TrainedPipeline:
    pairs = phantom_pairs(4, size=SIZE, seed=0)
    return train_pipeline(pairs, tiny_config(), steps=2, seed=0, device="cpu")


@pytest.fixture
def worker_sessions(session: Session) -> sessionmaker[Session]:
    """Sessions for the code under test: they join the test's outer transaction, so their
    commits are savepoints that the test's rollback undoes."""
    return sessionmaker(
        bind=session.connection(),
        join_transaction_mode="create_savepoint",
        expire_on_commit=False,
        info=dict(session.info),
    )
