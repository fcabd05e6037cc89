"""onnxruntime's profiler trace (``SessionOptions.enable_profiling``): a JSON list of Chrome-trace
events. Each ``run()`` is one ``model_run`` event of category ``Session``; each node it executed is
one event of category ``Node`` named ``<node name>_kernel_time`` whose ``args`` say ``op_name``,
``provider`` and the ``input_type_shape``. The parsing is pure (tests feed it recorded and made-up
traces): :func:`parse_trace` returns each node's time in every run after the warm-up, and each
run's end-to-end time.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from exporter.errors import UserError

from .records import NodeTime

KERNEL_SUFFIX = "_kernel_time"
#: onnxruntime's type names in ``input_type_shape`` -> the precision a node computes in.
_PRECISIONS = {
    "float": "fp32",
    "float16": "fp16",
    "bfloat16": "bf16",
    "uint8": "int8",
    "int8": "int8",
    "double": "fp64",
}


@dataclass(frozen=True)
class Trace:
    """Per-node times of every measured run (after the warm-up), and each run's end-to-end time."""

    nodes: list[NodeTime]
    run_ms: list[float]


def node_precision(args: dict) -> str | None:
    """The precision of a node's first input (its data; weights and scales follow it)."""
    shapes = args.get("input_type_shape") or []
    for entry in shapes[:1]:
        if isinstance(entry, dict) and entry:
            return _PRECISIONS.get(next(iter(entry)))
    return None


def read_trace(path: Path) -> list[dict]:
    try:
        events = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read onnxruntime's profile {path}: {exc}") from exc
    if not isinstance(events, list):
        raise UserError(f"{path} is not an onnxruntime profile (a JSON list of events)")
    return events


def parse_trace(events: Sequence[dict], warmup: int) -> Trace:
    """Node times per run from the events of ``warmup + n`` runs; the first ``warmup`` are dropped."""
    runs = sorted(
        (float(e["ts"]), float(e["ts"]) + float(e.get("dur", 0)))
        for e in events
        if e.get("cat") == "Session" and e.get("name") == "model_run"
    )
    measured = runs[warmup:]
    if not measured:
        raise UserError(f"the profile holds {len(runs)} runs, none after the {warmup} warm-up runs")
    starts = [start for start, _ in measured]
    times: dict[str, list[float]] = {}
    info: dict[str, dict] = {}
    for e in events:
        name = str(e.get("name", ""))
        if e.get("cat") != "Node" or not name.endswith(KERNEL_SUFFIX):
            continue
        ts = float(e["ts"])
        index = _run_of(ts, measured, starts)
        if index is None:
            continue
        node = name[: -len(KERNEL_SUFFIX)]
        per_run = times.setdefault(node, [0.0] * len(measured))
        per_run[index] += float(e.get("dur", 0))
        info.setdefault(node, e.get("args") or {})
    nodes = [
        NodeTime(
            name=node,
            op_type=str(info[node].get("op_name", "?")),
            kernel=str(info[node].get("provider", "?")),
            provider=str(info[node].get("provider", "?")),
            precision=node_precision(info[node]),
            times_us=per_run,
            median_us=statistics.median(per_run),
        )
        for node, per_run in times.items()
    ]
    return Trace(nodes, [(end - start) / 1e3 for start, end in measured])


def _run_of(ts: float, runs: Sequence[tuple[float, float]], starts: Sequence[float]) -> int | None:
    import bisect

    i = bisect.bisect_right(starts, ts) - 1
    if i < 0 or ts > runs[i][1]:
        return None
    return i
