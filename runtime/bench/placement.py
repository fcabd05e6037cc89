"""``--placement-audit``: the profile's placement audit (:mod:`runtime.profile.audit`) on every
onnxruntime graph a run times, with the settings it is timed with.

Once per (model, precision, input size) a profiled session of the same configuration (CUDA graph
capture off: a replayed graph has no per-node events) runs a few batches; every node's provider is
read from onnxruntime's trace. A graph is **clean** when every compute node ran on the expected
provider and no Memcpy node copies tensors between devices inside it. The summary also counts the
Cast nodes (an fp16 graph with float32 I/O has two at its boundary; ``--fp16-io`` removes them) and
the layout Transposes onnxruntime inserted (``prefer_nhwc`` adds them around its NHWC region).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..profile.audit import audit
from ..profile.collectors import OnnxruntimeCollector
from ..profile.records import Placement
from ..sessions import SessionConfig

#: Profiled runs per audit, after warm-up runs: placement does not change from run to run.
AUDIT_RUNS = 5
AUDIT_WARMUP = 2


@dataclass(frozen=True)
class PlacementSummary:
    clean: bool
    line: str
    off_device: int
    memcpy: int
    casts: int
    inserted_transposes: int


def summarize(placement: Placement, transposes: int = 0) -> PlacementSummary:
    """The verdict and one line for a placement (pure: tests feed it made-up placements)."""
    off, memcpy, casts = len(placement.off_device), len(placement.memcpy), len(placement.casts)
    where = placement.expected_provider
    if off:
        names = ", ".join(f"{n.name} ({n.op_type}) on {n.provider}" for n in placement.off_device[:5])
        more = f" and {off - 5} more" if off > 5 else ""
        head = f"{off} of {placement.compute_nodes} compute nodes NOT on {where}: {names}{more}"
    else:
        head = f"all {placement.compute_nodes} compute nodes on {where}"
    parts = [head]
    if memcpy:
        parts.append(f"{memcpy} Memcpy inside the graph ({', '.join(n.name for n in placement.memcpy[:3])})")
    else:
        parts.append("no Memcpy")
    inserted = sum(1 for n in placement.casts if n.inserted)
    by_ort = f" ({inserted} inserted by onnxruntime)" if inserted else ""
    parts.append(f"{casts} Cast{'s' if casts != 1 else ''}{by_ort}" if casts else "no Cast")
    if transposes:
        parts.append(f"{transposes} layout Transpose{'s' if transposes != 1 else ''} inserted")
    return PlacementSummary(not off and not memcpy, "; ".join(parts), off, memcpy, casts, transposes)


def audit_graph(
    graph: bytes, config: SessionConfig, x: np.ndarray, runs: int = AUDIT_RUNS, warmup: int = AUDIT_WARMUP
) -> tuple[Placement, PlacementSummary]:
    """Profile ``graph`` on ``x`` with ``config`` (uncaptured) and audit where its nodes ran."""
    measured = OnnxruntimeCollector(replace(config, cuda_graph=False))(graph, x, warmup, runs)
    placement = audit(measured.nodes, measured.device, measured.graph_nodes)
    given = set(measured.graph_nodes)
    transposes = sum(1 for n in measured.nodes if n.op_type == "Transpose" and given and n.name not in given)
    return placement, summarize(placement, transposes)
