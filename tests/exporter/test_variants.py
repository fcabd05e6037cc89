"""Optimized variants: fp16, int8, offline optimization, digits training, calibration, accuracy."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from exporter import artifact as art
from exporter.data import digits
from exporter.export import export_model
from exporter.reference import rebuild
from exporter.train import checkpoint_path, train
from exporter.variants import VariantOptions, build_variant, default_reduce_range, strip_identity_ops
from runtime.parity import check_artifact
from runtime.resolve import resolve
from tests.helpers import run_cli

FP16, INT8 = art.VariantKey("fp16"), art.VariantKey("int8")


@pytest.fixture()
def lenet_dir(exported, tmp_path: Path) -> Path:
    """A private copy of the lenet5 artifact (random weights)."""
    directory = tmp_path / "artifacts" / "lenet5"
    shutil.copytree(exported("lenet5").directory, directory)
    return directory


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """lenet5 trained on the digits (about 10 s) and exported with its weights."""
    root = tmp_path_factory.mktemp("trained")
    result = train("lenet5", output_dir=root, log=lambda _m: None)
    assert result.test_accuracy >= 0.9, result
    return export_model("lenet5", weights=result.checkpoint, output_dir=root).directory


def _io_types(path: Path) -> list[int]:
    m = onnx.load(str(path))
    return [v.type.tensor_type.elem_type for v in (*m.graph.input, *m.graph.output)]


def test_identity_pool_is_removed_and_output_unchanged(tmp_path: Path) -> None:
    module = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d((8, 8)),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 64, 5),
    )
    result = export_model(module, input_shape=(3, 8, 8), name="pooled", output_dir=tmp_path)
    model = onnx.load(str(result.onnx_path))
    assert "AveragePool" in [n.op_type for n in model.graph.node]
    stripped, removed = strip_identity_ops(onnx.load(str(result.onnx_path)))
    assert removed == 1 and "AveragePool" not in [n.op_type for n in stripped.graph.node]
    onnx.checker.check_model(stripped)
    x = np.random.default_rng(0).uniform(-1, 1, (3, 3, 8, 8)).astype(np.float32)
    a = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    b = ort.InferenceSession(stripped.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"input": x})[
        0
    ]
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("fp16_io", [False, True])
def test_fp16_variant(lenet_dir: Path, fp16_io: bool) -> None:
    v = build_variant(lenet_dir, FP16, options=VariantOptions(fp16_io=fp16_io))
    assert v.path == lenet_dir / "lenet5.fp16.onnx"
    model = onnx.load(str(v.path))
    weights = [numpy_helper.to_array(t).dtype for t in model.graph.initializer if len(t.dims) == 4]
    assert weights and all(d == np.float16 for d in weights)
    expected_io = onnx.TensorProto.FLOAT16 if fp16_io else onnx.TensorProto.FLOAT
    assert set(_io_types(v.path)) == {expected_io}
    assert v.record.inputs[0].shape[0] == "batch" and v.record.outputs[0].shape == ["batch", 10]
    manifest = art.open_artifact(lenet_dir).manifest
    assert manifest.variants["fp16"] == v.record
    assert manifest.sha256 == v.record.base_sha256
    resolved = resolve(str(lenet_dir), key=FP16, rebuild=False)
    record = check_artifact(resolved.artifact, FP16, rebuild(manifest), resolved.graph)
    assert record.passed and record.tolerance.atol == 5e-2
    assert record == v.record.parity, "the variant's own verification and a later check must agree"


def test_int8_variant_is_qdq_per_channel(lenet_dir: Path) -> None:
    v = build_variant(lenet_dir, INT8)
    model = onnx.load(str(v.path))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") > 0 and ops.count("DequantizeLinear") > ops.count("QuantizeLinear")
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    conv_w = next(
        n
        for n in model.graph.node
        if n.op_type == "DequantizeLinear"
        and inits.get(n.input[0]) is not None
        and inits[n.input[0]].dtype == np.int8
        and inits[n.input[0]].ndim == 4
    )
    assert inits[conv_w.input[1]].shape == (inits[conv_w.input[0]].shape[0],), "weights are not per-channel"
    q = v.record.quantization
    assert q is not None and q.format == "QDQ" and q.per_channel is True
    assert q.reduce_range is default_reduce_range()
    assert q.calibration_source.startswith("random uniform"), "random weights calibrate on the check's distribution"
    assert v.record.inputs[0].shape[0] == "batch"
    assert v.record.parity.tolerance.min_sqnr_db is not None and v.record.parity.tolerance.min_top1 is None


@pytest.mark.parametrize("target", ["cpu", "cuda"])
def test_offline_optimized_graph(lenet_dir: Path, target: str) -> None:
    v = build_variant(lenet_dir, art.VariantKey("fp32", target))
    assert v.path.name == f"lenet5.opt-{target}.onnx"
    assert v.record.optimization is not None and v.record.optimization.target == target
    assert v.record.parity.passed
    sess = ort.InferenceSession(str(v.path), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape[0] == "batch"


def test_variant_needs_an_export_first(tmp_path: Path) -> None:
    with pytest.raises(art.ArtifactError, match="manifest.json missing"):
        build_variant(tmp_path / "lenet5", INT8)


def test_trained_int8_keeps_accuracy_within_one_point(trained: Path) -> None:
    """The issue's figure for lenet5: int8 held-out accuracy within 1 percentage point of fp32."""
    v = build_variant(trained, INT8)
    acc = v.record.parity.accuracy
    assert acc is not None and acc.n == 360 and acc.pytorch_fp32 >= 0.9
    assert abs(acc.onnx - acc.pytorch_fp32) <= 0.01
    assert v.record.parity.inputs == "sklearn digits held-out"
    assert v.record.quantization is not None and v.record.quantization.calibration_source.startswith("sklearn digits")


