"""Layer identity: every graph node's module, recorded at export and kept through every variant,
found again for the names engines report (onnxruntime's fused nodes, OpenVINO's layers)."""

from __future__ import annotations

import shutil
from pathlib import Path

import onnx
import pytest
import torch
from torch import nn

from exporter import artifact as art
from exporter.export import export_model
from exporter.layers import LayerIndex, layer_index, map_modules, unqualified
from exporter.trace import trace_to_onnx
from exporter.variants import build_variant


class Block(nn.Module):
    """A residual block that calls its ReLU twice (torch names the second call ``relu_1``)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(4, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv2(self.relu(self.conv1(x))) + x)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.stages = nn.Sequential(nn.Sequential(Block(), Block()))
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return self.head(torch.flatten(x.mean((2, 3), keepdim=True), 1))  # traced in no submodule


def test_unqualified_is_torchs_scope_name() -> None:
    assert [unqualified(p) for p in ("conv1", "layer1.0", "layer1.0.conv1", "features.3", "0", "a.0.1")] == [
        "conv1",
        "layer1.0",
        "conv1",
        "features.3",
        "0",
        "a.0.1",
    ]


def test_every_node_maps_to_the_module_that_traced_it() -> None:
    model = Net().eval()
    graph = trace_to_onnx(model, torch.zeros(2, 3, 8, 8), 17)
    layers = map_modules(model, graph)
    by_node = layers.nodes
    convs = {n: m for n, m in by_node.items() if n.endswith("/Conv")}
    assert set(convs.values()) == {
        "stem.0",
        "stages.0.0.conv1",
        "stages.0.0.conv2",
        "stages.0.1.conv1",
        "stages.0.1.conv2",
    }
    relus = sorted(m for n, m in by_node.items() if n.endswith("/Relu"))
    assert relus == ["stages.0.0.relu"] * 2 + ["stages.0.1.relu"] * 2 + ["stem.1"]  # relu and relu_1
    assert by_node[next(n for n in by_node if n.endswith("/Add"))] in ("stages.0.0", "stages.0.1")
    assert next(n for n in by_node if n.endswith("Gemm")) and "head" in by_node.values()
    assert layers.module_types["stages.0.0.conv1"] == "Conv2d" and layers.module_types["stem.1"] == "ReLU"
    # the mean and flatten of the model's own forward belong to no module: listed, never dropped
    assert layers.unmapped and all(n not in by_node for n in layers.unmapped)
    assert len(by_node) + len(layers.unmapped) == len(graph.graph.node)
    assert all(m in dict(model.named_modules()) for m in by_node.values())


@pytest.fixture(scope="module")
def net_graph() -> tuple[onnx.ModelProto, art.LayerMap]:
    """Net's fp32 graph and its recorded map."""
    model = Net().eval()
    graph = trace_to_onnx(model, torch.zeros(2, 3, 8, 8), 17)
    return graph, map_modules(model, graph)


@pytest.fixture(scope="module")
def base_index(net_graph) -> tuple[LayerIndex, art.LayerMap]:
    """resnet18-style names (a fused ReLU, a repeated call), resolved through a recorded map."""
    graph, layers = net_graph
    return LayerIndex(layers, graph), layers


@pytest.mark.parametrize(
    ("name", "op", "module", "via"),
    [
        ("/stem/stem.0/Conv", None, "stem.0", "node"),
        # onnxruntime's NCHWc Conv with its ReLU fused, named after the ReLU's output tensor
        ("/stem/stem.1/Relu_output_0_nchwc_kernel_time", "Conv", "stem.0", "fused"),
        ("/stages/stages.0/stages.0.0/relu/Relu_output_0_nchwc", "Conv", "stages.0.0.conv1", "fused"),
        # a Conv fused with the residual Add and the second ReLU call
        ("/stages/stages.0/stages.0.0/relu_1/Relu_output_0_nchwc", "Conv", "stages.0.0.conv2", "fused"),
        # a QLinearConv of an offline-optimized int8 graph, and onnxruntime's QDQ fusion names
        ("/stages/stages.0/stages.0.1/conv2/Conv_token_12", "QLinearConv", "stages.0.1.conv2", "node"),
        ("/stages/stages.0/stages.0.1/conv2/Conv_quant", "QLinearConv", "stages.0.1.conv2", "node"),
        # onnxruntime's Gemm+Relu (FusedGemm) is "fused " and the Gemm's name
        ("fused /head/Gemm", "FusedGemm", "head", "node"),
        # an fp16 graph's fused Conv that onnxruntime runs in fp32 on a CPU
        ("InsertedPrecisionFreeCast_/stem/stem.1/Relu_output_0_nchwc", "Conv", "stem.0", "fused"),
        # OpenVINO's layer names
        ("/stages/stages.0/stages.0.1/conv1/Conv/WithoutBiases", "Convolution", "stages.0.1.conv1", "node"),
        # an activation quantizer named after its tensor
        ("/stem/stem.1/Relu_output_0_QuantizeLinear", "QuantizeLinear", "stem.1", "tensor"),
        # a name the graph never held but whose scope it did
        ("/stages/stages.0/stages.0.1/conv1/SomethingNew", "Foo", "stages.0.1.conv1", "scope"),
        ("Transpose_token_78", "Transpose", None, "none"),
        ("input_abcd_acdb_/stem/stem.0/Conv/WithoutBiases", "Reorder", None, "none"),
    ],
)
def test_names_engines_report_lead_back_to_the_module(base_index, name, op, module, via) -> None:
    index, _ = base_index
    match = index.resolve(name, op)
    assert (match.module, match.via) == (module, via)
    assert index.module_of(name, op) == module


