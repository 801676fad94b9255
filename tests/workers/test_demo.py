"""`synthmed demo` stops its children however it is stopped."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

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
