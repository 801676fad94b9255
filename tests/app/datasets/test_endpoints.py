from __future__ import annotations

import json

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.datasets.repository import DatasetFilters, list_published, metric_values
from app.datasets.service import datasets
from app.errors import Conflict
from app.main import create_app
from app.settings import Settings
from app.storage import Storage
from app.tables import Dataset, DatasetStatus, Metric
from tests.factories import make_dataset, make_published_dataset


def _publish_many(session: Session, storage: Storage, n: int) -> list[Dataset]:
    return [make_published_dataset(session, storage, count=1) for _ in range(n)]


class TestRepository:
    def test_only_published_and_stable_order(
        self, session: Session, local_storage: Storage
    ) -> None:
        a = make_published_dataset(session, local_storage, count=1)
        b = make_published_dataset(session, local_storage, count=1)
        b.published_at = a.published_at  # a tie: broken by id
        for status in (DatasetStatus.draft, DatasetStatus.ready, DatasetStatus.generating):
            make_dataset(session, status=status)
        session.flush()
        page, total = list_published(session, filters=DatasetFilters())
        assert total == 2
        assert [d.id for d in page] == [b.id, a.id]
        page, _ = list_published(session, filters=DatasetFilters(descending=False))
        assert [d.id for d in page] == [a.id, b.id]

    def test_metric_values_are_public_only(self, session: Session, local_storage: Storage) -> None:
        d = make_published_dataset(session, local_storage, count=1, metrics={"kl": 0.1})
        session.add(Metric(dataset_id=d.id, name="memorisation", value=0.5, private=True))
        session.flush()
        assert metric_values(session, dataset_ids=[d.id, 999_999]) == {
            d.id: {"kl": 0.1},
            999_999: {},
        }


