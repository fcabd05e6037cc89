"""The GPU's limits: torch GEMMs in fp32 (TF32 off), TF32, fp16 and bf16 on the tensor cores,
int8 (``torch._int_mm``), and a device-to-device copy for the bandwidth.

The arithmetic behind a :class:`CudaBackend` is small and testable without a GPU: tests hand
:func:`measure_cuda` a stub backend with known timings.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Protocol

from exporter.errors import UserError, first_line

from .probes import CUDA_COPY_BYTES, CUDA_MATMUL_N, CUDA_PRECISIONS, precision_peaks
from .records import MachinePeak

#: What each CUDA precision multiplies (torch dtype name), and whether TF32 is allowed for it.
CUDA_GEMMS: dict[str, tuple[str, bool]] = {
    "fp32": ("float32", False),
    "tf32": ("float32", True),
    "fp16": ("float16", False),
    "bf16": ("bfloat16", False),
    "int8": ("int8", False),
}


class CudaBackend(Protocol):
    """What measuring a GPU needs: its name, GEMM and copy timings (seconds, best of runs), its L2."""

    name: str

    def gemm_seconds(self, precision: str, n: int) -> float: ...

    def copy_seconds(self, nbytes: int) -> float: ...

    def l2_bytes(self) -> int | None: ...


def cuda_event_timer(fn: Callable[[], object]) -> float:
    """Time one call on the GPU with CUDA events (seconds)."""
    import torch

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3


class TorchCuda:
    """The real backend: torch on GPU 0."""

    def __init__(self, runs: int = 10) -> None:
        import torch

        self.name = torch.cuda.get_device_name(0)
        self.runs = runs

    def _best(self, fn: Callable[[], object]) -> float:
        cuda_event_timer(fn)
        return min(cuda_event_timer(fn) for _ in range(self.runs))

    def gemm_seconds(self, precision: str, n: int) -> float:
        import torch

        dtype_name, tf32 = CUDA_GEMMS[precision]
        dev = torch.device("cuda")
        previous = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        try:
            if dtype_name == "int8":
                a = torch.randint(-64, 64, (n, n), dtype=torch.int8, device=dev)
                b = torch.randint(-64, 64, (n, n), dtype=torch.int8, device=dev)
                return self._best(lambda: torch._int_mm(a, b))
            dtype = getattr(torch, dtype_name)
            mats = [torch.randn(n, n, device=dev, dtype=dtype) for _ in range(2)] + [
                torch.empty(n, n, device=dev, dtype=dtype)
            ]
            return self._best(lambda: torch.mm(mats[0], mats[1], out=mats[2]))
        finally:
            torch.backends.cuda.matmul.allow_tf32 = previous
            torch.cuda.empty_cache()

    def copy_seconds(self, nbytes: int) -> float:
        import torch

        bufs = [torch.empty(nbytes // 4, device="cuda") for _ in range(2)]
        try:
            return self._best(lambda: bufs[1].copy_(bufs[0]))
        finally:
            bufs.clear()
            torch.cuda.empty_cache()

    def l2_bytes(self) -> int | None:
        import torch

        return int(getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 0)) or None


def measure_cuda(
    threads: int,
    tf32: bool,
    backend: CudaBackend | None = None,
    precisions: Sequence[str] = CUDA_PRECISIONS,
    n: int = CUDA_MATMUL_N,
) -> MachinePeak:
    """Each CUDA precision's GEMM peak and the copy bandwidth. ``matmul_gflops`` is fp32 as this run
    computes it: the TF32 peak with TF32 on, plain fp32 with it off."""
    started = time.perf_counter()
    backend = backend or TorchCuda()
    figures: dict[str, dict[str, float]] = {}
    failed: dict[str, dict[str, str]] = {}
    for precision in precisions:
        dtype_name, allow_tf32 = CUDA_GEMMS[precision]
        op = "torch._int_mm" if dtype_name == "int8" else "torch.mm"
        name = f"{op} {precision} {n}x{n} on the GPU (TF32 {'on' if allow_tf32 else 'off'}), best of runs"
        try:
            seconds = backend.gemm_seconds(precision, n)
        except (KeyboardInterrupt, MemoryError):
            raise
        except Exception as exc:
            failed.setdefault(precision, {})[name] = f"{type(exc).__name__}: {first_line(exc)}"
            continue
        if seconds > 0:
            figures.setdefault(precision, {})[name] = 2.0 * n**3 / seconds / 1e9
    peaks, missing = precision_peaks(figures, failed)
    main = peaks.get("tf32" if tf32 else "fp32") or peaks.get("fp32")
    if main is None:
        raise UserError(f"the GPU's fp32 peak could not be measured: {missing}")
    copy_s = backend.copy_seconds(CUDA_COPY_BYTES)
    bandwidth = 2 * CUDA_COPY_BYTES / copy_s / 1e9
    return MachinePeak(
        device="cuda",
        threads=threads,
        matmul_gflops=main.gflops,
        matmul=main.probe,
        bandwidth_gbs=bandwidth,
        bandwidth=f"device-to-device copy of {CUDA_COPY_BYTES >> 20} MiB (read + write bytes), best of runs",
        cache_bytes=backend.l2_bytes(),
        probe_seconds=time.perf_counter() - started,
        matmul_gflops_probes=[main.gflops],
        bandwidth_gbs_probes=[bandwidth],
        peaks=peaks,
        missing=missing,
        device_name=backend.name,
        tf32=tf32,
    )
