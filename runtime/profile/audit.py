"""Placement audit: which provider ran every node of onnxruntime's optimized graph.

Silent node-level fallback is onnxruntime's most reported surprise on CUDA: a session on
CUDAExecutionProvider still runs the nodes that provider has no kernel for on the CPU, with Memcpy
nodes copying tensors across, and Casts where a precision is missing. From the profiled nodes this
says "all N compute nodes on CUDAExecutionProvider" or names those that are not, and lists every
Memcpy and Cast node with its time (pure: tests feed it recorded and made-up traces).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ..sessions import CPU_PROVIDER, CUDA_PROVIDER
from .records import NodeTime, PlacedNode, Placement

MEMCPY_OPS = frozenset({"Memcpy", "MemcpyFromHost", "MemcpyToHost"})


def audit(nodes: Sequence[NodeTime], device: str, graph_nodes: Iterable[str] = ()) -> Placement:
    """The placement of ``nodes`` on ``device``; ``graph_nodes`` (the graph file's node names) tell the
    nodes onnxruntime inserted from those it was given."""
    expected = CUDA_PROVIDER if device == "cuda" else CPU_PROVIDER
    given = set(graph_nodes)

    def placed(n: NodeTime) -> PlacedNode:
        inserted = bool(given) and n.name not in given
        return PlacedNode(name=n.name, op_type=n.op_type, provider=n.provider, median_us=n.median_us, inserted=inserted)

    compute = [n for n in nodes if n.op_type not in MEMCPY_OPS]
    return Placement(
        device=device,
        expected_provider=expected,
        compute_nodes=len(compute),
        off_device=[placed(n) for n in compute if n.provider != expected],
        memcpy=[placed(n) for n in nodes if n.op_type in MEMCPY_OPS],
        casts=[placed(n) for n in nodes if n.op_type == "Cast"],
    )
