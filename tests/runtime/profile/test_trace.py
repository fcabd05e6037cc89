"""onnxruntime's profiler trace and the placement audit, on made-up traces shaped like recorded ones
(no GPU here: the CUDA audit is checked on a CUDA-shaped trace, end to end through the command)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runtime.profile.audit import audit
from runtime.profile.records import NodeTime
from runtime.profile.trace import parse_trace


def _node(name: str, op: str, ts: float, dur: float, provider: str = "CPUExecutionProvider", dtype="float") -> dict:
    return {
        "cat": "Node", "name": f"{name}_kernel_time", "ts": ts, "dur": dur, "ph": "X",
        "args": {"op_name": op, "provider": provider, "input_type_shape": [{dtype: [1, 3, 8, 8]}]},
    }  # fmt: skip


def _run(ts: float, dur: float) -> dict:
    return {"cat": "Session", "name": "model_run", "ts": ts, "dur": dur, "ph": "X", "args": {}}


def synthetic_trace(runs: list[dict[str, float]], provider: dict[str, str] | None = None) -> list[dict]:
    """One model_run per entry, each node's duration as given (us), nodes back to back."""
    ops = {"conv": "Conv", "copy_in": "MemcpyFromHost", "cast": "Cast", "gemm": "Gemm"}
    events = [{"cat": "Session", "name": "session_initialization", "ts": 0, "dur": 10, "ph": "X", "args": {}}]
    ts = 100.0
    for run in runs:
        start = ts
        for name, dur in run.items():
            events.append(
                _node(name, ops.get(name, "Relu"), ts + 1, dur, (provider or {}).get(name, "CUDAExecutionProvider"))
            )
            ts += dur + 2
        events.append(_run(start, ts - start + 1))
        ts += 50
    return events


def test_runs_after_the_warmup_give_each_nodes_times() -> None:
    events = synthetic_trace([{"conv": 1000, "gemm": 10}, {"conv": 100, "gemm": 20}, {"conv": 120, "gemm": 30}])
    trace = parse_trace(events, warmup=1)
    nodes = {n.name: n for n in trace.nodes}
    assert nodes["conv"].times_us == [100, 120] and nodes["conv"].median_us == 110  # the 1000 us warm-up dropped
    assert nodes["gemm"].op_type == "Gemm" and nodes["gemm"].precision == "fp32"
    assert len(trace.run_ms) == 2 and all(r > 0 for r in trace.run_ms)


def test_precision_is_the_data_input_type() -> None:
    events = [
        _run(0, 100),
        _node("q", "QLinearConv", 5, 10, dtype="uint8"),
        _node("h", "Conv", 20, 10, dtype="float16"),
    ]
    nodes = {n.name: n for n in parse_trace(events, warmup=0).nodes}
    assert nodes["q"].precision == "int8" and nodes["h"].precision == "fp16"


def test_too_few_runs_is_one_clear_error() -> None:
    from exporter.errors import UserError

    with pytest.raises(UserError, match="none after the 3 warm-up runs"):
        parse_trace(synthetic_trace([{"conv": 1}]), warmup=3)


def test_a_recorded_cpu_trace(tmp_path: Path) -> None:
    """A trace onnxruntime 1.31 wrote for a small Conv+ReLU graph (names, args and categories as recorded)."""
    events = json.loads((Path(__file__).parent / "data" / "ort_cpu_trace.json").read_text())
    trace = parse_trace(events, warmup=1)
    assert trace.nodes and all(n.provider == "CPUExecutionProvider" for n in trace.nodes)
    assert {n.op_type for n in trace.nodes} >= {"Conv"}
    placement = audit(trace.nodes, "cpu")
    assert placement.ok and placement.lines()[0].startswith(f"placement: all {len(trace.nodes)} compute nodes")


def test_cuda_audit_names_every_fallback_memcpy_and_cast() -> None:
    providers = {"gemm": "CPUExecutionProvider", "copy_in": "CUDAExecutionProvider"}
    events = synthetic_trace([{"copy_in": 5, "conv": 100, "cast": 7, "gemm": 30}] * 3, providers)
    nodes = parse_trace(events, warmup=0).nodes
    placement = audit(nodes, "cuda", graph_nodes=["conv", "gemm"])
    assert not placement.ok and placement.compute_nodes == 3  # the Memcpy is not a compute node
    assert [n.name for n in placement.off_device] == ["gemm"]
    assert [(n.name, n.median_us, n.inserted) for n in placement.memcpy] == [("copy_in", 5, True)]
    assert [(n.name, n.median_us, n.inserted) for n in placement.casts] == [("cast", 7, True)]
    lines = placement.lines()
    assert lines[0] == (
        "placement: 1 of 3 compute nodes are NOT on CUDAExecutionProvider: gemm (Gemm) on CPUExecutionProvider"
    )
    assert any("Memcpy: copy_in" in line and "5.0 us" in line for line in lines)
    good = audit([n for n in nodes if n.name != "gemm"], "cuda")
    assert good.ok and good.lines()[0] == "placement: all 2 compute nodes on CUDAExecutionProvider"


def _times(name: str, op: str, provider: str, us: float) -> NodeTime:
    return NodeTime(
        name=name, op_type=op, kernel=provider, provider=provider, precision="fp32", times_us=[us], median_us=us
    )


def test_fail_on_fallback_exits_1_on_a_cuda_trace(exported, tmp_path: Path, monkeypatch, capsys) -> None:
    """The command end to end on a CUDA-shaped run: the audit's first line, and exit 1 with --fail-on-fallback."""
    import shutil

    from runtime.machine import DeviceChoice
    from runtime.profile import runner
    from runtime.profile.__main__ import main
    from runtime.profile.collectors import EngineRun

    arts = tmp_path / "artifacts"
    shutil.copytree(exported("lenet5").directory, arts / "lenet5")
    graph_nodes = list(exported("lenet5").manifest.layers.nodes)
    conv = next(n for n in graph_nodes if n.endswith("Conv"))
    nodes = [
        _times("Memcpy_token_1", "MemcpyFromHost", "CUDAExecutionProvider", 4.0),
        _times(conv, "Conv", "CUDAExecutionProvider", 50.0),
        _times(graph_nodes[-1], "Gemm", "CPUExecutionProvider", 20.0),
    ]

    class FakeCollector:
        def __init__(self, config) -> None:
            self.config = config

        def __call__(self, graph, x, warmup, runs) -> EngineRun:
            return EngineRun("onnxruntime", "cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"], nodes,
                             [0.08], [0.09], [0.085], warmup, graph_nodes)  # fmt: skip

    monkeypatch.setattr(runner, "OnnxruntimeCollector", FakeCollector)
    monkeypatch.setattr(runner, "resolve_device", lambda config, needs_torch: DeviceChoice("cuda", "stub", []))
    args = ["lenet5", "--artifacts-dir", str(arts), "--output", str(tmp_path / "out"), "--no-peaks"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"{graph_nodes[-1]} (Gemm) on CPUExecutionProvider" in out and "Memcpy: Memcpy_token_1" in out
    assert main([*args, "--fail-on-fallback"]) == 1
    assert "NOT on CUDAExecutionProvider" in capsys.readouterr().err
