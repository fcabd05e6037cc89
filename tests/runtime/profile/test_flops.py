"""Operations per node: a quantized convolution counts as the Conv it stands for; and which graphs get
per-layer SQNR: every variant of another precision."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from exporter import artifact as art
from runtime.profile.flops import node_flops
from runtime.profile.runner import has_sqnr


def _quantized_convs() -> onnx.ModelProto:
    """x [N, 4, 8, 8] uint8 through a QLinearConv and a ConvInteger, each 6 filters of 4x3x3."""
    w = numpy_helper.from_array(np.ones((6, 4, 3, 3), np.int8), "w")
    scalars = [
        numpy_helper.from_array(np.array(v, dtype), name)
        for name, v, dtype in [("s", 0.1, np.float32), ("zu", 0, np.uint8), ("zi", 0, np.int8)]
    ]
    nodes = [
        helper.make_node("QLinearConv", ["x", "s", "zu", "w", "s", "zi", "s", "zu"], ["y"], "qconv", pads=[1] * 4),
        helper.make_node("ConvInteger", ["x", "w", "zu", "zi"], ["z"], "iconv"),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes,
        "q",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, ["n", 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, None),
         helper.make_tensor_value_info("z", TensorProto.INT32, None)],
        [w, *scalars],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_quantized_convolutions_count_as_the_conv_they_stand_for() -> None:
    """Defect: an int8 QLinearConv had no FLOPs (empty G op/s, % peak) while a Gemm beside it had them."""
    flops = node_flops(_quantized_convs(), (2, 4, 8, 8))
    assert flops == {"qconv": 2 * (2 * 6 * 8 * 8) * 4 * 9, "iconv": 2 * (2 * 6 * 6 * 6) * 4 * 9}


def test_every_variant_of_another_precision_gets_sqnr() -> None:
    """Defect: ``--precision auto`` (the mixed graph) had no SQNR column while int8 had one."""
    assert [has_sqnr(art.VariantKey.parse(k)) for k in ("auto", "int8", "fp16", "int8.opt-cpu", "fp32")] == [
        True,
        True,
        True,
        True,
        False,
    ]
    assert not has_sqnr(art.BASE)  # bf16 is OpenVINO's hint on this graph: nothing to compare
