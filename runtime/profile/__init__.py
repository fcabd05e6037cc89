"""Where the time goes: per-layer profiles of an artifact's graphs, under the model's own names.

* :func:`profile_artifact` (``runner``): one graph on one engine, device, batch and size -> a typed
  :class:`Profile`: a :class:`LayerRow` per layer (module path, op types, kernels, precision,
  median time, share, FLOPs, fraction of the peak of its own precision, SQNR for a variant), the
  :class:`Coverage` of the end-to-end time, and on onnxruntime the :class:`Placement` audit;
* ``collectors``: onnxruntime's profiler and OpenVINO's performance counters behind one interface;
* ``trace`` parses onnxruntime's profiler JSON; ``audit`` the provider of every node; ``rows`` joins
  nodes to layers; ``flops`` counts each node's operations from the graph's shapes;
* ``report`` and ``plot`` turn a profile into table cells, lines and a PNG; ``store`` writes them.


Names are imported on first use: ``python -m runtime.profile --help`` must not pay for
onnxruntime, torch or OpenVINO.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "Coverage": ".records",
    "LayerRow": ".records",
    "NodeTime": ".records",
    "PlacedNode": ".records",
    "Placement": ".records",
    "Profile": ".records",
    "ProfileConfig": ".runner",
    "profile_artifact": ".runner",
    "write_profile": ".store",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'runtime.profile' has no attribute {name!r}")


__all__ = sorted(_LAZY)
