"""The benchmark: JSON/CSV schema, plot, parity gate, interruption, bad input."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import run_cli
from onnx import numpy_helper

import runtime.benchmark as benchmark
from runtime import bench


@pytest.fixture()
def arts(exported, tmp_path: Path) -> Path:
    """An artifacts folder holding lenet5 and resnet_cifar, as the exporter wrote them."""
    root = tmp_path / "artifacts"
    for name in ("lenet5", "resnet_cifar"):
        shutil.copytree(exported(name).onnx_path.parent, root / name)
    return root


def _run(arts: Path, out: Path, *extra: str) -> int:
    return bench.main(
        [
            "--models",
            "lenet5",
            "resnet_cifar",
            "--batch-sizes",
            "1",
            "3",
            "--iterations",
            "4",
            "--warmup",
            "1",
            "--threads",
            "1",
            "--output",
            str(out),
            "--artifacts-dir",
            str(arts),
            *extra,
        ]
    )


def test_bench_writes_json_csv_and_plot(arts: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench"
    assert _run(arts, out) == 0
    printed = capsys.readouterr()
    assert "ORT speedup" in printed.out and "resnet_cifar" in printed.out
    assert "running on CPU" in printed.err  # said loudly where no GPU is present

    doc = json.loads((out / "results.json").read_text())
    env = doc["environment"]
    for key in ("cpu_model", "cpu_cores", "gpu_name", "torch", "onnxruntime", "onnx", "providers", "threads"):
        assert key in env
    assert doc["device"] == "cpu" and doc["interrupted"] is False
    assert doc["parity"]["lenet5:fp32"]["passed"] is True
    rows = doc["results"]
    assert len(rows) == 2 * 2 * 2
    for r in rows:
        assert r["status"] == "ok" and r["iterations"] == 4
        assert 0 < r["min_ms"] <= r["median_ms"] <= r["p99_ms"] + 1e-9
        assert r["throughput_ips"] == pytest.approx(r["batch_size"] / r["median_ms"] * 1e3)
    ort_rows = [r for r in rows if r["engine"] == "onnxruntime"]
    for r in ort_rows:
        pt = next(
            p
            for p in rows
            if p["engine"] == "pytorch" and p["model"] == r["model"] and p["batch_size"] == r["batch_size"]
        )
        assert r["speedup_vs_pytorch"] == pytest.approx(pt["median_ms"] / r["median_ms"])

    with open(out / "results.csv", newline="") as fh:
        csv_rows = list(csv.DictReader(fh))
    assert len(csv_rows) == len(rows)
    assert {
        "model",
        "engine",
        "device",
        "batch_size",
        "median_ms",
        "p90_ms",
        "p99_ms",
        "std_ms",
        "throughput_ips",
        "speedup_vs_pytorch",
        "env_cpu_model",
        "env_torch",
        "env_onnxruntime",
        "env_providers",
    } <= set(csv_rows[0])

    png = (out / "latency.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    from PIL import Image

    img = np.asarray(Image.open(out / "latency.png").convert("L"))
    assert img.shape[0] > 200 and img.std() > 10, "plot is blank"


def test_graph_failing_parity_is_reported_not_timed(arts: Path, tmp_path: Path) -> None:
    path = arts / "lenet5" / "lenet5.onnx"
    model = onnx.load(str(path))
    init = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 1.2, init.name))
    tampered = tmp_path / "tampered.onnx"
    onnx.save(model, str(tampered))
    out = tmp_path / "bench"
    code = bench.main(
        [
            "--models",
            "lenet5",
            "--onnx",
            str(tampered),
            "--batch-sizes",
            "2",
            "--iterations",
            "2",
            "--output",
            str(out),
            "--artifacts-dir",
            str(arts),
        ]
    )
    assert code == 1
    rows = json.loads((out / "results.json").read_text())["results"]
    assert [r["status"] for r in rows if r["engine"] == "onnxruntime"] == ["parity-failed"]
    assert "median_ms" not in next(r for r in rows if r["engine"] == "onnxruntime")


def test_ctrl_c_keeps_what_was_measured(arts: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = benchmark.time_engine
    calls = {"n": 0}

    def interrupting(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(benchmark, "time_engine", interrupting)
    out = tmp_path / "bench"
    assert _run(arts, out) == 130
    doc = json.loads((out / "results.json").read_text())
    assert doc["interrupted"] is True and len(doc["results"]) == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["--models", "lenet6"], "unknown model 'lenet6'"),
        (["--models", "lenet5", "--batch-sizes", "0"], "batch sizes must be at least 1"),
        (["--models", "lenet5", "--onnx", "corrupt.onnx"], "cannot load"),
        (["--models", "lenet5", "--onnx", "absent.onnx"], "not found"),
        (["--models", "lenet5", "--iterations", "0"], "--iterations must be at least 1"),
    ],
)
def test_bad_input_is_one_clear_line(args: list[str], message: str, arts: Path, tmp_path: Path) -> None:
    (tmp_path / "corrupt.onnx").write_bytes(b"\x00\x01 definitely not onnx")
    proc = run_cli("runtime.bench", *args, "--artifacts-dir", str(arts), "--output", str(tmp_path / "b"), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_missing_artifact_is_exported_first(tmp_path: Path) -> None:
    arts = tmp_path / "artifacts"
    code = bench.main(
        [
            "--models",
            "lenet5",
            "--batch-sizes",
            "1",
            "--iterations",
            "2",
            "--engines",
            "onnxruntime",
            "--output",
            str(tmp_path / "b"),
            "--artifacts-dir",
            str(arts),
        ]
    )
    assert code == 0
    assert (arts / "lenet5" / "lenet5.onnx").is_file() and (arts / "lenet5" / "manifest.json").is_file()


def _cuda_ready() -> bool:
    try:
        import torch

        from runtime.sessions import cuda_provider_built

        return torch.cuda.is_available() and cuda_provider_built()
    except ImportError:
        return False


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda_ready(), reason="no CUDA GPU with onnxruntime-gpu")
@pytest.mark.parametrize("io_binding", [True, False])
def test_cuda_bench_with_and_without_io_binding(arts: Path, tmp_path: Path, io_binding: bool) -> None:
    out = tmp_path / "bench"
    args = [
        "--models",
        "resnet_cifar",
        "--device",
        "cuda",
        "--batch-sizes",
        "1",
        "8",
        "--iterations",
        "20",
        "--output",
        str(out),
        "--artifacts-dir",
        str(arts),
    ]
    assert bench.main(args + ([] if io_binding else ["--no-io-binding"])) == 0
    doc = json.loads((out / "results.json").read_text())
    assert doc["device"] == "cuda" and doc["environment"]["gpu_name"]
    ort_rows = [r for r in doc["results"] if r["engine"] == "onnxruntime"]
    assert all(r["device"] == "cuda" and r["io_binding"] is io_binding for r in ort_rows)
    assert all(r["cudnn_conv_algo_search"] == "EXHAUSTIVE" for r in ort_rows)
    assert all(r["tf32"] is not None for r in doc["results"])


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda_ready(), reason="no CUDA GPU with onnxruntime-gpu")
def test_cuda_fp16_variant_agrees_with_fp32(arts: Path) -> None:
    from exporter.variants import build_variant
    from runtime.parity import check

    build_variant("resnet_cifar", precision="fp16", output_dir=arts)
    report = check("resnet_cifar", precision="fp16", device="cuda", batch_sizes=(1, 16), output_dir=arts)
    assert report.device == "cuda" and report.passed
    assert all(r.top1_agreement >= 0.99 for r in report.results)