def test_parity_cli_with_precision_reports_accuracy(trained: Path) -> None:
    build_variant(trained, FP16)
    proc = run_cli("runtime.parity", str(trained / "lenet5.fp16.onnx"), "--device", "cpu", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["precision"] == "fp16" and doc["graph"].endswith("lenet5.fp16.onnx")
    assert doc["accuracy"]["top1_agreement"] >= 0.99


def test_calibration_dir_of_pngs_and_npy(lenet_dir: Path, tmp_path: Path) -> None:
    from PIL import Image

    calib = tmp_path / "calib"
    calib.mkdir()
    train_set, _ = digits((3, 32, 32))
    for i in range(6):
        img = ((train_set.x[i].permute(1, 2, 0).numpy() + 1) * 127.5).astype(np.uint8)
        Image.fromarray(img).save(calib / f"d{i}.png")
    np.save(calib / "batch.npy", train_set.x[6:12].numpy())
    v = build_variant(lenet_dir, INT8, options=VariantOptions(calibration_dir=calib, calibration_method="percentile"))
    q = v.record.quantization
    assert q is not None and q.calibration_source == str(calib) and q.calibration_dir == str(calib)
    assert q.calibration_images == 12 and q.calibration_method == "percentile"


def test_missing_calibration_dir_is_a_clear_cli_error(lenet_dir: Path, tmp_path: Path) -> None:
    proc = run_cli(
        "exporter",
        "lenet5",
        "--precision",
        "int8",
        "--calibration-dir",
        str(tmp_path / "nope"),
        "--output-dir",
        str(lenet_dir.parent),
    )
    assert proc.returncode == 2 and "calibration directory not found" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (lenet_dir / "lenet5.int8.onnx").exists()


def test_checkpoint_round_trips_through_weights(trained: Path) -> None:
    manifest = art.open_artifact(trained).manifest
    assert manifest.weights.kind == "file"
    assert manifest.weights.path == str(checkpoint_path("lenet5", trained.parent).resolve())
