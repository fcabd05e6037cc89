"""Measure the machine's limits: each precision's matrix-multiply peak (best of several libraries'
probes) and the memory read bandwidth, on the run's device and threads.

A floor must be the machine's, not one library's: on one of this project's CPUs onnxruntime's
SGEMM reached 129 GFLOP/s where torch's fp32 GEMM reached 195 on the same 2 threads. So every
precision is probed through each library that has a kernel for it, and its peak is the best:

=========  =====================================================================================
fp32       onnxruntime MatMul, torch.mm (MKL/oneDNN), OpenVINO MatMul (f32 hint)
int8       onnxruntime MatMulInteger (u8 x s8, MLAS: VNNI/AMX where present, else AVX2's
           vpmaddubsw), torch's quantized linear (u8 x s8, fbgemm/oneDNN), OpenVINO MatMul between
           QDQ pairs (its low-precision transformations run it in int8). torch._int_mm is left out:
           on CPU it is a reference loop (0.3 GOP/s measured), not a GEMM kernel
bf16       torch.mm in bfloat16 (oneDNN) and OpenVINO with the bf16 hint, where the CPU has
           AVX512-BF16 or AMX-BF16 (elsewhere bf16 is emulated and has no peak worth holding to)
CUDA       torch.mm in fp32 (TF32 off), TF32, fp16 and bf16 (tensor cores), torch._int_mm int8
=========  =====================================================================================

Each probe multiplies two large square matrices (2*n^3 operations) and keeps its fastest call
over a fixed time. Probes that cannot run here are recorded with why, never silently dropped.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from exporter.errors import UserError, first_line

from ..sessions import SessionConfig, create_session
from .cpu import clock_ghz, cpu_flags, last_level_cache_bytes, named_features, physical_cores, theoretical_peaks
from .records import MachinePeak, PrecisionPeak

#: Side of the square matrices of the CPU probes (2*n^3 operations per product).
CPU_MATMUL_N = 2048
CUDA_MATMUL_N = 8192
#: Bytes the bandwidth probe reads per pass (far beyond any last-level cache).
CPU_BANDWIDTH_BYTES = 512 << 20
CUDA_COPY_BYTES = 1 << 30
CPU_PRECISIONS = ("fp32", "int8", "bf16")
CUDA_PRECISIONS = ("fp32", "tf32", "fp16", "bf16", "int8")


@dataclass(frozen=True)
class Probe:
    """One library's kernel for one precision: ``build()`` prepares it and returns one call."""

    precision: str
    name: str
    build: Callable[[], Callable[[], object]]


# --- probe graphs ---------------------------------------------------------------------------


def _graph(nodes: list, inputs: list, outputs: list, initializers: list) -> bytes:
    from onnx import helper

    graph = helper.make_graph(nodes, "probe", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="runtime.machine")
    model.ir_version = 8
    return model.SerializeToString()


