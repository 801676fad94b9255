"""docker compose cannot run here: check the file by parsing it and by running the same
commands its services run."""

from __future__ import annotations

import subprocess
import sys

import yaml

from tests.conftest import ROOT


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_services_and_dependencies() -> None:
    services = _compose()["services"]
    assert {"postgres", "redis", "s3", "migrate", "web", "worker"} <= set(services)
    assert services["web"]["depends_on"]["migrate"]["condition"] == (
        "service_completed_successfully"
    )
    worker_env = services["worker"]["environment"]
    assert worker_env["SYNTHMED_BROKER_URL"].startswith("redis://")
    assert "--queues" in services["worker"]["command"]
    for name in ("migrate", "web", "worker"):
        env = services[name]["environment"]
        assert env["SYNTHMED_STORAGE_URL"].startswith("s3://")
        # Secrets are interpolated from .env, never written into the file.
        assert env["SYNTHMED_STORAGE_SECRET_KEY"].startswith("${")


def test_service_commands_exist() -> None:
    for name in ("migrate", "web", "worker"):
        command = _compose()["services"][name]["command"]
        assert command[0] == "synthmed"
        result = subprocess.run(
            [sys.executable, "-m", "workers.cli", command[1], "--help"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        for option in (arg for arg in command[2:] if arg.startswith("--")):
            assert option in result.stdout, f"{name}: {option} not accepted by synthmed"
