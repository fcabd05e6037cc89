"""The onnxruntime engine on CUDA: IO binding on device buffers, fp16 inputs made on the GPU, and the
decision whether a CUDA graph pays for one (model, precision, batch, size).

* :class:`BoundRun` binds the input and every output of fixed shape to device buffers at fixed
  addresses (what CUDA-graph replay needs), so the timed runs move no data between host and
  device. A graph that takes fp16 while the batch is fp32 gets it converted **on the GPU**
  (torch), once, before binding; the timed run then reads fp16 straight from the device.
* ``--cuda-graph`` is ``on``, ``off`` or ``auto`` (the default on CUDA). With ``auto`` the bench
  prepares both the plain session and a captured one, times them against each other in
  :data:`AB_PAIRS` interleaved pairs, and keeps the graph only when its median is lower by more
  than :data:`MIN_GAIN` (:func:`decide`, pure: tests hand it stub timings). The decision, both
  medians and the capture's cost are recorded with the row.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from exporter.errors import UserError

from .defaults import CUDA_GRAPH_MODES

__all__ = ["CUDA_GRAPH_MODES", "BoundRun", "GraphDecision", "bind", "capture", "decide", "time_pairs"]
#: Interleaved (plain, graph) pairs timed to decide; after :data:`AB_WARMUP` untimed calls of each.
AB_PAIRS = 20
AB_WARMUP = 3
#: The graph is kept only when its median is at least this fraction below the plain run's.
MIN_GAIN = 0.02
#: onnxruntime captures the graph on the second run (the first allocates), replaying from then on.
CAPTURE_CALLS = 3

_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


def input_dtype(sess) -> type:  # type: ignore[no-untyped-def]
    """The numpy dtype a session's first input takes (float32 unless the graph says float16)."""
    return _DTYPES.get(sess.get_inputs()[0].type, np.float32)


@dataclass
class BoundRun:
    """One session bound to device buffers; ``step()`` runs it and waits for the outputs."""

    sess: object
    binding: object
    fixed_outputs: int
    #: how the input reached the device (recorded with the row)
    input_transfer: str
    keep: list[object] = field(default_factory=list)

    def step(self) -> None:
        self.sess.run_with_iobinding(self.binding)  # type: ignore[attr-defined]
        self.binding.synchronize_outputs()  # type: ignore[attr-defined]

    def outputs(self) -> list[np.ndarray]:
        """The bound outputs after the last run, on the host as float32."""
        return [np.asarray(o, dtype=np.float32) for o in self.binding.copy_outputs_to_cpu()]  # type: ignore[attr-defined]


def _device_input(sess, binding, x: np.ndarray) -> tuple[list[object], str]:  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    meta = sess.get_inputs()[0]
    want = input_dtype(sess)
    if want == np.float16 and x.dtype != np.float16:
        import torch

        on_gpu = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to("cuda").half().contiguous()
        torch.cuda.synchronize()
        binding.bind_input(meta.name, "cuda", 0, np.float16, list(on_gpu.shape), on_gpu.data_ptr())
        return [on_gpu], "fp32 batch copied once, converted to fp16 on the GPU (torch), bound as fp16"
    value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(x, dtype=want), "cuda", 0)
    binding.bind_ortvalue_input(meta.name, value)
    return [value], f"{np.dtype(want).name} batch copied to the GPU once, bound"


def bind(sess, x: np.ndarray, cuda_graph: bool) -> BoundRun:  # type: ignore[no-untyped-def]
    """Bind ``sess`` to device buffers for batch ``x``; outputs of symbolic non-batch shape are left to
    onnxruntime to allocate on the GPU each run, which a CUDA graph cannot replay (refused)."""
    import onnxruntime as ort

    binding = sess.io_binding()
    keep, transfer = _device_input(sess, binding, x)
    fixed = 0
    for meta in sess.get_outputs():
        dims = list(meta.shape)
        if all(isinstance(d, int) or d == "batch" for d in dims):
            shape = [x.shape[0] if d == "batch" else d for d in dims]
            value = ort.OrtValue.ortvalue_from_shape_and_type(shape, _DTYPES.get(meta.type, np.float32), "cuda", 0)
            binding.bind_ortvalue_output(meta.name, value)
            keep.append(value)
            fixed += 1
        elif cuda_graph:
            raise UserError(f"a CUDA graph needs fixed output shapes, and output {meta.name} is {dims}")
        else:
            binding.bind_output(meta.name, "cuda")
    return BoundRun(sess, binding, fixed, transfer, keep)


