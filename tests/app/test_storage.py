"""The storage contract, run against both backends (a folder and a real SeaweedFS S3 server)."""

from __future__ import annotations

import hashlib
import os
import random
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import urlencode

import pytest
from botocore.exceptions import ClientError

import app.storage as storage_module
from app.storage import (
    InvalidKey,
    LocalStorage,
    ObjectInfo,
    ObjectNotFound,
    S3Storage,
    Storage,
    storage_from_url,
    validate_key,
    validate_prefix,
)
from tests.s3server import SeaweedServer

BAD_KEYS = [
    "",
    "../x",
    "/abs",
    "a/../b",
    "..",
    ".",
    "./a",
    "a/./b",
    "a//b",
    "a/",
    "a\\b",
    "..\\x",
    "a\x00b",
    "a\nb",
    "a\x7fb",
    "x" * 1025,
]
GOOD_KEYS = ["a", "a/b", "datasets/demo/images/000001.png", "a.b/c-d_e~f", "ümlaut/ß.png"]


def payload(size: int, seed: int = 0) -> bytes:
    """Deterministic, incompressible bytes."""
    return random.Random(seed).randbytes(size)


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """A 9.5 MB file: above the 8 MB multipart threshold, so S3 uploads it in two parts."""
    data = payload(9 * 1024 * 1024 + 512 * 1024, seed=7)
    path = tmp_path_factory.mktemp("big") / "big.bin"
    path.write_bytes(data)
    return path, data


def read_range(storage: Storage, key: str, start: int = 0, end: int | None = None) -> bytes:
    return b"".join(storage.iter_range(key, start, end))


# --------------------------------------------------------------------------- key rules


class TestKeyRules:
    @pytest.mark.parametrize("key", BAD_KEYS)
    def test_bad_keys_rejected(self, key: str) -> None:
        with pytest.raises(InvalidKey):
            validate_key(key)

    @pytest.mark.parametrize("key", GOOD_KEYS)
    def test_good_keys_accepted(self, key: str) -> None:
        assert validate_key(key) == key

    @pytest.mark.parametrize("prefix", ["", "a", "a/", "a/b", "a/b/", "datasets/x-"])
    def test_good_prefixes(self, prefix: str) -> None:
        assert validate_prefix(prefix) == prefix

    @pytest.mark.parametrize("prefix", ["/", "/a", "../", "a/../", "a//", "a\\b", "a\x00"])
    def test_bad_prefixes(self, prefix: str) -> None:
        with pytest.raises(InvalidKey):
            validate_prefix(prefix)

    def test_exception_types(self) -> None:
        assert issubclass(InvalidKey, ValueError)
        assert issubclass(ObjectNotFound, KeyError)
        exc = ObjectNotFound("a/b")
        assert exc.key == "a/b"
        assert exc.args == ("a/b",)


# --------------------------------------------------------------------------- contract


