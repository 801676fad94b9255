"""The layout's import rules: models/ is a torch library; the web process stays light."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def _imports(package: str) -> list[tuple[str, str]]:
    found = []
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found += [(str(path.relative_to(ROOT)), a.name) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.append((str(path.relative_to(ROOT)), node.module))
    return found


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("models", ("app", "workers", "fastapi", "boto3", "celery", "sqlalchemy")),
        ("app", ("workers", "models", "torch")),
    ],
)
def test_import_direction(package: str, forbidden: tuple[str, ...]) -> None:
    bad = [(f, m) for f, m in _imports(package) if m.split(".")[0] in forbidden]
    assert bad == []


def test_web_process_does_not_import_torch() -> None:
    code = (
        "import sys; from app.main import create_app; create_app(); "
        "assert 'torch' not in sys.modules, 'torch imported'; "
        "assert 'models' not in sys.modules, 'models imported'"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
