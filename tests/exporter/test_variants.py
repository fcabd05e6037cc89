"""Optimized variants: fp16, int8, offline optimization, digits training, calibration, accuracy."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from exporter import artifact as art
from exporter.data import digits, random_input
from exporter.errors import ExportFailed
from exporter.export import export_model
from exporter.reference import prepare, rebuild
from exporter.variants import (
    CALIBRATION_IMAGES,
    CALIBRATION_SEED,
    VariantOptions,
    build_variant,
    calibration_images,
    default_reduce_range,
    int8_tolerance,
    strip_identity_ops,
)
from runtime import compare
from runtime.parity import check_artifact
from runtime.resolve import resolve
from tests.helpers import assert_one_line, run_cli, strict_loads

FP16, INT8 = art.VariantKey("fp16"), art.VariantKey("int8")


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
    doc = strict_loads(proc.stdout)
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
        "--artifacts-dir",
        str(lenet_dir.parent),
    )
    assert_one_line(proc, "calibration directory not found", code=2)
    assert not (lenet_dir / "lenet5.int8.onnx").exists()


# --- int8 for every model ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["alexnet_cifar", "resnet_cifar", "googlenet_cifar"])
def test_int8_for_random_weight_zoo_models(exported, tmp_path: Path, name: str) -> None:
    """int8 succeeds out of the box, judged by SQNR and cosine, and records both and how it was made."""
    directory = tmp_path / name
    shutil.copytree(exported(name).directory, directory)
    v = build_variant(directory, INT8)
    parity, q = v.record.parity, v.record.quantization
    assert q is not None and parity.passed
    assert parity.tolerance.min_sqnr_db == 12.0 and parity.tolerance.min_cosine == 0.98 and q.tolerance_reason is None
    assert all(r.sqnr_db is not None and r.sqnr_db >= 12 and (r.cosine_min or 0) >= 0.98 for r in parity.results)
    assert all(r.top1_agreement is not None for r in parity.results), "top-1 is reported"
    assert q.calibration_source == f"random uniform [-1, 1), seed {CALIBRATION_SEED}" and q.calibration_images == 256
    assert q.input_rounding_sqnr_db is not None and q.input_rounding_sqnr_db > 40
    assert q.attempts == [], "every layer int8 passes at once"


def _tiny_224() -> torch.nn.Module:
    torch.manual_seed(0)
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(3, 16, 7, stride=4, padding=3),
        nn.ReLU(),
        nn.MaxPool2d(3, 2, 1),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 100),
    ).eval()


def test_random_weights_calibrate_on_what_the_check_feeds(tmp_path: Path) -> None:
    """The old path calibrated 224x224 models on digits upsampled 28x, smooth images whose activation
    ranges do not cover the uniform noise the check feeds: measured on this small 224x224 network,
    43 dB SQNR calibrated on the check's distribution, 16 dB on upsampled digits."""
    result = export_model(_tiny_224(), input_shape=(3, 224, 224), name="tiny", output_dir=tmp_path)
    reference = prepare(_tiny_224(), input_shape=(3, 224, 224), name="tiny")
    images, source = calibration_images(reference, None)
    assert source.startswith("random uniform") and len(images) == 1
    assert torch.equal(images[0], random_input((3, 224, 224), CALIBRATION_IMAGES, seed=CALIBRATION_SEED))
    v = build_variant(result.directory, INT8, reference=reference)
    assert min(r.sqnr_db for r in v.record.parity.results if r.sqnr_db is not None) > 30

    calib = tmp_path / "digits"
    calib.mkdir()
    np.save(calib / "digits.npy", digits((3, 224, 224))[0].x[:64].numpy())
    old = build_variant(result.directory, INT8, reference=reference, options=VariantOptions(calibration_dir=calib))
    assert min(r.sqnr_db for r in old.record.parity.results if r.sqnr_db is not None) < 25


