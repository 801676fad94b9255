"""Build one dataset archive: images/, masks/, metadata.csv, SHA256SUMS, README.md, LICENSE.

The zip is written to a temporary file as the samples arrive, so memory does not grow with
the dataset, and with fixed timestamps, so the same samples always give the same bytes.
"""

from __future__ import annotations

import csv
import hashlib
import io
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from app import keys
from app.datasets.card import licence_text, readme_markdown
from app.samples.service import samples
from app.storage import Storage
from app.tables import Dataset

# Fixed member timestamp: a rebuilt archive is byte-identical, so its sha256/ETag is stable.
_EPOCH = (2020, 1, 1, 0, 0, 0)
STAT_COLUMNS = ("vessel_fraction", "fov_fraction", "mean_intensity")


@dataclass(frozen=True)
class ArchiveMember:
    index: int
    seed: int
    image_png: bytes
    mask_png: bytes
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def image_name(self) -> str:
        return f"images/{self.index:05d}.png"

    @property
    def mask_name(self) -> str:
        return f"masks/{self.index:05d}.png"

    def metadata_row(self) -> dict[str, Any]:
        return {
            "file_name": self.image_name,
            "mask_file_name": self.mask_name,
            "index": self.index,
            "seed": self.seed,
            **{k: self.stats.get(k, "") for k in STAT_COLUMNS},
        }


@dataclass(frozen=True)
class BuiltArchive:
    path: Path
    size: int
    sha256: str
    sha256sums: str


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build_archive(
    members: Iterable[ArchiveMember], *, readme: str, licence: str, directory: Path | None = None
) -> BuiltArchive:
    sums: list[tuple[str, str]] = []
    rows: list[dict[str, Any]] = []
    fd, name = tempfile.mkstemp(suffix=".zip", dir=directory)
    path = Path(name)
    with open(fd, "wb") as raw, zipfile.ZipFile(raw, "w") as zf:

        def add(member_name: str, data: bytes, *, compress: bool) -> None:
            info = zipfile.ZipInfo(member_name, date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
            sums.append((sha256_hex(data), member_name))

        for member in members:
            # PNGs are already compressed: storing them is faster and no larger.
            add(member.image_name, member.image_png, compress=False)
            add(member.mask_name, member.mask_png, compress=False)
            rows.append(member.metadata_row())
        add("metadata.csv", metadata_csv(rows), compress=True)
        add("README.md", readme.encode(), compress=True)
        add("LICENSE", licence.encode(), compress=True)
        sha256sums = "".join(f"{digest}  {member}\n" for digest, member in sums)
        # SHA256SUMS lists every other file; it cannot list itself.
        info = zipfile.ZipInfo("SHA256SUMS", date_time=_EPOCH)
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o644 << 16
        zf.writestr(info, sha256sums)
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return BuiltArchive(
        path=path, size=path.stat().st_size, sha256=digest.hexdigest(), sha256sums=sha256sums
    )


def metadata_csv(rows: list[dict[str, Any]]) -> bytes:
    out = io.StringIO()
    fields = ["file_name", "mask_file_name", "index", "seed", *STAT_COLUMNS]
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def package_dataset(
    session: Session, storage: Storage, *, dataset: Dataset, site_url: str
) -> BuiltArchive:
    """Zip every stored sample of the dataset with its card, upload it, and record it."""
    rows = samples.list(session, dataset_id=dataset.id)
    if len(rows) != dataset.count:
        raise RuntimeError(f"dataset {dataset.id} has {len(rows)} of {dataset.count} samples")
    metrics = [m for m in dataset.metrics if not m.private]
    members = (
        ArchiveMember(
            index=row.index,
            seed=row.seed,
            image_png=storage.get_bytes(row.image_key),
            mask_png=storage.get_bytes(row.mask_key),
            stats=row.stats,
        )
        for row in rows
    )
    built = build_archive(
        members,
        readme=readme_markdown(dataset, metrics=metrics, site_url=site_url),
        licence=licence_text(dataset),
    )
    try:
        archive_key = keys.archive(dataset.id, dataset.version)
        storage.put_file(archive_key, built.path, content_type="application/zip")
        storage.put_bytes(
            keys.sha256sums(dataset.id), built.sha256sums.encode(), content_type="text/plain"
        )
    finally:
        built.path.unlink(missing_ok=True)
    dataset.archive_key = archive_key
    dataset.archive_size = built.size
    dataset.archive_sha256 = built.sha256
    session.flush()
    return built
