"""How close a measured latency is to what the machine physically allows.

For a row of ``flops`` operations (the whole batch) reading ``weight_bytes`` of weights, on a
machine whose measured matrix-multiply peak in the row's own precision (fp32, TF32, fp16, bf16 or
int8: :mod:`runtime.machine`) is ``peak_gflops`` and memory read bandwidth ``bandwidth_gbs``:

* achieved GFLOP/s = flops / median time, and its fraction of the peak;
* the roofline floor = max(flops / peak, weight_bytes / bandwidth): no implementation can be
  faster than computing at the peak or than reading its weights once. The bandwidth is the
  memory's (measured over a buffer larger than the caches), so the weight term applies only
  to weights larger than the last-level cache: smaller ones stay in the cache between calls
  and a repeated inference does not read them from memory (lenet5's 250 KB of weights would
  otherwise give a "floor" four times its measured time);
* time over floor = median / floor (1.0 is the physical limit).

FLOPs follow torch's ``FlopCounterMode`` (2 per multiply-accumulate, convolutions and matrix
products), counted on the PyTorch reference at the row's input size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .config import numeric_precision

#: Bytes per weight by precision (int8 graphs keep 1-byte weights; bf16/fp16 2 bytes).
WEIGHT_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1}


@dataclass(frozen=True)
class Roofline:
    achieved_gflops: float
    fraction_of_peak: float
    floor_ms: float
    time_over_floor: float
    bound: str  # "compute", "compute (weights in cache)" or "memory": which term sets the floor


def roofline(
    flops: float,
    weight_bytes: float,
    median_ms: float,
    peak_gflops: float,
    bandwidth_gbs: float,
    cache_bytes: int | None = None,
) -> Roofline:
    """The roofline figures of one measurement (see the module docstring); ``cache_bytes`` is the
    last-level cache, None where unknown (then the weight term always applies)."""
    if median_ms <= 0 or peak_gflops <= 0 or bandwidth_gbs <= 0:
        raise ValueError("median, peak and bandwidth must be positive")
    seconds = median_ms / 1e3
    achieved = flops / seconds / 1e9
    compute_s = flops / (peak_gflops * 1e9)
    in_cache = cache_bytes is not None and weight_bytes <= cache_bytes
    memory_s = 0.0 if in_cache else weight_bytes / (bandwidth_gbs * 1e9)
    floor_s = max(compute_s, memory_s)
    return Roofline(
        achieved_gflops=achieved,
        fraction_of_peak=achieved / peak_gflops,
        floor_ms=floor_s * 1e3,
        time_over_floor=seconds / floor_s if floor_s > 0 else float("inf"),
        bound=("compute (weights in cache)" if in_cache else "compute") if compute_s >= memory_s else "memory",
    )


def weight_bytes(num_params: int, precision: str) -> int:
    return num_params * WEIGHT_BYTES.get(numeric_precision(precision), 4)


def count_flops(model: nn.Module, input_shape: tuple[int, ...]) -> int | None:
    """FLOPs of one sample at ``input_shape`` (torch's FlopCounterMode on one real forward pass).

    None where the model cannot be counted (a forward pass that fails, an operator the
    counter does not know is simply not counted).
    """
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        with counter, torch.inference_mode():
            model(torch.zeros((1, *input_shape), device=device))
    except Exception:
        return None
    return int(counter.get_total_flops())
