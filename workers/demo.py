"""`synthmed demo`: the whole product on one laptop, with nothing but Python.

SQLite, a local folder for objects and Celery on kombu's filesystem transport (the
settings' defaults); a real worker process and a real web server as child processes.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import typer
from sqlalchemy import select

from app.datasets.service import datasets
from app.db import session_scope
from app.pipelines.service import pipelines
from app.settings import get_settings
from app.tables import Dataset, DatasetStatus
from workers.cli import _sessions, fail, follow_dataset, migrate_database

DEMO_RESOLUTION = 64
HOST = "127.0.0.1"


def _spawn(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "workers.cli", *args])


def _stop(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        if child.poll() is None:
            child.terminate()
    for child in children:
        try:
            child.wait(timeout=20)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _port_in_use(port: int) -> bool:
    """Whether something listens on HOST:port, tried as uvicorn binds (SO_REUSEADDR, so a
    port left in TIME_WAIT by a server that stopped counts as free)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return True
    return False


def _wait_until_serving(server: subprocess.Popen[bytes], url: str, *, timeout: float) -> None:
    """Return once ``url`` answers 200 from ``server``; a clear error if the server exits
    or does not answer within ``timeout`` seconds."""
    # No proxy: an http_proxy in the environment must not answer for our own server.
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            fail(f"the web server exited with code {server.returncode} before it answered")
        try:
            with direct.open(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:  # refused while it starts, or an HTTP error status
            pass
        time.sleep(0.2)
    fail(f"the web server did not answer {url} within {timeout:.0f} s")


@contextlib.contextmanager
def _stopped_by_termination() -> Iterator[None]:
    """Within it, SIGTERM and SIGHUP raise KeyboardInterrupt: ``kill`` or a closed terminal
    stops the demo as Ctrl-C does, children included; by default they ended the demo alone
    and left its worker and web server running, the port taken."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # A signal the caller ignores stays ignored: under nohup a hangup must not stop it.
    previous = {
        sig: signal.signal(sig, interrupt)
        for sig in (signal.SIGTERM, signal.SIGHUP)
        if signal.getsignal(sig) is not signal.SIG_IGN
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_demo(*, port: int, count: int, steps: int) -> None:
    if _port_in_use(port):
        # Before anything is trained or written: the server would fail only at the end.
        fail(f"port {port} is in use (an earlier demo still running?); stop it or pass --port")
    settings = get_settings()
    began = time.monotonic()
    typer.echo("1/4 migrating the embedded database")
    migrate_database(settings)
    sessions = _sessions(settings)
    with session_scope(sessions) as session:
        pipeline = pipelines.latest_ready(session, resolution=DEMO_RESOLUTION)
        pipeline_id = pipeline.id if pipeline else None
    if pipeline_id is None:
        typer.echo(f"2/4 training a {DEMO_RESOLUTION}px pipeline on built-in phantom data")
        from workers.training import train_and_register

        pipeline_id = train_and_register(
            settings,
            sessions,
            data="phantom",
            resolution=DEMO_RESOLUTION,
            config_name="default",
            steps=steps,
            seed=0,
            device=settings.device,
            name=None,
            checkpoint=None,
            resume=True,
            checkpoint_every=200,
            sample_every=200,
            samples_dir=None,
        )
    else:
        typer.echo(f"2/4 pipeline {pipeline_id} is already trained")

    children: list[subprocess.Popen[bytes]] = []
    with _stopped_by_termination():
        try:
            children.append(_spawn("worker", "--loglevel", "WARNING"))
            server = _spawn("serve", "--host", HOST, "--port", str(port))
            children.append(server)
            with session_scope(sessions) as session:
                published = session.scalars(
                    select(Dataset).where(Dataset.status == DatasetStatus.published)
                ).first()
                dataset_id = None
                if published is None:
                    dataset = datasets.create_draft(
                        session,
                        pipeline_id=pipeline_id,
                        title="Phantom fundus demo",
                        description=(
                            "Synthetic fundus photographs and vessel masks from a pipeline "
                            "trained on SynthMed's built-in procedural phantom images."
                        ),
                        count=count,
                        seed=2026,
                    )
                    job = datasets.start_generation(session, dataset=dataset, by="demo")
                    job.params = {**job.params, "publish": True, "tstr_steps": 0}
                    dataset_id = dataset.id
            if dataset_id is not None:
                typer.echo(f"3/4 generating {count} pairs through the worker")
                follow_dataset(sessions, dataset_id)
            else:
                typer.echo("3/4 a published dataset already exists")
            site = f"http://{HOST}:{port}/"
            _wait_until_serving(server, f"{site}healthz", timeout=60)
            typer.echo(
                f"4/4 ready in {time.monotonic() - began:.0f} s: open {site} "
                "(Ctrl-C stops everything)"
            )
            while all(child.poll() is None for child in children):
                time.sleep(0.5)
            typer.echo("a child process exited; stopping", err=True)
            raise typer.Exit(code=1)
        except KeyboardInterrupt:
            typer.echo("stopping the worker and the web server")
        finally:
            _stop(children)