class TestList:
    def test_paging_total_and_link(
        self, client: TestClient, session: Session, s3_storage: Storage
    ) -> None:
        made = _publish_many(session, s3_storage, 5)
        r = client.get("/datasets", params={"limit": 2, "order": "asc"})
        assert r.status_code == 200
        body = r.json()
        assert body["total"] == 5 and body["limit"] == 2 and body["offset"] == 0
        assert [i["slug"] for i in body["items"]] == [d.slug for d in made[:2]]
        seen = [i["slug"] for i in body["items"]]
        # Follow the Link header to the end: every dataset once, in order.
        while "link" in r.headers:
            url = r.headers["link"].split(";")[0].strip("<>")
            assert url.startswith("http://testserver/datasets?")
            assert "order=asc" in url
            r = client.get(url)
            seen += [i["slug"] for i in r.json()["items"]]
        assert seen == [d.slug for d in made]
        assert r.json()["offset"] == 4

    def test_offset_past_the_end_is_an_empty_page(
        self, client: TestClient, session: Session, s3_storage: Storage
    ) -> None:
        _publish_many(session, s3_storage, 1)
        body = client.get("/datasets", params={"offset": 2**31 - 1}).json()
        assert body["items"] == [] and body["total"] == 1

    @pytest.mark.parametrize(
        "params",
        [
            {"limit": 101},
            {"limit": 0},
            {"offset": -1},
            {"offset": 2**40},
            {"limit": "ten"},
            {"sort": "name"},
            {"order": "up"},
            {"min_f1": "nan"},
            {"min_f1": 2},
            {"resolution": "big"},
            {"resolution": 10**30},
            {"q": "x" * 201},
        ],
    )
    def test_bad_params_are_422_with_detail(self, client: TestClient, params: dict) -> None:
        r = client.get("/datasets", params=params)
        assert r.status_code == 422
        assert "detail" in r.json()

    def test_filters(self, client: TestClient, session: Session, s3_storage: Storage) -> None:
        small = make_published_dataset(
            session, s3_storage, resolution=16, metrics={"tstr_f1_synthetic": 0.9}
        )
        big = make_published_dataset(
            session, s3_storage, resolution=32, metrics={"tstr_f1_synthetic": 0.7}
        )
        big.licence = "CC0-1.0"
        session.flush()

        def slugs(**params: object) -> list[str]:
            r = client.get("/datasets", params=params)
            assert r.status_code == 200, r.text
            return sorted(i["slug"] for i in r.json()["items"])

        assert slugs(resolution=16) == [small.slug]
        assert slugs(pipeline=big.pipeline_id) == [big.slug]
        assert slugs(licence="CC0-1.0") == [big.slug]
        assert slugs(min_f1=0.8) == [small.slug]
        assert slugs(min_f1=0.7) == sorted([small.slug, big.slug])
        assert slugs(resolution=64) == []

    def test_sort_orders(self, client: TestClient, session: Session, s3_storage: Storage) -> None:
        low = make_published_dataset(
            session, s3_storage, count=1, metrics={"tstr_f1_synthetic": 0.5}
        )
        none = make_published_dataset(session, s3_storage, count=2)
        high = make_published_dataset(
            session, s3_storage, count=6, metrics={"tstr_f1_synthetic": 0.9}
        )

        def order(sort: str, direction: str) -> list[str]:
            items = client.get("/datasets", params={"sort": sort, "order": direction}).json()
            return [i["slug"] for i in items["items"]]

        assert order("date", "desc") == [high.slug, none.slug, low.slug]
        assert order("date", "asc") == [low.slug, none.slug, high.slug]
        assert order("size", "desc") == [high.slug, none.slug, low.slug]
        assert order("size", "asc") == [low.slug, none.slug, high.slug]
        # Datasets without a score come last either way.
        assert order("score", "desc") == [high.slug, low.slug, none.slug]
        assert order("score", "asc") == [low.slug, high.slug, none.slug]

    def test_search_is_case_insensitive_in_title_and_description(
        self, client: TestClient, session: Session, s3_storage: Storage
    ) -> None:
        a = make_published_dataset(session, s3_storage, count=1, title="Glaucoma-like vessels")
        b = make_published_dataset(
            session, s3_storage, count=1, description="Thin VESSELS at 100% contrast"
        )
        make_published_dataset(session, s3_storage, count=1, title="Other")

        def slugs(q: str) -> list[str]:
            return sorted(
                i["slug"] for i in client.get("/datasets", params={"q": q}).json()["items"]
            )

        assert slugs("glaucoma") == [a.slug]
        assert slugs("vessels") == sorted([a.slug, b.slug])
        assert slugs("100%") == [b.slug]
        assert slugs("%") == [b.slug]  # a literal percent sign, not a wildcard
        assert slugs("_") == []

    def test_unpublished_are_invisible(
        self, client: TestClient, session: Session, s3_storage: Storage
    ) -> None:
        ready = make_published_dataset(session, s3_storage, count=1, publish=False)
        make_dataset(session)
        assert client.get("/datasets").json() == {
            "items": [],
            "total": 0,
            "limit": 20,
            "offset": 0,
        }
        assert ready.status is DatasetStatus.ready

    def test_item_shape(self, client: TestClient, session: Session, s3_storage: Storage) -> None:
        d = make_published_dataset(session, s3_storage, count=2, metrics={"kl": 0.25})
        item = client.get("/datasets").json()["items"][0]
        assert item["slug"] == d.slug
        assert item["metrics"] == {"kl": 0.25}
        assert item["archive_sha256"] == d.archive_sha256
        assert item["links"]["download"] == f"http://testserver/datasets/{d.slug}/download"
        assert "key" not in json.dumps(item)


