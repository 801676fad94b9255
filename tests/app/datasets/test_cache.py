"""The API's micro-cache (app.microcache), the small-object cache and read-ahead streaming."""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.requests import ClientDisconnect
from starlette.types import Message

from app import downloads
from app.downloads import ObjectCache, ReadAheadResponse
from app.microcache import ResponseCache
from app.storage import Storage
from app.tables import DatasetStatus, Sample
from tests.factories import make_dataset, make_published_dataset


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def cache(app: FastAPI) -> ResponseCache:
    cache: ResponseCache = app.state.response_cache
    cache.clock = FakeClock()
    return cache


def _slugs(client: TestClient, **params: object) -> list[str]:
    r = client.get("/datasets", params=params)
    assert r.status_code == 200
    return [i["slug"] for i in r.json()["items"]]


class TestMicroCache:
    def test_cached_is_identical_to_uncached(
        self, client: TestClient, cache: ResponseCache, session: Session, s3_storage: Storage
    ) -> None:
        d = make_published_dataset(session, s3_storage, count=2, metrics={"kl": 0.5})
        for path in (
            "/datasets?limit=5",
            f"/datasets/{d.slug}",
            f"/datasets/{d.slug}/samples/1/thumb.webp",
        ):
            cache.ttl = 0  # off: straight from the endpoint
            plain = client.get(path)
            cache.ttl = 2.0
            miss = client.get(path)
            hit = client.get(path)
            assert plain.status_code == miss.status_code == hit.status_code == 200
            assert plain.content == miss.content == hit.content
            assert miss.headers == hit.headers
            assert "etag" in hit.headers
            for name, value in plain.headers.items():
                assert hit.headers[name] == value
        assert cache.hits == 3 and cache.misses == 3

    def test_if_none_match_gives_304_on_hit_and_miss(
        self, client: TestClient, cache: ResponseCache, session: Session, s3_storage: Storage
    ) -> None:
        make_published_dataset(session, s3_storage, count=1)
        etag = client.get("/datasets").headers["etag"]
        cache.clear()
        for _ in range(2):  # a miss (the full body is fetched and kept), then a hit
            r = client.get("/datasets", headers={"If-None-Match": etag})
            assert r.status_code == 304 and r.content == b""
            assert r.headers["etag"] == etag
        assert client.get("/datasets", headers={"If-None-Match": '"other"'}).status_code == 200
        assert cache.hits == 2 and cache.misses == 2

    def test_published_dataset_appears_after_the_ttl(
        self, client: TestClient, cache: ResponseCache, session: Session, s3_storage: Storage
    ) -> None:
        a = make_published_dataset(session, s3_storage, count=1)
        assert _slugs(client) == [a.slug]
        b = make_published_dataset(session, s3_storage, count=1)
        assert _slugs(client) == [a.slug]  # within the TTL: the cached page
        assert client.get(f"/datasets/{b.slug}").status_code == 200  # another key: fresh
        cache.clock.now += cache.ttl  # type: ignore[attr-defined]
        assert _slugs(client) == [b.slug, a.slug]

    def test_a_draft_never_appears(
        self, client: TestClient, cache: ResponseCache, session: Session, s3_storage: Storage
    ) -> None:
        a = make_published_dataset(session, s3_storage, count=1)
        ready = make_published_dataset(session, s3_storage, count=1, publish=False)
        draft = make_dataset(session)
        assert draft.status is DatasetStatus.draft and ready.status is DatasetStatus.ready
        for _ in range(2):  # miss, then hit
            assert _slugs(client) == [a.slug]
            for d in (draft, ready):
                assert client.get(f"/datasets/{d.slug}").status_code == 404
                assert client.get(f"/datasets/{d.slug}/samples/0/thumb.webp").status_code == 404
        # Errors are never stored: only the list page was.
        assert len(cache) == 1 and cache.hits == 1

    def test_keyed_by_query_and_host(
        self, client: TestClient, cache: ResponseCache, session: Session, s3_storage: Storage
    ) -> None:
        made = [make_published_dataset(session, s3_storage, count=1) for _ in range(3)]
        assert _slugs(client, limit=1) == [made[2].slug]
        assert _slugs(client, limit=1, offset=1) == [made[1].slug]
        r = client.get("/datasets", headers={"Host": "mirror.example"})
        assert r.json()["items"][0]["links"]["self"].startswith("http://mirror.example/")
        assert cache.hits == 0 and len(cache) == 3

    def test_credentials_and_other_paths_bypass_it(
        self, client: TestClient, cache: ResponseCache, session: Session, s3_storage: Storage
    ) -> None:
        d = make_published_dataset(session, s3_storage, count=1)
        for _ in range(2):
            client.get("/datasets", headers={"Authorization": "Bearer x"})
            client.get("/datasets", headers={"Cookie": "session=x"})
            client.get(f"/datasets/{d.slug}/samples")
            client.get(f"/datasets/{d.slug}/samples/0/image.png")
            client.head(f"/datasets/{d.slug}/samples/0/thumb.webp")
        assert cache.hits == 0 and cache.misses == 0 and len(cache) == 0


