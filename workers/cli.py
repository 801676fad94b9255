"""The `synthmed` command: train, generate, evaluate, publish, unpublish, pipelines, datasets,
watch, audit, serve, worker, demo.

Heavy imports (torch, the models) happen inside the commands that need them, so
`synthmed --help` and `synthmed serve` start fast.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from alembic import command as alembic_command
from alembic.config import Config as AlembicConfig
from sqlalchemy.orm import Session
from tqdm import tqdm

from app.datasets.service import datasets
from app.db import make_engine, session_scope
from app.downloads import REDIRECT_EXPIRES
from app.errors import SynthMedError
from app.jobs.queue import task_sessions
from app.jobs.service import jobs
from app.pipelines.service import pipelines
from app.settings import ROOT, Settings, get_settings
from app.storage import storage_from_settings
from app.tables import Dataset, DatasetStatus, Job, JobState
from models.evaluate.table import text_columns

app = typer.Typer(
    help="SynthMed: train a two-stage fundus GAN, generate synthetic datasets, publish them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Docstrings are wrapped at 100 columns; markdown rejoins their lines in --help.
    rich_markup_mode="markdown",
)
log = logging.getLogger("synthmed.cli")


def fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def _sessions(settings: Settings):  # noqa: ANN202 - sessionmaker
    return task_sessions(make_engine(settings.database_url), settings.broker_url)


def _dataset(session: Session, slug: str) -> Dataset:
    """The dataset named on the command line; a clear error if there is none."""
    dataset = datasets.get_by_slug(session, slug)
    if dataset is None:
        fail(f"no dataset {slug!r}")
    return dataset


def migrate_database(settings: Settings) -> None:
    if settings.database_url.startswith("sqlite:///"):
        Path(settings.database_url.removeprefix("sqlite:///")).parent.mkdir(
            parents=True, exist_ok=True
        )
    cfg = AlembicConfig(str(ROOT / "alembic.ini"))
    cfg.attributes["database_url"] = settings.database_url
    alembic_command.upgrade(cfg, "head")
    storage = storage_from_settings(settings)
    ensure_bucket = getattr(storage, "ensure_bucket", None)
    if ensure_bucket is not None:
        ensure_bucket()


@app.command()
def migrate() -> None:
    """Create or upgrade the database schema (Alembic `upgrade head`) and the storage bucket."""
    migrate_database(get_settings())
    typer.echo("database is at the latest schema")


@app.command()
def train(
    data: Annotated[
        str, typer.Option(help="'phantom' (built-in) or a folder: DRIVE training/, STARE, …")
    ] = "phantom",
    resolution: Annotated[int, typer.Option(help="Resolution of the samples, 64 to 512.")] = 64,
    config: Annotated[
        str,
        typer.Option(
            help="Recipe: 'default' (tuned), 'supersampled' (experimental: default, but both "
            "stages work at twice the resolution and samples are shrunk; up to 256) or 'paper'."
        ),
    ] = "default",
    steps: Annotated[int, typer.Option(min=1, help="Steps; Stage I may stop first.")] = 900,
    seed: Annotated[int, typer.Option(help="Seed; runs repeat on one device and core count.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    name: Annotated[str | None, typer.Option(help="Pipeline name shown on dataset cards.")] = None,
    checkpoint: Annotated[
        Path | None, typer.Option(help="Local resumable checkpoint (default under var/train/).")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue from --checkpoint if it exists.")] = True,
    checkpoint_every: Annotated[int, typer.Option(help="Save the checkpoint every N steps.")] = 200,
    sample_every: Annotated[int, typer.Option(help="Save a sample grid every N steps.")] = 200,
    samples_dir: Annotated[
        Path | None, typer.Option(help="Folder for sample grids (default next to checkpoint).")
    ] = None,
    if_none: Annotated[
        bool,
        typer.Option("--if-none", help="Do nothing if a ready pipeline at this resolution exists."),
    ] = False,
) -> None:
    """Train Stage I (vessel masks) and Stage II (fundus images) and register the pipeline.

    The checkpoint goes to private object storage; the pipeline id is printed at the end.
    """
    settings = get_settings()
    sessions = _sessions(settings)
    if if_none:
        with session_scope(sessions) as session:
            existing = pipelines.latest_ready(session, resolution=resolution)
            if existing is not None:
                typer.echo(f"pipeline {existing.id} ({existing.name}) is ready; not training")
                return
    from workers.training import train_and_register

    try:
        pipeline_id = train_and_register(
            settings,
            sessions,
            data=data,
            resolution=resolution,
            config_name=config,
            steps=steps,
            seed=seed,
            device=device,
            name=name,
            checkpoint=checkpoint,
            resume=resume,
            checkpoint_every=checkpoint_every,
            sample_every=sample_every,
            samples_dir=samples_dir,
        )
    except ValueError as exc:  # DataError, CheckpointError and config errors are ValueErrors
        fail(str(exc))
    typer.echo(f"pipeline {pipeline_id} is ready")


@app.command()
def generate(
    pipeline: Annotated[str, typer.Option(help="Pipeline id, or 'latest'.")] = "latest",
    count: Annotated[int, typer.Option(min=1, help="Number of (image, mask) pairs.")] = 16,
    seed: Annotated[int | None, typer.Option(help="Dataset seed (random if omitted).")] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Write PNGs to this folder here and now, instead of making a dataset."),
    ] = None,
    title: Annotated[str, typer.Option(help="Dataset title (job mode).")] = "",
    description: Annotated[str, typer.Option(help="Dataset description (job mode).")] = "",
    wait: Annotated[bool, typer.Option(help="Follow the job until it finishes.")] = False,
    publish: Annotated[
        bool, typer.Option(help="Publish when ready, if the memorisation audit passes.")
    ] = False,
    tstr_steps: Annotated[
        int, typer.Option(help="Segmenter steps for the TSTR evaluation (0 skips it).")
    ] = 0,
    real_test: Annotated[
        str | None, typer.Option(help="Held-out real split to evaluate against.")
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda (with --out).")] = "auto",
) -> None:
    """Generate synthetic pairs from a trained pipeline.

    With --out, pairs are written to a local folder (images/, masks/, metadata.csv).
    Without it, a dataset is created and a generation job is queued for the workers
    (generate, then evaluate and package); --wait follows its progress.
    """
    settings = get_settings()
    sessions = _sessions(settings)
    pipeline_id = _pipeline_id(sessions, pipeline)
    if out is not None:
        from workers.local import generate_to_folder

        generate_to_folder(
            settings,
            sessions,
            pipeline_id=pipeline_id,
            count=count,
            seed=seed or 0,
            out=out,
            device=device,
        )
        typer.echo(f"wrote {count} pairs to {out}")
        return
    params: dict[str, Any] = {"publish": publish, "tstr_steps": tstr_steps}
    if real_test:
        params["real_test"] = real_test
    try:
        with session_scope(sessions) as session:
            dataset = datasets.create_draft(
                session,
                pipeline_id=pipeline_id,
                title=title or f"Synthetic fundus pairs from pipeline {pipeline_id}",
                description=description,
                count=count,
                seed=seed,
            )
            job = datasets.start_generation(session, dataset=dataset, by="cli")
            job.params = {**job.params, **params}
            dataset_id, slug, job_id = dataset.id, dataset.slug, job.id
    except SynthMedError as exc:
        fail(exc.detail)
    typer.echo(f"dataset {slug} (id {dataset_id}): generation job {job_id} queued")
    if wait:
        follow_dataset(sessions, dataset_id)


def follow_dataset(sessions, dataset_id: int, *, timeout: float = 3600) -> None:  # noqa: ANN001
    """Show the dataset's jobs as progress bars until it is ready, published or failed."""
    deadline = time.monotonic() + timeout
    bars: dict[int, tqdm] = {}
    try:
        while time.monotonic() < deadline:
            with session_scope(sessions) as session:
                dataset = datasets.get(session, dataset_id)
                slug, status = dataset.slug, dataset.status
                for job in jobs.list_for_dataset(session, dataset_id=dataset_id):
                    bar = bars.get(job.id)
                    if bar is None:
                        bar = bars[job.id] = tqdm(total=100, desc=f"{job.kind} job {job.id}")
                    bar.n = int(job.progress * 100)
                    bar.set_postfix_str(job.message, refresh=True)
                    if job.state is JobState.failed:
                        fail(f"{job.kind} job {job.id} failed: {job.error}")
            if status in (DatasetStatus.ready, DatasetStatus.published):
                break
            if status is DatasetStatus.failed:
                fail(f"dataset {slug} failed")
            time.sleep(0.5)
        else:
            fail(f"dataset {slug} is still {status} after {timeout:.0f} s")
    finally:
        for bar in bars.values():
            bar.close()
    typer.echo(f"dataset {slug} is {status}")


