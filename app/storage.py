"""Object storage: one small interface, a local-folder backend and an S3 backend.

Keys are made by the server (never from user input) and look like relative POSIX paths:
``datasets/<slug>/images/000001.png``. Both backends enforce the same key rules, so a key that
works on a laptop works in production.

``storage_from_url`` picks the backend from ``SYNTHMED_STORAGE_URL``:

- ``file:///abs/path`` -> :class:`LocalStorage`
- ``s3://bucket[/prefix]?endpoint=http://host:port&region=us-east-1&prefix=x`` ->
  :class:`S3Storage`

Credentials are passed as arguments (from settings), never inside the URL, which may be
logged.
"""

from __future__ import annotations

import builtins
import hashlib
import io
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol, runtime_checkable
from urllib.parse import parse_qsl, unquote, urlsplit

if TYPE_CHECKING:  # boto3 is imported lazily: the web process only pays for it when used
    from botocore.client import BaseClient

    from app.settings import Settings

__all__ = [
    "InvalidKey",
    "LocalStorage",
    "ObjectInfo",
    "ObjectNotFound",
    "storage_from_settings",
    "S3Storage",
    "Storage",
    "storage_from_url",
    "validate_key",
]

DEFAULT_CHUNK_SIZE = 1 << 20
# Files at or above this size go up as S3 multipart uploads, in parts of this size.
MULTIPART_THRESHOLD = 8 * 1024 * 1024
MULTIPART_CHUNKSIZE = 8 * 1024 * 1024
# SigV4 presigned URLs may live at most 7 days.
MAX_PRESIGN_EXPIRES = 7 * 24 * 3600

# Local temporary files are written next to their final name, then renamed over it.
_TMP_PREFIX = ".synthmed-tmp-"
_TMP_SUFFIX = ".part"


class ObjectNotFound(KeyError):
    """The object does not exist; ``args[0]`` (and ``.key``) is the missing key."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


class InvalidKey(ValueError):
    """The key (or prefix) is not a well-formed, server-made object key."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str  # stable content identifier, without quotes


