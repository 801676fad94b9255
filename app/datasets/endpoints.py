"""REST API for published datasets: list, card, samples and their images, the archive,
checksums, metrics and Croissant metadata.

Anything that is not a published dataset is a 404 here, objects and archive included.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from app import downloads, keys
from app.datasets import repository
from app.datasets.card import (
    archive_filename,
    citation_bibtex,
    citation_cff,
    dataset_url,
    licence_name,
    licence_url,
)
from app.datasets.croissant import croissant_jsonld
from app.datasets.repository import DatasetFilters
from app.datasets.schemas import (
    Archive,
    Citation,
    DatasetLinks,
    DatasetList,
    DatasetRead,
    DatasetSummary,
    ErrorBody,
    Licence,
    MetricRead,
    MetricSummary,
    PipelineSummary,
    SampleLinks,
    SampleList,
    SampleRead,
)
from app.deps import SessionDep, SettingsDep, StorageDep
from app.errors import NotFound
from app.samples.service import samples
from app.storage import ObjectNotFound
from app.tables import Dataset, Sample

router = APIRouter(prefix="/datasets", tags=["datasets"])

MAX_LIMIT = 100
INT32_MAX = 2**31 - 1
CARD_CACHE_CONTROL = "public, max-age=60"
NOT_FOUND = "no published dataset with that slug"

E404: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody, "description": "Not found"}}
E416: dict[int | str, dict[str, Any]] = {
    416: {"model": ErrorBody, "description": "Range not satisfiable"}
}
E429: dict[int | str, dict[str, Any]] = {
    429: {"model": ErrorBody, "description": "Too many requests (see Retry-After)"}
}
NOT_MODIFIED: dict[int | str, dict[str, Any]] = {304: {"description": "Not modified (ETag)"}}

Slug = Annotated[str, Path(max_length=80, description="The dataset's slug.")]
Index = Annotated[int, Path(ge=0, le=INT32_MAX, description="Sample index, from 0.")]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size (at most 100).")]
Offset = Annotated[int, Query(ge=0, le=INT32_MAX, description="Items to skip.")]


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _dataset_links(base: str, dataset: Dataset, settings_site: str) -> DatasetLinks:
    root = f"{base}/datasets/{dataset.slug}"
    return DatasetLinks(
        self=root,
        page=dataset_url(dataset, settings_site),
        download=f"{root}/download",
        samples=f"{root}/samples",
        croissant=f"{root}/croissant",
        sha256sums=f"{root}/SHA256SUMS",
        metrics=f"{root}/metrics",
        thumbnail=f"{root}/samples/0/thumb.webp" if dataset.count > 0 else None,
    )


def _sample_read(base: str, dataset: Dataset, sample: Sample) -> SampleRead:
    root = f"{base}/datasets/{dataset.slug}/samples/{sample.index}"
    return SampleRead(
        index=sample.index,
        seed=sample.seed,
        image_sha256=sample.image_sha256,
        mask_sha256=sample.mask_sha256,
        stats=sample.stats,
        links=SampleLinks(
            self=root,
            image=f"{root}/image.png",
            mask=f"{root}/mask.png",
            thumbnail=f"{root}/thumb.webp",
        ),
    )


def _next_link(request: Request, *, offset: int, limit: int, total: int) -> dict[str, str]:
    if offset + limit >= total:
        return {}
    url = request.url.include_query_params(offset=offset + limit, limit=limit)
    return {"Link": f'<{url}>; rel="next"'}


def _published(session: SessionDep, slug: str) -> Dataset:
    dataset = repository.get_published(session, slug=slug)
    if dataset is None:
        raise NotFound(NOT_FOUND)
    return dataset


@router.get(
    "",
    response_model=DatasetList,
    responses={**E429},
    summary="List published datasets",
    description='Paged with `limit`/`offset`; a `Link: <...>; rel="next"` header points '
    "at the next page while there is one.",
)
def list_datasets(
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    limit: Limit = 20,
    offset: Offset = 0,
    resolution: Annotated[int | None, Query(ge=1, le=INT32_MAX)] = None,
    pipeline: Annotated[int | None, Query(ge=1, le=INT32_MAX, description="Pipeline id")] = None,
    licence: Annotated[str | None, Query(max_length=40, examples=["CC-BY-4.0"])] = None,
    min_f1: Annotated[
        float | None, Query(ge=0, le=1, description="Minimum tstr_f1_synthetic")
    ] = None,
    q: Annotated[str | None, Query(max_length=200, description="Search title/description")] = None,
    sort: Literal["date", "size", "score"] = "date",
    order: Literal["asc", "desc"] = "desc",
) -> DatasetList:
    filters = DatasetFilters(
        resolution=resolution,
        pipeline_id=pipeline,
        licence=licence,
        min_f1=min_f1,
        q=q or None,
        sort=sort,
        descending=order == "desc",
    )
    page, total = repository.list_published(session, filters=filters, offset=offset, limit=limit)
    values = repository.metric_values(session, dataset_ids=[d.id for d in page])
    base = _base(request)
    items = [
        DatasetSummary(
            slug=d.slug,
            title=d.title,
            description=d.description,
            licence=d.licence,
            resolution=d.resolution,
            count=d.count,
            version=d.version,
            pipeline_id=d.pipeline_id,
            archive_size=d.archive_size,
            archive_sha256=d.archive_sha256,
            created_at=d.created_at,
            published_at=d.published_at,
            metrics=values[d.id],
            links=_dataset_links(base, d, settings.site_url),
        )
        for d in page
    ]
    response.headers.update(_next_link(request, offset=offset, limit=limit, total=total))
    return DatasetList(items=items, total=total, limit=limit, offset=offset)


@router.get(
    "/{slug}",
    response_model=DatasetRead,
    responses={**NOT_MODIFIED, **E404, **E429},
    summary="The dataset card",
)
def get_dataset(
    slug: Slug, request: Request, session: SessionDep, settings: SettingsDep
) -> Response:
    dataset = _published(session, slug)
    metrics = repository.metric_values(session, dataset_ids=[dataset.id])[dataset.id]
    pipeline = dataset.pipeline
    card = DatasetRead(
        slug=dataset.slug,
        title=dataset.title,
        description=dataset.description,
        licence=Licence(
            code=dataset.licence,
            name=licence_name(dataset.licence),
            url=licence_url(dataset.licence),
        ),
        citation=Citation(
            bibtex=citation_bibtex(dataset, settings.site_url),
            cff=citation_cff(dataset, settings.site_url),
        ),
        pipeline=PipelineSummary(
            id=pipeline.id,
            name=pipeline.name,
            config_name=pipeline.config_name,
            resolution=pipeline.resolution,
            steps=pipeline.steps,
            training_data=pipeline.training_data,
        ),
        count=dataset.count,
        resolution=dataset.resolution,
        version=dataset.version,
        seed=dataset.seed,
        archive=(
            Archive(
                filename=archive_filename(dataset),
                size=dataset.archive_size,
                sha256=dataset.archive_sha256,
            )
            if dataset.archive_size is not None and dataset.archive_sha256 is not None
            else None
        ),
        created_at=dataset.created_at,
        published_at=dataset.published_at,
        metrics=[MetricSummary(name=k, value=v) for k, v in metrics.items()],
        links=_dataset_links(_base(request), dataset, settings.site_url),
    )
    body = card.model_dump_json().encode()
    etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
    headers = {"ETag": etag, "Cache-Control": CARD_CACHE_CONTROL}
    if downloads.etag_matches(request.headers.get("if-none-match"), etag):
        return downloads.not_modified(etag, headers)
    return Response(body, media_type="application/json", headers=headers)


@router.get(
    "/{slug}/samples",
    response_model=SampleList,
    responses={**E404, **E429},
    summary="List a dataset's samples",
)
def list_samples(
    slug: Slug,
    request: Request,
    response: Response,
    session: SessionDep,
    limit: Limit = 20,
    offset: Offset = 0,
) -> SampleList:
    dataset = _published(session, slug)
    total = dataset.count
    rows = (
        samples.list(session, dataset_id=dataset.id, offset=offset, limit=limit)
        if offset < total
        else []
    )
    base = _base(request)
    response.headers.update(_next_link(request, offset=offset, limit=limit, total=total))
    return SampleList(
        items=[_sample_read(base, dataset, s) for s in rows],
        total=total,
        limit=limit,
        offset=offset,
    )


def _sample(session: SessionDep, slug: str, index: int) -> tuple[Dataset, Sample]:
    dataset = _published(session, slug)
    sample = (
        samples.get(session, dataset_id=dataset.id, index=index) if index < dataset.count else None
    )
    if sample is None:
        raise NotFound(f"dataset {slug} has no sample {index}")
    return dataset, sample


@router.get(
    "/{slug}/samples/{index}",
    response_model=SampleRead,
    responses={**E404, **E429},
    summary="One sample and the links to its image, mask and thumbnail",
)
def get_sample(slug: Slug, index: Index, request: Request, session: SessionDep) -> SampleRead:
    dataset, sample = _sample(session, slug, index)
    return _sample_read(_base(request), dataset, sample)


_PNG = {200: {"content": {"image/png": {}}, "description": "The image"}}
_WEBP = {200: {"content": {"image/webp": {}}, "description": "The thumbnail"}}


@router.head("/{slug}/samples/{index}/image.png", include_in_schema=False)
@router.get(
    "/{slug}/samples/{index}/image.png",
    response_class=Response,
    responses={**_PNG, **NOT_MODIFIED, **E404, **E429},
    summary="A sample's RGB fundus image (PNG)",
)
def get_sample_image(
    slug: Slug, index: Index, request: Request, session: SessionDep, storage: StorageDep
) -> Response:
    _, sample = _sample(session, slug, index)
    return downloads.object_response(
        request, storage, key=sample.image_key, etag=sample.image_sha256, media_type="image/png"
    )


@router.head("/{slug}/samples/{index}/mask.png", include_in_schema=False)
@router.get(
    "/{slug}/samples/{index}/mask.png",
    response_class=Response,
    responses={**_PNG, **NOT_MODIFIED, **E404, **E429},
    summary="A sample's binary vessel mask (PNG, 0 or 255)",
)
def get_sample_mask(
    slug: Slug, index: Index, request: Request, session: SessionDep, storage: StorageDep
) -> Response:
    _, sample = _sample(session, slug, index)
    return downloads.object_response(
        request, storage, key=sample.mask_key, etag=sample.mask_sha256, media_type="image/png"
    )


def thumbnail_etag(sample: Sample) -> str:
    # The thumbnail is made from the image when the sample is stored, so the image's digest
    # identifies it too; a revalidation then needs no storage request.
    return f"thumb-{sample.image_sha256[:32]}"


@router.head("/{slug}/samples/{index}/thumb.webp", include_in_schema=False)
@router.get(
    "/{slug}/samples/{index}/thumb.webp",
    response_class=Response,
    responses={**_WEBP, **NOT_MODIFIED, **E404, **E429},
    summary="A sample's thumbnail (WebP)",
)
def get_sample_thumbnail(
    slug: Slug, index: Index, request: Request, session: SessionDep, storage: StorageDep
) -> Response:
    _, sample = _sample(session, slug, index)
    return downloads.object_response(
        request, storage, key=sample.thumb_key, etag=thumbnail_etag(sample), media_type="image/webp"
    )


@router.head("/{slug}/download", include_in_schema=False)
@router.get(
    "/{slug}/download",
    response_class=Response,
    responses={
        200: {"content": {"application/zip": {}}, "description": "The whole archive"},
        206: {"content": {"application/zip": {}}, "description": "The requested byte range"},
        307: {
            "description": "Where the store serves the archive itself (when the server is set "
            "up to redirect): a presigned URL, valid for an hour, with the same Range support"
        },
        **NOT_MODIFIED,
        **E404,
        **E416,
        **E429,
    },
    summary="Download the dataset archive (zip); supports Range, If-Range and ETags; "
    "follow redirects",
)
def download(
    slug: Slug, request: Request, session: SessionDep, storage: StorageDep, settings: SettingsDep
) -> Response:
    dataset = _published(session, slug)
    if dataset.archive_key is None or dataset.archive_size is None or not dataset.archive_sha256:
        raise NotFound("this dataset has no archive")
    filename = archive_filename(dataset)
    if settings.download_redirect and request.method == "GET":
        # HEAD stays here: a presigned URL is signed for GET only.
        redirect = downloads.redirect_to_object(
            request,
            storage,
            key=dataset.archive_key,
            etag=dataset.archive_sha256,
            filename=filename,
        )
        if redirect is not None:
            return redirect
    return downloads.stream_object(
        request,
        storage,
        key=dataset.archive_key,
        size=dataset.archive_size,
        etag=dataset.archive_sha256,
        media_type="application/zip",
        last_modified=dataset.published_at,
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "public, max-age=3600",
        },
    )


@router.get(
    "/{slug}/SHA256SUMS",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {}}, "description": "`sha256sum -c` format"},
        **E404,
        **E429,
    },
    summary="Checksums of every file in the archive",
)
def get_sha256sums(slug: Slug, session: SessionDep, storage: StorageDep) -> Response:
    dataset = _published(session, slug)
    try:
        data = storage.get_bytes(keys.sha256sums(dataset.id))
    except ObjectNotFound:
        raise NotFound("this dataset has no checksums") from None
    return Response(data, media_type="text/plain; charset=utf-8")


@router.get(
    "/{slug}/metrics",
    response_model=list[MetricRead],
    responses={**E404, **E429},
    summary="The dataset's public metrics, with details",
)
def get_metrics(slug: Slug, session: SessionDep) -> list[MetricRead]:
    dataset = _published(session, slug)
    return [
        MetricRead(name=m.name, value=m.value, details=m.details)
        for m in repository.public_metrics(session, dataset_id=dataset.id)
    ]


@router.get(
    "/{slug}/croissant",
    response_class=Response,
    responses={
        200: {
            "content": {"application/ld+json": {}},
            "description": "Croissant 1.0 JSON-LD metadata",
        },
        **E404,
        **E429,
    },
    summary="Croissant 1.0 metadata (JSON-LD)",
)
def get_croissant(
    slug: Slug, request: Request, session: SessionDep, settings: SettingsDep
) -> Response:
    dataset = _published(session, slug)
    metrics = repository.metric_values(session, dataset_ids=[dataset.id])[dataset.id]
    doc = croissant_jsonld(
        dataset,
        api_root=f"{_base(request)}/datasets/{dataset.slug}",
        site_url=settings.site_url,
        metrics=metrics,
    )
    return Response(json.dumps(doc, indent=1), media_type="application/ld+json")