def test_float_stem_when_every_layer_int8_fails(exported, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where all-int8 fails verification, the first compute layer stays float (recorded), same ranges.

    alexnet_cifar measures 32.3 dB with every layer int8 and 34.5 dB with its first convolution
    float; a tolerance between the two makes the first graph fail and the second pass.
    """
    directory = tmp_path / "alexnet_cifar"
    shutil.copytree(exported("alexnet_cifar").directory, directory)
    strict = compare.DEFAULT_TOLERANCES[("cpu", "int8")].model_copy(update={"min_sqnr_db": 33.5})
    monkeypatch.setitem(compare.DEFAULT_TOLERANCES, ("cpu", "int8"), strict)
    v = build_variant(directory, INT8)
    q = v.record.quantization
    assert q is not None and v.record.parity.passed
    assert len(q.attempts) == 1 and q.attempts[0].startswith("all layers int8:") and "failed" in q.attempts[0]
    first_conv = next(n.name for n in onnx.load(str(exported("alexnet_cifar").onnx_path)).graph.node)
    assert first_conv in q.float_nodes and any(r.startswith("stem kept float") for r in q.float_reasons)
    conv = next(n for n in onnx.load(str(v.path)).graph.node if n.name == first_conv)
    assert conv.input[0] == "input", "the first convolution takes the float input directly"

    hopeless = strict.model_copy(update={"min_sqnr_db": 80.0})
    monkeypatch.setitem(compare.DEFAULT_TOLERANCES, ("cpu", "int8"), hopeless)
    (directory / "alexnet_cifar.int8.onnx").unlink()
    with pytest.raises(ExportFailed, match=r"int8 failed verification however much.*first 3 compute layer"):
        build_variant(directory, INT8)
    assert not (directory / "alexnet_cifar.int8.onnx").exists()


def test_int8_tolerance_follows_the_models_own_input_rounding_floor() -> None:
    default = compare.default_tolerance("cpu", "int8")
    kept, reason = int8_tolerance(default, 43.9, 0.99998)  # resnet18
    assert kept == default and reason is None
    kept, reason = int8_tolerance(default, 20.4, 0.9955)  # resnet50: the default is the weaker demand
    assert kept == default and reason is None
    moved, reason = int8_tolerance(default, 13.82, 0.97658)  # resnet152
    assert moved.min_sqnr_db == pytest.approx(10.82) and moved.min_cosine == pytest.approx(0.9532)
    assert reason is not None and "13.8 dB" in reason and moved.atol is None and moved.min_top1 is None


@pytest.mark.slow
def test_int8_resnet18_cli(tmp_path: Path) -> None:
    """The issue's failing command, out of the box (about a minute on 2 cores)."""
    proc = run_cli("exporter", "resnet18", "--precision", "int8", "--artifacts-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = art.open_artifact(tmp_path / "resnet18").manifest.variants["int8"]
    assert record.parity.passed and record.quantization is not None
    assert min(r.sqnr_db for r in record.parity.results if r.sqnr_db is not None) >= 20
    assert min(r.cosine_min for r in record.parity.results if r.cosine_min is not None) >= 0.99
    assert "min SQNR" in proc.stdout and "min cosine" in proc.stdout


HUGE = """
import torch


class Huge(torch.nn.Module):
    # outputs around 1e5: finite in fp32, beyond fp16's largest number (65504)
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(6, 3)

    def forward(self, x):
        return self.fc(x) * 70000.0
"""


def test_an_fp16_graph_that_fails_its_check_is_refused_and_not_recorded(tmp_path: Path) -> None:
    """A real fp16 failure (nothing stubbed): the variant is refused, no file written, nothing recorded."""
    from tests.helpers import write_user_model

    src = write_user_model(tmp_path, HUGE, "huge.py")
    result = export_model(f"{src}:Huge", input_shape=(6,), name="huge", output_dir=tmp_path / "a")
    before = {p.name: p.read_bytes() for p in result.directory.iterdir()}
    reference = rebuild(result.manifest, f"{src}:Huge")
    with pytest.raises(ExportFailed, match="huge fp16 failed verification: "):
        build_variant(result.directory, art.VariantKey("fp16"), reference=reference)
    assert {p.name: p.read_bytes() for p in result.directory.iterdir()} == before
    proc = run_cli(
        "exporter", f"{src}:Huge", "--input-shape", "6", "--name", "huge", "--precision", "fp16",
        "--artifacts-dir", str(tmp_path / "a"),
    )  # fmt: skip
    assert_one_line(proc, "huge fp16 failed verification", code=3, after_progress=True)
    assert sorted(p.name for p in result.directory.iterdir()) == ["huge.onnx", "manifest.json"]
    assert art.open_artifact(result.directory).manifest.variants == {}
