"""The engines users would pick instead: each says clearly why it cannot run, and is parity-checked first."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from runtime import sessions
from runtime.bench import engines
from runtime.bench.__main__ import main
from tests.helpers import strict_load

from .conftest import QUICK


def test_openvino_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    why = engines.unavailable_reason("openvino", "cpu")
    assert why == "not installed: pip install -e '.[openvino]' (or pip install openvino)"


def test_openvino_is_cpu_only() -> None:
    pytest.importorskip("openvino")
    assert engines.unavailable_reason("openvino", "cuda") == "runs on CPU only, and this run is on cuda"


def test_torch_compile_without_a_compiler(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engines.shutil, "which", lambda _name: None)
    assert "needs a C++ compiler (apt-get install g++)" in engines.unavailable_reason("torch-compile", "cpu")


def test_torch_compile_on_cuda_without_triton(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "triton", None)
    assert engines.unavailable_reason("torch-compile", "cuda") == "inductor needs triton on CUDA: pip install triton"


def test_tensorrt_is_cuda_only() -> None:
    assert engines.unavailable_reason("tensorrt", "cpu") == "CUDA only, and this run is on cpu"


def test_tensorrt_listed_by_onnxruntime_but_libraries_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    """onnxruntime-gpu lists the TensorRT provider even without libnvinfer; that must read as unavailable."""
    import ctypes

    monkeypatch.setattr(
        sessions.ort, "get_available_providers", lambda: [sessions.TENSORRT_PROVIDER, "CPUExecutionProvider"]
    )
    monkeypatch.setattr(sessions, "_no_gpu_reason", lambda: None)
    monkeypatch.setattr(sessions, "preload_cuda_libraries", lambda: None)

    def no_library(*_a, **_k):
        raise OSError("libnvinfer.so.10: cannot open shared object file")

    monkeypatch.setattr(ctypes, "CDLL", no_library)
    monkeypatch.setitem(sys.modules, "tensorrt_libs", None)
    why = engines.unavailable_reason("tensorrt", "cuda")
    assert why is not None and "libnvinfer" in why and "pip install tensorrt" in why


def test_tensorrt_missing_from_the_onnxruntime_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sessions.ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert "no TensorRT execution provider" in engines.unavailable_reason("tensorrt", "cuda")


def test_unavailable_engine_is_named_and_the_others_run(
    arts: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)
    out = tmp_path / "bench"
    args = ["--models", "lenet5", "--batch-size", "1", *QUICK, "--engines", "onnxruntime", "openvino"]
    assert main([*args, "--output", str(out), "--artifacts-dir", str(arts)]) == 0
    err = capsys.readouterr().err
    assert "openvino: not available (not installed: pip install -e '.[openvino]' (or pip install openvino))" in err
    doc = strict_load(out / "results.json")
    assert doc["skipped_engines"]["openvino"].startswith("not installed")
    assert [r["engine"] for r in doc["rows"]] == ["onnxruntime"]


def test_no_engine_can_run_is_one_line(arts: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--models", "lenet5", *QUICK, "--engines", "tensorrt", "--device", "cpu"]
    assert main([*args, "--output", str(tmp_path / "b"), "--artifacts-dir", str(arts)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "error: no engine can run here: tensorrt: CUDA only, and this run is on cpu"
    assert not (tmp_path / "b" / "results.json").exists()


def test_openvino_times_the_same_graph_after_parity(arts: Path, tmp_path: Path, capsys) -> None:
    pytest.importorskip("openvino")
    out = tmp_path / "bench"
    args = [
        "--models",
        "lenet5",
        "--batch-size",
        "2",
        *QUICK,
        "--engines",
        "openvino",
        "pytorch",
        "--precision",
        "fp32",
        "bf16",
    ]
    assert main([*args, "--output", str(out), "--artifacts-dir", str(arts)]) == 0
    doc = strict_load(out / "results.json")
    ov = [r for r in doc["rows"] if r["engine"] == "openvino"]
    fp32 = next(r for r in ov if r["precision"] == "fp32")
    assert fp32["status"] == "ok" and fp32["parity"] == "pass"
    assert fp32["graph"] == str(arts / "lenet5" / "lenet5.onnx")  # the file onnxruntime runs
    assert fp32["settings"]["inference_precision_hint"] in ("f32", "<Type: 'float32'>")
    assert fp32["settings"]["inference_num_threads"] == "1" and fp32["setup_seconds"] > 0
    assert any(p["engine"] == "openvino" and p["record"]["passed"] for p in doc["parity"])
    from runtime.bench.engines import openvino_bf16_missing

    why = openvino_bf16_missing()
    if why:  # this CPU has no bf16: said, recorded, no row
        assert doc["skipped_engines"]["openvino bf16"] == why and len(ov) == 1
        assert "openvino bf16: not available (this CPU has no bf16 arithmetic" in capsys.readouterr().err
    else:
        bf16 = next(r for r in ov if r["precision"] == "bf16")
        assert bf16["status"] == "ok" and bf16["settings"]["inference_precision_hint"] in ("bf16", "<Type: 'bfloat16'>")


def test_torch_compile_compile_time_is_separate(arts: Path, tmp_path: Path) -> None:
    if engines.unavailable_reason("torch-compile", "cpu"):
        pytest.skip(engines.unavailable_reason("torch-compile", "cpu"))
    out = tmp_path / "bench"
    args = ["--models", "lenet5", "--batch-size", "1", *QUICK, "--engines", "torch-compile", "pytorch"]
    assert main([*args, "--output", str(out), "--artifacts-dir", str(arts)]) == 0
    rows = {r["engine"]: r for r in strict_load(out / "results.json")["rows"]}
    tc = rows["torch-compile"]
    assert tc["status"] == "ok" and tc["parity"] == "pass" and tc["settings"]["freezing"] is True
    # compiling takes seconds; the timed calls of a compiled lenet5 take a fraction of a millisecond
    assert tc["setup_seconds"] > 1.0 and tc["median_ms"] < tc["setup_seconds"] * 1000 / 10
    assert rows["pytorch"]["setup_seconds"] is None
