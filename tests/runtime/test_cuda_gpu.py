"""On a GPU: inference really runs on CUDA (every compute node on the CUDA provider, no copy between devices
inside the graph), for the fp32, fp16 and int8 graphs, and ``python -m runtime.parity --device cuda`` checks
each there with CUDA's tolerances. All skip without CUDA (the only skips CI allows)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from exporter import artifact as art
from runtime.compare import compare, default_tolerance
from runtime.sessions import SessionConfig, create_session, run
from tests.helpers import cuda_ready, run_cli, strict_loads

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not cuda_ready(), reason="no CUDA GPU with onnxruntime-gpu")]


@pytest.fixture(scope="module")
def resnet_variants(exported, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of resnet_cifar's artifact with its fp16 and int8 variants (built and verified on the CPU)."""
    from exporter.variants import build_variant

    directory = tmp_path_factory.mktemp("gpu") / "resnet_cifar"
    shutil.copytree(exported("resnet_cifar").directory, directory)
    for key in ("fp16", "int8"):
        build_variant(directory, art.VariantKey(key))
    return directory


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_inference_runs_on_cuda_with_every_node_there(resnet_variants: Path, precision: str) -> None:
    from runtime.bench.placement import audit_graph

    artifact = art.open_artifact(resnet_variants)
    graph = artifact.path(art.VariantKey(precision)).read_bytes()
    sess, info = create_session(graph, SessionConfig(device="cuda"))
    assert info.device == "cuda" and info.providers[0] == "CUDAExecutionProvider", info
    x = np.random.default_rng(3).uniform(-1, 1, (4, 3, 32, 32)).astype(np.float32)
    if sess.get_inputs()[0].type == "tensor(float16)":
        x = x.astype(np.float16)
    on_gpu = np.asarray(run(sess, x)[0], np.float32)
    cpu_sess, cpu_info = create_session(graph, SessionConfig(device="cpu"))
    assert cpu_info.providers[0] == "CPUExecutionProvider"
    on_cpu = np.asarray(run(cpu_sess, x)[0], np.float32)
    # the same graph on both providers: within what CUDA's kernels (TF32 for fp32) are allowed to differ
    result = compare(on_cpu, on_gpu, default_tolerance("cuda", precision))
    assert result.passed, result.failures
    placement, summary = audit_graph(graph, SessionConfig(device="cuda"), x)
    assert summary.clean and summary.off_device == 0, summary.line
    assert placement.memcpy == [] and placement.off_device == [], summary.line


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_parity_cli_on_cuda(resnet_variants: Path, precision: str) -> None:
    proc = run_cli(
        "runtime.parity", str(resnet_variants), "--device", "cuda", "--precision", precision, "--no-rebuild", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    doc = strict_loads(proc.stdout)
    assert doc["device"] == "cuda" and doc["providers"][0] == "CUDAExecutionProvider", doc["providers"]  # type: ignore[index]
    assert doc["precision"] == precision and doc["passed"] is True  # type: ignore[index]
    recorded = art.open_artifact(resnet_variants).manifest
    record = recorded.parity if precision == "fp32" else recorded.variants[precision].parity
    # CUDA's own tolerance: a variant's recorded tolerance applies on the device it was verified on (the CPU)
    assert record.device == "cpu"
    assert doc["tolerance"] == default_tolerance("cuda", precision).model_dump(mode="json")  # type: ignore[index]
    assert doc["batch_sizes"] == record.batch_sizes and doc["seed"] == record.seed  # type: ignore[index]


def test_device_cuda_never_falls_back_silently(resnet_variants: Path) -> None:
    """Where CUDA works, --device cuda says so in the report's providers; the fp32 verdict matches the CPU's."""
    cpu = strict_loads(run_cli("runtime.parity", str(resnet_variants), "--device", "cpu", "--json").stdout)
    gpu = strict_loads(run_cli("runtime.parity", str(resnet_variants), "--device", "cuda", "--json").stdout)
    assert cpu["providers"][0] == "CPUExecutionProvider" and gpu["providers"][0] == "CUDAExecutionProvider"  # type: ignore[index]
    assert cpu["passed"] is gpu["passed"] is True  # type: ignore[index]
