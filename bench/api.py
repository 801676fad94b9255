"""Benchmark of the public datasets API against baselines measured in the same run.

    .venv/bin/python -m bench.api [--seconds 10] [--connections 32] [--archive-mb 1024]
                                  [--download-repeats 3] [--no-cache]

Starts SeaweedFS (tests/s3server.py) and a temporary PostgreSQL database, seeds a few
published datasets, serves ``create_app`` the way production does, with ``synthmed serve``
(uvicorn with uvloop and httptools when installed, ``--workers`` processes, default one per
core), in a child process, plus a bare ``/bench/bare`` route returning a fixed JSON in the
same app and processes, so both share every server setting. The rate limit is disabled
(``SYNTHMED_RATE_LIMIT_PER_MINUTE=0``). ``--no-cache`` turns the API's micro-cache off
(``app.microcache``), to measure the uncached path. It then prints:

- requests/s and p50/p99 latency of ``GET /datasets``, ``GET /datasets/{slug}`` and a
  thumbnail, each beside the bare route (ratios), at 32 concurrent connections (wrk if
  installed, else an asyncio httpx client);
- download throughput of a large archive through the API vs a direct boto3 read of the same
  object, both ways the API can serve it: streamed through the web process (the default) and
  by redirect to a presigned URL (``SYNTHMED_DOWNLOAD_REDIRECT``, a second ``synthmed serve``
  on the next port but one), with the streaming server's peak RSS growth while serving it.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from sqlalchemy.orm import Session

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get(
    "SYNTHMED_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
BUCKET = "synthmed-bench"
BARE = {"status": "ok", "items": [], "total": 0}
BARE_BYTES = json.dumps(BARE, separators=(",", ":")).encode()


def bench_app():  # uvicorn --factory entry point, configured through SYNTHMED_* env vars
    from app.main import create_app

    app = create_app()
    if os.environ.get("BENCH_NO_MICROCACHE"):
        app.state.response_cache.ttl = 0

    @app.get("/bench/bare", include_in_schema=False)
    def bare() -> dict:
        return BARE

    return app


async def raw_asgi(scope: dict, receive, send) -> None:  # noqa: ANN001
    """The bare baseline: no framework, no middleware, a fixed JSON body."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": BARE_BYTES})


# --------------------------------------------------------------------------- setup


def seed(url: str, storage, *, archive_mb: int) -> tuple[str, str, int]:
    """Published datasets; the last one gets an ``archive_mb`` MB archive. (slug, big, size)"""
    from app import keys
    from app.db import make_engine
    from tests.factories import make_published_dataset

    engine = make_engine(url)
    with Session(engine, expire_on_commit=False) as session:
        first = None
        for i in range(12):
            d = make_published_dataset(
                session,
                storage,
                count=4,
                title=f"Bench dataset {i}",
                metrics={"tstr_f1_synthetic": 0.8 + i / 100, "kl": 0.1},
            )
            first = first or d
        big = make_published_dataset(session, storage, count=2, title="Bench big archive")
        path = Path(tempfile.mkstemp(suffix=".bin")[1])
        digest = hashlib.sha256()
        block = os.urandom(1 << 20)
        with path.open("wb") as fh:
            for i in range(archive_mb):
                chunk = i.to_bytes(8, "little") + block[8:]
                digest.update(chunk)
                fh.write(chunk)
        key = keys.archive(big.id, 99)
        storage.put_file(key, path, content_type="application/zip")
        size = path.stat().st_size
        path.unlink()
        big.archive_key, big.archive_size, big.archive_sha256 = key, size, digest.hexdigest()
        session.commit()
        assert first is not None
        result = first.slug, big.slug, size
    engine.dispose()
    return result


def settle(url: str) -> None:
    """VACUUM ANALYZE now, so that autovacuum does not wake up after seeding, mid-measurement."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("VACUUM ANALYZE"))
    engine.dispose()


# --------------------------------------------------------------------------- load


def run_wrk(url: str, seconds: int, connections: int) -> tuple[float, float, float]:
    out = subprocess.run(
        ["wrk", f"-t{min(4, connections)}", f"-c{connections}", f"-d{seconds}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def ms(label: str) -> float:
        m = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        assert m, out
        return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if non2xx:
        raise RuntimeError(f"{url}: {non2xx.group(1)} error responses")
    return rps, ms("50%"), ms("99%")


async def _py_load(url: str, seconds: int, connections: int) -> tuple[float, float, float]:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=connections)) as client:

        async def worker() -> None:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                r = await client.get(url)
                r.raise_for_status()
                latencies.append((time.perf_counter() - t0) * 1e3)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - t0
    q = statistics.quantiles(latencies, n=100)
    return len(latencies) / elapsed, q[49], q[98]


def load(url: str, seconds: int, connections: int) -> tuple[float, float, float]:
    if shutil.which("wrk"):
        return run_wrk(url, seconds, connections)
    return asyncio.run(_py_load(url, seconds, connections))


# --------------------------------------------------------------------------- download


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the uvicorn supervisor and its worker processes)."""
    pids = [pid]
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:
        return pids
    for task in tasks:
        try:
            children = (task / "children").read_text().split()
        except FileNotFoundError:
            continue  # a thread that has just ended (the thread pools come and go)
        for child in children:
            pids += _tree(int(child))
    return pids


