from __future__ import annotations

import csv
import hashlib
import io
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.db import get_session
from app.deps import get_storage
from app.downloads import ByteRange, etag_matches, parse_range
from app.errors import RangeNotSatisfiable
from app.pages.views import download_commands
from app.storage import LocalStorage, S3Storage, Storage
from app.tables import Dataset
from tests.factories import make_dataset, make_published_dataset


@pytest.fixture
def dataset(session: Session, s3_storage: Storage) -> Dataset:
    return make_published_dataset(session, s3_storage, count=6)


def _url(dataset: Dataset) -> str:
    return f"/datasets/{dataset.slug}/download"


class TestParseRange:
    @pytest.mark.parametrize(
        ("header", "expected"),
        [
            ("bytes=0-9", ByteRange(0, 9)),
            ("bytes=5-", ByteRange(5, 99)),
            ("bytes=-10", ByteRange(90, 99)),
            ("bytes=-1000", ByteRange(0, 99)),
            ("bytes=90-1000", ByteRange(90, 99)),
            ("BYTES = 1-2", ByteRange(1, 2)),
            # Ignored (None): another unit, bad syntax, several ranges, last < first.
            ("items=0-1", None),
            ("bytes=a-b", None),
            ("bytes=0-1,5-6", None),
            ("bytes=5-1", None),
            ("bytes=-", None),
            ("bytes=" + "9" * 5000 + "-", None),
            (None, None),
        ],
    )
    def test_parse(self, header: str | None, expected: ByteRange | None) -> None:
        assert parse_range(header, 100) == expected

    @pytest.mark.parametrize("header", ["bytes=100-", "bytes=100-200", "bytes=-0"])
    def test_unsatisfiable(self, header: str) -> None:
        with pytest.raises(RangeNotSatisfiable) as info:
            parse_range(header, 100)
        assert info.value.headers == {"Content-Range": "bytes */100", "Accept-Ranges": "bytes"}

    def test_etag_matching(self) -> None:
        assert etag_matches('"a", W/"b"', '"b"')
        assert etag_matches("*", '"x"')
        assert not etag_matches('"a"', '"b"')


