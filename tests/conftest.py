"""Shared fixtures: one export per zoo model per test session, in a temporary artifacts folder, and
private copies of it for tests that change an artifact."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from exporter.export import ExportResult, export_model
from exporter.train import train
from tests.strict_skips import pytest_make_collect_report, pytest_runtest_makereport  # noqa: F401  (CI's skip rule)


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


@pytest.fixture()
def lenet_dir(exported: _Exports, tmp_path: Path) -> Path:
    """A private copy of the lenet5 artifact (random weights) at ``tmp_path/artifacts/lenet5``."""
    directory = tmp_path / "artifacts" / "lenet5"
    shutil.copytree(exported("lenet5").directory, directory)
    return directory


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """lenet5 trained on the digits (about 10 s) and exported with its weights, once per session.

    Tests may add variants to it; none may change its fp32 graph or weights."""
    root = tmp_path_factory.mktemp("trained")
    result = train("lenet5", output_dir=root, log=lambda _m: None)
    assert result.test_accuracy >= 0.9, result
    return export_model("lenet5", weights=result.checkpoint, output_dir=root).directory
