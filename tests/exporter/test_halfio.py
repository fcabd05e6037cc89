"""fp16 graphs with float16 inputs and outputs: the boundary Cast pair removed, nothing else changed."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from exporter.artifact import VariantKey
from exporter.halfio import boundary_casts, half_io
from exporter.variants import VariantOptions, build_variant


@pytest.fixture(scope="module")
def lenet_fp16(exported, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    folder = tmp_path_factory.mktemp("halfio") / "lenet5"
    shutil.copytree(exported("lenet5").onnx_path.parent, folder)  # the shared export stays as it is
    v = build_variant(folder, VariantKey("fp16"), options=VariantOptions())
    return v.path.read_bytes()


def _run(graph: bytes, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def test_the_boundary_casts_go_and_the_io_turns_half(lenet_fp16: bytes) -> None:
    assert len(boundary_casts(lenet_fp16)) == 2
    h = half_io(lenet_fp16)
    assert h.changed and len(h.removed) == 2 and h.inputs == ["input"] and h.outputs == ["output"] and not h.kept
    assert boundary_casts(h.graph) == []
    g = onnx.load_from_string(h.graph).graph
    assert g.input[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    assert g.output[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    assert len(g.node) == len(onnx.load_from_string(lenet_fp16).graph.node) - 2
    assert [o.name for o in g.output] == ["output"], "the output keeps its name"


def test_it_computes_what_the_fp16_graph_computes(lenet_fp16: bytes) -> None:
    x = np.random.default_rng(0).uniform(-1, 1, (3, 3, 32, 32)).astype(np.float32)
    want = _run(lenet_fp16, x)
    got = _run(half_io(lenet_fp16).graph, x.astype(np.float16))
    assert got.dtype == np.float16 and want.dtype == np.float32
    np.testing.assert_allclose(got.astype(np.float32), want, atol=2e-3, rtol=2e-3)


def test_a_graph_already_half_is_left_alone(lenet_fp16: bytes) -> None:
    once = half_io(lenet_fp16).graph
    again = half_io(once)
    assert not again.changed and again.graph == once


def test_an_input_read_by_more_than_a_cast_keeps_float() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4])
    nodes = [
        helper.make_node("Cast", ["x"], ["xh"], to=TensorProto.FLOAT16, name="in_cast"),
        helper.make_node("Relu", ["xh"], ["yh"]),
        helper.make_node("Cast", ["yh"], ["y"], to=TensorProto.FLOAT, name="out_cast"),
        helper.make_node("Relu", ["x"], ["z"]),  # the float input is also read as it is
    ]
    graph = helper.make_graph(nodes, "g", [x], [y, z])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    h = half_io(model.SerializeToString())
    assert h.removed == ["out_cast"] and h.outputs == ["y"] and h.inputs == []
    assert "x" in h.kept and "z" in h.kept
    out = _run(h.graph, np.array([[-1, 2, -3, 4]], np.float32))
    assert out.dtype == np.float16 and out.tolist() == [[0, 2, 0, 4]]