class TestCard:
    def test_card(self, client: TestClient, session: Session, s3_storage: Storage) -> None:
        d = make_published_dataset(
            session, s3_storage, count=3, metrics={"tstr_f1_synthetic": 0.88}
        )
        session.add(Metric(dataset_id=d.id, name="closest_training", value=0.1, private=True))
        session.flush()
        r = client.get(f"/datasets/{d.slug}")
        assert r.status_code == 200
        card = r.json()
        assert card["licence"]["code"] == "CC-BY-4.0"
        assert card["licence"]["url"].startswith("https://creativecommons.org/")
        assert card["citation"]["bibtex"].startswith("@misc{")
        assert "cff-version" in card["citation"]["cff"]
        assert card["pipeline"]["training_data"].startswith("phantom")
        assert card["archive"] == {
            "filename": f"{d.slug}-v1.zip",
            "size": d.archive_size,
            "sha256": d.archive_sha256,
            "media_type": "application/zip",
        }
        assert card["metrics"] == [{"name": "tstr_f1_synthetic", "value": 0.88}]
        assert set(card["links"]) >= {"download", "samples", "croissant", "sha256sums", "page"}
        text = r.text
        for secret in ("public/datasets", "private/", "closest_training", "fingerprint"):
            assert secret not in text

    def test_etag_and_304(self, client: TestClient, session: Session, s3_storage: Storage) -> None:
        d = make_published_dataset(session, s3_storage, count=1)
        r = client.get(f"/datasets/{d.slug}")
        etag = r.headers["etag"]
        r2 = client.get(f"/datasets/{d.slug}", headers={"If-None-Match": etag})
        assert r2.status_code == 304 and r2.content == b""
        assert r2.headers["etag"] == etag
        r3 = client.get(f"/datasets/{d.slug}", headers={"If-None-Match": '"other"'})
        assert r3.status_code == 200

    def test_metrics_endpoint(
        self, client: TestClient, session: Session, s3_storage: Storage
    ) -> None:
        d = make_published_dataset(session, s3_storage, count=1)
        session.add(Metric(dataset_id=d.id, name="kl", value=0.2, details={"bins": 64}))
        session.add(Metric(dataset_id=d.id, name="audit", value=0.9, private=True))
        session.flush()
        r = client.get(f"/datasets/{d.slug}/metrics")
        assert r.json() == [{"name": "kl", "value": 0.2, "details": {"bins": 64}}]


class TestSamples:
    def test_list_and_get(self, client: TestClient, session: Session, s3_storage: Storage) -> None:
        d = make_published_dataset(session, s3_storage, count=5)
        r = client.get(f"/datasets/{d.slug}/samples", params={"limit": 2, "offset": 2})
        body = r.json()
        assert body["total"] == 5 and [s["index"] for s in body["items"]] == [2, 3]
        assert "offset=4" in r.headers["link"]
        s = client.get(f"/datasets/{d.slug}/samples/3").json()
        assert s["index"] == 3 and s["seed"] == 1003
        assert s["links"]["image"].endswith(f"/datasets/{d.slug}/samples/3/image.png")
        assert "key" not in json.dumps(s)

    def test_objects(self, client: TestClient, session: Session, s3_storage: Storage) -> None:
        d = make_published_dataset(session, s3_storage, count=2)
        for name, media in (
            ("image.png", "image/png"),
            ("mask.png", "image/png"),
            ("thumb.webp", "image/webp"),
        ):
            r = client.get(f"/datasets/{d.slug}/samples/1/{name}")
            assert r.status_code == 200
            assert r.headers["content-type"] == media
            assert int(r.headers["content-length"]) == len(r.content) > 0
            assert "max-age" in r.headers["cache-control"]
            again = client.get(
                f"/datasets/{d.slug}/samples/1/{name}", headers={"If-None-Match": r.headers["etag"]}
            )
            assert again.status_code == 304 and again.content == b""
            head = client.head(f"/datasets/{d.slug}/samples/1/{name}")
            assert head.status_code == 200 and head.content == b""
        image = client.get(f"/datasets/{d.slug}/samples/0/image.png")
        import hashlib

        sample = client.get(f"/datasets/{d.slug}/samples/0").json()
        assert hashlib.sha256(image.content).hexdigest() == sample["image_sha256"]

    @pytest.mark.parametrize(
        ("path", "status"),
        [
            ("samples/2", 404),
            ("samples/999999", 404),
            ("samples/2/image.png", 404),
            ("samples/2/thumb.webp", 404),
            ("samples/-1", 422),
            ("samples/-1/mask.png", 422),
            ("samples/abc", 422),
            ("samples/99999999999999999999999", 422),
            ("samples?limit=1000", 422),
            ("samples?offset=-5", 422),
        ],
    )
    def test_bad_indexes(
        self, client: TestClient, session: Session, s3_storage: Storage, path: str, status: int
    ) -> None:
        d = make_published_dataset(session, s3_storage, count=2)
        r = client.get(f"/datasets/{d.slug}/{path}")
        assert r.status_code == status
        assert "detail" in r.json()


# Every public route of one dataset, after /datasets/{slug}.
DATASET_ROUTES = (
    "",
    "/samples",
    "/samples/0",
    "/samples/0/image.png",
    "/samples/0/mask.png",
    "/samples/0/thumb.webp",
    "/download",
    "/SHA256SUMS",
    "/metrics",
    "/croissant",
)


