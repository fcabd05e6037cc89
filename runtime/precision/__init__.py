"""``--precision auto``: which layers of an int8 graph stay float, chosen by measured loss and measured time.

* ``budget``: what the search must keep (output SQNR, cosine, or top-1 on labelled data) as a
  :class:`Budget`, turned into the tolerance every candidate is verified with;
* ``layers``: the quantizable layers of a graph under their module names, each one's loss recovered
  when only it stays float, and its cost from ``runtime.profile``'s per-layer times (fp32 vs int8);
* ``timing``: candidates timed interleaved against fp32 in the deployment engine, with bootstrap
  intervals (``runtime.bench``);
* ``search``: :func:`search_precision`, the search itself, returning a typed :class:`SearchOutcome`
  whose chosen graph is written as the artifact's ``auto`` variant (``exporter.artifact``);
* ``plot``: the Pareto PNG (latency against loss) beside it.

The pipeline of ``/work/shared/design/optimizing.md``: it reads the artifact and the profile's
library, and is read by ``runtime.tune``; nothing below ``runtime`` imports it but the exporter's
command, which calls it for ``--precision auto``.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "Budget": ".budget",
    "budget_from": ".budget",
    "SearchConfig": ".search",
    "SearchOutcome": ".search",
    "search_precision": ".search",
}

#: Exit status of ``python -m exporter NAME --precision auto`` when no candidate within the budget beats
#: fp32 by more than its interval: nothing is written, and a script can tell this from a failure (3).
NOT_WORTH_IT = 4


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'runtime.precision' has no attribute {name!r}")


__all__ = ["NOT_WORTH_IT", *sorted(_LAZY)]
