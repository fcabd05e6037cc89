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
from conftest import run_cli
from onnx import numpy_helper

from exporter.data import digits
from exporter.errors import UserError
from exporter.pipeline import export_model
from exporter.train import checkpoint_path, train
from exporter.variants import build_variant, default_reduce_range, strip_identity_ops
from runtime import bench
from runtime.parity import check


@pytest.fixture()
def lenet_dir(exported, tmp_path: Path) -> Path:
    """A private artifacts folder with lenet5 exported (random weights)."""
    root = tmp_path / "artifacts"
    shutil.copytree(exported("lenet5").onnx_path.parent, root / "lenet5")
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """lenet5 trained on the digits (about 10 s) and exported with its weights."""
    root = tmp_path_factory.mktemp("trained")
    result = train("lenet5", output_dir=root, log=lambda _m: None)
    assert result.test_accuracy >= 0.9, result
    export_model("lenet5", weights=result.checkpoint, output_dir=root)
    return root


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
    v = build_variant("lenet5", precision="fp16", output_dir=lenet_dir, fp16_io=fp16_io)
    assert v.path == lenet_dir / "lenet5" / "lenet5.fp16.onnx"
    model = onnx.load(str(v.path))
    weights = [numpy_helper.to_array(t).dtype for t in model.graph.initializer if len(t.dims) == 4]
    assert weights and all(d == np.float16 for d in weights)
    expected_io = onnx.TensorProto.FLOAT16 if fp16_io else onnx.TensorProto.FLOAT
    assert set(_io_types(v.path)) == {expected_io}
    assert v.record["io"]["input"][0] == "batch" and v.record["io"]["output"] == ["batch", 10]
    manifest = json.loads((lenet_dir / "lenet5" / "manifest.json").read_text())
    assert manifest["variants"]["fp16"]["sha256"] == v.record["sha256"]
    assert manifest["sha256"] == v.record["base_sha256"]
    report = check("lenet5", precision="fp16", batch_sizes=(1, 5), device="cpu", output_dir=lenet_dir)
    assert report.passed and report.tolerance.min_top1 == 0.99


def test_int8_variant_is_qdq_per_channel(lenet_dir: Path) -> None:
    v = build_variant("lenet5", precision="int8", output_dir=lenet_dir)
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
    q = v.record["quantization"]
    assert q["format"] == "QDQ" and q["per_channel"] is True
    assert q["reduce_range"] is default_reduce_range()
    assert v.record["io"]["input"][0] == "batch"


@pytest.mark.parametrize("target", ["cpu", "cuda"])
def test_offline_optimized_graph(lenet_dir: Path, target: str) -> None:
    v = build_variant("lenet5", precision="fp32", optimize_for=target, output_dir=lenet_dir)
    assert v.path.name == f"lenet5.opt-{target}.onnx"
    assert v.record["optimization"]["target"] == target
    assert v.record["parity"]["passed"]
    sess = ort.InferenceSession(str(v.path), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape[0] == "batch"


def test_variant_needs_an_export_first(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="run 'python -m exporter lenet5' first"):
        build_variant("lenet5", precision="int8", output_dir=tmp_path)


def test_trained_int8_keeps_accuracy_within_one_point(trained: Path) -> None:
    """The issue's figure for lenet5: int8 held-out accuracy within 1 percentage point of fp32."""
    v = build_variant("lenet5", precision="int8", output_dir=trained)
    acc = v.record["parity"]["accuracy"]
    assert acc["n"] == 360 and acc["pytorch_fp32"] >= 0.9
    assert abs(acc["onnx"] - acc["pytorch_fp32"]) <= 0.01
    assert v.record["parity"]["inputs"] == "digits held-out"


def test_parity_cli_with_precision_reports_accuracy(trained: Path) -> None:
    build_variant("lenet5", precision="fp16", output_dir=trained)
    proc = run_cli(
        "runtime.parity", "lenet5", "--precision", "fp16", "--device", "cpu", "--json", "--output-dir", str(trained)
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["precision"] == "fp16" and doc["onnx"].endswith("lenet5.fp16.onnx")
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
    v = build_variant(
        "lenet5", precision="int8", output_dir=lenet_dir, calibration_dir=calib, calibration_method="percentile"
    )
    assert v.record["calibration_source"] == str(calib)
    assert v.record["quantization"]["calibration_images"] == 12
    assert v.record["quantization"]["calibration_method"] == "percentile"


def test_missing_calibration_dir_is_a_clear_cli_error(lenet_dir: Path, tmp_path: Path) -> None:
    proc = run_cli(
        "exporter",
        "lenet5",
        "--precision",
        "int8",
        "--calibration-dir",
        str(tmp_path / "nope"),
        "--output-dir",
        str(lenet_dir),
    )
    assert proc.returncode == 2 and "calibration directory not found" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (lenet_dir / "lenet5" / "lenet5.int8.onnx").exists()


def test_bench_times_precisions_side_by_side(trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench"
    code = bench.main(
        [
            "--models",
            "lenet5",
            "--precisions",
            "fp32",
            "int8",
            "--batch-sizes",
            "1",
            "4",
            "--iterations",
            "3",
            "--warmup",
            "1",
            "--output",
            str(out),
            "--artifacts-dir",
            str(trained),
        ]
    )
    assert code == 0
    doc = json.loads((out / "results.json").read_text())
    rows = doc["results"]
    ort_rows = {(r["precision"], r["batch_size"]): r for r in rows if r["engine"] == "onnxruntime"}
    assert set(ort_rows) == {("fp32", 1), ("fp32", 4), ("int8", 1), ("int8", 4)}
    for b in (1, 4):
        assert ort_rows[("int8", b)]["speedup_vs_fp32"] == pytest.approx(
            ort_rows[("fp32", b)]["median_ms"] / ort_rows[("int8", b)]["median_ms"]
        )
    assert doc["parity"]["lenet5:int8"]["accuracy"]["n"] == 360


def test_checkpoint_round_trips_through_weights(trained: Path) -> None:
    manifest = json.loads((trained / "lenet5" / "manifest.json").read_text())
    assert manifest["weights"]["kind"] == "file"
    assert manifest["weights"]["path"] == str(checkpoint_path("lenet5", trained).resolve())
