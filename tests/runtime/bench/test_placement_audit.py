"""--placement-audit: every compute node on the expected provider and no Memcpy inside the graph, recorded
per row; the verdict and its line from made-up placements and traces, the whole path on the CPU provider."""

from __future__ import annotations

from pathlib import Path

from runtime.bench.__main__ import main
from runtime.bench.placement import summarize
from runtime.profile.audit import audit
from runtime.profile.records import NodeTime, PlacedNode, Placement
from runtime.profile.trace import parse_trace
from tests.helpers import strict_load

from .conftest import QUICK


def _node(name: str, op: str, provider: str = "CUDAExecutionProvider", us: float = 5.0) -> NodeTime:
    return NodeTime(
        name=name, op_type=op, kernel=provider, provider=provider, precision="fp16", times_us=[us], median_us=us
    )


def test_a_clean_cuda_graph() -> None:
    nodes = [_node("conv1", "Conv"), _node("relu", "Relu"), _node("fc", "Gemm")]
    s = summarize(audit(nodes, "cuda", [n.name for n in nodes]))
    assert s.clean and s.line == "all 3 compute nodes on CUDAExecutionProvider; no Memcpy; no Cast"


def test_a_fallback_and_its_memcpy_are_named() -> None:
    nodes = [
        _node("conv1", "Conv"),
        _node("lrn", "LRN", "CPUExecutionProvider"),
        _node("Memcpy_token_1", "MemcpyToHost"),
        _node("Memcpy_token_2", "MemcpyFromHost"),
    ]
    s = summarize(audit(nodes, "cuda", ["conv1", "lrn"]))
    assert not s.clean and (s.off_device, s.memcpy) == (1, 2)
    assert s.line.startswith("1 of 2 compute nodes NOT on CUDAExecutionProvider: lrn (LRN) on CPUExecutionProvider")
    assert "2 Memcpy inside the graph (Memcpy_token_1, Memcpy_token_2)" in s.line


def test_memcpy_alone_makes_a_graph_unclean() -> None:
    """Every compute node on CUDA, but a tensor still crosses to the host inside the graph."""
    p = Placement(
        device="cuda",
        expected_provider="CUDAExecutionProvider",
        compute_nodes=3,
        memcpy=[PlacedNode(name="m", op_type="MemcpyToHost", provider="CUDAExecutionProvider", inserted=True)],
    )
    assert p.ok and not summarize(p).clean


def test_casts_and_layout_transposes_are_counted() -> None:
    nodes = [_node("graph_input_cast0", "Cast"), _node("conv", "Conv"), _node("InsertedCast_x", "Cast")]
    s = summarize(audit(nodes, "cuda", ["graph_input_cast0", "conv"]), transposes=2)
    assert s.clean and s.casts == 2
    assert s.line.endswith("2 Casts (1 inserted by onnxruntime); 2 layout Transposes inserted")


def test_a_synthetic_trace_audits_like_a_real_one() -> None:
    def run(ts: int) -> list[dict]:
        return [
            {"cat": "Session", "name": "model_run", "ts": ts, "dur": 100},
            *[
                {
                    "cat": "Node",
                    "name": f"{n}_kernel_time",
                    "ts": ts + 10 + i,
                    "dur": 5,
                    "args": {"op_name": op, "provider": pr},
                }
                for i, (n, op, pr) in enumerate(
                    [("conv", "Conv", "CUDAExecutionProvider"), ("shape", "Shape", "CPUExecutionProvider")]
                )
            ],
        ]

    trace = parse_trace(run(0) + run(1000), warmup=1)
    s = summarize(audit(trace.nodes, "cuda", ["conv", "shape"]))
    assert not s.clean and "shape (Shape) on CPUExecutionProvider" in s.line


def test_the_bench_records_each_graphs_placement(arts: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench"
    args = ["--models", "lenet5", "--batch-size", "1", "2", "--precision", "fp32", "fp16", *QUICK, "--placement-audit"]
    assert main([*args, "--fp16-io", "--output", str(out), "--artifacts-dir", str(arts)]) == 0
    doc = strict_load(out / "results.json")
    entries = {e["precision"]: e for e in doc["placements"]}
    assert set(entries) == {"fp32", "fp16"} and all(e["clean"] and e["batch_size"] == 1 for e in entries.values())
    assert entries["fp32"]["line"].startswith("all ") and "CPUExecutionProvider" in entries["fp32"]["line"]
    assert entries["fp16"]["settings"]["fp16_io"] is True
    # on the CPU provider the fp16 graph's own boundary Casts are gone; onnxruntime inserts its own
    casts = entries["fp16"]["placement"]["casts"]
    assert casts and all(c["inserted"] for c in casts)
    rows = [r for r in doc["rows"] if r["engine"] == "onnxruntime"]
    assert len(rows) == 4 and all(r["settings"]["placement_clean"] is True for r in rows)
    assert {r["settings"]["placement"] for r in rows} == {e["line"] for e in entries.values()}
    fp16 = [r for r in rows if r["precision"] == "fp16"]
    assert all(
        r["settings"]["io_dtype"] == "float16" and "graph_input_cast0" in r["settings"]["boundary_casts_removed"]
        for r in fp16
    )
    assert all(r["parity"] == "pass" for r in rows)