class TestPutGet:
    def test_backends_satisfy_protocol(self, storage: Storage) -> None:
        assert isinstance(storage, Storage)

    def test_put_get_bytes(self, storage: Storage) -> None:
        storage.put_bytes("a/b/c.bin", b"hello", content_type="text/plain")
        assert storage.get_bytes("a/b/c.bin") == b"hello"

    def test_overwrite(self, storage: Storage) -> None:
        storage.put_bytes("k", b"one")
        storage.put_bytes("k", b"two, longer")
        assert storage.get_bytes("k") == b"two, longer"
        assert storage.stat("k").size == len(b"two, longer")

    def test_empty_object(self, storage: Storage) -> None:
        storage.put_bytes("empty", b"")
        assert storage.get_bytes("empty") == b""
        assert storage.stat("empty").size == 0
        assert read_range(storage, "empty") == b""
        assert read_range(storage, "empty", 0, 10) == b""

    def test_unicode_key(self, storage: Storage) -> None:
        storage.put_bytes("ümlaut/ß.png", b"x")
        assert storage.get_bytes("ümlaut/ß.png") == b"x"
        assert storage.list("ümlaut/") == ["ümlaut/ß.png"]

    def test_put_file_multi_mb(self, storage: Storage, big_file: tuple[Path, bytes]) -> None:
        path, data = big_file
        storage.put_file("archives/big.bin", path, content_type="application/zip")
        info = storage.stat("archives/big.bin")
        assert info.size == len(data)
        got = storage.get_bytes("archives/big.bin")
        assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest()

    def test_get_missing(self, storage: Storage) -> None:
        with pytest.raises(ObjectNotFound) as err:
            storage.get_bytes("no/such/key")
        assert err.value.key == "no/such/key"
        assert err.value.args[0] == "no/such/key"

    def test_directory_like_key_is_not_an_object(self, storage: Storage) -> None:
        storage.put_bytes("dir/file", b"x")
        assert not storage.exists("dir")
        with pytest.raises(ObjectNotFound):
            storage.get_bytes("dir")
        with pytest.raises(ObjectNotFound):
            storage.stat("dir")

    def test_concurrent_readers_never_see_partial_objects(self, storage: Storage) -> None:
        a, b = payload(512 * 1024, seed=1), payload(512 * 1024, seed=2)
        storage.put_bytes("race", a)
        stop = threading.Event()
        errors: list[BaseException] = []

        def writer() -> None:
            try:
                for i in range(10):
                    storage.put_bytes("race", b if i % 2 == 0 else a)
            except BaseException as exc:  # surfaced below
                errors.append(exc)
            finally:
                stop.set()

        thread = threading.Thread(target=writer)
        thread.start()
        reads = 0
        while not stop.is_set() or reads == 0:
            got = storage.get_bytes("race")
            assert got in (a, b), f"partial or mixed object seen ({len(got)} bytes)"
            reads += 1
        thread.join()
        assert not errors


class TestStat:
    def test_stat(self, storage: Storage) -> None:
        storage.put_bytes("s/x", b"abc")
        info = storage.stat("s/x")
        assert isinstance(info, ObjectInfo)
        assert info.key == "s/x"
        assert info.size == 3
        assert info.etag and '"' not in info.etag

    def test_etag_is_a_stable_content_identifier(self, storage: Storage) -> None:
        storage.put_bytes("e/1", b"same content")
        storage.put_bytes("e/2", b"same content")
        storage.put_bytes("e/3", b"other content")
        e1 = storage.stat("e/1").etag
        assert storage.stat("e/1").etag == e1  # stable
        assert storage.stat("e/2").etag == e1  # same content, same etag
        assert storage.stat("e/3").etag != e1
        # Single-part objects: the MD5 of the content, on both backends.
        assert e1 == hashlib.md5(b"same content").hexdigest()
        storage.put_bytes("e/1", b"changed")
        assert storage.stat("e/1").etag != e1

    def test_stat_missing(self, storage: Storage) -> None:
        with pytest.raises(ObjectNotFound):
            storage.stat("missing")

    def test_exists(self, storage: Storage) -> None:
        assert not storage.exists("x/y")
        storage.put_bytes("x/y", b"1")
        assert storage.exists("x/y")
        assert not storage.exists("x")  # a "directory" is not an object
        storage.delete("x/y")
        assert not storage.exists("x/y")