@app.command()
def evaluate(
    pipeline: Annotated[str, typer.Option(help="Pipeline id, or 'latest'.")] = "latest",
    real_train: Annotated[
        str | None, typer.Option(help="Real training split (default: the pipeline's own data).")
    ] = None,
    real_test: Annotated[
        str | None, typer.Option(help="Real held-out test split (never trained on).")
    ] = None,
    count: Annotated[int, typer.Option(min=1, help="Synthetic pairs to generate.")] = 100,
    seed: Annotated[int, typer.Option(help="Generation seed.")] = 0,
    tstr_steps: Annotated[int, typer.Option(help="Segmenter training steps per run.")] = 300,
    seeds: Annotated[int, typer.Option(min=1, help="Segmenter seeds per arm (mean ± std).")] = 3,
    crop: Annotated[int, typer.Option(help="Segmenter training crop size.")] = 128,
    width: Annotated[int, typer.Option(help="Segmenter U-Net base channels.")] = 32,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda.")] = "auto",
    output: Annotated[Path | None, typer.Option(help="Also write the metrics as JSON.")] = None,
    inception_weights: Annotated[
        Path | None,
        typer.Option(
            help="pytorch-fid's FID Inception-v3 weights (pt_inception-2015-12-05-6726825d.pth)"
            " to add Inception-FID/KID; default: SYNTHMED_INCEPTION_WEIGHTS, else skipped."
        ),
    ] = None,
) -> None:
    """Measure a pipeline: TSTR segmentation (real / synthetic / both), KL, features, audit.

    The figures are stored as metrics of the pipeline (replacing the last evaluation's) and
    printed as a table; `synthmed audit --pipeline ID` shows the memorisation audit's
    closest pairs.
    """
    settings = get_settings()
    weights = inception_weights or settings.inception_weights
    if weights is not None and not weights.is_file():
        fail(f"Inception weights file {weights} does not exist")
    sessions = _sessions(settings)
    from workers.local import evaluate_pipeline

    pipeline_id = _pipeline_id(sessions, pipeline)
    try:
        metrics = evaluate_pipeline(
            settings,
            sessions,
            pipeline_id=pipeline_id,
            real_train=real_train,
            real_test=real_test,
            count=count,
            seed=seed,
            tstr_steps=tstr_steps,
            seeds=seeds,
            device=device,
            crop=crop,
            width=width,
            inception_weights=weights,
        )
    except ValueError as exc:
        fail(str(exc))
    from models.evaluate.table import format_table

    rows = [{"name": m.name, "value": m.value, "details": m.details} for m in metrics]
    typer.echo(format_table(rows))
    if output is not None:
        output.write_text(json.dumps(rows, indent=2, default=str))


