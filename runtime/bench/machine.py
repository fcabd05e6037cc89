"""The machine a run measures on: its device (chosen once), its environment, and its physical limits.

* :func:`resolve_device` is the one place the benchmark decides between CUDA and CPU; every
  engine is then created for that device explicitly, so no engine can land elsewhere.
* :func:`measure_peak` measures, once per run, the fp32 matrix-multiply peak (onnxruntime's
  own MatMul on a large square matrix, on the benchmark's threads and session settings) and
  the memory read bandwidth (onnxruntime's ReduceSum over a buffer far larger than the
  caches). On CUDA: a GPU GEMM (``torch.mm``) and a device-to-device copy.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict

from exporter.errors import UserError

from ..sessions import CudaUnavailable, SessionConfig, create_session

#: Side of the square matrices of the fp32 peak probe (2*n^3 FLOPs per product).
CPU_MATMUL_N = 2048
CUDA_MATMUL_N = 8192
#: Bytes the bandwidth probe reads per pass (far beyond any last-level cache).
CPU_BANDWIDTH_BYTES = 512 << 20
CUDA_COPY_BYTES = 1 << 30
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


class MachinePeak(BaseModel):
    """What the hardware reached in this run: the limits every row is compared with."""

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    device: str
    threads: int
    matmul_gflops: float
    matmul: str
    bandwidth_gbs: float
    bandwidth: str
    #: last-level cache (CPU L3, GPU L2) in bytes, None where unknown: weights that fit are not
    #: read from memory on every call, so the roofline's weight term does not apply to them
    cache_bytes: int | None = None
    probe_seconds: float
    #: every probe of this run (at its start and end): the peak and bandwidth are their maxima
    matmul_gflops_probes: list[float] = []
    bandwidth_gbs_probes: list[float] = []


@dataclass(frozen=True)
class DeviceChoice:
    """Where this run's engines execute, and why."""

    device: str
    reason: str
    providers: list[str]
    gpu_name: str | None = None


def _graph(nodes: list, inputs: list, outputs: list, initializers: list) -> bytes:
    from onnx import helper

    graph = helper.make_graph(nodes, "probe", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="runtime.bench")
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


def reduce_graph(count: int) -> bytes:
    """``Y = sum(X)`` over ``count`` floats: a pure streaming read."""
    from onnx import TensorProto, helper

    return _graph(
        [helper.make_node("ReduceSum", ["X"], ["Y"], keepdims=0)],
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [count])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [])],
        [],
    )


def resolve_device(config: SessionConfig, needs_torch: bool) -> DeviceChoice:
    """Decide once where the run executes: a probe session on the requested device, read back.

    ``auto`` takes CUDA only where onnxruntime really gets its CUDA provider and, when a
    PyTorch engine runs, torch sees the GPU too; ``cuda`` fails loudly otherwise.
    """
    _, info = create_session(matmul_graph(8), config)
    if info.device == "cuda" and needs_torch:
        import torch

        if not torch.cuda.is_available():
            why = "onnxruntime has a CUDA provider but this torch build sees no GPU"
            if config.device == "cuda":
                raise CudaUnavailable(f"--device cuda: {why}")
            return DeviceChoice("cpu", f"fell back to CPU: {why}", ["CPUExecutionProvider"])
    gpu = None
    if info.device == "cuda":
        try:
            import torch

            gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        except Exception:
            gpu = None
    return DeviceChoice(info.device, info.reason, list(info.providers), gpu)


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> dict[str, bool]:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return {f: f in flags for f in CPU_FLAGS}
    except OSError:
        pass
    return {}


def last_level_cache_bytes() -> int | None:
    """The CPU's largest cache (L3 on most machines) from sysfs; None where it cannot be read."""
    from pathlib import Path

    best: tuple[int, int] | None = None
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            level = int((index / "level").read_text())
            if (index / "type").read_text().strip() == "Instruction":
                continue
            text = (index / "size").read_text().strip().upper()
        except (OSError, ValueError):
            continue
        units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
        size = int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)
        if best is None or level > best[0]:
            best = (level, size)
    return best[1] if best else None


def describe(choice: DeviceChoice) -> str:
    """``Intel(R) Xeon(R) Processor (2 cores)`` or the GPU's name."""
    return choice.gpu_name or f"{cpu_model()} ({os.cpu_count()} cores)"


def environment(choice: DeviceChoice, threads: int) -> dict[str, object]:
    """Versions, hardware and thread settings the figures were measured with."""
    import numpy
    import onnx
    import onnxruntime
    import torch

    try:
        import openvino

        openvino_version: str | None = openvino.__version__
    except ImportError:
        openvino_version = None
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        load = []
    return {
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_flags": cpu_flags(),
        "gpu_name": choice.gpu_name,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "onnx": onnx.__version__,
        "numpy": numpy.__version__,
        "openvino": openvino_version,
        "providers": choice.providers,
        "available_providers": onnxruntime.get_available_providers(),
        "threads": threads,
        "torch_threads": torch.get_num_threads(),
        "torch_parallel_backend": "OpenMP" if "OpenMP" in torch.__config__.parallel_info() else "native",
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "load_average_at_start": load,
    }


