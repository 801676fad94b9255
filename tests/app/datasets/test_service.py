from __future__ import annotations

import hashlib
import io
import zipfile

import pytest
from sqlalchemy.orm import Session

from app.datasets.service import datasets
from app.errors import Conflict, InvalidTransition
from app.jobs.queue import GENERATE_DATASET
from app.storage import Storage
from app.tables import DatasetStatus, JobState
from tests.factories import (
    RecordingSender,
    make_dataset,
    make_published_dataset,
    tstr_details,
)


class TestStartGeneration:
    def test_queues_after_commit_only(self, session: Session, sender: RecordingSender) -> None:
        dataset = make_dataset(session)
        job = datasets.start_generation(session, dataset=dataset, by="test")
        assert dataset.status is DatasetStatus.generating
        assert job.state is JobState.queued
        assert sender.sent == []
        session.commit()
        assert sender.sent == [(GENERATE_DATASET, {"job_id": job.id})]

    def test_rollback_drops_the_task(self, session: Session, sender: RecordingSender) -> None:
        dataset = make_dataset(session)
        datasets.start_generation(session, dataset=dataset, by="test")
        session.rollback()
        session.commit()
        assert sender.sent == []

    def test_refuses_a_dataset_past_draft(self, session: Session) -> None:
        dataset = make_dataset(session, status=DatasetStatus.ready)
        with pytest.raises(InvalidTransition):
            datasets.start_generation(session, dataset=dataset, by="test")


class TestPublish:
    def test_requires_a_passed_audit(self, session: Session, local_storage: Storage) -> None:
        dataset = make_published_dataset(session, local_storage, publish=False)
        dataset.audit_passed = False
        with pytest.raises(Conflict, match="memorisation audit"):
            datasets.publish(session, dataset=dataset)
        assert dataset.status is DatasetStatus.ready

    def test_requires_ready(self, session: Session) -> None:
        dataset = make_dataset(session, status=DatasetStatus.evaluating)
        dataset.audit_passed = True
        with pytest.raises(InvalidTransition):
            datasets.publish(session, dataset=dataset)

    def test_published_dataset_is_found_and_draft_is_not(
        self, session: Session, local_storage: Storage
    ) -> None:
        published = make_published_dataset(session, local_storage)
        draft = make_dataset(session)
        assert datasets.get_published(session, published.slug) is published
        assert datasets.get_published(session, draft.slug) is None


class TestArchive:
    def test_archive_is_complete_and_checksummed(
        self, session: Session, local_storage: Storage
    ) -> None:
        dataset = make_published_dataset(session, local_storage, count=3)
        data = local_storage.get_bytes(dataset.archive_key)
        assert len(data) == dataset.archive_size
        assert hashlib.sha256(data).hexdigest() == dataset.archive_sha256
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = set(zf.namelist())
            sums = zf.read("SHA256SUMS").decode().splitlines()
            for line in sums:
                digest, name = line.split("  ")
                assert hashlib.sha256(zf.read(name)).hexdigest() == digest
            listed = {line.split("  ")[1] for line in sums}
            metadata = zf.read("metadata.csv").decode().splitlines()
        assert listed == names - {"SHA256SUMS"}
        assert {
            "README.md",
            "LICENSE",
            "metadata.csv",
            "images/00002.png",
            "masks/00002.png",
        } <= names
        assert len(metadata) == 1 + 3
        assert metadata[0].startswith("file_name,mask_file_name,index,seed")

    def test_readme_says_how_tstr_ran_and_what_kl_cannot_show(
        self, session: Session, local_storage: Storage
    ) -> None:
        dataset = make_published_dataset(
            session,
            local_storage,
            count=2,
            metrics={"tstr_f1_synthetic": 0.693, "tstr_f1_real": 0.817, "kl_real_syn": 0.05},
            metric_details={
                "tstr_f1_synthetic": tstr_details(steps=4000, seeds=2, n_train=2),
                "tstr_f1_real": tstr_details(steps=4000, seeds=2, n_train=20),
            },
            pipeline_config={"stage2": {"appearance": True}},
        )
        with zipfile.ZipFile(io.BytesIO(local_storage.get_bytes(dataset.archive_key))) as zf:
            readme = zf.read("README.md").decode()
        evidence = readme[readme.index("## Evidence") : readme.index("## Citation")]
        rows = "- kl_real_syn: 0.05\n- tstr_f1_real: 0.817\n- tstr_f1_synthetic: 0.693\n"
        assert rows in evidence
        assert "histograms match by construction" in evidence
        assert (
            "Each segmenter trained for 4,000 steps; mean ± std over 2 seeds; trained on 2 "
            "synthetic pairs or 20 real pairs; tested on 20 real images." in evidence
        )
