"""Fixtures of the tune tests: one small tune run of resnet_cifar on the CPU, shared by the tests that read it."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import run_cli

#: A tune kept to about a minute here: two batch sizes, two engines, fp32 and int8, few windows.
QUICK_TUNE = [
    "--batch-size", "1", "4", "--engines", "onnxruntime", "openvino", "--precision", "fp32", "int8",
    "--screen-windows", "3", "--screen-seconds", "0.3", "--confirm-seconds", "20", "--finalists", "2",
    "--threads", "2",
]  # fmt: skip


@dataclass
class Tuned:
    arts: Path
    out: Path
    result: subprocess.CompletedProcess[str]


@pytest.fixture(scope="session")
def tune_arts(exported, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private artifacts folder with resnet_cifar (its int8 variant is built by the first tune)."""
    root = tmp_path_factory.mktemp("tune-artifacts")
    shutil.copytree(exported("resnet_cifar").onnx_path.parent, root / "resnet_cifar")
    return root


@pytest.fixture(scope="session")
def tuned(tune_arts: Path, tmp_path_factory: pytest.TempPathFactory) -> Tuned:
    pytest.importorskip("openvino")
    pytest.importorskip("tritonclient.grpc")
    out = tmp_path_factory.mktemp("tune") / "out"
    result = run_cli("runtime.tune", "resnet_cifar", "--target", "throughput", *QUICK_TUNE,
                     "--artifacts-dir", str(tune_arts), "--output", str(out), timeout=900,
                     env={"COLUMNS": "100"})  # fmt: skip
    return Tuned(tune_arts, out, result)
