"""The benchmark: every engine a user might pick, on the same artifact, timed so the figures hold.

Library behind ``python -m runtime.bench`` (the command is :mod:`runtime.bench.__main__`):

* :class:`BenchConfig` says what to time; :func:`run_benchmark` runs it and returns a
  :class:`BenchResult` whose document (:class:`RunDocument`) holds typed :class:`BenchRow`
  records, the machine's measured limits, the parity records and the environment. It never
  prints; it reports through :class:`Hooks`.
* Modules: ``config`` (what to run), ``engines`` (onnxruntime, pytorch, torch-compile,
  openvino, tensorrt), ``gate`` (parity before timing), ``timing`` (interleaved rounds),
  ``stats`` (medians, bootstrap intervals, percentiles the counts support), ``machine``
  (device, environment, peak probes), ``roofline``, ``rows`` (records, CSV), ``store``
  (saving without ever losing results), ``plot``, ``report`` (table cells), ``runner``.
"""

from .config import DEFAULT_BATCH_SIZES, DEFAULT_MODELS, BenchConfig
from .engines import DEFAULT_ENGINES, ENGINES
from .rows import BenchRow, RunDocument
from .runner import BenchResult, Hooks, run_benchmark
from .timing import TimingPolicy

__all__ = [
    "DEFAULT_BATCH_SIZES",
    "DEFAULT_ENGINES",
    "DEFAULT_MODELS",
    "ENGINES",
    "BenchConfig",
    "BenchResult",
    "BenchRow",
    "Hooks",
    "RunDocument",
    "TimingPolicy",
    "run_benchmark",
]