def test_a_name_a_variant_recorded_still_leads_to_the_fp32_node(net_graph) -> None:
    """Defect: with an int8.opt-cpu variant recorded, its QLinearConv names matched that variant's map
    first, so the row kept the variant's node, whose FLOPs the fp32 graph does not count (empty G op/s)."""
    graph, layers = net_graph
    conv = next(n for n, m in layers.nodes.items() if m == "stages.0.1.conv2")
    token = conv + "_token_12"
    index = LayerIndex(layers, graph, [{token: "stages.0.1.conv2", "Transpose_token_3": "head"}])
    match = index.resolve(token, "QLinearConv")
    assert (match.module, match.node, match.via) == ("stages.0.1.conv2", conv, "node")
    # a name with no fp32 node keeps its own
    assert index.resolve("Transpose_token_3", "Transpose").node == "Transpose_token_3"


def test_the_nodes_of_a_module(base_index) -> None:
    index, layers = base_index
    conv = index.nodes_of("stages.0.1.conv1")
    assert len(conv) == 1 and conv[0].endswith("/conv1/Conv") and layers.nodes[conv[0]] == "stages.0.1.conv1"
    block = index.nodes_of("stages.0.1")
    assert set(conv) < set(block) and all(layers.nodes[n].startswith("stages.0.1") for n in block)
    assert index.nodes_of("stages.0.1", children=False) == [n for n in block if layers.nodes[n] == "stages.0.1"]


def test_export_records_the_map_and_variants_keep_it(tmp_path: Path) -> None:
    """The exporter writes the map into the manifest; the int8 (QDQ) variant's Q/DQ nodes, including
    the weights' DequantizeLinear, map to the layers they feed; offline-optimized QLinearConvs too."""
    from tests.helpers import write_user_model

    source = write_user_model(tmp_path, name="net.py", source=_NET_SOURCE)
    result = export_model(f"{source}:Net", input_shape=(3, 16, 16), output_dir=tmp_path / "a")
    layers = result.manifest.layers
    assert layers is not None and "stages.0.0.conv1" in layers.nodes.values()
    on_disk = art.open_artifact(result.directory).manifest.layers
    assert on_disk == layers
    from exporter.reference import prepare

    reference = prepare(f"{source}:Net", input_shape=(3, 16, 16))
    for key in (art.VariantKey("int8"), art.VariantKey("int8", "cpu")):
        build_variant(result.directory, key, reference=reference)
    artifact = art.open_artifact(result.directory)
    index = layer_index(artifact)
    for key in ("int8", "int8.opt-cpu"):
        record = artifact.manifest.variants[key]
        graph = onnx.load(str(artifact.path(art.VariantKey.parse(key))))
        assert record.layers is not None
        assert len(record.layers.nodes) + len(record.layers.unmapped) == len(graph.graph.node)
        for node in graph.graph.node:
            module = index.module_of(node.name, node.op_type)
            assert module == record.layers.nodes.get(node.name)
            if node.op_type in ("Conv", "QLinearConv"):
                assert module is not None and module.split(".")[-1] in ("0", "conv1", "conv2"), node.name
        weight_dq = [n for n in graph.graph.node if n.op_type == "DequantizeLinear" and "weight" in n.input[0]]
        assert all(record.layers.nodes.get(n.name) for n in weight_dq)
        assert "input_QuantizeLinear" in record.layers.unmapped  # the graph input's quantizer: no module


def test_an_artifact_without_a_map_says_so(exported, tmp_path: Path) -> None:
    directory = tmp_path / "lenet5"
    shutil.copytree(exported("lenet5").directory, directory)
    artifact = art.open_artifact(directory)
    assert artifact.manifest.layers is not None
    old = art.Artifact(directory, artifact.manifest.model_copy(update={"layers": None}))
    index = layer_index(old)
    assert not index.known and index.module_of("/conv1/Conv") is None


_NET_SOURCE = """
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(4, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.conv2(self.relu(self.conv1(x))) + x)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.stages = nn.Sequential(nn.Sequential(Block(), Block()))
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        x = self.stages(self.stem(x))
        return self.head(torch.flatten(x.mean((2, 3), keepdim=True), 1))
"""
