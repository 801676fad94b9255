"""What the evaluation writes, read as the dataset page reads it."""

from __future__ import annotations

import pytest

from app.pages.views import real_figure
from models.evaluate.report import evaluate_dataset
from models.phantom import phantom_pairs


def test_each_vessel_metric_records_the_real_figure_it_compares_with() -> None:
    # Evaluated against itself, a set's real figure is its own value: for a per-image mean
    # ``real`` holds it, for a distribution ``real[statistic]`` does (the page shows it).
    train = phantom_pairs(6, size=64, seed=0)
    test = phantom_pairs(4, size=64, seed=1)
    itself = [
        m
        for m in evaluate_dataset(train, test, train, tstr_steps=0)
        if m.name.startswith("vessel_")
    ]
    assert len(itself) == 8
    for metric in itself:
        assert real_figure(metric.details) == pytest.approx(metric.value), metric.name
    other = evaluate_dataset(train, test, phantom_pairs(4, size=64, seed=2), tstr_steps=0)
    moved = [
        m.name for m in other if m.name.startswith("vessel_") and m.value != real_figure(m.details)
    ]
    assert len(moved) >= 6  # another set is not scored as the real one
