"""HTTP helpers for serving stored objects: ETags, conditional GET, byte ranges, streaming.

Used by the REST API for dataset archives and sample images, and reusable by the HTML pages
(thumbnails). Policy, after RFC 9110:

- ``If-None-Match`` is checked first (weak comparison); a match gives 304 for GET and HEAD.
- A ``Range`` header that is not a single well-formed ``bytes=`` range (another unit, a
  syntax error, several ranges) is **ignored** and the whole object is served with 200, as
  section 14.2 allows. A well-formed range that cannot be satisfied gives 416 with
  ``Content-Range: bytes */<size>`` and a JSON ``{"detail": ...}``.
- ``If-Range`` with an ETag uses strong comparison; with a date it must equal our
  ``Last-Modified`` exactly. When it does not match, the range is ignored (200, whole object).
- Bodies are streamed from storage with ``Storage.iter_range`` in fixed-size chunks, reading
  the next chunk in a worker thread while the current one is sent (:class:`ReadAheadResponse`).
  The ASGI server's flow control stops reading from storage while the client is slow, so
  memory stays at two or three chunks per download whatever the object's size.
- Large objects can instead be served by a redirect to a presigned URL of the object store
  (:func:`redirect_to_object`), so that the bytes do not pass through this process.
- Small objects (images, thumbnails) are kept in a bounded in-memory LRU keyed by (storage
  key, ETag from the database): the ETag is a digest of the content, so an entry can never be
  stale, and a repeat costs no storage request.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime

import anyio
from anyio.abc import ObjectSendStream
from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from starlette.types import Send

from app.errors import NotFound, RangeNotSatisfiable
from app.storage import ObjectNotFound, Storage

# Large chunks keep per-chunk overhead (a thread hop, an ASGI message) small next to the copy;
# two or three of them are alive per download (one sent, one read ahead).
STREAM_CHUNK_SIZE = 4 << 20
# Chunks read ahead and waiting to be sent, besides the one being sent and the one being read.
READ_AHEAD = 1
# The small-object cache: at most this many bytes in all, objects up to OBJECT_CACHE_MAX_ITEM.
OBJECT_CACHE_BYTES = 64 << 20
OBJECT_CACHE_MAX_ITEM = 2 << 20
OBJECT_CACHE_CONTROL = "public, max-age=86400"
# How long a redirect's presigned URL works: a download must start within it (a resumed one
# asks the API again and gets a new URL).
REDIRECT_EXPIRES = 3600

_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d{0,20})\s*-\s*(\d{0,20})\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # inclusive, like HTTP

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end}/{size}"


def unsatisfiable(size: int) -> RangeNotSatisfiable:
    return RangeNotSatisfiable(
        f"requested range not satisfiable; the object is {size} bytes",
        headers={"Content-Range": f"bytes */{size}", "Accept-Ranges": "bytes"},
    )


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The single byte range ``header`` asks for within ``size`` bytes.

    Returns None when the header is absent or is to be ignored (not one well-formed bytes
    range); raises :class:`RangeNotSatisfiable` when it is well formed but unsatisfiable.
    """
    if not header:
        return None
    match = _RANGE.match(header)
    if match is None:
        return None
    first, last = match.group(1), match.group(2)
    if not first and not last:
        return None
    if not first:  # suffix range: the last n bytes
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise unsatisfiable(size)
        return ByteRange(max(0, size - suffix), size - 1)
    start = int(first)
    end = int(last) if last else None
    if end is not None and end < start:
        return None  # invalid range-spec: ignore the header
    if start >= size:
        raise unsatisfiable(size)
    return ByteRange(start, size - 1 if end is None else min(end, size - 1))


def quote_etag(tag: str) -> str:
    return tag if tag.startswith(('"', 'W/"')) else f'"{tag}"'


