"""Croissant metadata, checked by mlcroissant itself: validation, then records read from
the archive it downloads over HTTP from a live server (sha256 checked by mlcroissant)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy.orm import Session

from app.storage import Storage
from app.tables import Dataset
from tests.factories import make_published_dataset

mlc = pytest.importorskip("mlcroissant")


@pytest.fixture
def croissant_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep mlcroissant's download and extract caches inside the test's tmp_path."""
    from etils import epath  # mlcroissant's paths are etils paths (it calls .walk())
    from mlcroissant._src.core import constants
    from mlcroissant._src.operation_graph.operations import extract

    root = epath.Path(tmp_path / "croissant")
    monkeypatch.setattr(constants, "DOWNLOAD_PATH", root / "download")
    monkeypatch.setattr(extract, "EXTRACT_PATH", root / "extract")
    return tmp_path / "croissant"


@pytest.fixture
def dataset(session: Session, s3_storage: Storage) -> Dataset:
    return make_published_dataset(session, s3_storage, count=4, metrics={"tstr_f1_synthetic": 0.88})


class TestCroissant:
    def test_document(self, client: TestClient, dataset: Dataset) -> None:
        r = client.get(f"/datasets/{dataset.slug}/croissant")
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/ld+json"
        doc = r.json()
        assert doc["conformsTo"] == "http://mlcommons.org/croissant/1.0"
        archive = doc["distribution"][0]
        assert archive["@type"] == "cr:FileObject"
        assert archive["contentUrl"] == f"http://testserver/datasets/{dataset.slug}/download"
        assert archive["sha256"] == dataset.archive_sha256
        assert archive["encodingFormat"] == "application/zip"
        file_sets = {d["@id"]: d for d in doc["distribution"] if d["@type"] == "cr:FileSet"}
        assert file_sets["image-files"]["includes"] == "images/*.png"
        assert file_sets["mask-files"]["includes"] == "masks/*.png"
        samples = next(rs for rs in doc["recordSet"] if rs["@id"] == "samples")
        types = {f["name"]: f["dataType"] for f in samples["field"]}
        assert types["image"] == types["mask"] == "sc:ImageObject"
        assert types["index"] == types["seed"] == "sc:Integer"

    @pytest.mark.parametrize("redirect", [False, True], ids=["streamed", "redirected"])
    def test_validates_and_iterates_over_http(
        self,
        app: FastAPI,
        live_url: str,
        dataset: Dataset,
        croissant_cache: Path,
        tmp_path: Path,
        redirect: bool,
    ) -> None:
        import httpx

        app.state.settings = app.state.settings.model_copy(update={"download_redirect": redirect})
        url = f"{live_url}/datasets/{dataset.slug}"
        # mlcroissant takes the JSON-LD from a file; it downloads contentUrl itself.
        jsonld = tmp_path / "croissant.json"
        jsonld.write_bytes(httpx.get(f"{url}/croissant").content)
        ds = mlc.Dataset(jsonld=jsonld)  # raises ValidationError on any error
        assert not ds.metadata.ctx.issues.errors
        records = sorted(ds.records("samples"), key=lambda rec: rec["samples/index"])
        assert [rec["samples/index"] for rec in records] == list(range(dataset.count))
        assert [rec["samples/seed"] for rec in records] == [1000 + i for i in range(4)]
        # Each record pairs the right image with the right mask, byte for byte.
        whole = httpx.get(f"{url}/download", follow_redirects=True).content
        archive = zipfile.ZipFile(io.BytesIO(whole))
        for rec in records:
            index = rec["samples/index"]
            image = np.asarray(rec["samples/image"])
            mask = np.asarray(rec["samples/mask"])
            expected_image = np.asarray(Image.open(archive.open(f"images/{index:05d}.png")))
            expected_mask = np.asarray(Image.open(archive.open(f"masks/{index:05d}.png")))
            assert image.shape == (dataset.resolution, dataset.resolution, 3)
            assert np.array_equal(image, expected_image)
            assert np.array_equal(mask, expected_mask)
        downloaded = list((croissant_cache / "download").iterdir())
        assert len(downloaded) == 1  # one download of the archive, checked against sha256

    def test_mlcroissant_refuses_a_wrong_checksum(
        self, live_url: str, dataset: Dataset, croissant_cache: Path, tmp_path: Path
    ) -> None:
        import json

        import httpx

        doc = httpx.get(f"{live_url}/datasets/{dataset.slug}/croissant").json()
        doc["distribution"][0]["sha256"] = "0" * 64
        jsonld = tmp_path / "croissant.json"
        jsonld.write_text(json.dumps(doc))
        with pytest.raises(Exception, match="Download") as info:
            list(mlc.Dataset(jsonld=jsonld).records("samples"))
        assert "Hash of downloaded file" in str(info.value.__cause__)
