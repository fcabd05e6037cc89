"""``--explain``: per-layer SQNR of a variant against the fp32 graph, one row per layer, worst layer found."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from exporter import artifact as art
from exporter.errors import UserError
from exporter.reference import rebuild
from exporter.variants import build_variant
from runtime.parity.explain import check_inputs, explain, explain_artifact
from tests.helpers import assert_one_line, run_cli, strict_loads

INT8, FP16 = art.VariantKey("int8"), art.VariantKey("fp16")


@pytest.fixture(scope="module")
def resnet_int8(exported, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private resnet_cifar artifact with its int8 variant (about 10 s)."""
    directory = tmp_path_factory.mktemp("explain") / "resnet_cifar"
    shutil.copytree(exported("resnet_cifar").directory, directory)
    build_variant(directory, INT8)
    return directory


def _inputs() -> list[np.ndarray]:
    return check_inputs((3, 32, 32), (1, 3, 5), digits_inputs=False, seed=1234)


def _quantized_layers(model: onnx.ModelProto) -> list[str]:
    """Nodes fed by a DequantizeLinear of an activation: the layers onnxruntime runs in int8."""
    inits = {t.name for t in model.graph.initializer}
    dq_act = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] not in inits}
    return [
        n.name
        for n in model.graph.node
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear") and any(i in dq_act for i in n.input)
    ]


def test_one_row_per_quantized_layer(resnet_int8: Path) -> None:
    graph = (resnet_int8 / "resnet_cifar.int8.onnx").read_bytes()
    e = explain(graph, (resnet_int8 / "resnet_cifar.onnx").read_bytes(), _inputs(), precision="int8")
    expected = _quantized_layers(onnx.load_from_string(graph))
    assert [r.node for r in e.layers if r.quantized] == expected
    assert len(e.layers) == len(expected) and not e.unmatched
    fp32_tensors = {o for n in onnx.load(str(resnet_int8 / "resnet_cifar.onnx")).graph.node for o in n.output}
    assert all(r.tensor in fp32_tensors for r in e.layers)
    assert e.layers[-1].tensor == "output" and e.batch_sizes == [1, 3, 5]
    assert e.input_sqnr_db is not None and 45 < e.input_sqnr_db < 50, "8-bit rounding of uniform [-1, 1) inputs"
    # The graph's output row agrees with what the parity check recorded for this graph.
    parity = art.open_artifact(resnet_int8).manifest.variants["int8"].parity
    recorded = [r.sqnr_db for r in parity.results if r.sqnr_db is not None]
    assert min(recorded) - 1.0 <= e.layers[-1].sqnr_db <= max(recorded) + 1.0  # type: ignore[operator]
    assert any("+Relu" in r.op_type for r in e.layers), "a ReLU folded into its convolution is named"


def test_a_damaged_layer_is_the_worst(resnet_int8: Path) -> None:
    """Scale one output channel's weights of one convolution in the int8 graph: that layer loses the most."""
    model = onnx.load(str(resnet_int8 / "resnet_cifar.int8.onnx"))
    producer = {o: n for n in model.graph.node for o in n.output}
    inits = {t.name: t for t in model.graph.initializer}
    target = [n for n in model.graph.node if n.op_type == "Conv"][5]
    scale = inits[producer[target.input[1]].input[1]]
    values = numpy_helper.to_array(scale).copy()
    values[0] *= 8.0
    scale.CopyFrom(numpy_helper.from_array(values, scale.name))
    e = explain(
        model.SerializeToString(), (resnet_int8 / "resnet_cifar.onnx").read_bytes(), _inputs(), precision="int8"
    )
    worst = e.worst(1)[0]
    assert worst.node == target.name, [(r.node, r.loss_db) for r in e.worst(3)]
    assert worst.loss_db is not None and worst.loss_db > 10


def test_fp16_graph_is_explained_too(resnet_int8: Path, tmp_path: Path) -> None:
    directory = tmp_path / "resnet_cifar"
    shutil.copytree(resnet_int8, directory)
    build_variant(directory, FP16)
    artifact = art.open_artifact(directory)
    graph = artifact.path(FP16).read_bytes()
    e = explain_artifact(artifact, FP16, graph, rebuild(artifact.manifest), batch_sizes=[2])
    assert e.precision == "fp16" and len(e.layers) >= 15 and not any(r.quantized for r in e.layers)
    # the converter renames the graph output (graph_output_cast_0, then a Cast): compared as "output"
    assert e.layers[-1].tensor == artifact.manifest.outputs[0].name and e.unmatched == []
    assert all(r.sqnr_db is None or r.sqnr_db > 40 for r in e.layers), "fp16 keeps every layer above 40 dB"
    with pytest.raises(UserError, match="--precision int8 or fp16"):
        explain_artifact(artifact, art.BASE, graph, rebuild(artifact.manifest), batch_sizes=[1])


