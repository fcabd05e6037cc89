"""From engine nodes to layer rows: each node's module (:class:`exporter.layers.LayerIndex`), nodes of
one module summed run by run, FLOPs from the fp32 graph, each layer held to the peak of the
precision it ran in, and a variant's per-layer SQNR joined on the same module names."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from exporter.files import finite_or_none
from exporter.layers import LayerIndex, Match

from ..machine import MachinePeak, compute_precision
from .records import MIN_COVERAGE, Coverage, LayerRow, NodeTime


@dataclass(frozen=True)
class LayerError:
    """A layer's precision against the fp32 graph: its output's SQNR and what it loses itself."""

    sqnr_db: float | None
    loss_db: float | None


def locate(node: NodeTime, index: LayerIndex) -> Match:
    """The module of an engine node; where its own name leads nowhere, the original layers it fused."""
    match = index.resolve(node.name, node.op_type)
    if match.module is None:
        for original in node.fused:
            other = index.resolve(original, node.op_type)
            if other.module is not None:
                return other
    return match


def sqnr_by_layer(explanation: object, index: LayerIndex) -> dict[str, LayerError]:
    """``runtime.parity.explain``'s rows keyed like the profile's: module path, else node name; a
    module with several rows keeps its lowest SQNR and its largest loss."""
    out: dict[str, LayerError] = {}
    for row in explanation.layers:  # type: ignore[attr-defined]
        key = index.module_of(row.node, row.op_type.split("+")[0]) or row.node
        old = out.get(key)
        sqnr = row.sqnr_db if old is None or old.sqnr_db is None else _min(old.sqnr_db, row.sqnr_db)
        loss = row.loss_db if old is None or old.loss_db is None else _max(old.loss_db, row.loss_db)
        out[key] = LayerError(sqnr, loss)
    return out


def _min(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)


def _max(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


@dataclass
class _Group:
    key: str
    module: str | None
    nodes: list[NodeTime]
    matched: list[str]


def _groups(nodes: Sequence[NodeTime], index: LayerIndex) -> list[_Group]:
    groups: dict[str, _Group] = {}
    for node in nodes:
        match = locate(node, index)
        key = match.module or node.name
        group = groups.setdefault(key, _Group(key, match.module, [], []))
        group.nodes.append(node)
        if match.node is not None and match.node not in group.matched:
            group.matched.append(match.node)
    return list(groups.values())


def layer_rows(
    nodes: Sequence[NodeTime],
    index: LayerIndex,
    *,
    flops: Mapping[str, int] | None = None,
    machine: MachinePeak | None = None,
    device: str = "cpu",
    tf32: bool | None = True,
    errors: Mapping[str, LayerError] | None = None,
) -> list[LayerRow]:
    """One row per layer, slowest first, with shares, FLOPs, fraction of its precision's peak and SQNR."""
    flops, errors = flops or {}, errors or {}
    built = []
    for g in _groups(nodes, index):
        runs = len(g.nodes[0].times_us)
        per_run = [sum(n.times_us[i] for n in g.nodes if i < len(n.times_us)) for i in range(runs)]
        median_ms = statistics.median(per_run) / 1e3 if per_run else 0.0
        dominant = max(g.nodes, key=lambda n: n.median_us)
        counted = [flops[n] for n in g.matched if n in flops]
        built.append((g, median_ms, dominant.precision, sum(counted) if counted else None))
    built.sort(key=lambda b: -b[1])
    total = sum(b[1] for b in built) or 1.0
    rows, cumulative = [], 0.0
    for rank, (g, median_ms, precision, ops) in enumerate(built, 1):
        cumulative += median_ms
        peak_precision = compute_precision(precision, device, tf32) if precision else None
        peak = machine.peak_gflops(peak_precision) if machine is not None and peak_precision else None
        achieved = ops / (median_ms / 1e3) / 1e9 if ops and median_ms > 0 else None
        err = errors.get(g.key)
        rows.append(
            LayerRow(
                rank=rank,
                layer=g.key,
                module=g.module,
                module_type=index.module_type(g.module),
                nodes=[n.name for n in g.nodes],
                op_types=list(dict.fromkeys(n.op_type for n in g.nodes)),
                kernels=list(dict.fromkeys(n.kernel for n in g.nodes)),
                precision=precision,
                median_ms=median_ms,
                share=median_ms / total,
                cumulative_share=cumulative / total,
                flops=ops,
                achieved_gflops=finite_or_none(achieved),
                peak_precision=peak_precision if peak is not None else None,
                peak_gflops=peak,
                fraction_of_peak=finite_or_none(achieved / peak) if achieved and peak else None,
                sqnr_db=err.sqnr_db if err else None,
                loss_db=err.loss_db if err else None,
            )
        )
    return rows


def coverage(
    nodes: Sequence[NodeTime],
    profiled_ms: Sequence[float],
    profiled_wall_ms: Sequence[float] = (),
    unprofiled_ms: Sequence[float] = (),
) -> Coverage:
    """The layers' time against the end-to-end median of the same profiled session (both medians over
    the runs of per-run totals: a sum of per-layer medians would drop every run's slow layer), and the
    profiling overhead: the profiled session's wall-time median against an identical unprofiled
    session's, timed interleaved with it."""
    runs = max((len(n.times_us) for n in nodes), default=0)
    totals = [sum(n.times_us[i] for n in nodes if i < len(n.times_us)) / 1e3 for i in range(runs)]
    layers = statistics.median(totals) if totals else 0.0
    e2e = statistics.median(profiled_ms)
    plain = statistics.median(unprofiled_ms) if unprofiled_ms else None
    wall = statistics.median(profiled_wall_ms) if profiled_wall_ms else None
    fraction = layers / e2e if e2e > 0 else 0.0
    return Coverage(
        layers_ms=layers,
        end_to_end_ms=e2e,
        fraction=fraction,
        unprofiled_ms=plain,
        overhead=finite_or_none(wall / plain - 1) if plain and wall else None,
        ok=fraction >= MIN_COVERAGE,
    )