class TestResponseCache:
    def test_bounded_by_bytes_lru(self) -> None:
        clock = FakeClock()
        cache = ResponseCache(10, max_bytes=10, max_entry_bytes=6, clock=clock)
        key = ("http", "h", "", "/datasets", "")

        def k(i: int) -> tuple[str, str, str, str, str]:
            return (*key[:4], str(i))

        cache.put(k(1), [], b"aaaa")
        cache.put(k(2), [], b"bbbb")
        assert cache.get(k(1)) is not None  # now the most recent
        cache.put(k(3), [], b"cccc")  # evicts 2, the least recently used
        assert cache.get(k(2)) is None and cache.get(k(1)) is not None
        assert cache.size == 8
        entry = cache.put(k(4), [], b"x" * 7)  # bigger than an entry may be: served, not kept
        assert entry.body == b"x" * 7 and cache.get(k(4)) is None
        clock.now += 10  # expired: stale for one more ttl, for requests during a refresh
        assert cache.get(k(1)) is None
        entry, fresh = cache.lookup(k(1))
        assert entry is not None and entry.body == b"aaaa" and not fresh
        clock.now += 10
        assert cache.lookup(k(1)) == (None, False) and cache.size == 4

    def test_stale_while_a_refresh_is_in_flight(self) -> None:
        clock = FakeClock()
        cache = ResponseCache(1, clock=clock)
        key = ("http", "h", "", "/datasets", "")
        cache.put(key, [], b"old")

        async def refreshing() -> None:
            cache._filling[key] = anyio.Event()  # what the middleware does during a refresh
            clock.now += 30  # a slow refresh: the old entry is still served meanwhile
            entry, fresh = cache.lookup(key)
            assert entry is not None and entry.body == b"old" and not fresh
            del cache._filling[key]

        anyio.run(refreshing)
        assert cache.lookup(key) == (None, False)


class CountingStorage:
    def __init__(self, inner: Storage) -> None:
        self.inner = inner
        self.gets = 0

    def get_bytes(self, key: str) -> bytes:
        self.gets += 1
        return self.inner.get_bytes(key)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


class TestObjectCache:
    def test_repeat_costs_no_storage_request(
        self,
        app: FastAPI,
        client: TestClient,
        cache: ResponseCache,
        session: Session,
        s3_storage: Storage,
    ) -> None:
        from app.deps import get_storage

        cache.ttl = 0  # the micro-cache off: every request reaches the endpoint
        counting = CountingStorage(s3_storage)
        app.dependency_overrides[get_storage] = lambda: counting
        d = make_published_dataset(session, s3_storage, count=1)
        sample = session.scalars(select(Sample).where(Sample.dataset_id == d.id)).one()
        downloads.small_objects.clear()
        bodies = [client.get(f"/datasets/{d.slug}/samples/0/thumb.webp").content for _ in "ab"]
        assert bodies[0] == bodies[1] == s3_storage.get_bytes(sample.thumb_key)
        assert counting.gets == 1

    def test_bounded_lru(self) -> None:
        cache = ObjectCache(10, max_item=5)
        cache.put("a", "1", b"aaaa")
        cache.put("b", "1", b"bbbb")
        cache.get("a", "1")
        cache.put("c", "1", b"cccc")
        assert cache.get("b", "1") is None and cache.get("a", "1") == b"aaaa"
        cache.put("d", "1", b"dddddd")  # too big to keep
        assert cache.get("d", "1") is None and cache.size == 8
        assert cache.get("a", "2") is None  # another ETag is another object


class Chunks(Iterator[bytes]):
    def __init__(self, n: int, size: int = 4) -> None:
        self.n, self.size, self.read, self.closed = n, size, 0, False

    def __next__(self) -> bytes:
        if self.read == self.n:
            raise StopIteration
        self.read += 1
        return bytes([self.read]) * self.size

    def close(self) -> None:
        self.closed = True


class TestReadAhead:
    def _run(self, chunks: Chunks, fail_after: int | None, spec: str) -> list[Message]:
        sent: list[Message] = []

        async def receive() -> Message:
            await anyio.sleep_forever()
            raise AssertionError

        async def send(message: Message) -> None:
            if fail_after is not None and len(sent) > fail_after:
                raise OSError("client went away")
            sent.append(message)

        scope = {"type": "http", "asgi": {"spec_version": spec}}
        anyio.run(ReadAheadResponse(chunks, media_type="application/zip"), scope, receive, send)
        return sent

    @pytest.mark.parametrize("spec", ["2.3", "2.4"])
    def test_streams_every_chunk_in_order_then_closes(self, spec: str) -> None:
        chunks = Chunks(5)
        sent = self._run(chunks, None, spec)
        body = b"".join(m.get("body", b"") for m in sent[1:])
        assert body == b"".join(bytes([i]) * 4 for i in range(1, 6))
        assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
        assert chunks.closed

    def test_client_gone_stops_reading_and_closes(self) -> None:
        chunks = Chunks(100)
        with pytest.raises(ClientDisconnect):
            self._run(chunks, 2, "2.4")
        assert chunks.closed
        assert chunks.read <= 2 + 2 + downloads.READ_AHEAD  # sent, then a few read ahead
