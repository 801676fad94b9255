"""View models for the pages: what a template may show, and nothing private.

Templates get these small objects rather than raw rows with storage keys on them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from markupsafe import Markup
from sqlalchemy.orm import Session

from app.datasets import repository
from app.datasets.card import (
    archive_filename,
    citation_bibtex,
    citation_cff,
    licence_name,
    licence_url,
)
from app.pages.plots import metric_plots
from app.samples.service import samples
from app.tables import Dataset, Metric, Sample

# Friendly names for the metrics the evaluation writes; others show their raw name.
METRIC_LABELS = {
    "tstr_f1_synthetic": "TSTR F1, segmenter trained on synthetic",
    "tstr_f1_real": "F1, segmenter trained on real (reference)",
    "tstr_f1_ratio": "TSTR F1 ratio (synthetic / real)",
    "tstr_f1_second_observer": "F1, second human observer",
    "tstr_auc_synthetic": "TSTR ROC AUC, trained on synthetic",
    "tstr_auc_real": "ROC AUC, trained on real (reference)",
    "tstr_stray_rate_synthetic": "TSTR stray vessel calls, trained on synthetic",
    "tstr_stray_rate_real": "Stray vessel calls, trained on real (reference)",
    "kl_real_syn": "KL(real ‖ synthetic), intensities",
    "kl_syn_real": "KL(synthetic ‖ real), intensities",
    "kl_real_real": "KL(real ‖ real) baseline",
    "inception_fid": "Inception-FID, synthetic vs real test",
    "inception_kid": "Inception-KID, synthetic vs real test",
    "memorisation_min_distance": "Memorisation audit: closest training distance",
    "vessel_orientation": "Vessel edges near an image axis (fraction)",
    "vessel_pieces": "Vessel pieces per mask (8-connected)",
    "vessel_connected_share": "Vessel pixels in pieces of 20 px or more (share)",
    "vessel_sample_overlap": "Vessel overlap between two samples (Dice)",
}
STAT_LABELS = {
    "vessel_fraction": "Vessel fraction",
    "fov_fraction": "Field-of-view fraction",
    "mean_intensity": "Mean intensity",
}
KEY_METRIC = repository.SCORE_METRIC


def metric_label(name: str) -> str:
    return METRIC_LABELS.get(name, name.replace("_", " "))


def fmt_value(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "n/a"
        if value == 0:
            return "0"
        return (
            f"{value:.3g}"
            if abs(value) < 1e-3 or abs(value) >= 1e5
            else f"{value:.4f}".rstrip("0").rstrip(".")
        )
    return str(value)


def fmt_bytes(size: int | None) -> str:
    if size is None:
        return "n/a"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"


# --------------------------------------------------------------------------- cards


@dataclass(frozen=True)
class Thumb:
    index: int
    url: str
    href: str
    alt: str


@dataclass(frozen=True)
class DatasetCard:
    slug: str
    title: str
    description: str
    count: int
    resolution: int
    licence: str
    licence_name: str
    published: str
    key_metric: float | None
    thumbs: list[Thumb] = field(default_factory=list)

    @property
    def href(self) -> str:
        return f"/gallery/{self.slug}"


def thumbs(dataset: Dataset, rows: list[Sample]) -> list[Thumb]:
    return [
        Thumb(
            index=row.index,
            url=f"/datasets/{dataset.slug}/samples/{row.index}/thumb.webp",
            href=f"/gallery/{dataset.slug}/{row.index}",
            alt=f"Synthetic fundus image {row.index} of {dataset.title}",
        )
        for row in rows
    ]


def dataset_cards(session: Session, found: list[Dataset], *, n_thumbs: int) -> list[DatasetCard]:
    values = repository.metric_values(session, dataset_ids=[d.id for d in found])
    return [
        DatasetCard(
            slug=d.slug,
            title=d.title,
            description=d.description,
            count=d.count,
            resolution=d.resolution,
            licence=d.licence,
            licence_name=licence_name(d.licence),
            published=d.published_at.date().isoformat() if d.published_at else "",
            key_metric=values.get(d.id, {}).get(KEY_METRIC),
            thumbs=thumbs(d, samples.list(session, dataset_id=d.id, limit=n_thumbs)),
        )
        for d in found
    ]


# --------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class MetricRow:
    name: str
    label: str
    value: str
    spread: str
    real: str
    plots: list[Markup]


def real_figure(details: dict[str, Any]) -> float | None:
    """The same figure of the real training split, where the metric records one: ``real``
    itself, or for a distribution its summary named by ``statistic``."""
    real, statistic = details.get("real"), details.get("statistic")
    if isinstance(real, dict):
        real = real.get(statistic) if isinstance(statistic, str) else None
    return float(real) if isinstance(real, int | float) and not isinstance(real, bool) else None


def metric_rows(metrics: list[Metric]) -> list[MetricRow]:
    """Public metrics, key metric first; plots from the documented contract only."""
    ordered = sorted(metrics, key=lambda m: (m.name != KEY_METRIC, m.name))
    rows = []
    for metric in ordered:
        if metric.private:  # callers pass public metrics; never trust that twice
            continue
        details = metric.details if isinstance(metric.details, dict) else {}
        std = details.get("std")
        spread = f"± {fmt_value(float(std))}" if isinstance(std, int | float) and std else ""
        label = metric_label(metric.name)
        real = real_figure(details)
        rows.append(
            MetricRow(
                name=metric.name,
                label=label,
                value=fmt_value(metric.value),
                spread=spread,
                real="" if real is None else fmt_value(real),
                plots=metric_plots(details, label=label),
            )
        )
    return rows


# --------------------------------------------------------------------------- the card page


@dataclass(frozen=True)
class Citation:
    bibtex: str
    cff: str


def citation(dataset: Dataset, site_url: str) -> Citation:
    return Citation(bibtex=citation_bibtex(dataset, site_url), cff=citation_cff(dataset, site_url))


def licence(dataset: Dataset) -> dict[str, str]:
    return {
        "code": dataset.licence,
        "name": licence_name(dataset.licence),
        "url": licence_url(dataset.licence),
    }


def download_commands(dataset: Dataset, site_url: str) -> dict[str, str]:
    site = site_url.rstrip("/")
    base = f"{site}/datasets/{dataset.slug}"
    archive = archive_filename(dataset)
    # The file is named here, not taken from Content-Disposition: curl refuses -C with -J.
    shell = (
        f"# resumable: run it again after a dropped connection\n"
        f"curl -fL -C - -o {archive} {base}/download\n"
        f"unzip -q {archive} -d {dataset.slug}\n"
        f"cd {dataset.slug} && sha256sum -c SHA256SUMS"
    )
    python = (
        "from datasets import load_dataset\n\n"
        "# images/ + masks/ + metadata.csv, as unzipped above\n"
        f'ds = load_dataset("imagefolder", data_dir="{dataset.slug}", split="train")\n'
        'print(ds[0]["image"].size, ds[0]["mask"].size)  # mask_file_name loads as an image'
    )
    return {
        "shell": shell,
        "python": python,
        "download": f"/datasets/{dataset.slug}/download",
        "sha256sums": f"/datasets/{dataset.slug}/SHA256SUMS",
        "croissant": f"/datasets/{dataset.slug}/croissant",
    }


# --------------------------------------------------------------------------- paging


@dataclass(frozen=True)
class Pager:
    page: int
    pages: int
    total: int
    per_page: int
    base: str
    params: dict[str, str]

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.per_page

    @property
    def first_item(self) -> int:
        return min(self.offset + 1, self.total)

    @property
    def last_item(self) -> int:
        return min(self.offset + self.per_page, self.total)

    def href(self, page: int) -> str:
        params = {**self.params, **({"page": str(page)} if page > 1 else {})}
        return f"{self.base}?{urlencode(params)}" if params else self.base

    @property
    def prev_href(self) -> str | None:
        return self.href(self.page - 1) if self.page > 1 else None

    @property
    def next_href(self) -> str | None:
        return self.href(self.page + 1) if self.page < self.pages else None


def pager(page: int, *, total: int, per_page: int, base: str, params: dict[str, str]) -> Pager:
    pages = max(1, math.ceil(total / per_page))
    return Pager(
        page=min(max(page, 1), pages),
        pages=pages,
        total=total,
        per_page=per_page,
        base=base,
        params={k: v for k, v in params.items() if v not in ("", None)},
    )


# --------------------------------------------------------------------------- lenient input


def to_int(raw: str | None, *, low: int | None = None, high: int | None = None) -> int | None:
    """A form value as an int, or None when absent or not a number (never an error page)."""
    try:
        value = int(str(raw).strip())
    except (TypeError, ValueError):
        return None
    if (low is not None and value < low) or (high is not None and value > high):
        return None
    return value


def to_float(raw: str | None, *, low: float, high: float) -> float | None:
    try:
        value = float(str(raw).strip())
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and low <= value <= high else None