def test_cli_table_and_json_are_complete(resnet_int8: Path) -> None:
    args = ("runtime.parity", str(resnet_int8), "--precision", "int8", "--device", "cpu", "--batch-size", "2")
    proc = run_cli(*args, "--explain", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = strict_loads(proc.stdout)
    layers = doc["explain"]["layers"]  # type: ignore[index]
    assert len(layers) == len(_quantized_layers(onnx.load(str(resnet_int8 / "resnet_cifar.int8.onnx"))))
    assert {"node", "op_type", "tensor", "sqnr_db", "cosine_min", "max_abs_err", "loss_db"} <= set(layers[0])

    proc = run_cli(*args, "--explain", "--wide")
    assert proc.returncode == 0, proc.stderr
    table = [line for line in proc.stdout.splitlines() if line.startswith("|")]
    for row in layers:
        line = next((t for t in table if f" {row['node']} " in t), None)
        assert line is not None and f" {row['tensor']} " in line, f"row of {row['node']} missing or cut"
    assert "…" not in proc.stdout and "left out" not in proc.stdout


def test_cli_tables_fit_with_one_worst_mark(resnet_int8: Path) -> None:
    """Defects: the tables wrapped every row in 100 columns, the mark column had no header, three
    layers were marked "worst" and three "loses most" lines printed."""
    args = ("runtime.parity", str(resnet_int8), "--precision", "int8", "--device", "cpu", "--batch-size", "2")
    proc = run_cli(*args, "--explain", env={"COLUMNS": "100"})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    tables = [line for line in lines if line.startswith("|")]
    assert tables and max(len(line) for line in tables) <= 100
    headers = [line for line, below in zip(tables, tables[1:]) if set(below) <= set("|-: ")]
    assert len(headers) == 2 and all(cell.strip() for h in headers for cell in h.strip("|").split("|"))
    assert sum(" worst " in line for line in tables) == 1
    assert sum(line.startswith("loses most:") for line in lines) == 1
    assert sum("(--wide shows them)" in line for line in lines) == 2
    start = next(i for i, line in enumerate(lines) if line.startswith("per layer, int8"))
    prose = [line for line in lines[start:] if not line.startswith(("|", "columns left out", "loses", "lowest"))]
    assert all(len(line) <= 100 for line in prose), prose  # what explains the table fits as the table does


def test_cli_fp16_explain_is_labelled_fp16(resnet_int8: Path, tmp_path: Path) -> None:
    directory = tmp_path / "resnet_cifar"
    shutil.copytree(resnet_int8, directory)
    build_variant(directory, FP16)
    proc = run_cli("runtime.parity", str(directory), "--precision", "fp16", "--explain", "--batch-size", "2")
    assert proc.returncode == 0, proc.stderr
    assert "per layer, fp16 vs fp32" in proc.stdout and "the input as the fp16 graph reads it" in proc.stdout
    assert "quantized" not in proc.stdout and "(float)" not in proc.stdout and "not compared" not in proc.stdout


@pytest.mark.parametrize(
    ("graph", "extra", "message"),
    [
        ("lenet5", [], "--explain compares a variant with the fp32 graph: add --precision int8 or fp16"),
        ("lenet5.onnx", [], "add --precision int8 or fp16"),
        ("lenet5", ["--precision", "int8.opt-cpu"], "explain --precision int8 instead"),
    ],
)
def test_explain_checks_its_arguments_first(lenet_dir: Path, graph: str, extra: list[str], message: str) -> None:
    # one line and nothing before it: no graph resolved, built or run (the parity check prints its steps)
    ref = str(lenet_dir / graph) if graph.endswith(".onnx") else graph
    proc = run_cli("runtime.parity", ref, *extra, "--explain", "--artifacts-dir", str(lenet_dir.parent))
    assert_one_line(proc, message, code=2)
    assert proc.stdout == ""
