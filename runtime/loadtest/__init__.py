"""Load test of a Triton server on this machine, checked against the artifact it serves.

Library API behind ``python -m runtime.loadtest``. :func:`run_load_test` (in :mod:`runtime.loadtest.run`,
imported with numpy and the client on first use):

1. asks the server for the model (names, data types, shapes, max batch) and refuses one
   that does not match the artifact's graph;
2. checks parity through the server: the same seeded inputs go to the server and to a local
   onnxruntime session of the same graph (made by :func:`runtime.sessions.create_session`),
   and every output is compared (:func:`runtime.compare.compare`);
3. times local onnxruntime at the same batch size in a loop (the baseline), then drives the
   server with N concurrent clients for each concurrency level, each level bounded in time
   and in request count, and reads Triton's Prometheus counters before and after, which give
   the batches the dynamic batcher really formed.

It returns a :class:`LoadTestResult`; nothing here prints. Only loopback addresses are
ever contacted. Each finished level is handed to ``on_level`` as it completes (the command
writes the results then), so a server that dies during a level costs that level only: the run
ends early, says at which level and why (:attr:`LoadTestResult.ended_early`), and keeps the
levels before it.
"""

from __future__ import annotations

import importlib

DEFAULT_CONCURRENCY = (1, 4, 16)
PROTOCOLS = ("grpc", "http")

_LAZY = (
    "MAX_CONCURRENCY",
    "MAX_SECONDS",
    "MIN_SAMPLES_P90",
    "MIN_SAMPLES_P99",
    "LoadTestConfig",
    "LoadTestResult",
    "ParityResult",
    "Row",
    "check_model",
    "environment",
    "run_load_test",
    "sample_inputs",
)


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(importlib.import_module(".run", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DEFAULT_CONCURRENCY", "PROTOCOLS", *_LAZY]
