"""fp16 inputs and outputs for a half-precision graph: remove the Cast pair at its boundary.

An fp16 variant built with float32 inputs and outputs (the default) starts with a ``Cast`` to
float16 on each input and ends with a ``Cast`` to float on each output. On a GPU whose caller
already holds fp16 tensors those two casts are launches and memory passes that do nothing useful:
:func:`half_io` rewrites the graph so that the inputs and outputs are float16 themselves. Only a
Cast pair exactly at the boundary is removed (an input read by anything but such Casts, or an
output not produced by one, keeps its type and is named in :attr:`HalfIO.kept`); the graph is
checked by ``onnx.checker`` afterwards. Nothing here changes a file: it returns new bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx
from onnx import TensorProto

FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16


@dataclass(frozen=True)
class HalfIO:
    """The rewritten graph and what changed."""

    graph: bytes
    #: the Cast nodes removed (by name, or by their output where unnamed)
    removed: list[str] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    #: inputs and outputs left float32, with why
    kept: dict[str, str] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.removed)


def _cast_to(node: onnx.NodeProto) -> int | None:
    if node.op_type != "Cast" or node.domain not in ("", "ai.onnx"):
        return None
    for a in node.attribute:
        if a.name == "to":
            return int(a.i)
    return None


def _label(node: onnx.NodeProto) -> str:
    return node.name or node.output[0]


def _elem_type(vi: onnx.ValueInfoProto) -> int:
    return vi.type.tensor_type.elem_type


def _rename_inputs(nodes: list[onnx.NodeProto], old: str, new: str) -> None:
    for n in nodes:
        for i, name in enumerate(n.input):
            if name == old:
                n.input[i] = new


def half_io(data: bytes) -> HalfIO:
    """``data`` (an ONNX model) with its boundary Cast pair removed and float16 inputs and outputs."""
    model = onnx.load_from_string(data)
    g = model.graph
    nodes = list(g.node)
    outputs = {o.name for o in g.output}
    removed: list[str] = []
    done_in: list[str] = []
    done_out: list[str] = []
    kept: dict[str, str] = {}
    drop: set[int] = set()

    for inp in g.input:
        if _elem_type(inp) != FLOAT:
            continue
        readers = [(i, n) for i, n in enumerate(nodes) if inp.name in n.input]
        if not readers or any(_cast_to(n) != HALF or n.output[0] in outputs for _, n in readers):
            kept[inp.name] = "read by something other than a Cast to float16"
            continue
        for i, n in readers:
            _rename_inputs(nodes, n.output[0], inp.name)
            drop.add(i)
            removed.append(_label(n))
        inp.type.tensor_type.elem_type = HALF
        done_in.append(inp.name)

    producers = {o: i for i, n in enumerate(nodes) for o in n.output}
    graph_inputs = {i.name for i in g.input}
    for out in g.output:
        if _elem_type(out) != FLOAT:
            continue
        i = producers.get(out.name)
        node = nodes[i] if i is not None else None
        if node is None or i in drop or _cast_to(node) != FLOAT:
            kept[out.name] = "not produced by a Cast to float"
            continue
        src = node.input[0]
        if src in graph_inputs or src in outputs or src not in producers:
            kept[out.name] = "its Cast reads a graph input or output"
            continue
        # the half tensor takes the output's name: its producer writes it, its other readers read it
        producer = nodes[producers[src]]
        for k, name in enumerate(producer.output):
            if name == src:
                producer.output[k] = out.name
        _rename_inputs([n for j, n in enumerate(nodes) if j != i], src, out.name)
        drop.add(i)
        removed.append(_label(node))
        out.type.tensor_type.elem_type = HALF
        done_out.append(out.name)

    if not removed:
        return HalfIO(data, [], [], [], kept)
    renamed = set(done_in) | set(done_out)
    value_info = [vi for vi in g.value_info if vi.name not in renamed]
    del g.value_info[:]
    g.value_info.extend(value_info)
    del g.node[:]
    g.node.extend(n for i, n in enumerate(nodes) if i not in drop)
    onnx.checker.check_model(model)
    return HalfIO(model.SerializeToString(), removed, done_in, done_out, kept)


def boundary_casts(data: bytes) -> list[str]:
    """The Cast nodes that read a graph input or write a graph output (what :func:`half_io` removes)."""
    g = onnx.load_from_string(data).graph
    ins, outs = {i.name for i in g.input}, {o.name for o in g.output}
    return [
        _label(n)
        for n in g.node
        if n.op_type == "Cast" and (any(x in ins for x in n.input) or any(y in outs for y in n.output))
    ]
