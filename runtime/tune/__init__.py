"""From the benchmark to a deployment: choose, prove and write how to serve an artifact.

Library behind ``python -m runtime.tune``. :func:`run_tune` screens the candidates (engine x
precision x stream split of the threads x batch size) with the bench's throughput mode, every one
parity-checked before it is timed; confirms the finalists together long enough for a p99; chooses
by the target (``latency`` with a p99, or ``throughput``); and writes the winner as a validated
Triton model repository with ``deploy.json`` (:mod:`runtime.tune.deploy`, the one module that
reads and writes it). With ``serve=True`` it also searches Triton configurations on the local
server with the load test (:mod:`runtime.tune.triton`).

It sits above bench, serve and loadtest and uses their libraries, never their commands.
Nothing here prints.
"""

from __future__ import annotations

import importlib
from typing import Any

from .config import LossBudget, TuneConfig, parse_loss

#: names imported on first use, so that ``python -m runtime.tune --help`` loads no engine
_LAZY = {
    "Candidate": "deploy", "DeployRecord": "deploy", "TuneReport": "deploy", "read_deploy": "deploy",
    "read_report": "deploy", "TuneHooks": "search", "TuneResult": "search", "run_tune": "search",
}  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Candidate",
    "DeployRecord",
    "LossBudget",
    "TuneConfig",
    "TuneHooks",
    "TuneReport",
    "TuneResult",
    "parse_loss",
    "read_deploy",
    "read_report",
    "run_tune",
]
