"""Per-engine collectors behind one interface: each runs one graph on one input many times with its
engine's own per-node timer and returns every node's time in every run (:class:`EngineRun`).

* onnxruntime: its profiler (``SessionOptions.enable_profiling``), the JSON trace parsed by
  :mod:`runtime.profile.trace`; node names are those of its optimized in-memory graph;
* OpenVINO: its performance counters (``PERF_COUNT``): per executed layer its exec type
  (``jit_avx2_I8``, ``brgconv_avx512_amx_bf16``) and real time, with the original layers it fused.

Each also times an identical session without profiling, interleaved run by run with the profiled
one, so the profiling overhead is measured, not assumed.
"""

from __future__ import annotations

import math
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np

from exporter.errors import UserError

from ..openvino_model import compile_config
from ..sessions import SessionConfig, create_session
from .records import NodeTime
from .trace import parse_trace, read_trace

ENGINES = ("onnxruntime", "openvino")
#: Without ``runs``: enough profiled runs for about this many seconds, within the bounds below.
TARGET_SECONDS = 4.0
MIN_RUNS, MAX_RUNS = 10, 100
WARMUP = 3


@dataclass
class EngineRun:
    """What a collector measured: per-node times of every run, and each run's end-to-end time with
    and without profiling."""

    engine: str
    device: str
    providers: list[str]
    nodes: list[NodeTime]
    #: each profiled run's end-to-end time as the engine measures it (onnxruntime's model_run)
    profiled_ms: list[float]
    #: each profiled and each unprofiled run's wall time, interleaved: their ratio is the overhead
    profiled_wall_ms: list[float]
    unprofiled_ms: list[float]
    warmup: int
    graph_nodes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def runs(self) -> int:
        return len(self.profiled_ms)


class Collector(Protocol):
    """Profile ``graph`` on input ``x``: ``warmup`` untimed runs, then ``runs`` (None: chosen from
    the time of one run) profiled and as many unprofiled ones, interleaved."""

    def __call__(self, graph: bytes, x: np.ndarray, warmup: int, runs: int | None) -> EngineRun: ...


def choose_runs(seconds_per_run: float, runs: int | None) -> int:
    if runs is not None:
        if runs < 1:
            raise UserError("--runs must be at least 1")
        return runs
    if seconds_per_run <= 0:
        return MAX_RUNS
    return max(MIN_RUNS, min(MAX_RUNS, math.ceil(TARGET_SECONDS / seconds_per_run)))


def _interleaved(
    profiled: Callable[[], object], plain: Callable[[], object], warmup: int, runs: int | None
) -> tuple[list[float], list[float]]:
    """Wall times of ``runs`` calls of each, alternating, after ``warmup`` calls of each."""
    first = time.perf_counter()
    for _ in range(max(1, warmup)):
        profiled()
        plain()
    n = choose_runs((time.perf_counter() - first) / max(1, warmup) / 2, runs)
    a: list[float] = []
    b: list[float] = []
    for _ in range(n):
        t = time.perf_counter()
        profiled()
        a.append((time.perf_counter() - t) * 1e3)
        t = time.perf_counter()
        plain()
        b.append((time.perf_counter() - t) * 1e3)
    return a, b


# --- onnxruntime ----------------------------------------------------------------------------


@dataclass
class OnnxruntimeCollector:
    config: SessionConfig

    def __call__(self, graph: bytes, x: np.ndarray, warmup: int, runs: int | None) -> EngineRun:
        with tempfile.TemporaryDirectory(prefix="runtime-profile-") as tmp:
            sess, info = create_session(graph, replace(self.config, profile_prefix=str(Path(tmp) / "onnxruntime")))
            plain, _ = create_session(graph, self.config)
            name = sess.get_inputs()[0].name
            feed = {name: x.astype(np.float16) if sess.get_inputs()[0].type == "tensor(float16)" else x}
            warm = max(1, warmup)
            wall, unprofiled = _interleaved(lambda: sess.run(None, feed), lambda: plain.run(None, feed), warm, runs)
            trace = parse_trace(read_trace(Path(sess.end_profiling())), warm)
        import onnx

        nodes = [n.name for n in onnx.load_from_string(graph).graph.node]
        notes = []
        if info.device == "cuda":
            notes.append(
                "on CUDA onnxruntime's profiler times each node on the host: a kernel launched asynchronously "
                "can show less than its GPU time, and the run's synchronizations carry the rest"
            )
        return EngineRun(
            engine="onnxruntime",
            device=info.device,
            providers=list(info.providers),
            nodes=trace.nodes,
            profiled_ms=trace.run_ms,
            profiled_wall_ms=wall,
            unprofiled_ms=unprofiled,
            warmup=warm,
            graph_nodes=nodes,
            notes=notes,
        )


