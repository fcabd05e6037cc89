"""Fixtures of the exporter tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.export import export_model
from exporter.train import train


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """lenet5 trained on the digits (about 10 s) and exported with its weights, once per session.

    Tests may add variants to it; none may change its fp32 graph or weights."""
    root = tmp_path_factory.mktemp("trained")
    result = train("lenet5", output_dir=root, log=lambda _m: None)
    assert result.test_accuracy >= 0.9, result
    return export_model("lenet5", weights=result.checkpoint, output_dir=root).directory