def _opaque(tag: str) -> str:
    tag = tag.strip()
    return tag[2:] if tag.startswith("W/") else tag


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Weak comparison of our ETag against an ``If-None-Match`` list (or ``*``)."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    ours = _opaque(etag)
    return any(_opaque(tag) == ours for tag in if_none_match.split(","))


def if_range_matches(if_range: str | None, *, etag: str, last_modified: str | None) -> bool:
    """True when there is no ``If-Range`` or it names the current representation."""
    if if_range is None:
        return True
    value = if_range.strip()
    if value.startswith("W/"):
        return False  # a weak validator never satisfies If-Range
    if value.startswith('"'):
        return value == etag and not etag.startswith("W/")
    return last_modified is not None and value == last_modified


def http_date(moment: datetime) -> str:
    # format_datetime(usegmt=True) accepts only tzinfo datetime.UTC, not an equal zone.
    return format_datetime(moment.astimezone(UTC), usegmt=True)


def not_modified(etag: str, headers: dict[str, str] | None = None) -> Response:
    return Response(status_code=304, headers={"ETag": etag, **(headers or {})})


def closing(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Yield ``chunks`` and close the underlying stream even when the client goes away."""
    try:
        yield from chunks
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


class ReadAheadResponse(StreamingResponse):
    """Stream a blocking iterator of chunks, reading chunk n+1 in a thread while n is sent.

    A thread is held only while one chunk is read, never while the client is slow: once
    :data:`READ_AHEAD` chunks wait in the channel, the reader task waits there, without a
    thread, for the sender to take one. The iterator is closed (its storage stream released)
    however the response ends, and only after its last read has returned.
    """

    def __init__(
        self,
        chunks: Iterator[bytes],
        status_code: int = 200,
        headers: dict[str, str] | None = None,
        media_type: str | None = None,
    ) -> None:
        self.chunks = chunks
        self.body_iterator = _unused_body()
        self.status_code = status_code
        self.media_type = media_type
        self.background = None
        self.init_headers(headers)

    async def _read_ahead(self, channel: ObjectSendStream[bytes]) -> None:
        async with channel:
            while chunk := await anyio.to_thread.run_sync(next, self.chunks, b""):
                try:
                    await channel.send(chunk)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    return  # the sender stopped: the client went away

    async def stream_response(self, send: Send) -> None:
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": self.status_code,
                    "headers": self.raw_headers,
                }
            )
            sender, receiver = anyio.create_memory_object_stream[bytes](READ_AHEAD)
            try:
                async with anyio.create_task_group() as group:
                    group.start_soon(self._read_ahead, sender)
                    async with receiver:
                        async for chunk in receiver:
                            await send(
                                {"type": "http.response.body", "body": chunk, "more_body": True}
                            )
            except BaseExceptionGroup as errors:
                if len(errors.exceptions) == 1:  # what StreamingResponse would have raised
                    raise errors.exceptions[0] from None
                raise
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            close = getattr(self.chunks, "close", None)
            if close is not None:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(close)


async def _unused_body() -> AsyncIterator[bytes]:
    yield b""  # pragma: no cover - ReadAheadResponse streams self.chunks instead


class ObjectCache:
    """A thread-safe LRU of small objects' bytes, bounded by their total size.

    Keyed by (storage key, ETag), where the ETag is a digest of the content recorded in the
    database: a changed object has another ETag, so an entry is never stale.
    """

    def __init__(self, max_bytes: int, *, max_item: int) -> None:
        self.max_bytes = max_bytes
        self.max_item = max_item
        self.size = 0
        self._items: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str, etag: str) -> bytes | None:
        with self._lock:
            data = self._items.get((key, etag))
            if data is not None:
                self._items.move_to_end((key, etag))
            return data

    def put(self, key: str, etag: str, data: bytes) -> None:
        if len(data) > self.max_item:
            return
        with self._lock:
            old = self._items.pop((key, etag), None)
            if old is not None:
                self.size -= len(old)
            self._items[(key, etag)] = data
            self.size += len(data)
            while self.size > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self.size -= len(dropped)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.size = 0


small_objects = ObjectCache(OBJECT_CACHE_BYTES, max_item=OBJECT_CACHE_MAX_ITEM)


def stream_object(
    request: Request,
    storage: Storage,
    *,
    key: str,
    size: int,
    etag: str,
    media_type: str,
    headers: dict[str, str] | None = None,
    last_modified: datetime | None = None,
    chunk_size: int = STREAM_CHUNK_SIZE,
) -> Response:
    """A GET/HEAD response for a stored object of known size, honouring Range and ETags.

    ``etag`` must be a strong validator of the content (e.g. its sha256). ``key`` is used
    only to read from storage and never appears in the response.
    """
    etag = quote_etag(etag)
    base = {"ETag": etag, "Accept-Ranges": "bytes", **(headers or {})}
    modified = http_date(last_modified) if last_modified is not None else None
    if modified is not None:
        base["Last-Modified"] = modified
    if etag_matches(request.headers.get("if-none-match"), etag):
        return not_modified(etag, {k: v for k, v in base.items() if k != "Accept-Ranges"})
    byte_range: ByteRange | None = None
    if if_range_matches(request.headers.get("if-range"), etag=etag, last_modified=modified):
        byte_range = parse_range(request.headers.get("range"), size)
    if byte_range is None:
        status, start, end, length = 200, 0, None, size
    else:
        status, start, end, length = 206, byte_range.start, byte_range.end, byte_range.length
        base["Content-Range"] = byte_range.content_range(size)
    base["Content-Length"] = str(length)
    if request.method == "HEAD" or length == 0:
        return Response(status_code=status, headers=base, media_type=media_type)
    try:
        chunks = storage.iter_range(key, start, end, chunk_size=chunk_size)
    except ObjectNotFound:
        raise NotFound("the file is not available") from None
    return ReadAheadResponse(
        closing(chunks), status_code=status, headers=base, media_type=media_type
    )


def redirect_to_object(
    request: Request, storage: Storage, *, key: str, etag: str, filename: str
) -> Response | None:
    """A 307 to a presigned URL of ``key`` in the object store, or None when it has none.

    The client then fetches the bytes, ranges included, from the store itself. A matching
    ``If-None-Match`` is still answered here with 304. The redirect is never cached by
    anyone: the URL it carries expires after :data:`REDIRECT_EXPIRES` seconds.
    """
    etag = quote_etag(etag)
    if etag_matches(request.headers.get("if-none-match"), etag):
        return not_modified(etag)
    url = storage.presigned_url(key, expires=REDIRECT_EXPIRES, filename=filename)
    if url is None:
        return None
    return Response(
        status_code=307, headers={"Location": url, "ETag": etag, "Cache-Control": "no-store"}
    )


def object_response(
    request: Request,
    storage: Storage,
    *,
    key: str,
    etag: str,
    media_type: str,
    cache_control: str = OBJECT_CACHE_CONTROL,
) -> Response:
    """A small stored object (an image, a thumbnail) with ETag, caching and 304 support.

    The ETag comes from the database, so a revalidation (304) costs no storage request; a
    200 reads the object in one request (or none, from :data:`small_objects`) and sends it
    with its exact length.
    """
    etag = quote_etag(etag)
    headers = {"ETag": etag, "Cache-Control": cache_control}
    if etag_matches(request.headers.get("if-none-match"), etag):
        return not_modified(etag, headers)
    data = small_objects.get(key, etag)
    if data is None:
        try:
            data = storage.get_bytes(key)
        except ObjectNotFound:
            raise NotFound("the file is not available") from None
        small_objects.put(key, etag, data)
    if request.method == "HEAD":
        headers["Content-Length"] = str(len(data))
        return Response(status_code=200, headers=headers, media_type=media_type)
    return Response(content=data, headers=headers, media_type=media_type)