class TestIterRange:
    DATA = payload(10_000, seed=3)

    @pytest.fixture
    def obj(self, storage: Storage) -> Storage:
        storage.put_bytes("r/obj", self.DATA)
        return storage

    def test_full(self, obj: Storage) -> None:
        assert read_range(obj, "r/obj") == self.DATA

    @pytest.mark.parametrize(
        ("start", "end"),
        [(0, 0), (0, 99), (100, 199), (1, None), (5000, None), (9999, 9999), (9999, None)],
    )
    def test_partial_inclusive_end(self, obj: Storage, start: int, end: int | None) -> None:
        expected = self.DATA[start : None if end is None else end + 1]
        assert read_range(obj, "r/obj", start, end) == expected

    def test_last_byte(self, obj: Storage) -> None:
        assert read_range(obj, "r/obj", len(self.DATA) - 1) == self.DATA[-1:]

    def test_end_beyond_size_is_clamped(self, obj: Storage) -> None:
        assert read_range(obj, "r/obj", 9990, 50_000) == self.DATA[9990:]
        assert read_range(obj, "r/obj", 0, 10**12) == self.DATA

    @pytest.mark.parametrize(("start", "end"), [(10_000, None), (10_000, 20_000), (10**9, None)])
    def test_start_beyond_size_yields_nothing(
        self, obj: Storage, start: int, end: int | None
    ) -> None:
        assert list(obj.iter_range("r/obj", start, end)) == []

    @pytest.mark.parametrize(("start", "end"), [(-1, None), (10, 9), (5, -1)])
    def test_bad_ranges(self, obj: Storage, start: int, end: int | None) -> None:
        with pytest.raises(ValueError):
            obj.iter_range("r/obj", start, end)

    def test_bad_chunk_size(self, obj: Storage) -> None:
        with pytest.raises(ValueError):
            obj.iter_range("r/obj", chunk_size=0)

    def test_missing_raises_at_call_time(self, storage: Storage) -> None:
        with pytest.raises(ObjectNotFound):
            storage.iter_range("r/missing")

    @pytest.mark.parametrize("chunk_size", [1, 7, 1000, 4096, 1 << 20])
    def test_chunks_never_exceed_chunk_size(self, obj: Storage, chunk_size: int) -> None:
        chunks = list(obj.iter_range("r/obj", 3, 9000, chunk_size=chunk_size))
        assert b"".join(chunks) == self.DATA[3:9001]
        assert all(0 < len(c) <= chunk_size for c in chunks)

    def test_large_object_streams_in_bounded_chunks(
        self, storage: Storage, big_file: tuple[Path, bytes]
    ) -> None:
        path, data = big_file
        storage.put_file("r/big", path)
        chunk_size = 64 * 1024
        md5 = hashlib.md5()
        count = 0
        largest = 0
        for chunk in storage.iter_range("r/big", chunk_size=chunk_size):
            largest = max(largest, len(chunk))
            md5.update(chunk)
            count += 1
        assert largest <= chunk_size
        assert count >= len(data) // chunk_size
        assert md5.hexdigest() == hashlib.md5(data).hexdigest()
        start, end = 8 * 1024 * 1024 - 10, 8 * 1024 * 1024 + 10  # across the S3 part boundary
        assert read_range(storage, "r/big", start, end) == data[start : end + 1]

    def test_abandoned_iterator_can_be_closed(self, obj: Storage) -> None:
        it = obj.iter_range("r/obj", chunk_size=100)
        assert next(it) == self.DATA[:100]
        it.close()  # type: ignore[attr-defined]
        assert obj.get_bytes("r/obj") == self.DATA