@runtime_checkable
class Storage(Protocol):
    def put_bytes(
        self, key: str, data: bytes, *, content_type: str = "application/octet-stream"
    ) -> None: ...

    def put_file(
        self, key: str, path: Path, *, content_type: str = "application/octet-stream"
    ) -> None: ...

    def get_bytes(self, key: str) -> bytes: ...

    def stat(self, key: str) -> ObjectInfo: ...

    def exists(self, key: str) -> bool: ...

    def iter_range(
        self,
        key: str,
        start: int = 0,
        end: int | None = None,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> Iterator[bytes]: ...

    def delete(self, key: str) -> None: ...

    def delete_prefix(self, prefix: str) -> int: ...

    def list(self, prefix: str = "") -> builtins.list[str]: ...

    def presigned_url(
        self, key: str, *, expires: int = 3600, filename: str | None = None
    ) -> str | None: ...


# --------------------------------------------------------------------------- key rules


def _check_text(value: str, what: str) -> None:
    if not isinstance(value, str):
        raise InvalidKey(f"{what} must be a str, not {type(value).__name__}")
    if value.startswith("/"):
        raise InvalidKey(f"{what} must be relative (no leading '/'): {value!r}")
    if "\\" in value:
        raise InvalidKey(f"{what} must not contain backslashes: {value!r}")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise InvalidKey(f"{what} must not contain control characters: {value!r}")
    if len(value.encode("utf-8")) > 1024:
        raise InvalidKey(f"{what} is longer than 1024 bytes")


def validate_key(key: str) -> str:
    """Return ``key`` if it is a valid object key, else raise :class:`InvalidKey`.

    A key is a non-empty relative POSIX path whose segments are non-empty and are neither
    ``.`` nor ``..``; no backslashes, no control characters, at most 1024 bytes.
    """
    _check_text(key, "key")
    if not key:
        raise InvalidKey("key must not be empty")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidKey(f"key has an empty, '.' or '..' segment: {key!r}")
    return key


def validate_prefix(prefix: str) -> str:
    """Like :func:`validate_key`, but ``""`` and a trailing ``/`` are allowed.

    A prefix matches keys by plain string comparison (``"a/b"`` matches ``"a/b/c"`` and
    ``"a/bc"``), as on S3.
    """
    _check_text(prefix, "prefix")
    segments = prefix.split("/")
    if segments and segments[-1] == "":
        segments.pop()  # "" or a trailing "/"
    for segment in segments:
        if segment in ("", ".", ".."):
            raise InvalidKey(f"prefix has an empty, '.' or '..' segment: {prefix!r}")
    return prefix


def _check_range(start: int, end: int | None, chunk_size: int) -> None:
    if start < 0:
        raise ValueError(f"start must be >= 0, got {start}")
    if end is not None and end < start:
        raise ValueError(f"end must be >= start, got start={start} end={end}")
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be > 0, got {chunk_size}")


def _read_chunks(
    stream: IO[bytes] | Any, remaining: int | None, chunk_size: int
) -> Iterator[bytes]:
    """Yield ``stream`` in chunks of at most ``chunk_size`` bytes, then close it."""
    try:
        while remaining is None or remaining > 0:
            want = chunk_size if remaining is None else min(chunk_size, remaining)
            chunk = stream.read(want)
            if not chunk:
                break
            if remaining is not None:
                remaining -= len(chunk)
            yield chunk
    finally:
        stream.close()


# --------------------------------------------------------------------------- local backend


class LocalStorage:
    """Objects as files under ``root``; writes are atomic (temp file + ``os.replace``).

    ``stat().etag`` is the MD5 hex digest of the content (what S3 reports for a single-part
    upload). It is computed while writing and cached per (file, size, mtime), so ``stat`` of
    an object written by this process costs one ``os.stat``.
    """

    _ETAG_CACHE_SIZE = 4096

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._etags: OrderedDict[tuple[str, int, int, int], str] = OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LocalStorage(root={str(self.root)!r})"

    # -- helpers

    def _path(self, key: str) -> Path:
        path = self.root / validate_key(key)
        # Keys cannot climb out by themselves; this also refuses symlinked escapes.
        if not path.resolve().is_relative_to(self.root):
            raise InvalidKey(f"key resolves outside the storage root: {key!r}")
        return path

    def _remember_etag(self, path: Path, st: os.stat_result, etag: str) -> None:
        with self._lock:
            self._etags[(str(path), st.st_ino, st.st_size, st.st_mtime_ns)] = etag
            while len(self._etags) > self._ETAG_CACHE_SIZE:
                self._etags.popitem(last=False)

    def _write_atomic(self, path: Path, write: Any) -> None:
        """Create ``path`` atomically: ``write(fileobj) -> md5 hexdigest`` fills a temp file."""
        for attempt in range(3):
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd, tmp_name = tempfile.mkstemp(
                    dir=path.parent, prefix=_TMP_PREFIX, suffix=_TMP_SUFFIX
                )
            except FileNotFoundError:
                # A concurrent delete pruned the empty parent directory; make it again.
                if attempt == 2:
                    raise
                continue
            break
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as f:
                etag = write(f)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self._remember_etag(path, path.stat(), etag)

    def _prune_empty_dirs(self, directory: Path) -> None:
        while directory != self.root and directory.is_relative_to(self.root):
            try:
                directory.rmdir()
            except OSError:  # not empty (or already gone / recreated): stop
                return
            directory = directory.parent

    # -- Storage

    def put_bytes(
        self, key: str, data: bytes, *, content_type: str = "application/octet-stream"
    ) -> None:
        def write(f: IO[bytes]) -> str:
            f.write(data)
            return hashlib.md5(data, usedforsecurity=False).hexdigest()

        self._write_atomic(self._path(key), write)

    def put_file(
        self, key: str, path: Path, *, content_type: str = "application/octet-stream"
    ) -> None:
        target = self._path(key)
        with open(path, "rb") as src:

            def write(f: IO[bytes]) -> str:
                md5 = hashlib.md5(usedforsecurity=False)
                while chunk := src.read(DEFAULT_CHUNK_SIZE):
                    md5.update(chunk)
                    f.write(chunk)
                return md5.hexdigest()

            self._write_atomic(target, write)

    def get_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(key) from None

    def stat(self, key: str) -> ObjectInfo:
        path = self._path(key)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound(key) from None
        if not path.is_file():
            raise ObjectNotFound(key)
        cache_key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
        with self._lock:
            etag = self._etags.get(cache_key)
        if etag is None:
            md5 = hashlib.md5(usedforsecurity=False)
            try:
                with open(path, "rb") as f:
                    while chunk := f.read(DEFAULT_CHUNK_SIZE):
                        md5.update(chunk)
            except FileNotFoundError:
                raise ObjectNotFound(key) from None
            etag = md5.hexdigest()
            self._remember_etag(path, st, etag)
        return ObjectInfo(key=key, size=st.st_size, etag=etag)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def iter_range(
        self,
        key: str,
        start: int = 0,
        end: int | None = None,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> Iterator[bytes]:
        """Yield bytes ``start..end`` (inclusive, like HTTP Range) in chunks <= chunk_size.

        Same result as ``data[start:end + 1]``: an ``end`` past the last byte is clamped and a
        ``start`` past the last byte yields nothing. A missing object raises
        :class:`ObjectNotFound` at call time, not on first iteration.
        """
        _check_range(start, end, chunk_size)
        path = self._path(key)
        try:
            f = open(path, "rb")  # closed by _read_chunks
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(key) from None
        f.seek(start)
        remaining = None if end is None else end - start + 1
        return _read_chunks(f, remaining, chunk_size)

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError):
            return
        except IsADirectoryError:
            return  # "a" when only "a/b" exists: no object named "a"
        self._prune_empty_dirs(path.parent)

    def delete_prefix(self, prefix: str) -> int:
        count = 0
        for key in self.list(prefix):
            self.delete(key)
            count += 1
        return count

    def list(self, prefix: str = "") -> builtins.list[str]:
        validate_prefix(prefix)
        # Walk only the deepest directory the prefix names, then filter by string prefix.
        base_dir = prefix.rpartition("/")[0]
        start = self.root / base_dir if base_dir else self.root
        keys: list[str] = []
        for dirpath, _dirnames, filenames in os.walk(start):
            rel_dir = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                if name.startswith(_TMP_PREFIX) and name.endswith(_TMP_SUFFIX):
                    continue  # an in-flight write
                key = name if rel_dir == "." else f"{rel_dir}/{name}"
                if key.startswith(prefix):
                    keys.append(key)
        keys.sort()
        return keys

    def presigned_url(
        self, key: str, *, expires: int = 3600, filename: str | None = None
    ) -> str | None:
        validate_key(key)
        return None  # a folder has no URL of its own: callers stream the object instead


# --------------------------------------------------------------------------- S3 backend


_boto_session: Any = None
_boto_session_lock = threading.Lock()


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _is_not_found(exc: Exception) -> bool:
    return _error_code(exc) in ("404", "NoSuchKey", "NotFound")


class S3Storage:
    """Objects in an S3-compatible bucket (AWS S3, MinIO, SeaweedFS) under an optional prefix.

    One boto3 client per instance (clients are thread-safe), path-style addressing, SigV4.
    The bucket is not created here: call :meth:`ensure_bucket` at startup / migrate time.
    """

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        region: str = "us-east-1",
        prefix: str = "",
        public_endpoint_url: str | None = None,
    ) -> None:
        import boto3
        from botocore.config import Config

        if not bucket:
            raise ValueError("S3 bucket name must not be empty")
        if (access_key is None) != (secret_key is None):
            raise ValueError("give both access_key and secret_key, or neither")
        prefix = prefix.strip("/")
        if prefix:
            validate_prefix(prefix)
        self.bucket = bucket
        self.prefix = prefix
        self.endpoint_url = endpoint_url
        self.region = region
        config = Config(
            region_name=region,
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"max_attempts": 5, "mode": "standard"},
            connect_timeout=5,
            read_timeout=60,
            max_pool_connections=32,
            # Only send/check the newer flexible checksums where S3 demands them: many
            # S3-compatible servers do not implement them.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        # Sessions are not thread-safe, clients are: build the client once, under a lock, from
        # one shared private session (which caches the parsed service model, so a second
        # client costs milliseconds instead of most of a second).
        global _boto_session
        with _boto_session_lock:
            if _boto_session is None:
                _boto_session = boto3.session.Session()

            def client(url: str | None) -> BaseClient:
                return _boto_session.client(
                    "s3",
                    endpoint_url=url,
                    aws_access_key_id=access_key,
                    aws_secret_access_key=secret_key,
                    region_name=region,
                    config=config,
                )

            self._client: BaseClient = client(endpoint_url)
            # Presigned URLs are for clients outside, who may reach the store by another name.
            self._presign_client = (
                client(public_endpoint_url) if public_endpoint_url else self._client
            )

    def __repr__(self) -> str:
        return (
            f"S3Storage(bucket={self.bucket!r}, endpoint_url={self.endpoint_url!r}, "
            f"region={self.region!r}, prefix={self.prefix!r})"
        )

    @property
    def client(self) -> BaseClient:
        return self._client

    def _full(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _full_prefix(self, prefix: str) -> str:
        validate_prefix(prefix)
        return f"{self.prefix}/{prefix}" if self.prefix else prefix

    def _strip(self, full_key: str) -> str:
        return full_key[len(self.prefix) + 1 :] if self.prefix else full_key

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist yet (idempotent, race-safe)."""
        from botocore.exceptions import ClientError

        try:
            self._client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as exc:
            if _error_code(exc) not in ("404", "NoSuchBucket", "NotFound"):
                raise
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        if self.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            self._client.create_bucket(**kwargs)
        except ClientError as exc:
            if _error_code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise

    # -- Storage

    def put_bytes(
        self, key: str, data: bytes, *, content_type: str = "application/octet-stream"
    ) -> None:
        self._client.put_object(
            Bucket=self.bucket, Key=self._full(key), Body=data, ContentType=content_type
        )

    def put_file(
        self, key: str, path: Path, *, content_type: str = "application/octet-stream"
    ) -> None:
        from boto3.s3.transfer import TransferConfig

        full = self._full(key)
        transfer = TransferConfig(
            multipart_threshold=MULTIPART_THRESHOLD,
            multipart_chunksize=MULTIPART_CHUNKSIZE,
            max_concurrency=4,
        )
        # S3 makes the object visible only when the (multipart) upload completes.
        self._client.upload_file(
            str(path),
            self.bucket,
            full,
            ExtraArgs={"ContentType": content_type},
            Config=transfer,
        )

    def get_bytes(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            response = self._client.get_object(Bucket=self.bucket, Key=self._full(key))
        except ClientError as exc:
            if _is_not_found(exc):
                raise ObjectNotFound(key) from None
            raise
        with response["Body"] as body:
            return body.read()

    def stat(self, key: str) -> ObjectInfo:
        from botocore.exceptions import ClientError

        try:
            head = self._client.head_object(Bucket=self.bucket, Key=self._full(key))
        except ClientError as exc:
            if _is_not_found(exc):
                raise ObjectNotFound(key) from None
            raise
        return ObjectInfo(
            key=key, size=int(head["ContentLength"]), etag=str(head["ETag"]).strip('"')
        )

    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
        except ObjectNotFound:
            return False
        return True

    def iter_range(
        self,
        key: str,
        start: int = 0,
        end: int | None = None,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> Iterator[bytes]:
        """Yield bytes ``start..end`` (inclusive, like HTTP Range) in chunks <= chunk_size.

        Same result as ``data[start:end + 1]``: an ``end`` past the last byte is clamped and a
        ``start`` past the last byte yields nothing. One GetObject (with a Range header unless
        the whole object is asked for); a missing object raises :class:`ObjectNotFound` at
        call time, not on first iteration.
        """
        from botocore.exceptions import ClientError

        _check_range(start, end, chunk_size)
        full = self._full(key)
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": full}
        if start or end is not None:
            kwargs["Range"] = f"bytes={start}-{'' if end is None else end}"
        try:
            response = self._client.get_object(**kwargs)
        except ClientError as exc:
            if _is_not_found(exc):
                raise ObjectNotFound(key) from None
            if _error_code(exc) == "InvalidRange":  # 416: start is past the last byte
                return _read_chunks(io.BytesIO(), 0, chunk_size)
            raise
        remaining = None if end is None else end - start + 1
        return _read_chunks(response["Body"], remaining, chunk_size)

    def delete(self, key: str) -> None:
        from botocore.exceptions import ClientError

        try:
            self._client.delete_object(Bucket=self.bucket, Key=self._full(key))
        except ClientError as exc:
            if not _is_not_found(exc):
                raise

    def _iter_full_keys(self, full_prefix: str) -> Iterator[str]:
        paginator = self._client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full_prefix):
            for obj in page.get("Contents", []):
                yield obj["Key"]

    def delete_prefix(self, prefix: str) -> int:
        # With a storage prefix "x", prefix "" means "x/": never a sibling like "x-other/".
        full_prefix = self._full_prefix(prefix)
        count = 0
        batch: list[str] = []

        def flush() -> int:
            response = self._client.delete_objects(
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
            )
            errors = response.get("Errors") or []
            if errors:
                first = errors[0]
                raise RuntimeError(
                    f"could not delete {len(errors)} object(s) under {prefix!r}: "
                    f"{first.get('Key')}: {first.get('Code')} {first.get('Message')}"
                )
            done = len(batch)
            batch.clear()
            return done

        for full_key in list(self._iter_full_keys(full_prefix)):
            batch.append(full_key)
            if len(batch) == 1000:
                count += flush()
        if batch:
            count += flush()
        return count

    def list(self, prefix: str = "") -> builtins.list[str]:
        full_prefix = self._full_prefix(prefix)
        return sorted(self._strip(k) for k in self._iter_full_keys(full_prefix))

    def presigned_url(
        self, key: str, *, expires: int = 3600, filename: str | None = None
    ) -> str | None:
        """A GET URL for ``key`` that works without credentials for ``expires`` seconds.

        It is signed for the public endpoint when one was given (the host is part of the
        signature). ``filename`` makes the store answer with ``Content-Disposition:
        attachment`` under that name.
        """
        if not 1 <= expires <= MAX_PRESIGN_EXPIRES:
            raise ValueError(f"expires must be 1..{MAX_PRESIGN_EXPIRES} seconds, got {expires}")
        params = {"Bucket": self.bucket, "Key": self._full(key)}
        if filename is not None:
            _check_text(filename, "file name")
            if '"' in filename:
                raise InvalidKey(f"file name must not contain quotes: {filename!r}")
            params["ResponseContentDisposition"] = f'attachment; filename="{filename}"'
        return self._presign_client.generate_presigned_url(
            "get_object", Params=params, ExpiresIn=expires
        )


# --------------------------------------------------------------------------- from a URL

_S3_QUERY_KEYS = {"endpoint", "public_endpoint", "region", "prefix"}


def storage_from_url(
    url: str, *, access_key: str | None = None, secret_key: str | None = None
) -> Storage:
    """Build a storage backend from ``SYNTHMED_STORAGE_URL``.

    ``file:///abs/path`` makes a :class:`LocalStorage` (creating the folder);
    ``s3://bucket[/prefix]?endpoint=...&region=...&prefix=...`` makes an :class:`S3Storage`
    with the given credentials (or boto3's default chain when none are given);
    ``public_endpoint=...`` is the address clients outside reach the store by, which
    presigned URLs are signed for (default: ``endpoint``).
    Anything else raises ``ValueError``.
    """
    if not isinstance(url, str) or not url:
        raise ValueError("storage URL is empty; expected file:///abs/path or s3://bucket")
    parts = urlsplit(url)
    if "@" in parts.netloc:
        # Do not echo the URL: it carries credentials.
        raise ValueError(
            "storage URL must not carry credentials (user:password@); "
            "pass the access key and secret through settings instead"
        )
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError(
                f"file storage URL must be file:///absolute/path, got {url!r} "
                f"(host {parts.netloc!r} is not allowed)"
            )
        if parts.query or parts.fragment:
            raise ValueError(f"file storage URL takes no query or fragment: {url!r}")
        path = unquote(parts.path)
        if not path.startswith("/") or path == "/":
            raise ValueError(f"file storage URL needs an absolute folder path: {url!r}")
        return LocalStorage(Path(path))
    if scheme == "s3":
        bucket = parts.netloc
        if not bucket:
            raise ValueError(f"s3 storage URL needs a bucket: s3://bucket?... got {url!r}")
        if parts.fragment:
            raise ValueError(f"s3 storage URL takes no fragment: {url!r}")
        params: dict[str, str] = {}
        for name, value in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False):
            if name not in _S3_QUERY_KEYS:
                raise ValueError(
                    f"unknown s3 storage URL parameter {name!r}; "
                    f"allowed: {', '.join(sorted(_S3_QUERY_KEYS))}"
                )
            if name in params:
                raise ValueError(f"s3 storage URL parameter {name!r} given twice")
            params[name] = value
        path_prefix = unquote(parts.path).strip("/")
        query_prefix = params.get("prefix", "").strip("/")
        if path_prefix and query_prefix:
            raise ValueError(
                f"s3 storage URL gives a prefix both in the path and as ?prefix=: {url!r}"
            )
        prefix = path_prefix or query_prefix
        if prefix:
            try:
                validate_prefix(prefix)
            except InvalidKey as exc:
                raise ValueError(f"bad prefix in s3 storage URL {url!r}: {exc}") from None
        region = params.get("region") or "us-east-1"
        return S3Storage(
            bucket,
            endpoint_url=_endpoint_param(params, "endpoint"),
            public_endpoint_url=_endpoint_param(params, "public_endpoint"),
            access_key=access_key,
            secret_key=secret_key,
            region=region,
            prefix=prefix,
        )
    raise ValueError(
        f"unsupported storage URL scheme {parts.scheme!r} in {url!r}; "
        "expected file:///abs/path or s3://bucket?endpoint=..."
    )


def _endpoint_param(params: dict[str, str], name: str) -> str | None:
    endpoint = params.get(name) or None
    if endpoint is not None:
        ep = urlsplit(endpoint)
        if ep.scheme not in ("http", "https") or not ep.netloc or "@" in ep.netloc:
            raise ValueError(
                f"s3 storage URL {name} must be http(s)://host[:port] without "
                f"credentials, got {endpoint if '@' not in endpoint else '<redacted>'!r}"
            )
    return endpoint


def storage_from_settings(settings: Settings) -> Storage:
    return storage_from_url(
        settings.storage_url,
        access_key=settings.storage_access_key,
        secret_key=settings.storage_secret,
    )
