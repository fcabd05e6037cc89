"""The quantizable layers of a graph, what each one loses in int8 and what keeping it float costs.

A layer is a module of the PyTorch model (``layer1.0.conv1``) holding a compute node (Conv, Gemm,
MatMul): the layer map recorded at export names it, so the search's "kept float" lists, the profile's
rows and ``--explain`` join on one key. Its nodes in the pre-processed graph are what
``quantize_int8(keep_float=...)`` leaves float.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from exporter.artifact import LayerCost
from exporter.layers import LayerIndex
from exporter.variants import COMPUTE_OPS

from ..profile.collectors import EngineRun, OnnxruntimeCollector, OpenvinoCollector
from ..profile.rows import layer_rows
from ..sessions import SessionConfig

#: Smallest cost a layer is charged (ms), so a layer the profiler sees as free is not infinitely cheap.
MIN_COST_MS = 0.005
#: Per float layer, this share of the all-int8 graph's time is charged on top of its own cost (the
#: Quantize/Dequantize pair around it, the fusions it breaks).
ISLAND_SHARE = 0.01
#: Ops that only move or select their input's values: the rounding of a compute layer's input passes through them.
DATA_MOVING = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Relu", "Flatten", "Reshape",
               "Transpose", "Squeeze", "Unsqueeze", "Resize", "Identity", "Concat"}  # fmt: skip
#: Ops that merge tensors the quantizer rounds to one grid (a residual block's ``out += identity``): a module
#: holding one is a unit of the search too, though it computes nothing. ResNet-50's 16 residual Adds left
#: int8 cap its output at 15.8 dB with every Conv and Gemm float (93.6 dB with the Adds float too).
MERGE_OPS = {"Add", "Sum", "Mul"}
#: Profiled runs per graph for the per-layer times.
PROFILE_RUNS = 20


@dataclass(frozen=True)
class Layer:
    name: str
    nodes: tuple[str, ...]


def quantizable_layers(model: onnx.ModelProto, index: LayerIndex) -> list[Layer]:
    """The graph's layers holding a compute node, in graph order, each with all its nodes and the data-moving
    nodes feeding it (pools, ReLUs, reshapes back to the previous compute layer): keeping a layer float
    must keep its input float too, or the rounding that hurts it stays (GoogLeNet's conv2 loses 11 dB in the
    rounding of its max-pooled input, not in its own arithmetic). Modules holding a merge (:data:`MERGE_OPS`,
    a residual block's Add) are units too, so the search can keep a residual stream float."""
    groups: dict[str, list[str]] = {}
    compute: set[str] = set()
    producer = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        module = index.module_of(node.name, node.op_type) or node.name
        groups.setdefault(module, []).append(node.name)
        if node.op_type in COMPUTE_OPS:
            compute.add(module)
            groups[module].extend(_feeders(node, producer))
        elif node.op_type in MERGE_OPS:
            compute.add(module)
    return [Layer(m, tuple(dict.fromkeys(nodes))) for m, nodes in groups.items() if m in compute]


def _feeders(node: onnx.NodeProto, producer: dict[str, onnx.NodeProto]) -> list[str]:
    """The data-moving nodes between ``node`` and the compute layers (or graph input) before it."""
    out: list[str] = []
    todo = [producer[i] for i in node.input[:1] if i in producer]
    while todo:
        p = todo.pop()
        if p.op_type not in DATA_MOVING or p.name in out:
            continue
        out.append(p.name)
        feeds = p.input if p.op_type == "Concat" else p.input[:1]  # a Concat rounds all its branches to one grid
        todo.extend(producer[i] for i in feeds if i in producer)
    return out


def layer_times(
    graph: bytes, x: np.ndarray, index: LayerIndex, engine: str, precision: str, threads: int, device: str = "cpu"
) -> dict[str, float]:
    """Median time per layer (ms) of ``graph`` on ``x``, from ``runtime.profile``'s collectors, on ``device``
    (``cuda``: onnxruntime's CUDA provider)."""
    run: EngineRun
    if engine == "openvino":
        run = OpenvinoCollector(threads, precision)(graph, x, 3, PROFILE_RUNS)
    else:
        config = SessionConfig(device=device, threads=threads, allow_spinning=False)
        run = OnnxruntimeCollector(config)(graph, x, 3, PROFILE_RUNS)
    times: dict[str, float] = {}
    for row in layer_rows(run.nodes, index):
        # a node onnxruntime fused (Gemm + Relu: "fused /fc/fc.0/Gemm") keeps the name of its compute node
        key = row.module or index.module_of(row.layer.removeprefix("fused ")) or row.layer
        times[key] = times.get(key, 0.0) + row.median_ms
    return times


def layer_costs(
    layers: Sequence[Layer],
    recovered: dict[str, float | None],
    alone: dict[str, float | None],
    fp32_ms: dict[str, float],
    int8_ms: dict[str, float],
) -> list[LayerCost]:
    """Each layer's recovered dB with its cost: its fp32 time minus its int8 time (at least :data:`MIN_COST_MS`)."""
    out = []
    for layer in layers:
        a, b = fp32_ms.get(layer.name), int8_ms.get(layer.name)
        cost = max(a - (b or 0.0), MIN_COST_MS) if a is not None else None
        out.append(
            LayerCost(
                layer=layer.name,
                nodes=list(layer.nodes),
                recovered_db=recovered.get(layer.name),
                alone_int8_sqnr_db=alone.get(layer.name),
                cost_ms=cost,
                fp32_ms=a,
                int8_ms=b,
            )  # fmt: skip
        )
    return out


def noise_of(c: LayerCost) -> float:
    """The layer's output noise relative to the signal when it alone is int8 (0 where none was measurable)."""
    return 0.0 if c.alone_int8_sqnr_db is None else 10 ** (-c.alone_int8_sqnr_db / 10)


def int8_order(costs: Sequence[LayerCost], overhead_ms: float = 0.0) -> list[LayerCost]:
    """Layers to make int8, best first: the most time saved (its fp32 minus int8 time, plus ``overhead_ms``,
    what a float island costs in conversions) per unit of output noise it adds alone."""

    def score(c: LayerCost) -> float:
        return ((c.cost_ms or MIN_COST_MS) + overhead_ms) / max(noise_of(c), 1e-12)

    return sorted(costs, key=score, reverse=True)


def predicted_int8_sqnr(order: Sequence[LayerCost], k: int, floor: float = 0.0) -> float:
    """Output SQNR predicted with the first ``k`` layers of ``order`` int8 and the rest float: their noises
    (each measured alone) add, on top of ``floor``, the noise left with every layer float."""
    noise = floor + sum(noise_of(c) for c in order[:k])
    return 10 * math.log10(1 / noise) if noise > 0 else math.inf


def alone_int8(
    layers: Sequence[Layer],
    build: Callable[[list[str], str], bytes],
    measure: Callable[[bytes], float | None],
    step: Callable[[str], None],
    precision: str = "int8",
) -> dict[str, float | None]:
    """Output SQNR of the graph with only each layer int8 (or what ``build`` makes the layers not kept float:
    fp16), every other layer float, inputs included."""
    out: dict[str, float | None] = {}
    for i, layer in enumerate(layers, 1):
        step(f"sensitivity {i}/{len(layers)}: only {layer.name} {precision}")
        mine = set(layer.nodes)
        others = list(dict.fromkeys(n for other in layers if other is not layer for n in other.nodes if n not in mine))
        out[layer.name] = measure(build(others, f"alone.{i}"))
    return out


def sensitivities(
    layers: Sequence[Layer],
    build: Callable[[list[str], str], bytes],
    measure: Callable[[bytes], float | None],
    base_sqnr: float | None,
    step: Callable[[str], None],
) -> dict[str, float | None]:
    """SQNR recovered (dB) by each layer alone kept float, against the all-int8 (or all-fp16) graph's
    ``base_sqnr``."""
    out: dict[str, float | None] = {}
    for i, layer in enumerate(layers, 1):
        step(f"sensitivity {i}/{len(layers)}: {layer.name} float")
        sqnr = measure(build(list(layer.nodes), f"only.{i}"))
        out[layer.name] = None if sqnr is None or base_sqnr is None else round(sqnr - base_sqnr, 3)
    return out


def below_budget(costs: Sequence[LayerCost], target_db: float) -> list[LayerCost]:
    """The layers whose output SQNR with only them int8 is already below ``target_db``, noisiest first.

    Noise grows as more layers go int8 (their noises add, or nearly: the measured sums hold within a dB or
    two), so every graph that meets the budget keeps these float: the search starts its noise-first
    candidates from them, and the graph with only them float runs about as fast as any within it can."""
    out = [c for c in costs if c.alone_int8_sqnr_db is not None and c.alone_int8_sqnr_db < target_db]
    return sorted(out, key=lambda c: c.alone_int8_sqnr_db or 0.0)


def noisiest_first(costs: Sequence[LayerCost]) -> list[LayerCost]:
    """Layers by the noise they add alone int8, the most first (unmeasured ones last)."""
    return sorted(costs, key=lambda c: math.inf if c.alone_int8_sqnr_db is None else c.alone_int8_sqnr_db)
