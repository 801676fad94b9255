"""The dataset card's sentences on how the TSTR figures were made and what KL cannot show."""

from __future__ import annotations

from typing import Any

import pytest

from app.datasets.card import kl_caveat, tstr_protocol
from app.tables import Metric
from tests.factories import tstr_details


def test_names_length_seeds_and_data() -> None:
    real = tstr_details(steps=4000, seeds=2, n_train=20)
    synthetic = tstr_details(steps=4000, seeds=2, n_train=64)
    metrics = [
        Metric(name="tstr_f1_real", value=0.8, details=real),
        Metric(name="tstr_f1_synthetic", value=0.7, details=synthetic),
    ]
    assert tstr_protocol(metrics) == (
        "Each segmenter trained for 4,000 steps; mean ± std over 2 seeds; trained on 64 "
        "synthetic pairs or 20 real pairs; tested on 20 real images. Segmenters trained too "
        "briefly make synthetic data look closer to real than it is, and the figures move "
        "with how many synthetic pairs they train on: compare datasets of the same size."
    )


def test_one_seed_and_no_real_arm() -> None:
    details = tstr_details(steps=300, seeds=1, n_train=1500, n_test=7)
    text = tstr_protocol([Metric(name="tstr_f1_synthetic", value=0.6, details=details)])
    assert text is not None
    assert text.startswith(
        "Each segmenter trained for 300 steps; one seed; trained on 1,500 synthetic pairs; "
        "tested on 7 real images."
    )


@pytest.mark.parametrize(
    "details",
    [
        {},  # made before the evaluation recorded its protocol
        {"steps": "300", "seeds": [0]},
        {"steps": 300, "seeds": []},
        None,
    ],
)
def test_nothing_to_say_without_the_protocol(details: Any) -> None:
    metrics = [Metric(name="tstr_f1_synthetic", value=0.6, details=details)]
    assert tstr_protocol(metrics) is None
    assert tstr_protocol([]) is None


APPEARANCE = {"stage2": {"appearance": True}}


def test_kl_caveat_when_the_pipeline_drew_each_colouring() -> None:
    metrics = [Metric(name="kl_real_syn", value=0.05), Metric(name="tstr_f1_synthetic", value=0.6)]
    text = kl_caveat(metrics, APPEARANCE)
    assert text is not None
    assert "match by construction" in text and "TSTR" in text


@pytest.mark.parametrize(
    ("names", "config"),
    [
        (["kl_real_syn"], {"stage2": {"appearance": False}}),
        (["kl_real_syn"], {"stage2": {}}),  # trained before the appearance model
        (["kl_real_syn"], {"stage2": "malformed"}),
        (["kl_real_syn"], None),
        (["tstr_f1_synthetic"], APPEARANCE),  # no KL to warn about
        ([], APPEARANCE),
    ],
)
def test_no_kl_caveat(names: list[str], config: Any) -> None:
    assert kl_caveat([Metric(name=n, value=0.1) for n in names], config) is None
