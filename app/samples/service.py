"""Sample rows and their objects: written once per (dataset, index), overwritten on retry."""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app import keys
from app.storage import Storage
from app.tables import Dataset, Sample


class SampleService:
    def store(
        self,
        session: Session,
        storage: Storage,
        *,
        dataset: Dataset,
        index: int,
        seed: int,
        image_png: bytes,
        mask_png: bytes,
        thumb_webp: bytes,
        stats: dict[str, Any],
    ) -> Sample:
        image_key = keys.sample_image(dataset.id, index)
        mask_key = keys.sample_mask(dataset.id, index)
        thumb_key = keys.sample_thumb(dataset.id, index)
        storage.put_bytes(image_key, image_png, content_type="image/png")
        storage.put_bytes(mask_key, mask_png, content_type="image/png")
        storage.put_bytes(thumb_key, thumb_webp, content_type="image/webp")
        sample = session.scalars(
            select(Sample).where(Sample.dataset_id == dataset.id, Sample.index == index)
        ).first()
        if sample is None:
            sample = Sample(dataset_id=dataset.id, index=index)
            session.add(sample)
        sample.seed = seed
        sample.image_key = image_key
        sample.mask_key = mask_key
        sample.thumb_key = thumb_key
        sample.image_sha256 = hashlib.sha256(image_png).hexdigest()
        sample.mask_sha256 = hashlib.sha256(mask_png).hexdigest()
        sample.stats = stats
        session.flush()
        return sample

    def count(self, session: Session, *, dataset_id: int) -> int:
        return (
            session.scalar(
                select(func.count()).select_from(Sample).where(Sample.dataset_id == dataset_id)
            )
            or 0
        )

    def list(
        self, session: Session, *, dataset_id: int, offset: int = 0, limit: int | None = None
    ) -> list[Sample]:
        query = (
            select(Sample)
            .where(Sample.dataset_id == dataset_id)
            .order_by(Sample.index)
            .offset(offset)
            .limit(limit)
        )
        return list(session.scalars(query))

    def get(self, session: Session, *, dataset_id: int, index: int) -> Sample | None:
        return session.scalars(
            select(Sample).where(Sample.dataset_id == dataset_id, Sample.index == index)
        ).first()


samples = SampleService()