def rss_kb(pid: int) -> int:
    """Resident memory of ``pid`` and its descendants, summed."""
    total = 0
    for p in _tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total


def download_api(url: str, pid: int, client: str = "urllib3") -> tuple[float, int, int]:
    """(MB/s, bytes, peak RSS growth in kB of ``pid``) for one download, redirects followed.

    ``urllib3`` (the default) reads 1 MiB at a time like :func:`download_boto3`, which uses
    urllib3 underneath: the same client stack on both sides, so the ratio measures the server.
    ``httpx`` is slower as a client here (64 KiB socket reads through h11).
    """
    import urllib3

    base = rss_kb(pid)
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_kb(pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    n = 0
    t0 = time.perf_counter()
    if client == "urllib3":
        r = urllib3.PoolManager().request("GET", url, preload_content=False, timeout=120)
        assert r.status == 200, r.status
        while chunk := r.read(1 << 20):
            n += len(chunk)
        r.release_conn()
    else:
        with httpx.stream("GET", url, timeout=120) as response:
            response.raise_for_status()
            for chunk in response.iter_raw(1 << 20):
                n += len(chunk)
    elapsed = time.perf_counter() - t0
    done.set()
    sampler.join()
    return n / elapsed / 1e6, n, peak[0] - base


def download_boto3(storage, key: str) -> tuple[float, int]:
    n = 0
    t0 = time.perf_counter()
    body = storage.client.get_object(Bucket=storage.bucket, Key=storage._full(key))["Body"]
    while chunk := body.read(1 << 20):
        n += len(chunk)
    return n / (time.perf_counter() - t0) / 1e6, n


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--archive-mb", type=int, default=1024)
    parser.add_argument("--port", type=int, default=18765)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--no-cache", action="store_true", help="disable the micro-cache")
    parser.add_argument("--download-repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=5, help="seconds of load per URL first")
    args = parser.parse_args()

    from alembic import command

    from app.storage import S3Storage
    from tests.conftest import alembic_config, fresh_database
    from tests.s3server import SeaweedServer

    work = Path(tempfile.mkdtemp(prefix="synthmed-bench-"))
    servers: list[subprocess.Popen[bytes]] = []
    try:
        with fresh_database("synthmed_bench") as db_url, SeaweedServer(work / "seaweedfs") as s3:
            command.upgrade(alembic_config(db_url), "head")
            storage = S3Storage(
                BUCKET,
                endpoint_url=s3.endpoint,
                access_key=s3.access_key,
                secret_key=s3.secret_key,
                prefix="bench",
            )
            storage.ensure_bucket()
            t0 = time.perf_counter()
            slug, big_slug, size = seed(db_url, storage, archive_mb=args.archive_mb)
            print(f"seeded in {time.perf_counter() - t0:.1f}s; archive {size / 1e6:.0f} MB")
            settle(db_url)
            env = {
                **os.environ,
                "SYNTHMED_DATABASE_URL": db_url,
                "SYNTHMED_STORAGE_URL": f"s3://{BUCKET}/bench?endpoint={s3.endpoint}",
                "SYNTHMED_STORAGE_ACCESS_KEY": s3.access_key,
                "SYNTHMED_STORAGE_SECRET_KEY": s3.secret_key,
                "SYNTHMED_BROKER_URL": "memory://",
                "SYNTHMED_RATE_LIMIT_PER_MINUTE": "0",
            }
            if args.no_cache:
                env["BENCH_NO_MICROCACHE"] = "1"
            from workers.cli import server_options

            options = server_options()

            def serve(port: int, **extra_env: str) -> subprocess.Popen[bytes]:
                cmd = [
                    sys.executable, "-m", "workers.cli", "serve", "--factory",
                    "bench.api:bench_app", "--host", "127.0.0.1", "--port", str(port),
                    "--log-level", "warning", "--workers", str(args.workers),
                ]  # fmt: skip
                servers.append(subprocess.Popen(cmd, cwd=ROOT, env={**env, **extra_env}))
                return servers[-1]

            server = serve(args.port)
            # The baseline: plain uvicorn serving a raw ASGI app, same settings.
            raw_cmd = [
                sys.executable, "-m", "uvicorn", "bench.api:raw_asgi", "--lifespan", "off",
                "--loop", options["loop"], "--http", options["http"], "--host", "127.0.0.1",
                "--port", str(args.port + 1), "--log-level", "warning",
                "--workers", str(args.workers),
            ]  # fmt: skip
            servers.append(subprocess.Popen(raw_cmd, cwd=ROOT, env=env))
            # The same API answering downloads with a redirect to the store.
            serve(args.port + 2, SYNTHMED_DOWNLOAD_REDIRECT="true")
            base = f"http://127.0.0.1:{args.port}"
            raw = f"http://127.0.0.1:{args.port + 1}/"
            redirecting = f"http://127.0.0.1:{args.port + 2}"
            for url in (f"{base}/bench/bare", raw, f"{redirecting}/bench/bare"):
                for _ in range(300):
                    try:
                        if httpx.get(url).status_code == 200:
                            break
                    except httpx.HTTPError:
                        time.sleep(0.1)
            time.sleep(2)  # let every worker process finish starting
            print(f"synthmed serve: {args.workers} worker(s), loop={options['loop']}, "
                  f"http={options['http']}, same processes and settings for the API and the "
                  f"bare route; rate limit off; micro-cache "
                  f"{'off' if args.no_cache else 'on'}; load generator: "
                  f"{'wrk' if shutil.which('wrk') else 'python asyncio'}; "
                  f"{args.connections} connections, {args.seconds}s each")  # fmt: skip
            targets = {
                "GET /datasets": "/datasets",
                "GET /datasets/{slug}": f"/datasets/{slug}",
                "GET thumbnail": f"/datasets/{slug}/samples/0/thumb.webp",
            }
            for path in [*targets.values(), "/bench/bare"]:  # warm up
                load(base + path, args.warmup, args.connections)
            load(raw, args.warmup, args.connections)
            print(
                "baselines: 'route' = a FastAPI route returning fixed JSON in the same app; "
                "'raw' = plain uvicorn serving a raw ASGI app that returns the same JSON"
            )
            print(f"{'endpoint':22} {'req/s':>7} {'p50':>6} {'p99':>7}  "
                  f"{'route rps':>9} {'p99':>7} {'ratio':>5} {'p99 x':>5}  "
                  f"{'raw rps':>7} {'p99':>7} {'ratio':>5} {'p99 x':>5}")  # fmt: skip
            for label, path in targets.items():
                rps, p50, p99 = load(base + path, args.seconds, args.connections)
                b_rps, _, b_p99 = load(base + "/bench/bare", args.seconds, args.connections)
                r_rps, _, r_p99 = load(raw, args.seconds, args.connections)
                print(f"{label:22} {rps:7.0f} {p50:6.2f} {p99:7.2f}  "
                      f"{b_rps:9.0f} {b_p99:7.2f} {rps / b_rps:5.2f} {p99 / b_p99:5.2f}  "
                      f"{r_rps:7.0f} {r_p99:7.2f} {rps / r_rps:5.2f} {p99 / r_p99:5.2f}"
                      )  # fmt: skip

            from app.db import make_engine
            from app.tables import Dataset

            engine = make_engine(db_url)
            with Session(engine) as session:
                key = session.query(Dataset).filter_by(slug=big_slug).one().archive_key
            engine.dispose()
            url = f"{base}/datasets/{big_slug}/download"
            redirect_url = f"{redirecting}/datasets/{big_slug}/download"
            # Interleaved, best of --download-repeats each: the same treatment for every way.
            best: dict[str, float] = {}
            rss_growth = 0
            for _ in range(args.download_repeats):
                runs = {
                    "boto3": download_boto3(storage, key),
                    "streamed": download_api(url, server.pid),
                    "redirected": download_api(redirect_url, server.pid),
                    "httpx": download_api(url, server.pid, client="httpx"),
                }
                for way, (mbs, n, *growth) in runs.items():
                    assert n == size, (way, n, size)
                    best[way] = max(best.get(way, 0.0), mbs)
                    if way != "redirected" and growth:
                        rss_growth = max(rss_growth, growth[0])
            boto = best["boto3"]
            print(f"download {size / 1e6:.0f} MB, best of {args.download_repeats}: direct boto3 "
                  f"{boto:.0f} MB/s; through the API: redirected {best['redirected']:.0f} MB/s, "
                  f"ratio {best['redirected'] / boto:.2f}; streamed {best['streamed']:.0f} MB/s, "
                  f"ratio {best['streamed'] / boto:.2f} (urllib3 client), {best['httpx']:.0f} "
                  f"MB/s ({best['httpx'] / boto:.2f}) with an httpx client; streaming server's "
                  f"peak RSS growth {rss_growth / 1024:.1f} MB "
                  f"(all {args.workers} worker processes)")  # fmt: skip
            for server in servers:
                server.terminate()
                server.wait(timeout=10)
    finally:
        for server in servers:
            if server.poll() is None:
                server.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
