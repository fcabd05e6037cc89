"""Operations per node of the fp32 graph at one input shape, from the graph's own shapes.

Counted the way torch's ``FlopCounterMode`` counts them (2 per multiply-accumulate, convolutions and
matrix products only; a bias, a ReLU or a pool costs nothing here): a Conv is
``2 x output elements x (input channels / group) x kernel area`` (a QLinearConv or ConvInteger the
same, from its weight), a Gemm or MatMul ``2 x M x N x K``.
The graph's BatchNorms are folded into its convolutions, so the count is the graph's, which for the
zoo equals FlopCounterMode's on the PyTorch model (checked in the tests). Needs no PyTorch model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import onnx
from onnx import shape_inference


def _fixed(model: onnx.ModelProto, input_shape: Sequence[int]) -> onnx.ModelProto:
    """The graph's structure with its first input fixed to ``input_shape`` and its weights as typed
    inputs (shapes, not bytes): shape inference then needs no copy of the weights."""
    inits = {t.name for t in model.graph.initializer}
    inputs = [onnx.ValueInfoProto.FromString(i.SerializeToString()) for i in model.graph.input if i.name not in inits]
    for d, value in zip(inputs[0].type.tensor_type.shape.dim, input_shape):
        d.Clear()
        d.dim_value = int(value)
    weights = [onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in model.graph.initializer]
    graph = onnx.helper.make_graph(list(model.graph.node), "shapes", [*inputs, *weights], list(model.graph.output))
    fixed = onnx.helper.make_model(graph, opset_imports=list(model.opset_import))
    fixed.ir_version = model.ir_version
    return fixed


def node_flops(model: onnx.ModelProto, input_shape: Sequence[int]) -> dict[str, int]:
    """Operations of each Conv, ConvTranspose, QLinearConv, ConvInteger, Gemm and MatMul node (of the
    standard ONNX domain) at ``input_shape`` (batch included)."""
    inferred = shape_inference.infer_shapes(_fixed(model, input_shape), data_prop=True)
    shapes: dict[str, list[int]] = {}
    for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim]
        shapes[vi.name] = dims
    out: dict[str, int] = {}
    for node in model.graph.node:
        flops = _flops(node, shapes)
        if flops is not None:
            out[node.name] = flops
    return out


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    return next((int(a.i) for a in node.attribute if a.name == name), default)


#: Quantized convolutions and the input index of their weight (QLinearConv: x, x_scale, x_zero_point, w, ...).
_QUANTIZED_CONV = {"QLinearConv": 3, "ConvInteger": 1}


def _flops(node: onnx.NodeProto, shapes: dict[str, list[int]]) -> int | None:
    def known(name: str) -> list[int] | None:
        dims = shapes.get(name)
        return dims if dims and all(d > 0 for d in dims) else None

    if node.domain not in ("", "ai.onnx"):  # an engine's own layout (NCHWc, NHWC): shapes mean other things
        return None
    if node.op_type in _QUANTIZED_CONV:  # as the Conv it stands for: w [Cout, Cin/group, k...]
        w, y = known(node.input[_QUANTIZED_CONV[node.op_type]]), known(node.output[0])
        return None if w is None or y is None else 2 * math.prod(y) * math.prod(w[1:])
    if node.op_type in ("Conv", "ConvTranspose"):
        w, y = known(node.input[1]), known(node.output[0])
        if w is None or y is None:
            return None
        if node.op_type == "Conv":  # w: [Cout, Cin/group, k...]
            return 2 * math.prod(y) * math.prod(w[1:])
        x = known(node.input[0])  # ConvTranspose, w: [Cin, Cout/group, k...]
        return None if x is None else 2 * math.prod(x) * math.prod(w[1:])
    if node.op_type == "Gemm":
        a, y = known(node.input[0]), known(node.output[0])
        if a is None or y is None:
            return None
        k = a[0] if _attr(node, "transA", 0) else a[1]
        return 2 * math.prod(y) * k
    if node.op_type == "MatMul":
        a, y = known(node.input[0]), known(node.output[0])
        return None if a is None or y is None else 2 * math.prod(y) * a[-1]
    return None
