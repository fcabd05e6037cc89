"""Where a run executes (decided once), what it runs with, and its limits measured there."""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass

from ..sessions import CudaUnavailable, SessionConfig, create_session
from .cpu import cpu_flags, cpu_model
from .records import MachinePeak


@dataclass(frozen=True)
class DeviceChoice:
    """Where this run's engines execute, and why."""

    device: str
    reason: str
    providers: list[str]
    gpu_name: str | None = None


def resolve_device(config: SessionConfig, needs_torch: bool) -> DeviceChoice:
    """Decide once where the run executes: a probe session on the requested device, read back.

    ``auto`` takes CUDA only where onnxruntime really gets its CUDA provider and, when a
    PyTorch engine runs, torch sees the GPU too; ``cuda`` fails loudly otherwise.
    """
    from .probes import matmul_graph

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
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if choice.device == "cuda" else None,
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
        **({"cuda_nhwc": _nhwc()} if choice.device == "cuda" else {}),
    }


def _nhwc() -> str:
    from ..cudaep import nhwc_support

    return nhwc_support().reason


def measure_peak(
    choice: DeviceChoice,
    config: SessionConfig,
    threads: int,
    seconds: float = 0.6,
    precisions: Sequence[str] | None = None,
    n: int | None = None,
) -> MachinePeak:
    """The run device's limits on its threads: every precision's peak (or the ``precisions`` asked
    for) and the memory bandwidth."""
    if choice.device == "cuda":
        from .cuda import measure_cuda
        from .probes import CUDA_MATMUL_N, CUDA_PRECISIONS

        return measure_cuda(threads, config.tf32, precisions=precisions or CUDA_PRECISIONS, n=n or CUDA_MATMUL_N)
    from .probes import CPU_MATMUL_N, CPU_PRECISIONS, measure_cpu

    return measure_cpu(config, threads, seconds, precisions=precisions or CPU_PRECISIONS, n=n or CPU_MATMUL_N)