class TestNotFound:
    @pytest.mark.parametrize("suffix", DATASET_ROUTES)
    @pytest.mark.parametrize(
        "status", [DatasetStatus.ready, DatasetStatus.evaluating, DatasetStatus.failed, None]
    )
    def test_unpublished_is_404_everywhere(
        self,
        client: TestClient,
        session: Session,
        s3_storage: Storage,
        suffix: str,
        status: DatasetStatus | None,
    ) -> None:
        d = make_published_dataset(session, s3_storage, count=1, publish=False)
        slug = "no-such-dataset"
        if status is not None:
            d.status = status
            session.flush()
            slug = d.slug
        r = client.get(f"/datasets/{slug}{suffix}")
        assert r.status_code == 404
        assert r.headers["content-type"] == "application/json"
        assert r.json() == {"detail": "no published dataset with that slug"}


class TestUnpublish:
    def test_a_takedown_reaches_every_route_and_can_be_undone(
        self, app: FastAPI, client: TestClient, session: Session, s3_storage: Storage
    ) -> None:
        now = [0.0]
        cache = app.state.response_cache
        cache.clock = lambda: now[0]
        d = make_published_dataset(session, s3_storage, count=1)
        routes = [f"/datasets/{d.slug}{suffix}" for suffix in DATASET_ROUTES]
        routes += [f"/gallery/{d.slug}", f"/gallery/{d.slug}/0"]
        assert [client.get(r).status_code for r in routes] == [200] * len(routes)
        assert client.get("/datasets").json()["total"] == 1
        archive = client.get(f"/datasets/{d.slug}/download").content

        datasets.unpublish(session, dataset=d)
        now[0] += cache.ttl  # the card and the list were cached a moment ago
        assert {r: client.get(r).status_code for r in routes} == dict.fromkeys(routes, 404)
        assert client.get("/datasets").json()["total"] == 0
        assert d.status is DatasetStatus.ready and d.published_at is None
        with pytest.raises(Conflict, match="the dataset is ready, not published"):
            datasets.unpublish(session, dataset=d)

        datasets.publish(session, dataset=d)
        now[0] += cache.ttl
        assert [client.get(r).status_code for r in routes] == [200] * len(routes)
        assert client.get(f"/datasets/{d.slug}/download").content == archive


class TestOpenAPI:
    def test_schemas_and_errors_documented(self, client: TestClient) -> None:
        spec = client.get("/openapi.json").json()
        paths = spec["paths"]
        list_op = paths["/datasets"]["get"]
        assert list_op["responses"]["200"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/DatasetList"
        }
        card = paths["/datasets/{slug}"]["get"]["responses"]
        assert card["404"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
        download = paths["/datasets/{slug}/download"]["get"]["responses"]
        assert {"200", "206", "404", "416"} <= set(download)
        assert "DatasetRead" in spec["components"]["schemas"]
        assert "SampleRead" in spec["components"]["schemas"]


class TestRateLimit:
    def test_429_with_retry_after(
        self, settings: Settings, session: Session, s3_storage: Storage
    ) -> None:
        from app.db import get_session
        from app.deps import get_storage

        app = create_app(settings.model_copy(update={"rate_limit_per_minute": 3}))
        app.dependency_overrides[get_session] = lambda: session
        app.dependency_overrides[get_storage] = lambda: s3_storage
        with TestClient(app) as c:
            assert [c.get("/datasets").status_code for _ in range(3)] == [200] * 3
            r = c.get("/datasets")
            assert r.status_code == 429
            assert int(r.headers["retry-after"]) >= 1
            assert "too many requests" in r.json()["detail"]
            assert c.get("/datasets/x/download").status_code == 429
            # Only the public API is limited.
            assert c.get("/openapi.json").status_code == 200

    def test_bucket_refills(self) -> None:
        from app.ratelimit import TokenBuckets

        now = [0.0]
        buckets = TokenBuckets(60, clock=lambda: now[0])
        assert all(buckets.take("a") == 0.0 for _ in range(60))
        assert buckets.take("a") == pytest.approx(1.0)
        assert buckets.take("b") == 0.0  # per client
        now[0] += 2.0
        assert buckets.take("a") == 0.0
        assert buckets.take("a") == 0.0
        assert buckets.take("a") > 0.0