@dataclass(frozen=True)
class GraphDecision:
    """Whether a row runs a captured CUDA graph, and why."""

    mode: str
    use: bool
    reason: str
    plain_ms: float | None = None
    graph_ms: float | None = None
    pairs: int = 0
    #: wall time of the calls that allocated and captured the graph (seconds), and of each
    capture_s: float | None = None
    first_calls_ms: tuple[float, ...] = ()
    #: the largest difference between the graph's replayed outputs and the plain session's
    replay_max_abs_diff: float | None = None

    def settings(self) -> dict[str, str | int | float | bool | None]:
        out: dict[str, str | int | float | bool | None] = {
            "cuda_graph": self.use,
            "cuda_graph_mode": self.mode,
            "cuda_graph_decision": self.reason,
        }
        if self.pairs:
            out.update(cuda_graph_ab_plain_ms=self.plain_ms, cuda_graph_ab_graph_ms=self.graph_ms)
            out["cuda_graph_ab_pairs"] = self.pairs
        if self.first_calls_ms:
            out["cuda_graph_first_calls_ms"] = ", ".join(f"{t:.3f}" for t in self.first_calls_ms)
        if self.replay_max_abs_diff is not None:
            out["cuda_graph_replay_max_abs_diff"] = self.replay_max_abs_diff
        return out


def decide(plain_s: Sequence[float], graph_s: Sequence[float], min_gain: float = MIN_GAIN) -> tuple[bool, str]:
    """Keep the graph when its median beats the plain run's by more than ``min_gain`` (pure)."""
    if not plain_s or not graph_s:
        raise ValueError("both sides need timings")
    plain, graph = statistics.median(plain_s) * 1e3, statistics.median(graph_s) * 1e3
    gain = 1 - graph / plain if plain > 0 else 0.0
    verdict = "on" if gain > min_gain else "off"
    pairs = min(len(plain_s), len(graph_s))
    how = f"graph {graph:.4g} ms vs plain {plain:.4g} ms, medians of {pairs} interleaved pairs"
    need = f"kept only when more than {min_gain:.0%} faster"
    return verdict == "on", f"auto: {verdict} ({how}; {gain:+.1%}, {need})"


def time_pairs(
    plain: Callable[[], None],
    graph: Callable[[], None],
    pairs: int = AB_PAIRS,
    warmup: int = AB_WARMUP,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[list[float], list[float]]:
    """Wall times of ``pairs`` calls of each, alternating which goes first, after ``warmup`` of each."""
    for _ in range(warmup):
        plain()
        graph()
    a: list[float] = []
    b: list[float] = []
    for i in range(pairs):
        order = ((plain, a), (graph, b)) if i % 2 == 0 else ((graph, b), (plain, a))
        for fn, out in order:
            started = clock()
            fn()
            out.append(clock() - started)
    return a, b


def capture(step: Callable[[], None], calls: int = CAPTURE_CALLS) -> tuple[float, tuple[float, ...]]:
    """Run a graph-enabled session's first calls (allocation, capture, first replay); their wall times."""
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return sum(times[: calls - 1]), tuple(t * 1e3 for t in times)


def max_abs_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    if len(a) != len(b):
        raise UserError(f"the captured graph gives {len(b)} outputs, the plain session {len(a)}")
    return max((float(np.max(np.abs(x - y))) if x.size else 0.0) for x, y in zip(a, b))