@app.command()
def publish(slug: Annotated[str, typer.Argument(help="The dataset's slug.")]) -> None:
    """Publish a ready dataset. Refused unless its memorisation audit passed."""
    sessions = _sessions(get_settings())
    audit_failed = False
    try:
        with session_scope(sessions) as session:
            dataset = _dataset(session, slug)
            audit_failed = dataset.audit_passed is False
            datasets.publish(session, dataset=dataset)
    except SynthMedError as exc:
        fail(exc.detail + (f" (`synthmed audit {slug}` shows why)" if audit_failed else ""))
    typer.echo(f"dataset {slug} is published")


@app.command()
def unpublish(slug: Annotated[str, typer.Argument(help="The dataset's slug.")]) -> None:
    """Take a published dataset off the site and the API: a takedown.

    It goes back to ready, samples and archive kept; `publish` puts it back.
    """
    settings = get_settings()
    try:
        with session_scope(_sessions(settings)) as session:
            datasets.unpublish(session, dataset=_dataset(session, slug))
    except SynthMedError as exc:
        fail(exc.detail)
    said = f"dataset {slug} is unpublished: the site and the API answer 404 for it within seconds"
    if settings.download_redirect:
        said += (
            f"; download links handed out in the last {REDIRECT_EXPIRES // 60} minutes work"
            " until they expire"
        )
    typer.echo(said + ". Copies already fetched (downloads, cached pages) are out of reach.")


@app.command(name="pipelines")
def list_pipelines() -> None:
    """List every trained pipeline, newest first: the ids `generate --pipeline` takes.

    The data column is where the private training data was read from: admins only. The
    evaluated column sums up the last `synthmed evaluate`, if there was one.
    """
    header = ("id", "name", "status", "resolution", "recipe", "steps", "data", "created")
    rows = [(*header, "evaluated")]
    with session_scope(_sessions(get_settings())) as session:
        listed = pipelines.list_all(session)
        evaluated = pipelines.metric_values(
            session, pipeline_ids=[p.id for p in listed], names=EVALUATION_SUMMARY
        )
        for p in listed:
            recipe = str(p.resolution), p.config_name, str(p.steps)
            created = f"{p.created_at:%Y-%m-%d %H:%M}"
            summary = _evaluation_summary(evaluated.get(p.id, {}))
            rows.append((str(p.id), p.name, p.status, *recipe, p.data_source, created, summary))
    if len(rows) == 1:
        typer.echo("no pipelines yet: `synthmed train` makes one")
        return
    typer.echo("\n".join(text_columns(rows, "><<><><<<", rule=True)))


