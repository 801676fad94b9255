"""Storage fixtures: a real SeaweedFS S3 server per test session, and both backends.

Load with ``pytest_plugins = ["tests.fixtures_storage"]`` (or ``-p tests.fixtures_storage``).

- ``s3_server`` (session): the running :class:`tests.s3server.SeaweedServer`.
- ``s3_bucket`` (session): the name of a bucket created once on it.
- ``s3_storage``: an :class:`app.storage.S3Storage` on that bucket under a fresh per-test
  prefix, emptied after the test.
- ``s3_storage_url``: ``(url, access_key, secret_key)`` for ``storage_from_url`` / settings,
  with a fresh per-test prefix, emptied after the test.
- ``local_storage``: a :class:`app.storage.LocalStorage` in ``tmp_path / "storage"``.
- ``storage``: parametrized over ``local`` and ``s3``, for contract tests.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest

from app.storage import LocalStorage, S3Storage, Storage
from tests.s3server import SeaweedServer

S3_TEST_BUCKET = "synthmed-test"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    with SeaweedServer(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


def make_s3_storage(server: SeaweedServer, bucket: str, *, prefix: str = "") -> S3Storage:
    return S3Storage(
        bucket,
        endpoint_url=server.endpoint,
        access_key=server.access_key,
        secret_key=server.secret_key,
        region=server.region,
        prefix=prefix,
    )


@pytest.fixture(scope="session")
def s3_bucket(s3_server: SeaweedServer) -> str:
    make_s3_storage(s3_server, S3_TEST_BUCKET).ensure_bucket()
    return S3_TEST_BUCKET


@pytest.fixture
def s3_storage(s3_server: SeaweedServer, s3_bucket: str) -> Iterator[S3Storage]:
    storage = make_s3_storage(s3_server, s3_bucket, prefix=f"test-{uuid.uuid4().hex}")
    yield storage
    storage.delete_prefix("")


@pytest.fixture
def s3_storage_url(s3_server: SeaweedServer, s3_bucket: str) -> Iterator[tuple[str, str, str]]:
    prefix = f"test-{uuid.uuid4().hex}"
    query = urlencode({"endpoint": s3_server.endpoint, "region": s3_server.region})
    yield (
        f"s3://{s3_bucket}/{prefix}?{query}",
        s3_server.access_key,
        s3_server.secret_key,
    )
    make_s3_storage(s3_server, s3_bucket, prefix=prefix).delete_prefix("")


@pytest.fixture
def local_storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "storage")


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest) -> Storage:
    return request.getfixturevalue(f"{request.param}_storage")
