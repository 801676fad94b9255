"""A micro-cache of the public API's read-mostly GET responses, in front of routing.

Cached: complete ``200`` responses to anonymous ``GET`` requests for

- the dataset list, ``/datasets`` (any query string),
- a dataset card, ``/datasets/{slug}``,
- a sample thumbnail, ``/datasets/{slug}/samples/{index}/thumb.webp``,

for ``ttl`` seconds (:data:`DEFAULT_TTL`, 2 s), in this process's memory, least recently used
first out once ``max_bytes`` of bodies are held. When an entry expires, the next request for
it asks the app again, and requests arriving while that refresh is in flight get the expired
entry (stale while revalidate), so no request queues behind the database once per ``ttl``.
An expired entry that nobody refreshes is dropped after another ``ttl``.

Why this is safe:

- These paths only ever show **published** datasets (``app.datasets.repository`` filters on
  the status), so a draft, or a dataset still being generated, can never enter the cache; it
  holds nothing that an anonymous client could not fetch anyway.
- Publishing and unpublishing are rare admin actions. A client sees the change within
  ``ttl`` seconds plus the time one refresh (an uncached request) takes, far less than the
  ``max-age`` the card already allows any HTTP cache.
- The key is everything these responses depend on: scheme, ``Host``, root path, path and
  the raw query string (bodies carry absolute links built from the request URL). Requests
  with credentials (``Authorization``, ``Cookie``) are not anonymous and bypass the cache,
  as do other methods; errors (404, 422, 429, ...) are never stored.

A hit costs no worker thread, no database session and no storage request, which is the
point: a session dependency alone is a thread hop and a pool checkout per request.

Every response to these paths carries an ``ETag`` (the card's and the thumbnail's own; for
the list, a digest of the body computed here) and ``If-None-Match`` is answered with 304.
A miss forwards the request without ``If-None-Match`` so that the full body is stored, then
answers from the stored entry exactly as a hit would: cached and uncached responses are the
same bytes. Concurrent misses for one key without even a stale entry wait for the first one
(single flight) instead of all querying the database.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.downloads import etag_matches

DEFAULT_TTL = 2.0
DEFAULT_MAX_BYTES = 32 * 1024 * 1024
MAX_ENTRY_BYTES = 1024 * 1024

CACHED_PATHS = re.compile(r"^/datasets(?:/[^/]+(?:/samples/\d+/thumb\.webp)?)?$")
_BYPASS_HEADERS = (b"authorization", b"cookie")
_KEPT_ON_304 = (b"etag", b"cache-control", b"last-modified")

CacheKey = tuple[str, str, str, str, str]


@dataclass(frozen=True)
class Entry:
    headers: list[tuple[bytes, bytes]]  # as the app sent them, plus an ETag
    body: bytes
    etag: str
    expires: float


class ResponseCache:
    """The entries, their byte budget and the keys being filled right now."""

    def __init__(
        self,
        ttl: float = DEFAULT_TTL,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_entry_bytes: int = MAX_ENTRY_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.max_bytes = max_bytes
        self.max_entry_bytes = max_entry_bytes
        self.clock = clock
        self.size = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[CacheKey, Entry] = OrderedDict()
        self._filling: dict[CacheKey, anyio.Event] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: CacheKey) -> Entry | None:
        """The fresh entry for ``key``, if any."""
        entry, fresh = self.lookup(key)
        return entry if fresh else None

    def lookup(self, key: CacheKey) -> tuple[Entry | None, bool]:
        """The entry for ``key`` and whether it is fresh.

        A stale entry is kept for one more ``ttl``, or for as long as a refresh is in flight.
        """
        entry = self._entries.get(key)
        if entry is None:
            return None, False
        now = self.clock()
        if entry.expires + self.ttl <= now and key not in self._filling:
            self._drop(key)
            return None, False
        self._entries.move_to_end(key)
        return entry, entry.expires > now

    def put(self, key: CacheKey, headers: list[tuple[bytes, bytes]], body: bytes) -> Entry:
        etag = _header(headers, b"etag")
        if etag is None:
            etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
            headers = [*headers, (b"etag", etag.encode("latin-1"))]
        entry = Entry(headers=headers, body=body, etag=etag, expires=self.clock() + self.ttl)
        if len(body) > self.max_entry_bytes:
            return entry  # served once, not kept
        self._drop(key)
        self._entries[key] = entry
        self.size += len(body)
        while self.size > self.max_bytes:
            self._drop(next(iter(self._entries)))
        return entry

    def clear(self) -> None:
        self._entries.clear()
        self.size = 0

    def _drop(self, key: CacheKey) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.size -= len(entry.body)


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for k, v in headers:
        if k.lower() == name:
            return v.decode("latin-1")
    return None


class MicroCacheMiddleware:
    """Pure ASGI middleware serving :data:`CACHED_PATHS` from a :class:`ResponseCache`."""

    def __init__(self, app: ASGIApp, *, cache: ResponseCache) -> None:
        self.app = app
        self.cache = cache

    def _key(self, scope: Scope) -> CacheKey | None:
        if (
            scope["type"] != "http"
            or scope["method"] != "GET"
            or self.cache.ttl <= 0
            or not CACHED_PATHS.match(scope["path"])
        ):
            return None
        host = ""
        for name, value in scope["headers"]:
            if name in _BYPASS_HEADERS:
                return None
            if name == b"host":
                host = value.decode("latin-1")
        if not host and scope.get("server"):
            host = "{}:{}".format(*scope["server"])
        query = scope.get("query_string", b"").decode("latin-1")
        return (scope["scheme"], host, scope.get("root_path", ""), scope["path"], query)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = self._key(scope)
        if key is None:
            await self.app(scope, receive, send)
            return
        if_none_match = _header(scope["headers"], b"if-none-match")
        entry, fresh = self.cache.lookup(key)
        if entry is not None and not fresh and key not in self.cache._filling:
            entry = None  # expired: this request refreshes it, others get it stale meanwhile
        while entry is None and key in self.cache._filling:
            await self.cache._filling[key].wait()  # single flight: let the first one fill it
            entry = self.cache.get(key)
            if entry is None:
                break  # it was not cacheable (an error, too big): ask the app ourselves
        if entry is not None:
            self.cache.hits += 1
            await _respond(entry, if_none_match, send)
            return
        self.cache.misses += 1
        event = self.cache._filling.setdefault(key, anyio.Event())
        try:
            await self._fill(key, scope, receive, send, if_none_match)
        finally:
            if self.cache._filling.get(key) is event:
                del self.cache._filling[key]
            event.set()

    async def _fill(
        self, key: CacheKey, scope: Scope, receive: Receive, send: Send, if_none_match: str | None
    ) -> None:
        # Ask for the full representation; the conditional is answered from the entry.
        headers = [(k, v) for k, v in scope["headers"] if k != b"if-none-match"]
        start: Message | None = None
        parts: list[bytes] = []
        size = 0
        passing = False  # not cacheable: forward everything as the app sends it

        async def capture(message: Message) -> None:
            nonlocal start, size, passing
            if passing:
                await send(message)
                return
            if message["type"] == "http.response.start":
                start = message
                if message["status"] != 200:
                    passing = True
                    await send(message)
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            body = message.get("body", b"")
            parts.append(body)
            size += len(body)
            more = message.get("more_body", False)
            if more and size > self.cache.max_entry_bytes:
                passing = True  # too big to keep: stream the rest through
                assert start is not None
                await send(start)
                buffered = b"".join(parts)
                await send({"type": "http.response.body", "body": buffered, "more_body": True})
                parts.clear()
                return
            if not more:
                assert start is not None
                entry = self.cache.put(key, list(start.get("headers", [])), b"".join(parts))
                await _respond(entry, if_none_match, send)

        await self.app({**scope, "headers": headers}, receive, capture)


async def _respond(entry: Entry, if_none_match: str | None, send: Send) -> None:
    if etag_matches(if_none_match, entry.etag):
        headers = [(k, v) for k, v in entry.headers if k.lower() in _KEPT_ON_304]
        await send({"type": "http.response.start", "status": 304, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
        return
    await send({"type": "http.response.start", "status": 200, "headers": entry.headers})
    await send({"type": "http.response.body", "body": entry.body})
