"""Static files (CSS, one small script) with cache headers and content-versioned URLs."""

from __future__ import annotations

import hashlib
import os
from functools import cache
from pathlib import Path

from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from app.settings import ROOT

STATIC_DIR = ROOT / "static"
# URLs carry ?v=<content hash> (see `asset_url`), so a changed file gets a new URL and
# browsers may keep the old one for a week without asking.
CACHE_CONTROL = "public, max-age=604800"


class CachedStaticFiles(StaticFiles):
    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["Cache-Control"] = CACHE_CONTROL
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def static_files() -> CachedStaticFiles:
    return CachedStaticFiles(directory=STATIC_DIR)


@cache
def _version(name: str) -> str:
    path = STATIC_DIR / name
    if not path.is_file():
        return "0"
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:10]


def asset_url(name: str) -> str:
    return f"/static/{name}?v={_version(name)}"
