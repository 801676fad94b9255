"""Per-client rate limiting of the public API: a token bucket per client address.

Each address gets a bucket of ``per_minute`` tokens that refills continuously at
``per_minute / 60`` tokens a second; a request to a limited path (``/datasets`` and below)
takes one token, and is refused with 429, ``Retry-After`` and a JSON ``{"detail": ...}``
when the bucket is empty. ``per_minute == 0`` disables the limiter.

The buckets live in this process's memory: with several server processes each keeps its
own, so the effective limit is per process. That is enough to stop one client from
hogging a worker; a shared limit would need Redis.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send

LIMITED_PREFIXES = ("/datasets",)
MAX_CLIENTS = 100_000


class TokenBuckets:
    """Thread-safe token buckets keyed by client, with a bounded number of clients."""

    def __init__(
        self,
        per_minute: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = MAX_CLIENTS,
    ) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0  # tokens per second
        self.clock = clock
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, client: str) -> float:
        """Take a token for ``client``: 0.0 if allowed, else seconds until one is free."""
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.pop(client, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.rate)
            wait = 0.0
            if tokens >= 1.0:
                tokens -= 1.0
            else:
                wait = (1.0 - tokens) / self.rate
            self._buckets[client] = (tokens, now)  # most recently seen last
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)  # forget the longest-idle client
            return wait


class RateLimitMiddleware:
    """Pure ASGI middleware (no per-request task or body wrapping, so streams are untouched)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        per_minute: int,
        prefixes: tuple[str, ...] = LIMITED_PREFIXES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.prefixes = prefixes
        self.buckets = TokenBuckets(per_minute, clock=clock) if per_minute > 0 else None

    def _limited(self, path: str) -> bool:
        return any(path == p or path.startswith(p + "/") for p in self.prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.buckets is None or scope["type"] != "http" or not self._limited(scope["path"]):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        address = client[0] if client else "unknown"
        wait = self.buckets.take(address)
        if wait <= 0.0:
            await self.app(scope, receive, send)
            return
        retry_after = str(max(1, math.ceil(wait)))
        body = json.dumps({"detail": f"too many requests; retry after {retry_after} s"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 429,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"retry-after", retry_after.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def install_rate_limit(app: Starlette, per_minute: int) -> None:
    """Add the limiter to a FastAPI/Starlette app (a no-op when ``per_minute`` is 0)."""
    if per_minute > 0:
        app.add_middleware(RateLimitMiddleware, per_minute=per_minute)
