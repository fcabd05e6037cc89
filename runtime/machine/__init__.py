"""The machine a run measures on: its device, its environment, and its physical limits per precision.

One record per device (:class:`MachinePeak`) holds each precision's measured peak, the best of
several libraries' probes, beside its theoretical peak from the clock and the vector units, and
the memory bandwidth. The benchmark's roofline, the profile and tune read it; each row or layer
is held to the peak of the precision it computes in (:func:`compute_precision`).

* :mod:`.cpu` reads the CPU (model, flags, cores, clock, caches) and derives theoretical peaks;
* :mod:`.probes` measures the CPU; :mod:`.cuda` the GPU (testable with a stub backend);
* :mod:`.device` decides the device once and measures it;
* :mod:`.records` is the typed record and how two measurements merge.
"""

from .cpu import CPU_FLAGS, cpu_flags, cpu_model, features_line, last_level_cache_bytes, named_features
from .device import DeviceChoice, describe, environment, measure_peak, resolve_device
from .probes import CPU_MATMUL_N, matmul_graph, reduce_graph
from .records import PEAK_PRECISIONS, MachinePeak, PrecisionPeak, compute_precision, merge_peaks, peak_lines

__all__ = [
    "CPU_FLAGS",
    "CPU_MATMUL_N",
    "PEAK_PRECISIONS",
    "DeviceChoice",
    "MachinePeak",
    "PrecisionPeak",
    "compute_precision",
    "cpu_flags",
    "cpu_model",
    "describe",
    "environment",
    "features_line",
    "last_level_cache_bytes",
    "matmul_graph",
    "measure_peak",
    "merge_peaks",
    "named_features",
    "peak_lines",
    "reduce_graph",
    "resolve_device",
]
