"""--dynamic-size end to end: every eligible zoo model, its minimum size, refusals, variants, runtime checks."""

from __future__ import annotations

import shutil
from pathlib import Path

import onnx
import pytest
import torch

from exporter import artifact as art
from exporter.errors import UserError
from exporter.export import export_model
from exporter.pooling import FixedSizeModel, find_size_limits
from exporter.zoo import get_spec, list_models
from runtime.parity import EXTRA_SIZES, check_sizes
from tests.helpers import assert_one_line, run_cli, strict_loads

#: The smallest (height, width) each model accepts, as exporter.pooling.find_size_limits computes it.
MIN_SIZES = {
    "alexnet": (63, 63),
    "alexnet_original": (67, 67),
    **{f"vgg{d}{bn}": (32, 32) for d in (11, 13, 16, 19) for bn in ("", "_bn")},
    "googlenet": (15, 15),
    "googlenet_cifar": (5, 5),
    **{f"resnet{d}": (1, 1) for d in (18, 34, 50, 101, 152)},
    "resnet_cifar": (1, 1),
}
FIXED = {
    "lenet5": "fullconn_layer.0",
    "alexnet_half": "classifier.1",
    "alexnet_cifar": "fullconn_layer.0",
    "alexnet_fashionmnist": "fc.0",
    "vgg16_cifar": "fullconn_layer.0",
}


def test_every_zoo_model_is_either_dynamic_or_refused() -> None:
    assert set(MIN_SIZES) | set(FIXED) == set(list_models())


def _input_dims(path: Path) -> list[str | int]:
    model = onnx.load(str(path), load_external_data=False)
    return [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]


#: The default run exports one model per family and minimum size (the minimum of each of the others is held by
#: the cheap test below); ``-m slow`` (or ``-m sweep``) exports every one. VGG-11 to VGG-19 and ResNet-18 to
#: ResNet-152 differ in depth, not in what a dynamic size does to them, and took 9 of the 17 minutes.
SWEEP_ONLY = {
    *(f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn") if (d, bn) != (11, "")),
    *(f"resnet{d}" for d in (34, 50, 101, 152)),
}


def _sweep(names: list[str]) -> list[object]:
    return [pytest.param(n, marks=pytest.mark.sweep) if n in SWEEP_ONLY else n for n in names]


@pytest.mark.parametrize("name", sorted(MIN_SIZES))
def test_every_dynamic_models_minimum_size(name: str) -> None:
    """The minimum size each model's export records, found as the export finds it (shape-only, on meta)."""
    spec = get_spec(name)
    with torch.device("meta"):
        model = spec.build().eval()
    limits = find_size_limits(model, spec.input_shape, name=name)
    assert (limits.min_height, limits.min_width) == MIN_SIZES[name] and not limits.rejected


@pytest.mark.slow
@pytest.mark.parametrize("name", _sweep(sorted(MIN_SIZES)))
def test_dynamic_export_and_parity_at_several_sizes(name: str, tmp_path: Path) -> None:
    # Batch 1 only: the sizes are the point here (the batch is covered by the fixed-size zoo test),
    # and VGG-19 at 320x320 is 80 GFLOP an image.
    result = export_model(name, dynamic_size=True, output_dir=tmp_path, batch_sizes=(1,))
    c, h, w = get_spec(name).input_shape
    assert _input_dims(result.onnx_path) == ["batch", c, "height", "width"]
    m = result.manifest
    assert m.settings.dynamic_size and m.min_size == MIN_SIZES[name]
    expected_sizes = [(h, w), *EXTRA_SIZES, MIN_SIZES[name]]
    assert m.parity.passed and m.parity.sizes == expected_sizes
    assert {(r.height, r.width) for r in m.parity.results} == set(expected_sizes)
    assert "GlobalAveragePool" in m.op_counts or "MatMul" in m.op_counts


@pytest.mark.parametrize("name", sorted(FIXED))
def test_fixed_size_models_are_refused_naming_the_layer(name: str, tmp_path: Path) -> None:
    with pytest.raises(FixedSizeModel, match=f"layer '{FIXED[name]}'"):
        export_model(name, dynamic_size=True, output_dir=tmp_path)
    assert not list(tmp_path.rglob("*"))


def test_cli_refusal_is_one_line(tmp_path: Path) -> None:
    proc = run_cli("exporter", "lenet5", "--dynamic-size", "--artifacts-dir", str(tmp_path))
    assert proc.returncode == 3 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: lenet5 cannot be exported with --dynamic-size: layer 'fullconn_layer.0' (Linear, in_features=400) "
        "needs a fixed input size (it accepted 3x32x32 to 3x35x35 only; 3x64x32 fails)"
    ]


@pytest.fixture(scope="module")
def resnet_cifar_dyn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """resnet_cifar exported with --dynamic-size (its fp32 parity at batch 1: the batches are not the point)."""
    out = tmp_path_factory.mktemp("dyn")
    return export_model("resnet_cifar", dynamic_size=True, output_dir=out, batch_sizes=(1,)).directory


@pytest.fixture(scope="module")
def googlenet_cifar_dyn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """googlenet_cifar exported with --dynamic-size (its fp32 parity at batch 1: the batches are not the point)."""
    out = tmp_path_factory.mktemp("dyn")
    return export_model("googlenet_cifar", dynamic_size=True, output_dir=out, batch_sizes=(1,)).directory


