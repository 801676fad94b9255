"""The SVG plot generator on tiny data: well-formed XML, the right marks, bad input skipped."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import pytest
from markupsafe import Markup

from app.pages.plots import (
    MARGIN_LEFT,
    MARGIN_RIGHT,
    WIDTH,
    metric_plots,
    nice_ticks,
    render_plot,
)

SVG = "{http://www.w3.org/2000/svg}"


def parse(svg: Markup | None) -> ET.Element:
    assert svg is not None
    root = ET.fromstring(str(svg))
    assert root.tag == f"{SVG}svg"
    assert root.get("role") == "img"
    assert root.find(f"{SVG}title") is not None
    return root


class TestHistogram:
    def test_overlaid_series(self) -> None:
        spec = {
            "kind": "histogram",
            "edges": [0, 1, 2, 3],
            "series": {"real": [1, 3, 2], "synthetic": [2, 2, 2]},
            "x_label": "intensity",
        }
        root = parse(render_plot(spec, title="KL"))
        filled = [p for p in root.iter(f"{SVG}path") if p.get("fill-opacity")]
        assert len(filled) == 2
        # One step outline per series: start, 2 points per bin, end.
        assert filled[0].get("d", "").count("L") == 2 * 3 + 1
        assert {p.get("stroke") for p in filled} == {"#1f5fbf", "#c25e00"}
        texts = [t.text for t in root.iter(f"{SVG}text")]
        assert "intensity" in texts and "real" in texts and "synthetic" in texts

    @pytest.mark.parametrize(
        "spec",
        [
            {"kind": "histogram", "edges": [0, 1], "series": {"real": [1, 2]}},  # length
            {"kind": "histogram", "edges": [1, 0], "series": {"real": [1]}},  # not increasing
            {"kind": "histogram", "edges": [0, "x"], "series": {"real": [1]}},
            {"kind": "histogram", "edges": [0, 1], "series": {}},
            {"kind": "histogram", "edges": [0, 1]},
        ],
    )
    def test_malformed_is_skipped(self, spec: dict) -> None:
        assert render_plot(spec) is None

    def test_non_finite_counts_become_gaps(self) -> None:
        spec = {"kind": "histogram", "edges": [0, 1, 2], "series": {"real": [math.nan, 1]}}
        assert "nan" not in str(parse(render_plot(spec))).lower()


class TestBars:
    def test_bars_with_error_bars(self) -> None:
        spec = {
            "kind": "bars",
            "labels": ["real", "synthetic"],
            "values": [0.8988, 0.8877],
            "errors": [0.01, 0.02],
        }
        root = parse(render_plot(spec, title="TSTR F1"))
        rects = [r for r in root.iter(f"{SVG}rect") if r.find(f"{SVG}title") is not None]
        assert len(rects) == 2
        assert rects[0].find(f"{SVG}title").text == "real: 0.8988 ± 0.01"
        # Taller value, taller bar.
        assert float(rects[0].get("height")) > float(rects[1].get("height"))
        assert len([p for p in root.iter(f"{SVG}path") if p.get("class") == "error"]) == 2

    def test_real_and_synthetic_colours_inside_labels(self) -> None:
        spec = {
            "kind": "bars",
            "labels": ["trained on real", "trained on synthetic", "other"],
            "values": [1, 1, 1],
        }
        root = parse(render_plot(spec))
        fills = [
            r.get("fill") for r in root.iter(f"{SVG}rect") if r.find(f"{SVG}title") is not None
        ]
        assert fills[:2] == ["#1f5fbf", "#c25e00"] and fills[2] not in fills[:2]

    def test_errors_optional_and_missing_value(self) -> None:
        spec = {"kind": "bars", "labels": ["a", "b"], "values": [1.0, None]}
        svg = str(render_plot(spec))
        assert "n/a" in svg and 'class="error"' not in svg

    def test_labels_are_escaped(self) -> None:
        spec = {"kind": "bars", "labels": ["<script>x</script>"], "values": [1]}
        svg = str(render_plot(spec))
        assert "<script>" not in svg and "&lt;script&gt;" in svg

    def test_mismatched_lengths(self) -> None:
        assert render_plot({"kind": "bars", "labels": ["a"], "values": [1, 2]}) is None
        spec = {"kind": "bars", "labels": ["a"], "values": [1], "errors": [1, 2]}
        assert render_plot(spec) is None


class TestScatterAndDistribution:
    def test_scatter(self) -> None:
        spec = {
            "kind": "scatter",
            "series": {"real": {"x": [0, 1], "y": [1, 0]}, "synthetic": {"x": [2], "y": [2]}},
        }
        root = parse(render_plot(spec))
        assert len(list(root.iter(f"{SVG}circle"))) == 3

    def test_distribution(self) -> None:
        box = {"min": 0, "q1": 1, "median": 2, "q3": 3, "max": 4, "mean": 2.2}
        spec = {"kind": "distribution", "series": {"real": box, "synthetic": {**box, "max": 5}}}
        root = parse(render_plot(spec))
        assert len([r for r in root.iter(f"{SVG}rect") if r.find(f"{SVG}title") is not None]) == 2

    def test_distribution_rows_keep_their_whole_names(self) -> None:
        box = {"min": 0, "q1": 1, "median": 2, "q3": 3, "max": 4}
        names = ["synthetic → nearest training (mask Dice)", "unseen real → nearest training"]
        root = parse(render_plot({"kind": "distribution", "series": dict.fromkeys(names, box)}))
        texts = {t.text for t in root.iter(f"{SVG}text")}
        assert set(names) <= texts

    def test_x_ticks_stay_on_the_axis(self) -> None:
        box = {"min": 0.02, "q1": 0.05, "median": 0.07, "q3": 0.09, "max": 0.31}
        root = parse(render_plot({"kind": "distribution", "series": {"real": box}}))
        ticks = [t for t in root.iter(f"{SVG}text") if t.get("text-anchor") == "middle"]
        xs = [float(t.get("x")) for t in ticks]
        assert ticks and all(MARGIN_LEFT <= x <= WIDTH - MARGIN_RIGHT for x in xs)
        assert "0" not in {t.text for t in ticks}

    def test_distribution_out_of_order(self) -> None:
        box = {"min": 3, "q1": 1, "median": 2, "q3": 3, "max": 4}
        assert render_plot({"kind": "distribution", "series": {"real": box}}) is None


class TestMetricPlots:
    def test_plot_and_plots_and_unknown(self) -> None:
        bars = {"kind": "bars", "labels": ["a"], "values": [1]}
        details = {"plot": bars, "plots": [bars, {"kind": "pie"}, "junk"], "std": 0.1}
        assert len(metric_plots(details, label="x")) == 2
        assert metric_plots({}, label="x") == []
        assert metric_plots(None, label="x") == []

    def test_title_defaults_to_label(self) -> None:
        (svg,) = metric_plots(
            {"plot": {"kind": "bars", "labels": ["a"], "values": [1]}}, label="F1"
        )
        assert parse(svg).find(f"{SVG}title").text == "F1"


def test_nice_ticks() -> None:
    assert nice_ticks(0, 1) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(0, 256)[0] == 0 and nice_ticks(0, 256)[-1] >= 256
    assert nice_ticks(3, 3) == [3]