class TestDeleteAndList:
    KEYS = ["a/1", "a/2", "a/sub/3", "ab/4", "b/5", "c"]

    @pytest.fixture
    def filled(self, storage: Storage) -> Storage:
        for key in reversed(self.KEYS):
            storage.put_bytes(key, key.encode())
        return storage

    def test_list_all_sorted(self, filled: Storage) -> None:
        assert filled.list() == sorted(self.KEYS)
        assert filled.list("") == sorted(self.KEYS)

    def test_list_prefix_scoped(self, filled: Storage) -> None:
        assert filled.list("a/") == ["a/1", "a/2", "a/sub/3"]
        assert filled.list("a") == ["a/1", "a/2", "a/sub/3", "ab/4"]
        assert filled.list("a/s") == ["a/sub/3"]
        assert filled.list("zzz") == []
        assert filled.list("nope/") == []

    def test_delete(self, filled: Storage) -> None:
        filled.delete("a/1")
        assert not filled.exists("a/1")
        assert filled.list("a/") == ["a/2", "a/sub/3"]

    def test_delete_missing_is_not_an_error(self, storage: Storage) -> None:
        storage.delete("never/existed")
        storage.put_bytes("once", b"1")
        storage.delete("once")
        storage.delete("once")

    def test_delete_prefix(self, filled: Storage) -> None:
        assert filled.delete_prefix("a/") == 3
        assert filled.list() == ["ab/4", "b/5", "c"]
        assert filled.delete_prefix("a/") == 0
        assert filled.delete_prefix("") == 3
        assert filled.list() == []

    def test_delete_prefix_many(self, storage: Storage) -> None:
        keys = [f"many/{i:04d}" for i in range(120)]
        for key in keys:
            storage.put_bytes(key, b"x")
        assert storage.list("many/") == keys
        assert storage.delete_prefix("many/") == 120
        assert storage.list() == []

    def test_put_after_delete_prefix(self, filled: Storage) -> None:
        filled.delete_prefix("a/")
        filled.put_bytes("a/sub/new", b"n")
        assert filled.get_bytes("a/sub/new") == b"n"


class TestInvalidKeys:
    @pytest.mark.parametrize("key", ["../x", "/abs", "a/../b", "", "a\\b", "a\x01"])
    def test_every_operation_rejects(self, storage: Storage, key: str) -> None:
        with pytest.raises(InvalidKey):
            storage.put_bytes(key, b"x")
        with pytest.raises(InvalidKey):
            storage.get_bytes(key)
        with pytest.raises(InvalidKey):
            storage.stat(key)
        with pytest.raises(InvalidKey):
            storage.exists(key)
        with pytest.raises(InvalidKey):
            storage.iter_range(key)
        with pytest.raises(InvalidKey):
            storage.delete(key)
        with pytest.raises(InvalidKey):
            storage.presigned_url(key)

    def test_put_file_rejects(self, storage: Storage, tmp_path: Path) -> None:
        src = tmp_path / "src"
        src.write_bytes(b"x")
        with pytest.raises(InvalidKey):
            storage.put_file("../escape", src)

    @pytest.mark.parametrize("prefix", ["../", "/abs", "a/../"])
    def test_prefix_operations_reject(self, storage: Storage, prefix: str) -> None:
        with pytest.raises(InvalidKey):
            storage.list(prefix)
        with pytest.raises(InvalidKey):
            storage.delete_prefix(prefix)


# --------------------------------------------------------------------------- local specifics


