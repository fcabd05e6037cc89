"""The two engines timed side by side: onnxruntime on the exported graph, and PyTorch eager.

Each engine is prepared once per (model, batch) and exposes ``step()`` (one inference,
synchronised so the time covers the work) and ``output()`` for a sanity check.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .sessions import SessionConfig, SessionInfo, check_feed, create_session


@dataclass
class Prepared:
    engine: str
    device: str
    step: Callable[[], None]
    timer: Callable[[Callable[[], None]], float]
    details: dict[str, object] = field(default_factory=dict)


def wall_timer(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def cuda_event_timer(fn: Callable[[], None]) -> float:
    """Time one call on the GPU with CUDA events (seconds)."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3


def prepare_onnxruntime(onnx_path: Path, x: np.ndarray, config: SessionConfig) -> tuple[Prepared, SessionInfo]:
    """An onnxruntime session on the configured device; on CUDA with IO binding the input and
    output stay on the GPU, so timed runs measure the graph, not host transfers."""
    sess, info = create_session(onnx_path, config)
    if sess.get_inputs()[0].type == "tensor(float16)":  # an fp16 variant made with half inputs
        x = x.astype(np.float16)
    check_feed(sess, x)
    in_name = sess.get_inputs()[0].name
    out_names = [o.name for o in sess.get_outputs()]
    details: dict[str, object] = {"providers": info.providers, "device_reason": info.reason}
    if info.device == "cuda":
        import onnxruntime as ort

        details.update(
            io_binding=config.io_binding,
            cudnn_conv_algo_search=config.cudnn_conv_algo_search,
            cuda_graph=config.cuda_graph,
            tf32=config.tf32,
        )
        if config.io_binding or config.cuda_graph:
            # Input and outputs live on the GPU at fixed addresses (CUDA graph replay needs that),
            # so timed runs move no data between host and device.
            binding = sess.io_binding()
            x_dev = ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0)
            binding.bind_ortvalue_input(in_name, x_dev)
            dtypes = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
            outputs = []
            for meta in sess.get_outputs():
                shape = [x.shape[0] if not isinstance(d, int) else d for d in meta.shape]
                value = ort.OrtValue.ortvalue_from_shape_and_type(shape, dtypes.get(meta.type, np.float32), "cuda", 0)
                binding.bind_ortvalue_output(meta.name, value)
                outputs.append(value)
            details["bound_outputs"] = len(outputs)

            def step() -> None:
                sess.run_with_iobinding(binding)
                binding.synchronize_outputs()

            return Prepared("onnxruntime", "cuda", step, wall_timer, details), info

        def step_copy() -> None:
            sess.run(out_names, {in_name: x})

        return Prepared("onnxruntime", "cuda", step_copy, wall_timer, details), info

    details.update(io_binding=False, tf32=False)

    def step_cpu() -> None:
        sess.run(out_names, {in_name: x})

    return Prepared("onnxruntime", "cpu", step_cpu, wall_timer, details), info


def prepare_pytorch(model: torch.nn.Module, x: np.ndarray, device: str, cudnn_benchmark: bool = True) -> Prepared:
    """PyTorch eager in ``inference_mode`` on the same device; CUDA timed with events.

    ``cudnn_benchmark`` mirrors onnxruntime's exhaustive cuDNN algorithm search, so both
    engines pick their fastest convolution algorithms during the warm-up.
    """
    dev = torch.device("cuda" if device == "cuda" else "cpu")
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = cudnn_benchmark
    model = model.to(dev).eval()
    xt = torch.from_numpy(x).to(dev)
    details: dict[str, object] = {"threads": torch.get_num_threads()}
    if dev.type == "cuda":
        details["tf32"] = bool(torch.backends.cudnn.allow_tf32)
        details["tf32_matmul"] = bool(torch.backends.cuda.matmul.allow_tf32)
        details["cudnn_benchmark"] = cudnn_benchmark
    else:
        details["tf32"] = False

    def step() -> None:
        with torch.inference_mode():
            model(xt)

    timer = cuda_event_timer if dev.type == "cuda" else wall_timer
    return Prepared("pytorch", dev.type, step, timer, details)


def time_engine(
    prepared: Prepared, warmup: int, iterations: int | None, min_seconds: float | None, max_seconds: float = 120.0
) -> list[float]:
    """Warm up (absorbing cuDNN algorithm search and allocator growth), then time iterations.

    Runs ``iterations`` timed steps, or as many as fit in ``min_seconds`` (at least 5),
    never more than ``max_seconds`` in all.
    """
    for _ in range(warmup):
        prepared.step()
    times: list[float] = []
    started = time.perf_counter()
    while True:
        times.append(prepared.timer(prepared.step))
        elapsed = time.perf_counter() - started
        if iterations is not None and len(times) >= iterations:
            break
        if iterations is None and len(times) >= 5 and elapsed >= (min_seconds or 0.0):
            break
        if elapsed >= max_seconds and len(times) >= 3:
            break
    return times