EVALUATION_SUMMARY = ("tstr_f1_synthetic", "tstr_f1_real", "memorisation_passed")


def _evaluation_summary(values: dict[str, float | None]) -> str:
    """'synthetic F1 0.726 (real 0.818), audit passed'; '-' if never evaluated."""
    if not values:
        return "-"
    parts = []
    synthetic, real = values.get("tstr_f1_synthetic"), values.get("tstr_f1_real")
    if synthetic is not None and real is not None:
        parts.append(f"synthetic F1 {synthetic:.3f} (real {real:.3f})")
    passed = values.get("memorisation_passed")
    if passed is not None:
        parts.append("audit passed" if passed == 1.0 else "audit FAILED")
    return ", ".join(parts) or "-"


@app.command(name="datasets")
def list_datasets() -> None:
    """List every dataset, drafts and failures too: status, audit and latest job.

    Newest first. Only admins see this list: the site shows published datasets only.
    """
    rows = [("slug", "status", "samples", "audit", "latest job")]
    with session_scope(_sessions(get_settings())) as session:
        listed = datasets.list_all(session)
        latest = jobs.latest_for_datasets(session, dataset_ids=[d.id for d in listed])
        for dataset in listed:
            audit = {True: "passed", False: "FAILED", None: "-"}[dataset.audit_passed]
            job = _job_summary(latest[dataset.id]) if dataset.id in latest else "-"
            rows.append((dataset.slug, dataset.status, str(dataset.count), audit, job))
    if len(rows) == 1:
        typer.echo("no datasets yet: `synthmed generate` makes one")
        return
    typer.echo("\n".join(text_columns(rows, "<<><<", rule=True)))


def _job_summary(job: Job) -> str:
    if job.state is JobState.failed:
        # The error's first line, cut to fit a row: `synthmed watch` prints all of it.
        error = (job.error or "").partition("\n")[0]
        error = error if len(error) <= 80 else error[:79] + "…"
        return f"{job.kind} job {job.id} failed: {error}"
    summary = f"{job.kind} job {job.id} {job.state} {job.progress:.0%}"
    return f"{summary} ({job.message})" if job.message else summary


@app.command()
def watch(slug: Annotated[str, typer.Argument(help="The dataset's slug.")]) -> None:
    """Follow a dataset's jobs as progress bars until it is ready, published or failed."""
    sessions = _sessions(get_settings())
    with session_scope(sessions) as session:
        dataset_id = _dataset(session, slug).id
    follow_dataset(sessions, dataset_id)


@app.command()
def audit(
    slug: Annotated[
        str | None, typer.Argument(help="The dataset's slug (drafts too); or use --pipeline.")
    ] = None,
    pipeline: Annotated[
        str | None,
        typer.Option(help="A pipeline id, or 'latest': the audit of its `synthmed evaluate`."),
    ] = None,
    sheet: Annotated[
        Path | None,
        typer.Option(help="Also draw the closest pairs to this PNG. It shows private images."),
    ] = None,
) -> None:
    """Show why a dataset (or a pipeline's evaluation) passed or failed its memorisation audit.

    The verdict, the rule and the samples that came closest to a training image, each with
    the training image it matched. For admins on this machine: the training images are
    private. `--sheet` draws each closest synthetic sample beside its training match, flipped
    as the audit matched it; keep that file off anything public. A pipeline's samples were
    not stored, so its sheet generates them again.
    """
    if (slug is None) == (pipeline is None):
        fail("name one dataset's slug, or --pipeline ID")
    settings = get_settings()
    if pipeline is not None:
        _audit_pipeline(settings, pipeline, sheet)
    else:
        _audit_dataset(settings, slug, sheet)


def _audit_dataset(settings: Settings, slug: str, sheet: Path | None) -> None:
    from workers.audit import audit_evidence, describe, write_dataset_sheet

    with session_scope(_sessions(settings)) as session:
        dataset = _dataset(session, slug)
        evidence = audit_evidence(dataset.metrics)
        if evidence is None:
            fail(f"dataset {slug} has no memorisation audit yet (it is {dataset.status})")
        typer.echo(describe(f"dataset {slug} ({dataset.status})", evidence))
        if sheet is not None:
            storage = storage_from_settings(settings)
            _draw(lambda: write_dataset_sheet(session, storage, dataset, evidence, sheet), sheet)