def merge_peaks(first: MachinePeak, second: MachinePeak) -> MachinePeak:
    """One record of two probes: the larger peak and bandwidth (each is a maximum), and all readings."""
    mm = [
        *(first.matmul_gflops_probes or [first.matmul_gflops]),
        *(second.matmul_gflops_probes or [second.matmul_gflops]),
    ]
    bw = [
        *(first.bandwidth_gbs_probes or [first.bandwidth_gbs]),
        *(second.bandwidth_gbs_probes or [second.bandwidth_gbs]),
    ]
    return first.model_copy(
        update=dict(
            matmul_gflops=max(mm),
            bandwidth_gbs=max(bw),
            matmul_gflops_probes=mm,
            bandwidth_gbs_probes=bw,
            probe_seconds=first.probe_seconds + second.probe_seconds,
        )
    )


def _best(run, seconds: float, min_runs: int = 3) -> float:  # type: ignore[no-untyped-def]
    """Shortest time of ``run()`` over at least ``min_runs`` calls and about ``seconds``."""
    run()  # warm-up (allocations, thread pool start)
    best, started, runs = float("inf"), time.perf_counter(), 0
    while runs < min_runs or time.perf_counter() - started < seconds:
        t = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t)
        runs += 1
    return best


def measure_peak(choice: DeviceChoice, config: SessionConfig, threads: int, seconds: float = 0.6) -> MachinePeak:
    """The fp32 matrix-multiply peak and memory bandwidth of the run's device, on its threads."""
    started = time.perf_counter()
    if choice.device == "cuda":
        return _measure_cuda(config, threads, started)
    import psutil

    n = CPU_MATMUL_N
    sess, _ = create_session(matmul_graph(n), SessionConfig(**{**config.__dict__, "device": "cpu"}))
    a = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    matmul_s = _best(lambda: sess.run(None, {"A": a}), seconds)
    cache = last_level_cache_bytes()
    wanted = max(CPU_BANDWIDTH_BYTES, 2 * (cache or 0))  # twice the cache: every read misses it
    nbytes = int(min(wanted, psutil.virtual_memory().available // 8)) // 4 * 4
    if nbytes < 64 << 20:
        raise UserError("not enough free memory for the bandwidth probe (64 MB): use --no-roofline")
    count = nbytes // 4
    red, _ = create_session(reduce_graph(count), SessionConfig(**{**config.__dict__, "device": "cpu"}))
    x = np.ones(count, dtype=np.float32)
    read_s = _best(lambda: red.run(None, {"X": x}), seconds / 2)
    return MachinePeak(
        device="cpu",
        threads=threads,
        matmul_gflops=2 * n**3 / matmul_s / 1e9,
        matmul=f"onnxruntime MatMul fp32 {n}x{n} @ {n}x{n}, best of runs, {threads} threads",
        bandwidth_gbs=nbytes / read_s / 1e9,
        bandwidth=f"onnxruntime ReduceSum over {nbytes >> 20} MiB fp32, best of runs, {threads} threads",
        cache_bytes=cache,
        probe_seconds=time.perf_counter() - started,
    )


def _measure_cuda(config: SessionConfig, threads: int, started: float) -> MachinePeak:
    import torch

    from .engines import cuda_event_timer as timed

    n = CUDA_MATMUL_N
    dev = torch.device("cuda")

    def best_of(fn, runs: int = 10) -> float:  # type: ignore[no-untyped-def]
        timed(fn)
        return min(timed(fn) for _ in range(runs))

    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = config.tf32
    try:
        mats = [torch.randn(n, n, device=dev), torch.randn(n, n, device=dev), torch.empty(n, n, device=dev)]
        best_mm = best_of(lambda: torch.mm(mats[0], mats[1], out=mats[2]))
        mats.clear()
        bufs = [torch.empty(CUDA_COPY_BYTES // 4, device=dev) for _ in range(2)]
        best_copy = best_of(lambda: bufs[1].copy_(bufs[0]))
        bufs.clear()
        torch.cuda.empty_cache()
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
    return MachinePeak(
        device="cuda",
        threads=threads,
        matmul_gflops=2 * n**3 / best_mm / 1e9,
        matmul=f"torch.mm fp32 {n}x{n} on the GPU (TF32 {'on' if config.tf32 else 'off'}), best of 10",
        bandwidth_gbs=2 * CUDA_COPY_BYTES / best_copy / 1e9,
        bandwidth=f"device-to-device copy of {CUDA_COPY_BYTES >> 20} MiB (read + write bytes), best of 10",
        cache_bytes=int(getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 0)) or None,
        probe_seconds=time.perf_counter() - started,
    )
