"""Shared fixtures: one export per model per test session, in a temporary artifacts folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from exporter.pipeline import ExportResult, export_model  # noqa: E402


@pytest.fixture(scope="session")
def artifacts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("artifacts")


class _Exports:
    """Exports each zoo model once at opset 17 and hands back the cached result."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._done: dict[str, ExportResult] = {}

    def __call__(self, name: str) -> ExportResult:
        if name not in self._done:
            self._done[name] = export_model(name, opset=17, output_dir=self.root)
        return self._done[name]


@pytest.fixture(scope="session")
def exported(artifacts_dir: Path) -> _Exports:
    return _Exports(artifacts_dir)


def run_cli(
    *args: str, cwd: Path | None = None, timeout: int = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m <args>`` as a user would, capturing output; ``env`` overrides variables."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="200", **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=cwd or ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
