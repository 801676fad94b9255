"""The CLI as a user meets it: clear errors with exit code 2, nothing half-written."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.orm import sessionmaker
from typer.testing import CliRunner

from app.datasets.service import datasets
from app.db import make_engine, make_sessionmaker, session_scope
from app.jobs.service import jobs
from app.settings import get_settings
from app.tables import DatasetStatus, JobKind, Metric
from tests.factories import make_dataset, make_pipeline
from workers.cli import app


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("SYNTHMED_DATABASE_URL", f"sqlite:///{tmp_path / 'db.sqlite'}")
    monkeypatch.setenv("SYNTHMED_STORAGE_URL", f"file://{tmp_path / 'objects'}")
    monkeypatch.setenv("SYNTHMED_BROKER_URL", f"filesystem://{tmp_path / 'broker'}")
    get_settings.cache_clear()
    runner = CliRunner()
    assert runner.invoke(app, ["migrate"]).exit_code == 0
    yield runner
    get_settings.cache_clear()


@pytest.fixture
def sessions(runner: CliRunner) -> sessionmaker:
    """Sessions on the database the CLI uses, to set up rows for it."""
    return make_sessionmaker(make_engine(get_settings().database_url))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["generate", "--pipeline", "7"], "no pipeline 7"),
        (["generate", "--pipeline", "abc"], "must be an integer id or 'latest'"),
        (["generate"], "no trained pipeline yet"),
        (["publish", "nope"], "no dataset 'nope'"),
        (["unpublish", "nope"], "no dataset 'nope'"),
        (["audit", "nope"], "no dataset 'nope'"),
        (["audit"], "name one dataset's slug, or --pipeline ID"),
        (["audit", "nope", "--pipeline", "1"], "name one dataset's slug, or --pipeline ID"),
        (["audit", "--pipeline", "7"], "no pipeline 7"),
        (["watch", "nope"], "no dataset 'nope'"),
        (["train", "--data", "/nonexistent", "--steps", "1"], "/nonexistent: no such folder"),
        (["train", "--resolution", "100", "--steps", "1"], "power of two"),
        (["train", "--config", "fancy", "--steps", "1"], "unknown config 'fancy'"),
        (
            ["train", "--config", "supersampled", "--resolution", "512", "--steps", "1"],
            "at most 256 px, got 512",
        ),
        (
            ["evaluate", "--inception-weights", "/nonexistent.pth"],
            "Inception weights file /nonexistent.pth does not exist",
        ),
    ],
)
def test_bad_input_is_a_clear_error(runner: CliRunner, args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in result.output


def test_every_command_explains_itself(runner: CliRunner) -> None:
    commands = (
        "train",
        "generate",
        "evaluate",
        "publish",
        "unpublish",
        "pipelines",
        "datasets",
        "watch",
        "audit",
        "serve",
        "worker",
        "demo",
    )
    for command in commands:
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0
        assert "Usage" in result.output


def test_help_reflows_the_docstring_paragraphs(runner: CliRunner) -> None:
    # Docstrings are wrapped at 100 columns in the source; a wide terminal gets each paragraph
    # as one line, not the source's line breaks.
    result = runner.invoke(app, ["generate", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "(images/, masks/, metadata.csv). Without it, a dataset is created" in result.output


def test_empty_lists_say_how_to_fill_them(runner: CliRunner) -> None:
    result = runner.invoke(app, ["datasets"])
    assert result.exit_code == 0
    assert result.output == "no datasets yet: `synthmed generate` makes one\n"
    result = runner.invoke(app, ["pipelines"])
    assert result.exit_code == 0
    assert result.output == "no pipelines yet: `synthmed train` makes one\n"


def test_pipelines_lists_the_ids_generate_takes(runner: CliRunner, sessions: sessionmaker) -> None:
    with session_scope(sessions) as session:
        older, newer = make_pipeline(session, resolution=64), make_pipeline(session)
        ids = [newer.id, older.id]
        figures = {"tstr_f1_synthetic": 0.7261, "tstr_f1_real": 0.8179}
        figures |= {"memorisation_passed": 1.0, "kl_real_syn": 0.4}
        session.add_all(Metric(pipeline_id=older.id, name=k, value=v) for k, v in figures.items())
    listed = runner.invoke(app, ["pipelines"], env={"COLUMNS": "200"}).output.splitlines()
    assert listed[0].split()[:3] == ["id", "name", "status"]
    assert listed[0].split()[-1] == "evaluated"
    rows = [line.split() for line in listed[2:]]
    assert [int(row[0]) for row in rows] == ids
    assert [row[row.index("10") + 1] for row in rows] == ["phantom", "phantom"]
    assert "64" in rows[1] and "32" in rows[0]
    # The newer one was never evaluated; the older one's last evaluation is summed up.
    assert listed[2].endswith(" -")
    assert listed[3].endswith("synthetic F1 0.726 (real 0.818), audit passed")


def test_a_dataset_that_failed_its_audit_points_to_the_evidence(
    runner: CliRunner, sessions: sessionmaker
) -> None:
    with session_scope(sessions) as session:
        flagged = make_dataset(session, status=DatasetStatus.ready)
        flagged.audit_passed = False
        draft = make_dataset(session)
        broken = make_dataset(session, status=DatasetStatus.failed)
        job = jobs.create(
            session, kind=JobKind.generate, params={}, requested_by="test", dataset_id=broken.id
        )
        jobs.fail(session, job_id=job.id, error="RuntimeError: " + "x" * 200 + "\ntraceback")
        job_id = job.id
        flagged_slug, draft_slug, broken_slug = flagged.slug, draft.slug, broken.slug

    result = runner.invoke(app, ["publish", flagged_slug])
    assert result.exit_code == 2
    assert f"cannot be published (`synthmed audit {flagged_slug}` shows why)" in result.output

    result = runner.invoke(app, ["audit", draft_slug])
    assert result.exit_code == 2
    assert f"dataset {draft_slug} has no memorisation audit yet (it is draft)" in result.output
    pipeline_id = flagged.pipeline_id
    result = runner.invoke(app, ["audit", "--pipeline", str(pipeline_id)], env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert (
        f"pipeline {pipeline_id} has no memorisation audit yet: "
        f"run `synthmed evaluate --pipeline {pipeline_id}`"
    ) in result.output

    listed = runner.invoke(app, ["datasets"], env={"COLUMNS": "200"}).output.splitlines()
    assert [line.split()[:4] for line in listed[2:]] == [
        [broken_slug, "failed", "4", "-"],
        [draft_slug, "draft", "4", "-"],
        [flagged_slug, "ready", "4", "FAILED"],
    ]
    # A failed job's error is cut to its first line, and the row to a readable width.
    assert listed[2].endswith(f"generate job {job_id} failed: RuntimeError: " + "x" * 65 + "…")


def test_unpublish_takes_a_dataset_down_and_says_what_it_cannot_reach(
    runner: CliRunner, sessions: sessionmaker
) -> None:
    with session_scope(sessions) as session:
        slug = make_dataset(session, status=DatasetStatus.published).slug

    result = runner.invoke(app, ["unpublish", slug], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert f"dataset {slug} is unpublished" in result.output
    assert "Copies already fetched (downloads, cached pages) are out of reach." in result.output
    with session_scope(sessions) as session:
        assert datasets.get_by_slug(session, slug).status is DatasetStatus.ready

    again = runner.invoke(app, ["unpublish", slug])
    assert again.exit_code == 2
    assert "the dataset is ready, not published" in again.output