# --- OpenVINO -------------------------------------------------------------------------------

_OV_PRECISIONS = {"u8": "int8", "i8": "int8", "f32": "fp32", "fp32": "fp32", "bf16": "bf16", "f16": "fp16"}
_EXEC_SUFFIX = re.compile(r"_(I8|i8|U8|u8|f32|FP32|bf16|BF16|f16|FP16)$")


def openvino_precision(runtime_precision: str | None, exec_type: str) -> str | None:
    """The precision an OpenVINO layer ran in: its runtime precision, else its exec type's suffix."""
    if runtime_precision and runtime_precision.lower() in _OV_PRECISIONS:
        return _OV_PRECISIONS[runtime_precision.lower()]
    m = _EXEC_SUFFIX.search(exec_type)
    return _OV_PRECISIONS.get(m.group(1).lower()) if m else None


def _runtime_info(compiled: object) -> dict[str, tuple[list[str], str | None]]:
    """Layer name -> (the original layers it fused, its runtime precision), from the runtime model."""
    out: dict[str, tuple[list[str], str | None]] = {}
    for op in compiled.get_runtime_model().get_ordered_ops():  # type: ignore[attr-defined]
        info = op.get_rt_info()
        fused = [n for n in (_rt_text(info, "originalLayersNames") or "").split(",") if n]
        out[op.get_friendly_name()] = (fused, _rt_text(info, "runtimePrecision"))
    return out


def _rt_text(info: object, key: str) -> str | None:
    try:
        return str(info[key].astype(str)) if key in info else None  # type: ignore[index,operator]
    except Exception:
        return None


@dataclass
class OpenvinoCollector:
    """OpenVINO's per-layer counters of a ``precision`` graph; ``hint`` overrides the precision's default
    precision hint (the one a variant was verified with, :func:`runtime.openvino_model.hint_for`)."""

    threads: int
    precision: str = "fp32"
    hint: str | None = None

    def __call__(self, graph: bytes, x: np.ndarray, warmup: int, runs: int | None) -> EngineRun:
        import openvino as ov

        core = ov.Core()
        model = core.read_model(graph)
        model.reshape(list(x.shape))
        config = compile_config(self.precision, self.threads, hint=self.hint)
        profiled = core.compile_model(model, "CPU", {**config, "PERF_COUNT": True})
        plain = core.compile_model(model, "CPU", config)
        feed = np.ascontiguousarray(x, dtype=np.float32)
        req, plain_req = profiled.create_infer_request(), plain.create_infer_request()
        per_run: list[dict[str, tuple[str, str, float]]] = []
        infer_ms: list[float] = []

        def run_profiled() -> None:
            started = time.perf_counter()
            req.infer({0: feed})
            infer_ms.append((time.perf_counter() - started) * 1e3)
            per_run.append(
                {
                    p.node_name: (p.node_type, p.exec_type, p.real_time.total_seconds() * 1e6)
                    for p in req.get_profiling_info()
                    if p.status == ov.ProfilingInfo.Status.EXECUTED
                }
            )

        warm = max(1, warmup)
        _, unprofiled = _interleaved(run_profiled, lambda: plain_req.infer({0: feed}), warm, runs)
        measured = per_run[warm:]
        info = _runtime_info(profiled)
        names = list(dict.fromkeys(n for run in measured for n in run))
        nodes = []
        for name in names:
            node_type, exec_type, _ = next(run[name] for run in measured if name in run)
            times = [run[name][2] if name in run else 0.0 for run in measured]
            fused, rt_precision = info.get(name, ([], None))
            nodes.append(
                NodeTime(
                    name=name,
                    op_type=node_type,
                    kernel=exec_type,
                    provider="OpenVINO CPU",
                    precision=openvino_precision(rt_precision, exec_type),
                    times_us=times,
                    median_us=statistics.median(times),
                    fused=[f for f in fused if f != name],
                )
            )
        return EngineRun(
            engine="openvino",
            device="cpu",
            providers=[f"OpenVINO {ov.__version__} CPU"],
            nodes=nodes,
            profiled_ms=infer_ms[warm:],
            profiled_wall_ms=infer_ms[warm:],
            unprofiled_ms=unprofiled,
            warmup=warm,
            notes=["OpenVINO's end-to-end time is each profiled infer() call's wall time (its counters hold no total)"],
        )