def _audit_pipeline(settings: Settings, pipeline: str, sheet: Path | None) -> None:
    from workers.audit import audit_evidence, describe, write_pipeline_sheet
    from workers.local import load_trained_pipeline

    sessions = _sessions(settings)
    pipeline_id = _pipeline_id(sessions, pipeline)
    with session_scope(sessions) as session:
        evidence = audit_evidence(pipelines.metrics(session, pipeline_id=pipeline_id))
    if evidence is None:
        fail(
            f"pipeline {pipeline_id} has no memorisation audit yet: "
            f"run `synthmed evaluate --pipeline {pipeline_id}`"
        )
    typer.echo(describe(f"pipeline {pipeline_id}'s evaluation", evidence))
    if sheet is not None:
        trained, _ = load_trained_pipeline(settings, sessions, pipeline_id, settings.device)
        _draw(lambda: write_pipeline_sheet(trained, evidence, sheet), sheet)


def _draw(write_sheet: Callable[[], None], path: Path) -> None:
    try:
        write_sheet()
    except (ValueError, OSError) as exc:  # DataError is a ValueError
        fail(str(exc))
    typer.echo(f"closest pairs drawn to {path} (private training images)")


def server_options() -> dict[str, Any]:
    """uvicorn's event loop and HTTP parser: uvloop and httptools when installed (the
    ``uvicorn[standard]`` extra), else the pure-Python asyncio loop and h11."""
    import importlib.util

    def installed(module: str) -> bool:
        return importlib.util.find_spec(module) is not None

    return {
        "loop": "uvloop" if installed("uvloop") else "asyncio",
        "http": "httptools" if installed("httptools") else "h11",
    }


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    workers: Annotated[
        int, typer.Option(help="Web worker processes (one per core is a good start).")
    ] = 1,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    factory: Annotated[
        str, typer.Option(hidden=True, help="App factory (the benchmark adds a route).")
    ] = "app.main:create_app",
) -> None:
    """Serve the website and the REST API (OpenAPI at /docs)."""
    import uvicorn

    options = server_options()
    typer.echo(
        f"serving with {workers} worker(s), loop={options['loop']}, http={options['http']}",
        err=True,
    )
    uvicorn.run(
        factory,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        access_log=False,
        **options,
    )


@app.command()
def worker(
    concurrency: Annotated[int, typer.Option(help="Task processes (one per GPU).")] = 1,
    queues: Annotated[str, typer.Option(help="Queues to consume.")] = "gpu",
    loglevel: Annotated[str, typer.Option(help="Log level.")] = "INFO",
) -> None:
    """Run a Celery worker that generates and evaluates datasets."""
    from workers.celery_app import celery_app

    celery_app.worker_main(
        [
            "worker",
            f"--concurrency={concurrency}",
            f"--queues={queues}",
            f"--loglevel={loglevel}",
            "--without-gossip",
            "--without-mingle",
        ]
    )


@app.command()
def demo(
    port: Annotated[int, typer.Option(help="Port for the site.")] = 8000,
    count: Annotated[int, typer.Option(help="Pairs in the first dataset.")] = 16,
    steps: Annotated[int, typer.Option(help="Training steps if no pipeline exists.")] = 900,
) -> None:
    """Try it on one machine: a phantom-trained pipeline, a first dataset, the site.

    Migrates, trains a 64 px pipeline on phantom data if none exists, starts a worker,
    generates and publishes a first dataset through the job path, and serves the site.
    Ctrl-C stops every process it started.
    """
    from workers.demo import run_demo

    run_demo(port=port, count=count, steps=steps)


def _pipeline_id(sessions, pipeline: str) -> int:  # noqa: ANN001
    """The id named by --pipeline ('latest' or a number); a clear error if there is none."""
    try:
        with session_scope(sessions) as session:
            if pipeline == "latest":
                found = pipelines.latest_ready(session)
                if found is None:
                    fail("no trained pipeline yet: run `synthmed train` first")
                return found.id
            return pipelines.get(session, _int(pipeline, "--pipeline")).id
    except SynthMedError as exc:
        fail(exc.detail)
    raise AssertionError


def _int(value: str, option: str) -> int:
    try:
        return int(value)
    except ValueError:
        fail(f"{option} must be an integer id or 'latest', not {value!r}")
    raise AssertionError


def main() -> None:
    app()


if __name__ == "__main__":
    main()
