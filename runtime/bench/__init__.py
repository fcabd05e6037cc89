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

from __future__ import annotations

import importlib

from .defaults import DEFAULT_BATCH_SIZES, DEFAULT_ENGINES, DEFAULT_MODELS, ENGINES
from .timing import TimingPolicy

#: Imported (with torch, onnxruntime, numpy) on first use: ``python -m runtime.bench --help`` needs none.
_LAZY = {
    "BenchConfig": ".config",
    "BenchRow": ".rows",
    "RunDocument": ".rows",
    "BenchResult": ".runner",
    "Hooks": ".runner",
    "run_benchmark": ".runner",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