# int8 of a dynamic-size graph calibrates and verifies at five sizes (minutes here): the default run builds it
# once, in test_int8_calibrates_and_passes_at_every_verified_size below; fp32.opt-cpu runs the same offline
# optimizer as int8.opt-cpu. int8 and int8.opt-cpu of this graph run with -m slow (or -m sweep).
_SLOW_SWEEP = [pytest.mark.slow, pytest.mark.sweep]


@pytest.mark.parametrize(
    "key",
    ["fp16", "fp32.opt-cpu", *(pytest.param(k, marks=_SLOW_SWEEP) for k in ("int8", "int8.opt-cpu"))],
)
def test_variants_keep_the_symbolic_sizes(googlenet_cifar_dyn: Path, tmp_path: Path, key: str) -> None:
    from exporter.variants import build_variant

    directory = tmp_path / "googlenet_cifar"
    shutil.copytree(googlenet_cifar_dyn, directory)
    v = build_variant(directory, art.VariantKey.parse(key))
    assert v.record.inputs[0].shape == ["batch", 3, "height", "width"]
    assert v.record.parity.passed and len(v.record.parity.sizes) == 5


def test_int8_calibrates_and_passes_at_every_verified_size(resnet_cifar_dyn: Path, tmp_path: Path) -> None:
    """Calibrated at 32x32 only, int8 resnet_cifar fell to 2.1 dB at 256x300 however much of its stem stayed
    float: its last block's ranges are 40x wider there. Calibrated over every verified size, the tensors whose
    ranges differ most between sizes stay float, and the graph passes at all five (measured: 18.0 dB)."""
    from exporter.variants import build_variant

    directory = tmp_path / "resnet_cifar"
    shutil.copytree(resnet_cifar_dyn, directory)
    v = build_variant(directory, art.VariantKey("int8"))
    assert v.record.inputs[0].shape == ["batch", 3, "height", "width"]  # the symbolic sizes kept
    parity, q = v.record.parity, v.record.quantization
    sizes = [(32, 32), *EXTRA_SIZES, (1, 1)]
    assert q is not None and parity.passed and parity.sizes == sizes
    assert q.calibration_sizes == sizes and q.calibration_images >= 5 * 16
    assert "seed 4242 at 32x32, 256x300" in q.calibration_source
    for size in sizes:
        at = [r for r in parity.results if (r.height, r.width) == size]
        assert len(at) == 3 and all(r.sqnr_db is not None and r.sqnr_db >= 12 for r in at), size
    assert any("ranges differ most between the calibrated input sizes" in r for r in q.float_reasons)
    assert q.attempts[0].startswith("all layers int8:") and "failed" in q.attempts[0]


def test_range_spread_names_the_tensor_one_grid_cannot_serve() -> None:
    from onnx import helper

    from exporter.ranges import range_spread, spread_float_nodes

    ranges = [{"a": (0.0, 4.0), "b": (-1.0, 1.0)}, {"a": (0.0, 160.0), "b": (-1.0, 1.5)}]
    spread = range_spread(ranges)
    assert spread == {"a": pytest.approx(40.0), "b": pytest.approx(1.25)}
    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["a"], name="p"),
            helper.make_node("Relu", ["a"], ["b"], name="c1"),
            helper.make_node("Relu", ["a"], ["y"], name="c2"),
            helper.make_node("Relu", ["b"], ["z"], name="c3"),
        ],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [1]) for n in ("y", "z")],
    )
    nodes, least = spread_float_nodes(helper.make_model(graph), spread, 1)
    assert nodes == ["p", "c1", "c2"] and least == pytest.approx(40.0)


def test_parity_cli_takes_several_sizes_both_ways(googlenet_cifar_dyn: Path) -> None:
    proc = run_cli(
        "runtime.parity", str(googlenet_cifar_dyn), "--input-size", "24x40", "64x64", "--input-size", "7x9", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    doc = strict_loads(proc.stdout)
    assert doc["sizes"] == [[24, 40], [64, 64], [7, 9]]
    assert {(r["height"], r["width"]) for r in doc["results"]} == {(24, 40), (64, 64), (7, 9)}


def test_runtime_refuses_sizes_below_the_minimum(googlenet_cifar_dyn: Path) -> None:
    """onnxruntime can crash (SIGFPE) below a graph's minimum size: the toolkit refuses first."""
    proc = run_cli("runtime.parity", str(googlenet_cifar_dyn), "--input-size", "4x32")
    assert_one_line(proc, "input size 4x32 is below the smallest this graph accepts, 5x5", code=2)
    with pytest.raises(UserError, match="below the smallest"):
        check_sizes((32, 32), (5, 5), [(5, 4)])


def test_input_size_on_a_fixed_size_graph_is_refused(exported) -> None:
    proc = run_cli("runtime.parity", str(exported("resnet_cifar").directory), "--input-size", "64x64")
    assert_one_line(proc, "exported at a fixed size", code=2)


def test_all_with_dynamic_size_reports_fixed_size_models_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import exporter.__main__ as cli

    monkeypatch.setattr(cli, "list_models", lambda: ["lenet5", "resnet_cifar"])
    code = cli.main(["--all", "--dynamic-size", "--artifacts-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    flat = " ".join(out.split())  # the summary is wrapped to the width
    assert "Exported 1/2 models" in flat and "1 have a fixed input size" in flat
    assert "fixed size lenet5: lenet5 cannot be exported with --dynamic-size" in flat