def matmul_graph(n: int) -> bytes:
    """``C = A @ B`` with an n x n input A and an n x n constant B, fp32."""
    from onnx import TensorProto, helper, numpy_helper

    b = numpy_helper.from_array(np.random.default_rng(0).standard_normal((n, n), dtype=np.float32), "B")
    return _graph(
        [helper.make_node("MatMul", ["A", "B"], ["C"])],
        [helper.make_tensor_value_info("A", TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info("C", TensorProto.FLOAT, [n, n])],
        [b],
    )


def matmul_integer_graph(n: int) -> bytes:
    """``C = A @ B`` in integers: uint8 input A, int8 constant B, int32 C (onnxruntime's u8s8 GEMM)."""
    from onnx import TensorProto, helper, numpy_helper

    b = numpy_helper.from_array(np.random.default_rng(0).integers(-64, 64, (n, n), dtype=np.int8), "B")
    return _graph(
        [helper.make_node("MatMulInteger", ["A", "B"], ["C"])],
        [helper.make_tensor_value_info("A", TensorProto.UINT8, [n, n])],
        [helper.make_tensor_value_info("C", TensorProto.INT32, [n, n])],
        [b],
    )


def qdq_matmul_graph(n: int) -> bytes:
    """A float MatMul between QuantizeLinear/DequantizeLinear pairs (uint8 activations, int8 weights):
    the pattern an int8 QDQ graph holds, which OpenVINO runs as an int8 MatMul."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).integers(-64, 64, (n, n), dtype=np.int8), "W")
    consts = [
        numpy_helper.from_array(np.array(0.02, np.float32), "sa"),
        numpy_helper.from_array(np.array(128, np.uint8), "za"),
        numpy_helper.from_array(np.array(0.01, np.float32), "sw"),
        numpy_helper.from_array(np.array(0, np.int8), "zw"),
    ]
    return _graph(
        [
            helper.make_node("QuantizeLinear", ["A", "sa", "za"], ["Aq"]),
            helper.make_node("DequantizeLinear", ["Aq", "sa", "za"], ["Ad"]),
            helper.make_node("DequantizeLinear", ["W", "sw", "zw"], ["Wd"]),
            helper.make_node("MatMul", ["Ad", "Wd"], ["C"]),
        ],
        [helper.make_tensor_value_info("A", TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info("C", TensorProto.FLOAT, [n, n])],
        [w, *consts],
    )


def reduce_graph(count: int) -> bytes:
    """``Y = sum(X)`` over ``count`` floats: a pure streaming read."""
    from onnx import TensorProto, helper

    return _graph(
        [helper.make_node("ReduceSum", ["X"], ["Y"], keepdims=0)],
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [count])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [])],
        [],
    )


# --- the CPU probes -------------------------------------------------------------------------


def _cpu(config: SessionConfig) -> SessionConfig:
    return SessionConfig(**{**config.__dict__, "device": "cpu"})


def _onnxruntime_probe(graph: bytes, feed: dict[str, np.ndarray], config: SessionConfig) -> Callable[[], object]:
    sess, _ = create_session(graph, _cpu(config))
    return lambda: sess.run(None, feed)


def _openvino_probe(graph: bytes, hint: str, threads: int, shape: tuple[int, int]) -> Callable[[], object]:
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(
        core.read_model(graph),
        "CPU",
        {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"},
    )
    request = compiled.create_infer_request()
    x = np.random.default_rng(1).standard_normal(shape, dtype=np.float32)
    request.set_input_tensor(ov.Tensor(x, shared_memory=True))  # shares x's memory: x must outlive the calls

    def run() -> object:
        _ = (x, compiled)
        return request.infer()

    return run


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch's intra-op threads set to ``threads`` for the block, then restored."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _torch_mm(n: int, dtype_name: str) -> Callable[[], object]:
    import torch

    dtype = getattr(torch, dtype_name)
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g).to(dtype), torch.randn(n, n, generator=g).to(dtype)
    c = torch.empty(n, n, dtype=dtype)
    return lambda: torch.mm(a, b, out=c)


def _torch_quantized_linear(n: int) -> Callable[[], object]:
    import torch

    with warnings.catch_warnings():  # quantized tensors are deprecated in favour of torchao; still the u8s8 kernel
        warnings.simplefilter("ignore")
        g = torch.Generator().manual_seed(0)
        x = torch.quantize_per_tensor(torch.rand(n, n, generator=g), 0.01, 0, torch.quint8)
        w = torch.quantize_per_tensor(torch.randn(n, n, generator=g), 0.01, 0, torch.qint8)
        packed = torch.ops.quantized.linear_prepack(w, None)
    return lambda: torch.ops.quantized.linear(x, packed, 0.1, 0)


def cpu_probes(config: SessionConfig, threads: int, flags: dict[str, bool], n: int = CPU_MATMUL_N) -> list[Probe]:
    """Every CPU probe, fp32, int8 and (with bf16 hardware) bf16."""
    a32 = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    a8 = np.random.default_rng(1).integers(0, 255, (n, n), dtype=np.uint8)
    size = f"{n}x{n} @ {n}x{n}"

    def ort_fp32() -> Callable[[], object]:
        return _onnxruntime_probe(matmul_graph(n), {"A": a32}, config)

    def openvino(graph: Callable[[int], bytes], hint: str) -> Callable[[], Callable[[], object]]:
        return lambda: _openvino_probe(graph(n), hint, threads, (n, n))

    probes = [
        Probe("fp32", f"onnxruntime MatMul fp32 {size}", ort_fp32),
        Probe("fp32", f"OpenVINO MatMul f32 {size}", openvino(matmul_graph, "f32")),
        Probe("fp32", f"torch.mm fp32 {size}", lambda: _torch_mm(n, "float32")),
        Probe(
            "int8",
            f"onnxruntime MatMulInteger u8s8 {size}",
            lambda: _onnxruntime_probe(matmul_integer_graph(n), {"A": a8}, config),
        ),
        Probe("int8", f"OpenVINO QDQ MatMul u8s8 {size}", openvino(qdq_matmul_graph, "f32")),
        Probe("int8", f"torch quantized.linear u8s8 {size}", lambda: _torch_quantized_linear(n)),
    ]
    if flags.get("avx512_bf16") or flags.get("amx_bf16"):
        probes += [
            Probe("bf16", f"torch.mm bf16 {size}", lambda: _torch_mm(n, "bfloat16")),
            Probe("bf16", f"OpenVINO MatMul bf16 hint {size}", openvino(matmul_graph, "bf16")),
        ]
    return probes


def best_seconds(run: Callable[[], object], seconds: float, min_runs: int = 3) -> float:
    """Shortest time of ``run()`` over at least ``min_runs`` calls and about ``seconds``."""
    run()  # warm-up (allocations, thread pool start)
    best, started, runs = float("inf"), time.perf_counter(), 0
    while runs < min_runs or time.perf_counter() - started < seconds:
        t = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t)
        runs += 1
    return best


def run_probes(
    probes: Sequence[Probe],
    ops: float,
    seconds: float,
    timer: Callable[[Callable[[], object], float], float] = best_seconds,
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, str]]]:
    """Each probe's best figure in G operations per second, by precision; and the probes that failed."""
    figures: dict[str, dict[str, float]] = {}
    failed: dict[str, dict[str, str]] = {}
    for probe in probes:
        try:
            call = probe.build()
            best = timer(call, seconds)
            del call
        except (KeyboardInterrupt, MemoryError):
            raise
        except Exception as exc:
            failed.setdefault(probe.precision, {})[probe.name] = f"{type(exc).__name__}: {first_line(exc)}"
            continue
        if best > 0:
            figures.setdefault(probe.precision, {})[probe.name] = ops / best / 1e9
    return figures, failed


def precision_peaks(
    figures: dict[str, dict[str, float]],
    failed: dict[str, dict[str, str]],
    theoretical: dict[str, tuple[float, str]] | None = None,
) -> tuple[dict[str, PrecisionPeak], dict[str, str]]:
    """One :class:`PrecisionPeak` per precision that any probe measured; why the others have none."""
    theoretical = theoretical or {}
    peaks: dict[str, PrecisionPeak] = {}
    missing: dict[str, str] = {}
    for precision in dict.fromkeys([*figures, *failed]):
        got = figures.get(precision, {})
        if not got:
            missing[precision] = "every probe failed: " + "; ".join(f"{k}: {v}" for k, v in failed[precision].items())
            continue
        best = max(got, key=got.__getitem__)
        gflops, how = theoretical.get(precision, (None, None))
        peaks[precision] = PrecisionPeak(
            precision=precision,
            gflops=got[best],
            probe=best,
            probes=got,
            failed=failed.get(precision, {}),
            theoretical_gflops=gflops,
            theoretical=how,
            readings=[got[best]],
        )
    return peaks, missing


def _bandwidth(config: SessionConfig, threads: int, seconds: float, cache: int | None) -> tuple[float, str]:
    import psutil

    wanted = max(CPU_BANDWIDTH_BYTES, 2 * (cache or 0))  # twice the cache: every read misses it
    nbytes = int(min(wanted, psutil.virtual_memory().available // 8)) // 4 * 4
    if nbytes < 64 << 20:
        raise UserError("not enough free memory for the bandwidth probe (64 MB): use --no-roofline")
    count = nbytes // 4
    red, _ = create_session(reduce_graph(count), _cpu(config))
    x = np.ones(count, dtype=np.float32)
    read_s = best_seconds(lambda: red.run(None, {"X": x}), seconds)
    return nbytes / read_s / 1e9, f"onnxruntime ReduceSum over {nbytes >> 20} MiB fp32, best of runs, {threads} threads"


def measure_cpu(
    config: SessionConfig,
    threads: int,
    seconds: float = 0.6,
    precisions: Sequence[str] = CPU_PRECISIONS,
    n: int = CPU_MATMUL_N,
) -> MachinePeak:
    """Each precision's peak (best of its probes) and the memory bandwidth, on ``threads`` threads."""
    started = time.perf_counter()
    flags = cpu_flags()
    probes = [p for p in cpu_probes(config, threads, flags, n) if p.precision in precisions]
    with torch_threads(threads):
        figures, failed = run_probes(probes, 2.0 * n**3, seconds / 2)
    ghz, clock_source = clock_ghz()
    cores = min(threads, physical_cores())
    theory = {p: (t.gflops, t.how) for p, t in theoretical_peaks(flags, ghz, cores, clock_source).items()}
    peaks, missing = precision_peaks(figures, failed, theory)
    if "bf16" in precisions and "bf16" not in peaks and "bf16" not in missing:
        missing["bf16"] = "this CPU has neither AVX512-BF16 nor AMX-BF16: bf16 would be emulated in fp32"
    if "fp32" not in peaks:
        raise UserError(f"the fp32 peak could not be measured: {missing.get('fp32', 'no probe ran')}")
    cache = last_level_cache_bytes()
    bandwidth, bandwidth_how = _bandwidth(config, threads, seconds / 2, cache)
    fp32 = peaks["fp32"]
    return MachinePeak(
        device="cpu",
        threads=threads,
        matmul_gflops=fp32.gflops,
        matmul=f"{fp32.probe}, best of runs and of {len(fp32.probes)} probes, {threads} threads",
        bandwidth_gbs=bandwidth,
        bandwidth=bandwidth_how,
        cache_bytes=cache,
        probe_seconds=time.perf_counter() - started,
        matmul_gflops_probes=[fp32.gflops],
        bandwidth_gbs_probes=[bandwidth],
        peaks=peaks,
        missing=missing,
        cpu_features=named_features(flags),
    )