class TestDownload:
    def test_whole_archive(self, client: TestClient, dataset: Dataset) -> None:
        r = client.get(_url(dataset))
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/zip"
        assert int(r.headers["content-length"]) == dataset.archive_size == len(r.content)
        assert r.headers["etag"] == f'"{dataset.archive_sha256}"'
        assert r.headers["accept-ranges"] == "bytes"
        assert (
            r.headers["content-disposition"]
            == f'attachment; filename="{dataset.slug}-v{dataset.version}.zip"'
        )
        assert hashlib.sha256(r.content).hexdigest() == dataset.archive_sha256

    @pytest.mark.parametrize("cut", [1, 777, "middle", "last"])
    def test_resume_from_any_offset_is_byte_identical(
        self, client: TestClient, dataset: Dataset, cut: int | str
    ) -> None:
        whole = client.get(_url(dataset)).content
        size = len(whole)
        offset = {"middle": size // 2, "last": size - 1}.get(cut, cut)  # type: ignore[arg-type]
        first = whole[:offset]  # what a dropped connection left on disk
        r = client.get(_url(dataset), headers={"Range": f"bytes={offset}-"})
        assert r.status_code == 206
        assert r.headers["content-range"] == f"bytes {offset}-{size - 1}/{size}"
        assert int(r.headers["content-length"]) == size - offset
        assert first + r.content == whole

    def test_closed_and_suffix_ranges(self, client: TestClient, dataset: Dataset) -> None:
        whole = client.get(_url(dataset)).content
        size = len(whole)
        r = client.get(_url(dataset), headers={"Range": "bytes=10-19"})
        assert r.status_code == 206 and r.content == whole[10:20]
        r = client.get(_url(dataset), headers={"Range": "bytes=-22"})  # the zip's end record
        assert r.status_code == 206 and r.content == whole[-22:]
        assert r.headers["content-range"] == f"bytes {size - 22}-{size - 1}/{size}"
        r = client.get(_url(dataset), headers={"Range": f"bytes=0-{size * 2}"})
        assert r.status_code == 206 and r.content == whole

    def test_unsatisfiable_is_416(self, client: TestClient, dataset: Dataset) -> None:
        size = dataset.archive_size
        r = client.get(_url(dataset), headers={"Range": f"bytes={size}-"})
        assert r.status_code == 416
        assert r.headers["content-range"] == f"bytes */{size}"
        assert "not satisfiable" in r.json()["detail"]

    @pytest.mark.parametrize("header", ["bytes=abc", "bytes=9-3", "pages=1-2", "bytes=0-1,4-5"])
    def test_malformed_range_is_ignored(
        self, client: TestClient, dataset: Dataset, header: str
    ) -> None:
        r = client.get(_url(dataset), headers={"Range": header})
        assert r.status_code == 200
        assert len(r.content) == dataset.archive_size

    def test_if_range(self, client: TestClient, dataset: Dataset) -> None:
        etag = f'"{dataset.archive_sha256}"'
        r = client.get(_url(dataset), headers={"Range": "bytes=5-", "If-Range": etag})
        assert r.status_code == 206
        r = client.get(_url(dataset), headers={"Range": "bytes=5-", "If-Range": '"stale"'})
        assert r.status_code == 200 and len(r.content) == dataset.archive_size
        modified = client.head(_url(dataset)).headers["last-modified"]
        r = client.get(_url(dataset), headers={"Range": "bytes=5-", "If-Range": modified})
        assert r.status_code == 206

    def test_if_none_match(self, client: TestClient, dataset: Dataset) -> None:
        r = client.get(_url(dataset), headers={"If-None-Match": f'"{dataset.archive_sha256}"'})
        assert r.status_code == 304 and r.content == b""

    def test_head(self, client: TestClient, dataset: Dataset) -> None:
        r = client.head(_url(dataset))
        assert r.status_code == 200 and r.content == b""
        assert int(r.headers["content-length"]) == dataset.archive_size
        assert r.headers["etag"] == f'"{dataset.archive_sha256}"'
        r = client.head(_url(dataset), headers={"Range": "bytes=-10"})
        assert r.status_code == 206 and r.headers["content-length"] == "10"


class TestArchiveContents:
    def test_unzip_verify_and_metadata(
        self, client: TestClient, dataset: Dataset, tmp_path: Path
    ) -> None:
        data = client.get(_url(dataset)).content
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            zf.extractall(tmp_path)
            names = set(zf.namelist())
        sums = client.get(f"/datasets/{dataset.slug}/SHA256SUMS")
        assert sums.headers["content-type"].startswith("text/plain")
        assert sums.text == (tmp_path / "SHA256SUMS").read_text()
        listed = set()
        for line in sums.text.splitlines():
            digest, name = line.split("  ")
            assert hashlib.sha256((tmp_path / name).read_bytes()).hexdigest() == digest, name
            listed.add(name)
        assert listed == names - {"SHA256SUMS"}
        with (tmp_path / "metadata.csv").open() as fh:
            rows = list(csv.DictReader(fh))
        assert [int(r["index"]) for r in rows] == list(range(dataset.count))
        for row in rows:
            assert (tmp_path / row["file_name"]).is_file()
            assert (tmp_path / row["mask_file_name"]).is_file()

    def test_loads_with_hugging_face_imagefolder(
        self, client: TestClient, dataset: Dataset, tmp_path: Path
    ) -> None:
        datasets = pytest.importorskip("datasets")
        data = client.get(_url(dataset)).content
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            zf.extractall(tmp_path / "data")
        loaded = datasets.load_dataset(
            "imagefolder", data_dir=str(tmp_path / "data"), cache_dir=str(tmp_path / "cache")
        )
        split = loaded["train"]
        # datasets 5.x: metadata.csv's `file_name` and `mask_file_name` make `image` and
        # `mask` image columns; masks/ is not read as a second set of examples.
        assert split.num_rows == dataset.count
        assert {"image", "mask", "index", "seed"} <= set(split.column_names)
        assert isinstance(split.features["mask"], datasets.Image)
        row = split.sort("index")[0]
        assert row["index"] == 0 and row["seed"] == 1000
        assert row["image"].size == (dataset.resolution, dataset.resolution)
        assert row["mask"].size == (dataset.resolution, dataset.resolution)
        assert row["image"].mode == "RGB" and row["mask"].mode == "L"


class TestDownloadRedirect:
    """``download_redirect``: the API answers with a presigned URL and the store (SeaweedFS,
    checking signatures) serves the bytes, with the same name, length, ranges and content."""

    @pytest.fixture(autouse=True)
    def redirecting(self, app: FastAPI) -> None:
        app.state.settings = app.state.settings.model_copy(update={"download_redirect": True})

    def _location(self, client: TestClient, dataset: Dataset) -> str:
        r = client.get(_url(dataset), follow_redirects=False)
        assert r.status_code == 307, r.text
        assert r.headers["cache-control"] == "no-store"
        assert r.headers["etag"] == f'"{dataset.archive_sha256}"'
        return r.headers["location"]

    def test_store_serves_the_archive(
        self, client: TestClient, dataset: Dataset, s3_storage: S3Storage
    ) -> None:
        location = self._location(client, dataset)
        assert location.startswith(s3_storage.endpoint_url)
        assert dataset.archive_key is not None and "X-Amz-Signature=" in location
        r = httpx.get(location)
        assert r.status_code == 200
        assert int(r.headers["content-length"]) == dataset.archive_size
        assert hashlib.sha256(r.content).hexdigest() == dataset.archive_sha256
        assert (
            r.headers["content-disposition"]
            == f'attachment; filename="{dataset.slug}-v{dataset.version}.zip"'
        )

    def test_resume_through_the_store_is_byte_identical(
        self, client: TestClient, dataset: Dataset
    ) -> None:
        location = self._location(client, dataset)
        whole = httpx.get(location).content
        cut = len(whole) // 3
        rest = httpx.get(location, headers={"Range": f"bytes={cut}-"})
        assert rest.status_code == 206
        assert whole[:cut] + rest.content == whole

    def test_curl_resumes_across_the_redirect(
        self, live_url: str, dataset: Dataset, tmp_path: Path
    ) -> None:
        curl = shutil.which("curl")
        if curl is None:
            pytest.skip("curl is not installed")
        url = f"{live_url}{_url(dataset)}"
        whole = httpx.get(url, follow_redirects=True).content
        part = tmp_path / "part.zip"
        part.write_bytes(whole[:1000])
        subprocess.run([curl, "-sSf", "-L", "-C", "-", "-o", str(part), url], check=True)
        assert part.read_bytes() == whole
        assert hashlib.sha256(whole).hexdigest() == dataset.archive_sha256

    def test_conditional_and_head_are_answered_here(
        self, client: TestClient, dataset: Dataset
    ) -> None:
        etag = f'"{dataset.archive_sha256}"'
        r = client.get(_url(dataset), headers={"If-None-Match": etag}, follow_redirects=False)
        assert r.status_code == 304
        r = client.head(_url(dataset), follow_redirects=False)
        assert r.status_code == 200
        assert int(r.headers["content-length"]) == dataset.archive_size

    def test_a_draft_is_never_signed(
        self, client: TestClient, session: Session, s3_storage: S3Storage
    ) -> None:
        draft = make_dataset(session)
        # Even a draft that already has an archive in the store is not signed for anyone.
        s3_storage.put_bytes("private/drafts/archive.zip", b"PK draft bytes")
        draft.archive_key, draft.archive_size = "private/drafts/archive.zip", 14
        draft.archive_sha256 = hashlib.sha256(b"PK draft bytes").hexdigest()
        session.flush()
        r = client.get(f"/datasets/{draft.slug}/download", follow_redirects=False)
        assert r.status_code == 404
        assert "location" not in r.headers

    def test_local_storage_streams_instead(
        self, app: FastAPI, session: Session, local_storage: LocalStorage
    ) -> None:
        published = make_published_dataset(session, local_storage, count=2)
        app.dependency_overrides[get_session] = lambda: session
        app.dependency_overrides[get_storage] = lambda: local_storage
        with TestClient(app) as c:
            r = c.get(_url(published), follow_redirects=False)
        assert r.status_code == 200
        assert hashlib.sha256(r.content).hexdigest() == published.archive_sha256


class TestCopyPasteCommands:
    """The dataset page's shell and Python snippets, run as a reader would run them."""

    @pytest.mark.parametrize("redirect", [False, True])
    def test_shell_then_python(
        self, app: FastAPI, live_url: str, dataset: Dataset, tmp_path: Path, redirect: bool
    ) -> None:
        for tool in ("curl", "unzip", "sha256sum"):
            if shutil.which(tool) is None:
                pytest.skip(f"{tool} is not installed")
        app.state.settings = app.state.settings.model_copy(update={"download_redirect": redirect})
        commands = download_commands(dataset, live_url)
        whole = httpx.get(f"{live_url}{_url(dataset)}", follow_redirects=True).content
        # A download cut short: the same command must finish it, not start again.
        (tmp_path / f"{dataset.slug}-v{dataset.version}.zip").write_bytes(whole[:1000])
        shell = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", commands["shell"]],
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )
        assert shell.returncode == 0, shell.stderr
        assert shell.stdout.count(": OK") == 2 * dataset.count + 3  # + metadata, README, LICENSE
        pytest.importorskip("datasets")
        python = subprocess.run(
            [sys.executable, "-c", commands["python"]],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env={**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_DATASETS_OFFLINE": "1"},
        )
        assert python.returncode == 0, python.stderr
        assert python.stdout.strip()
