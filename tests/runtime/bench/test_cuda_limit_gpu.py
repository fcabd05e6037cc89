"""On a GPU: each CUDA setting really happens (providers and options read back, no compute node on the CPU,
no Memcpy inside the graph, fp16 I/O without boundary Casts, CUDA-graph replay equal to plain runs,
TensorRT's engine cache reused, torch.compile in max-autotune). All skip without CUDA."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from runtime.bench.__main__ import main
from runtime.bench.cuda import bind
from runtime.bench.placement import audit_graph
from runtime.cudaep import nhwc_support
from runtime.sessions import SessionConfig, create_session
from tests.helpers import cuda_ready, strict_load

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not cuda_ready(), reason="no CUDA GPU with onnxruntime-gpu")]

QUICK_CUDA = ["--device", "cuda", "--min-samples", "20", "--min-seconds", "0.2"]


def _bench(arts: Path, out: Path, *args: str) -> dict:
    assert main([*args, *QUICK_CUDA, "--output", str(out), "--artifacts-dir", str(arts)]) == 0
    return strict_load(out / "results.json")


def test_nhwc_is_read_back_and_changes_the_layout(arts: Path) -> None:
    support = nhwc_support()
    if not support.supported:
        pytest.skip(support.reason)
    graph = (arts / "resnet_cifar" / "resnet_cifar.onnx").read_bytes()
    _, info = create_session(graph, SessionConfig(device="cuda", prefer_nhwc=True))
    assert info.read_back["CUDAExecutionProvider"]["prefer_nhwc"] == "1", info.read_back
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 32, 32)).astype(np.float32)
    _, nhwc = audit_graph(graph, SessionConfig(device="cuda", prefer_nhwc=True), x)
    _, nchw = audit_graph(graph, SessionConfig(device="cuda"), x)
    assert nhwc.clean and nchw.clean, (nhwc.line, nchw.line)
    assert nhwc.inserted_transposes > 0 and nchw.inserted_transposes == 0, (nhwc.line, nchw.line)


def test_every_cuda_setting_is_recorded_and_happens(arts: Path, tmp_path: Path) -> None:
    extra = ["--nhwc"] if nhwc_support().supported else []
    doc = _bench(
        arts,
        tmp_path / "bench",
        *["--models", "resnet_cifar", "--batch-size", "1", "8", "--precision", "fp32", "fp16"],
        *["--engines", "onnxruntime", "--fp16-io", "--placement-audit", *extra],
    )
    rows = [r for r in doc["rows"] if r["engine"] == "onnxruntime"]
    assert len(rows) == 4 and all(r["status"] == "ok" and r["device"] == "cuda" for r in rows)
    for r in rows:
        s = r["settings"]
        assert s["providers"].startswith("CUDAExecutionProvider") and s["placement_clean"] is True, s["placement"]
        assert (
            s["read_back_cudnn_conv_use_max_workspace"] == "1" and s["read_back_cudnn_conv_algo_search"] == "EXHAUSTIVE"
        )
        assert s["cuda_graph_mode"] == "auto" and s["cuda_graph_decision"].startswith("auto: ")
        assert s["cuda_graph_ab_pairs"] > 0 and s["cuda_graph_replay_max_abs_diff"] <= 5e-2
        assert (r["cold_start"]["capture_s"] is not None) is s["cuda_graph"]
        if extra:
            assert s["prefer_nhwc"] is True and s["read_back_prefer_nhwc"] == "1"
    for r in rows:
        if r["precision"] == "fp16":
            s = r["settings"]
            assert s["io_dtype"] == "float16" and "on the GPU" in s["input_transfer"]
            assert "graph_input_cast0" in s["boundary_casts_removed"]
    placements = {e["precision"]: e for e in doc["placements"]}
    assert set(placements) == {"fp32", "fp16"} and all(e["clean"] for e in placements.values())
    assert all(p["placement"]["memcpy"] == [] and p["placement"]["off_device"] == [] for p in placements.values())
    assert placements["fp16"]["placement"]["casts"] == [], "fp16 I/O leaves no Cast in resnet_cifar's graph"
    assert all(r["peak_precision"] == {"fp32": "tf32", "fp16": "fp16"}[r["precision"]] for r in rows)


def test_cuda_graph_replay_equals_plain_runs(arts: Path) -> None:
    graph = (arts / "resnet_cifar" / "resnet_cifar.onnx").read_bytes()
    plain_sess, _ = create_session(graph, SessionConfig(device="cuda", cudnn_conv_algo_search="DEFAULT"))
    graph_sess, info = create_session(
        graph, SessionConfig(device="cuda", cudnn_conv_algo_search="DEFAULT", cuda_graph=True)
    )
    assert info.read_back["CUDAExecutionProvider"]["enable_cuda_graph"] == "1"
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (4, 3, 32, 32)).astype(np.float32)
    plain, replay = bind(plain_sess, x, cuda_graph=False), bind(graph_sess, x, cuda_graph=True)
    plain.step()
    for _ in range(3):  # allocate, capture, replay
        replay.step()
    np.testing.assert_allclose(replay.outputs()[0], plain.outputs()[0], atol=1e-2, rtol=1e-2)
    before = replay.outputs()[0]
    # a replay reads the bound input afresh: new data in the same buffer gives the new answer
    x2 = rng.uniform(-1, 1, x.shape).astype(np.float32)
    plain.keep[0].update_inplace(x2)
    replay.keep[0].update_inplace(x2)
    plain.step()
    replay.step()
    np.testing.assert_allclose(replay.outputs()[0], plain.outputs()[0], atol=1e-2, rtol=1e-2)
    assert not np.allclose(replay.outputs()[0], before), "the replay ignored the new input"


def test_tensorrt_reuses_its_engine_cache(arts: Path, tmp_path: Path) -> None:
    from runtime.bench.engines import unavailable_reason

    why = unavailable_reason("tensorrt", "cuda")
    if why:
        pytest.skip(f"tensorrt: {why}")
    args = ["--models", "resnet_cifar", "--batch-size", "4", "--engines", "tensorrt", "--precision", "fp16"]
    first = _bench(arts, tmp_path / "one", *args)["rows"][0]
    second = _bench(arts, tmp_path / "two", *args)["rows"][0]
    assert first["status"] == second["status"] == "ok" and first["parity"] == "pass"
    assert first["cold_start"]["engine_cached"] is False and second["cold_start"]["engine_cached"] is True
    assert second["cold_start"]["build_s"] < first["cold_start"]["build_s"]
    s = first["settings"]
    assert (
        s["tensorrt"]
        and s["trt_profile_opt_shapes"].endswith(":4x3x32x32")
        and s["engine_cache"] == second["settings"]["engine_cache"]
    )
    assert any(Path(s["engine_cache"]).glob("*.engine")) and first["peak_precision"] == "fp16"


def test_parity_and_explain_on_tensorrt(arts: Path, capsys) -> None:
    from runtime.bench.engines import unavailable_reason
    from runtime.parity.__main__ import main as parity_main

    why = unavailable_reason("tensorrt", "cuda")
    if why:
        pytest.skip(f"tensorrt: {why}")
    folder = str(arts / "resnet_cifar")
    assert parity_main([folder, "--engine", "tensorrt", "--precision", "fp16", "--explain"]) == 0
    out = capsys.readouterr().out
    assert "TensorrtExecutionProvider" in out and "per layer, fp16 vs fp32 graph" in out


def test_torch_compile_runs_max_autotune_on_cuda(arts: Path, tmp_path: Path) -> None:
    doc = _bench(
        arts,
        tmp_path / "bench",
        "--models",
        "resnet_cifar",
        "--batch-size",
        "2",
        "--engines",
        "torch-compile",
        "pytorch",
    )
    row = next(r for r in doc["rows"] if r["engine"] == "torch-compile")
    assert row["status"] == "ok" and row["parity"] == "pass", row.get("reason")
    assert row["settings"]["mode"] == "max-autotune" and row["settings"]["cuda_graphs"] is True
    assert row["cold_start"]["compile_s"] > 0