class TestLocalStorage:
    def test_files_live_under_root(self, local_storage: LocalStorage) -> None:
        local_storage.put_bytes("d/e/f.txt", b"hi")
        assert (local_storage.root / "d/e/f.txt").read_bytes() == b"hi"
        assert local_storage.presigned_url("d/e/f.txt") is None

    def test_failed_write_leaves_old_object_and_no_temp_file(
        self, local_storage: LocalStorage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        local_storage.put_bytes("obj", b"old")
        src = tmp_path / "new.bin"
        src.write_bytes(payload(3 * 1024 * 1024))

        def broken_replace(src: object, dst: object) -> None:
            raise OSError("disk on fire")

        monkeypatch.setattr(storage_module.os, "replace", broken_replace)
        with pytest.raises(OSError, match="disk on fire"):
            local_storage.put_file("obj", src)
        monkeypatch.undo()
        assert local_storage.get_bytes("obj") == b"old"
        assert sorted(p.name for p in local_storage.root.iterdir()) == ["obj"]

    def test_in_flight_temp_files_are_not_listed(self, local_storage: LocalStorage) -> None:
        local_storage.put_bytes("d/real", b"1")
        tmp_name = f"{storage_module._TMP_PREFIX}abc{storage_module._TMP_SUFFIX}"
        (local_storage.root / "d" / tmp_name).write_bytes(b"partial")
        assert local_storage.list() == ["d/real"]

    def test_delete_prunes_empty_directories(self, local_storage: LocalStorage) -> None:
        local_storage.put_bytes("x/y/z", b"1")
        local_storage.put_bytes("x/keep", b"1")
        local_storage.delete("x/y/z")
        assert not (local_storage.root / "x/y").exists()
        assert (local_storage.root / "x/keep").exists()
        assert local_storage.root.exists()

    def test_symlink_escape_is_refused(self, local_storage: LocalStorage, tmp_path: Path) -> None:
        outside = tmp_path / "outside"
        outside.mkdir()
        (local_storage.root / "link").symlink_to(outside, target_is_directory=True)
        with pytest.raises(InvalidKey):
            local_storage.put_bytes("link/evil", b"x")
        assert not (outside / "evil").exists()

    def test_etag_recomputed_for_files_written_elsewhere(self, tmp_path: Path) -> None:
        first = LocalStorage(tmp_path / "s")
        first.put_bytes("k", b"content")
        second = LocalStorage(tmp_path / "s")  # fresh cache, e.g. another process
        assert second.stat("k").etag == hashlib.md5(b"content").hexdigest()
        os.utime(tmp_path / "s" / "k", ns=(1, 1))
        assert second.stat("k").etag == hashlib.md5(b"content").hexdigest()


# --------------------------------------------------------------------------- S3 specifics


class TestS3Storage:
    def test_multipart_upload_used_for_large_files(
        self, s3_storage: S3Storage, big_file: tuple[Path, bytes]
    ) -> None:
        path, data = big_file
        s3_storage.put_file("mp/big.bin", path)
        info = s3_storage.stat("mp/big.bin")
        assert info.size == len(data)
        # A multipart ETag is md5-of-part-md5s, "-<parts>".
        assert info.etag.endswith("-2"), info.etag

    def test_content_type_is_stored(self, s3_storage: S3Storage) -> None:
        s3_storage.put_bytes("ct/x.png", b"\x89PNG", content_type="image/png")
        head = s3_storage.client.head_object(
            Bucket=s3_storage.bucket, Key=f"{s3_storage.prefix}/ct/x.png"
        )
        assert head["ContentType"] == "image/png"

    def test_prefix_isolation(self, s3_server: SeaweedServer, s3_bucket: str) -> None:
        base = f"iso-{uuid.uuid4().hex}"
        a = self._storage(s3_server, s3_bucket, prefix=base)
        sibling = self._storage(s3_server, s3_bucket, prefix=f"{base}-other")
        try:
            a.put_bytes("k", b"a")
            sibling.put_bytes("k", b"sibling")
            assert a.list() == ["k"]
            assert a.get_bytes("k") == b"a"
            assert a.delete_prefix("") == 1
            assert sibling.get_bytes("k") == b"sibling"
        finally:
            a.delete_prefix("")
            sibling.delete_prefix("")

    def test_presigned_url_downloads_with_plain_http(self, s3_storage: S3Storage) -> None:
        data = payload(5000, seed=9)
        s3_storage.put_bytes("pub/file.bin", data)
        url = s3_storage.presigned_url("pub/file.bin", expires=300)
        assert url is not None and url.startswith("http://127.0.0.1:")
        assert "X-Amz-Signature=" in url
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200
            assert response.read() == data

    @pytest.mark.parametrize("tamper", ["signature", "key", "expires"])
    def test_tampered_presigned_url_refused(self, s3_storage: S3Storage, tamper: str) -> None:
        s3_storage.put_bytes("pub/a.bin", b"a")
        s3_storage.put_bytes("pub/b.bin", b"b")
        url = s3_storage.presigned_url("pub/a.bin", expires=300)
        assert url is not None
        if tamper == "signature":
            head, sig = url.rsplit("X-Amz-Signature=", 1)
            flipped = ("0" if sig[0] != "0" else "1") + sig[1:]
            bad = f"{head}X-Amz-Signature={flipped}"
        elif tamper == "key":
            bad = url.replace("/pub/a.bin?", "/pub/b.bin?")
        else:
            bad = url.replace("X-Amz-Expires=300", "X-Amz-Expires=600")
        assert bad != url
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(bad, timeout=10)
        assert err.value.code == 403

    def test_expired_presigned_url_refused(self, s3_storage: S3Storage) -> None:
        s3_storage.put_bytes("pub/old.bin", b"x")
        url = s3_storage.presigned_url("pub/old.bin", expires=1)
        assert url is not None
        time.sleep(2.1)
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(url, timeout=10)
        assert err.value.code == 403

    @pytest.mark.parametrize("expires", [0, -5, 7 * 24 * 3600 + 1])
    def test_presigned_url_expiry_bounds(self, s3_storage: S3Storage, expires: int) -> None:
        with pytest.raises(ValueError):
            s3_storage.presigned_url("k", expires=expires)

    def test_wrong_secret_refused(
        self, s3_server: SeaweedServer, s3_bucket: str, s3_storage: S3Storage
    ) -> None:
        s3_storage.put_bytes("auth/k", b"secret data")
        bad = S3Storage(
            s3_bucket,
            endpoint_url=s3_server.endpoint,
            access_key=s3_server.access_key,
            secret_key=s3_server.secret_key + "x",
            prefix=s3_storage.prefix,
        )
        with pytest.raises(ClientError) as err:
            bad.get_bytes("auth/k")
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        with pytest.raises(ClientError):
            bad.put_bytes("auth/evil", b"x")
        with pytest.raises(ClientError):
            bad.list()
        assert s3_storage.list("auth/") == ["auth/k"]

    def test_unknown_access_key_refused(self, s3_server: SeaweedServer, s3_bucket: str) -> None:
        bad = S3Storage(
            s3_bucket,
            endpoint_url=s3_server.endpoint,
            access_key="nobody",
            secret_key=s3_server.secret_key,
        )
        with pytest.raises(ClientError) as err:
            bad.put_bytes("x", b"x")
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403

    def test_anonymous_http_refused(self, s3_storage: S3Storage) -> None:
        s3_storage.put_bytes("anon/k", b"x")
        url = f"{s3_storage.endpoint_url}/{s3_storage.bucket}/{s3_storage.prefix}/anon/k"
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(url, timeout=10)
        assert err.value.code == 403

    def test_ensure_bucket_creates_and_is_idempotent(self, s3_server: SeaweedServer) -> None:
        name = f"synthmed-ensure-{uuid.uuid4().hex[:12]}"
        st = self._storage(s3_server, name)
        with pytest.raises(ClientError):
            st.put_bytes("k", b"x")  # no auto-creation
        st.ensure_bucket()
        st.ensure_bucket()
        st.put_bytes("k", b"x")
        assert st.get_bytes("k") == b"x"
        st.delete_prefix("")
        st.client.delete_bucket(Bucket=name)

    @staticmethod
    def _storage(server: SeaweedServer, bucket: str, *, prefix: str = "") -> S3Storage:
        return S3Storage(
            bucket,
            endpoint_url=server.endpoint,
            access_key=server.access_key,
            secret_key=server.secret_key,
            prefix=prefix,
        )


# --------------------------------------------------------------------------- from a URL


class TestStorageFromUrl:
    def test_file_url(self, tmp_path: Path) -> None:
        target = tmp_path / "deep" / "store"
        st = storage_from_url(f"file://{target}")
        assert isinstance(st, LocalStorage)
        assert st.root == target.resolve()
        assert target.is_dir()
        st.put_bytes("k", b"v")
        assert (target / "k").read_bytes() == b"v"

    def test_file_url_localhost_and_quoting(self, tmp_path: Path) -> None:
        st = storage_from_url(f"file://localhost{tmp_path}/with%20space")
        assert isinstance(st, LocalStorage)
        assert st.root == (tmp_path / "with space").resolve()

    def test_s3_url_with_query(self) -> None:
        st = storage_from_url(
            "s3://my-bucket?endpoint=http://127.0.0.1:8333&region=eu-west-1&prefix=x/y",
            access_key="ak",
            secret_key="sk",
        )
        assert isinstance(st, S3Storage)
        assert st.bucket == "my-bucket"
        assert st.endpoint_url == "http://127.0.0.1:8333"
        assert st.region == "eu-west-1"
        assert st.prefix == "x/y"
        assert st.client.meta.config.s3 == {"addressing_style": "path"}
        assert st.client.meta.config.signature_version == "s3v4"

    def test_s3_url_prefix_in_path_and_defaults(self) -> None:
        st = storage_from_url("s3://b/some/prefix/?endpoint=http://localhost:9000")
        assert isinstance(st, S3Storage)
        assert (st.bucket, st.prefix, st.region) == ("b", "some/prefix", "us-east-1")

    def test_s3_url_without_endpoint_uses_aws(self) -> None:
        st = storage_from_url("s3://b", access_key="ak", secret_key="sk")
        assert isinstance(st, S3Storage)
        assert st.endpoint_url is None
        assert st.prefix == ""

    def test_s3_url_round_trip(self, s3_storage_url: tuple[str, str, str]) -> None:
        url, access_key, secret_key = s3_storage_url
        st = storage_from_url(url, access_key=access_key, secret_key=secret_key)
        st.put_bytes("k", b"v")
        assert st.get_bytes("k") == b"v"
        assert st.list() == ["k"]

    def test_presigned_urls_use_the_public_endpoint(
        self, s3_storage_url: tuple[str, str, str]
    ) -> None:
        url, access_key, secret_key = s3_storage_url
        internal = storage_from_url(url, access_key=access_key, secret_key=secret_key)
        assert isinstance(internal, S3Storage) and internal.endpoint_url is not None
        # The same server under another name, as a client outside would reach it.
        public = internal.endpoint_url.replace("127.0.0.1", "localhost")
        st = storage_from_url(
            f"{url}&{urlencode({'public_endpoint': public})}",
            access_key=access_key,
            secret_key=secret_key,
        )
        st.put_bytes("pub/named.bin", b"bytes")
        signed = st.presigned_url("pub/named.bin", expires=60, filename="named-v1.zip")
        assert signed is not None and signed.startswith(public + "/")
        with urllib.request.urlopen(signed, timeout=10) as response:
            assert response.read() == b"bytes"
            disposition = response.headers["Content-Disposition"]
            assert disposition == 'attachment; filename="named-v1.zip"'
        with pytest.raises(InvalidKey):
            st.presigned_url("pub/named.bin", filename='a"; evil="1')

    @pytest.mark.parametrize(
        "url",
        [
            "",
            "s3://b?public_endpoint=localhost:8333",
            "http://example.com/x",
            "ftp://host/x",
            "/just/a/path",
            "relative/path",
            "file://relative/path",
            "file:///",
            "file:///x?y=1",
            "s3://",
            "s3:///prefix-only",
            "s3://b?endpoint=ftp://host",
            "s3://b?endpoint=127.0.0.1:8333",
            "s3://b?unknown=1",
            "s3://b?region=a&region=b",
            "s3://b/p?prefix=q",
            "s3://b/../x",
        ],
    )
    def test_bad_urls(self, url: str) -> None:
        with pytest.raises(ValueError):
            storage_from_url(url)

    def test_credentials_in_url_refused_without_echoing_them(self) -> None:
        with pytest.raises(ValueError) as err:
            storage_from_url("s3://AKIA:supersecret@bucket?endpoint=http://127.0.0.1:1")
        assert "supersecret" not in str(err.value)
        with pytest.raises(ValueError) as err:
            storage_from_url("s3://bucket?endpoint=http://u:supersecret@127.0.0.1:1")
        assert "supersecret" not in str(err.value)

    def test_half_credentials_refused(self) -> None:
        with pytest.raises(ValueError):
            storage_from_url("s3://b", access_key="ak")
