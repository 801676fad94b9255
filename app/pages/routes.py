"""Server-rendered HTML pages: home, gallery, a dataset's card, one sample.

The pages read through the same services and repository as the REST API, render Jinja2
templates, and work without JavaScript. Unknown or unpublished slugs and indexes get a
friendly HTML 404 page (not the API's JSON error).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from app.datasets import repository
from app.datasets.card import LICENCES, kl_caveat, tstr_protocol
from app.datasets.service import datasets
from app.deps import SessionDep, SettingsDep
from app.pages import views
from app.pages.static import asset_url
from app.samples.service import samples
from app.settings import ROOT

router = APIRouter(include_in_schema=False)

templates = Jinja2Templates(directory=ROOT / "templates")
templates.env.globals.update(asset_url=asset_url, fmt=views.fmt_value, fmt_bytes=views.fmt_bytes)

GALLERY_PER_PAGE = 12
SAMPLES_PER_PAGE = 24
FEATURED = 6
SORTS = {"date": "Newest", "size": "Largest", "score": "Best TSTR F1"}


def not_found(request: Request, message: str) -> HTMLResponse:
    return templates.TemplateResponse(request, "404.html", {"message": message}, status_code=404)


@router.get("/", response_class=HTMLResponse)
def home(request: Request, session: SessionDep, settings: SettingsDep) -> HTMLResponse:
    latest, total = repository.list_published(
        session, filters=repository.DatasetFilters(), limit=FEATURED
    )
    cards = views.dataset_cards(session, latest, n_thumbs=4)
    example = views.citation(latest[0], settings.site_url) if latest else None
    return templates.TemplateResponse(
        request, "home.html", {"cards": cards, "total": total, "example": example}
    )


@router.get("/gallery", response_class=HTMLResponse)
def gallery(
    request: Request,
    session: SessionDep,
    resolution: str | None = None,
    licence: str | None = None,
    min_f1: str | None = None,
    sort: str | None = None,
    order: str | None = None,
    q: str | None = None,
    page: str | None = None,
) -> HTMLResponse:
    # Form values are read leniently: a hand-edited URL narrows nothing rather than erroring.
    filters = repository.DatasetFilters(
        resolution=views.to_int(resolution, low=1),
        licence=licence if licence in LICENCES else None,
        min_f1=views.to_float(min_f1, low=0.0, high=1.0),
        q=(q or "").strip()[:100] or None,
        sort=sort if sort in SORTS else "date",  # type: ignore[arg-type]
        descending=order != "asc",
    )
    params = {
        "resolution": str(filters.resolution or ""),
        "licence": filters.licence or "",
        "min_f1": "" if filters.min_f1 is None else f"{filters.min_f1:g}",
        "sort": filters.sort if filters.sort != "date" else "",
        "order": "" if filters.descending else "asc",
        "q": filters.q or "",
    }
    wanted = views.to_int(page, low=1) or 1
    found, total = repository.list_published(
        session, filters=filters, offset=(wanted - 1) * GALLERY_PER_PAGE, limit=GALLERY_PER_PAGE
    )
    paging = views.pager(
        wanted, total=total, per_page=GALLERY_PER_PAGE, base="/gallery", params=params
    )
    if paging.page != wanted:  # past the last page: show the last one
        found, total = repository.list_published(
            session, filters=filters, offset=paging.offset, limit=GALLERY_PER_PAGE
        )
    return templates.TemplateResponse(
        request,
        "gallery.html",
        {
            "cards": views.dataset_cards(session, found, n_thumbs=3),
            "filters": filters,
            "filtered": any(v for k, v in params.items() if k not in ("sort", "order")),
            "paging": paging,
            "resolutions": repository.published_resolutions(session),
            "licences": {code: name for code, (name, _url) in LICENCES.items()},
            "sorts": SORTS,
        },
    )


@router.get("/gallery/{slug}", response_class=HTMLResponse)
def dataset_page(
    request: Request,
    slug: str,
    session: SessionDep,
    settings: SettingsDep,
    page: str | None = None,
) -> HTMLResponse:
    dataset = datasets.get_published(session, slug)
    if dataset is None:
        return not_found(request, "There is no published dataset at this address.")
    total = samples.count(session, dataset_id=dataset.id)
    paging = views.pager(
        views.to_int(page, low=1) or 1,
        total=total,
        per_page=SAMPLES_PER_PAGE,
        base=f"/gallery/{dataset.slug}",
        params={},
    )
    rows = samples.list(
        session, dataset_id=dataset.id, offset=paging.offset, limit=SAMPLES_PER_PAGE
    )
    public = repository.public_metrics(session, dataset_id=dataset.id)
    metrics = views.metric_rows(public)
    return templates.TemplateResponse(
        request,
        "dataset.html",
        {
            "dataset": dataset,
            "pipeline": dataset.pipeline,
            "key_metric": next((m for m in metrics if m.name == views.KEY_METRIC), None),
            "metrics": metrics,
            "tstr_protocol": tstr_protocol(public),
            "kl_caveat": kl_caveat(public, dataset.pipeline.config),
            "thumbs": views.thumbs(dataset, rows),
            "paging": paging,
            "licence": views.licence(dataset),
            "citation": views.citation(dataset, settings.site_url),
            "commands": views.download_commands(dataset, settings.site_url),
        },
    )


@router.get("/gallery/{slug}/{index}", response_class=HTMLResponse)
def sample_page(request: Request, slug: str, index: str, session: SessionDep) -> HTMLResponse:
    dataset = datasets.get_published(session, slug)
    if dataset is None:
        return not_found(request, "There is no published dataset at this address.")
    number = views.to_int(index, low=0)
    sample = None if number is None else samples.get(session, dataset_id=dataset.id, index=number)
    if sample is None:
        return not_found(request, f"{dataset.title} has no sample {index}.")
    total = samples.count(session, dataset_id=dataset.id)
    base = f"/gallery/{dataset.slug}"
    position = sample.index // SAMPLES_PER_PAGE + 1
    return templates.TemplateResponse(
        request,
        "sample.html",
        {
            "dataset": dataset,
            "sample": sample,
            "total": total,
            "stats": [
                (views.STAT_LABELS.get(k, k.replace("_", " ")), views.fmt_value(v))
                for k, v in sorted(sample.stats.items())
                if isinstance(v, int | float | str | bool) or v is None
            ],
            "image_url": f"/datasets/{dataset.slug}/samples/{sample.index}/image.png",
            "mask_url": f"/datasets/{dataset.slug}/samples/{sample.index}/mask.png",
            "prev_href": f"{base}/{sample.index - 1}" if sample.index > 0 else None,
            "next_href": f"{base}/{sample.index + 1}" if sample.index + 1 < total else None,
            "grid_href": base + (f"?page={position}" if position > 1 else "") + "#samples",
        },
    )
