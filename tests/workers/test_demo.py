"""`synthmed demo` stops its children however it is stopped."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from tests.ports import free_port

# A process that, like the demo, starts a child and stops it in `finally`, then is sent a
# signal while it waits. Run apart from pytest: without the handler the signal kills it.
SCRIPT = """
import os, signal, subprocess, sys, time
from workers.demo import _stop, _stopped_by_termination
signal.signal(signal.{name}, signal.SIG_DFL)  # as a shell starts it, whatever ran pytest
quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # no pipe held open
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], **quiet)
try:
    with _stopped_by_termination():
        os.kill(os.getpid(), signal.{name})
        time.sleep(30)
except KeyboardInterrupt:
    print("interrupted", flush=True)
finally:
    _stop([child])
restored = signal.getsignal(signal.{name}) is signal.SIG_DFL
print("child", child.returncode, "handler restored", restored)
"""


@pytest.mark.parametrize("name", ["SIGTERM", "SIGHUP"])
def test_termination_stops_the_demo_as_ctrl_c_does(name: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(name=name)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "interrupted",
        f"child {-signal.SIGTERM} handler restored True",
    ]


def test_an_ignored_hangup_stays_ignored() -> None:
    from workers.demo import _stopped_by_termination

    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
    try:
        with _stopped_by_termination():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            assert callable(signal.getsignal(signal.SIGTERM))
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, before)


def test_a_taken_port_stops_the_demo_before_it_does_anything(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import workers.demo as demo

    def no_settings() -> None:
        raise AssertionError("the demo went on with its port taken")

    monkeypatch.setattr(demo, "get_settings", no_settings)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(typer.Exit) as stopped:
            demo.run_demo(port=port, count=1, steps=1)
    assert stopped.value.exit_code == 2
    assert f"port {port} is in use" in capsys.readouterr().err
    assert not demo._port_in_use(port)  # free once its listener closed


def test_ready_waits_for_the_server_to_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workers.demo import _wait_until_serving

    # A proxy in the environment (here one that refuses) must not stand in for the server.
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{free_port()}")
    (tmp_path / "healthz").write_text("ok")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_until_serving(server, f"http://127.0.0.1:{port}/healthz", timeout=30)
        with pytest.raises(typer.Exit):  # answers, but not 200
            _wait_until_serving(server, f"http://127.0.0.1:{port}/missing", timeout=1)
    finally:
        server.terminate()
        server.wait()


def test_a_server_that_exits_is_reported(capsys: pytest.CaptureFixture[str]) -> None:
    from workers.demo import _wait_until_serving

    server = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    server.wait()
    with pytest.raises(typer.Exit):
        _wait_until_serving(server, f"http://127.0.0.1:{free_port()}/healthz", timeout=30)
    assert "exited with code 3" in capsys.readouterr().err
