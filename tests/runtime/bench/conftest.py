"""Fixtures of the benchmark tests: small exported models in a private artifacts folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

#: Arguments that keep a benchmark run to a second or two: tiny models, few samples, no time minimum.
QUICK = [
    "--engines",
    "onnxruntime",
    "pytorch",
    "--min-samples",
    "3",
    "--min-seconds",
    "0",
    "--warmup",
    "1",
    "--threads",
    "1",
    "--no-roofline",
]


@pytest.fixture()
def arts(exported, tmp_path: Path) -> Path:
    """An artifacts folder holding lenet5 and resnet_cifar, as the exporter wrote them."""
    root = tmp_path / "artifacts"
    for name in ("lenet5", "resnet_cifar"):
        shutil.copytree(exported(name).onnx_path.parent, root / name)
    return root


# Kept importable from here for bench tests written before the helper moved to tests/helpers.py.
from tests.helpers import strict_load  # noqa: E402, F401
