"""TensorRT's optimization profiles, version-keyed engine cache and precisions (pure: no GPU needed), and
the one line a missing TensorRT gives in parity."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.errors import UserError
from runtime import tensorrt as trt
from runtime.bench import engines
from runtime.parity.__main__ import main as parity_main


def test_a_profile_spans_the_manifest_and_the_run() -> None:
    bounds = trt.bounds_for((32, 40), (224, 224), [1, 8, 32], [(224, 224), (320, 480)])
    assert bounds == ((1, 32, 40), (32, 320, 480))
    p = trt.profile_shapes("input", (8, 3, 224, 224), bounds)
    assert p == {
        "trt_profile_min_shapes": "input:1x3x32x40",
        "trt_profile_opt_shapes": "input:8x3x224x224",
        "trt_profile_max_shapes": "input:32x3x320x480",
    }


def test_a_fixed_size_export_profiles_only_its_batch_range() -> None:
    bounds = trt.bounds_for(None, (32, 32), [1, 8], [])
    assert bounds == ((1, 32, 32), (8, 32, 32))
    p = trt.profile_shapes("x", (1, 3, 32, 32), bounds)
    assert p["trt_profile_min_shapes"] == "x:1x3x32x32" and p["trt_profile_max_shapes"] == "x:8x3x32x32"
    assert trt.profile_shapes("x", (4, 3, 32, 32), None)["trt_profile_min_shapes"] == "x:4x3x32x32"


def test_the_cache_is_keyed_by_version_gpu_graph_precision_and_shape(tmp_path: Path) -> None:
    base = dict(root=tmp_path, version="10.3.0", gpu="NVIDIA H200", graph=b"g1", precision="fp16", shape=(8, 3, 32, 32))
    one = trt.cache_dir(**base)  # type: ignore[arg-type]
    assert (
        one.parent == tmp_path
        and one.name.startswith("trt10.3.0-nvidia-h200-")
        and one.name.endswith("-fp16-opt8x3x32x32")
    )
    for change in (
        {"version": "10.4.0"},
        {"gpu": "NVIDIA H100"},
        {"graph": b"g2"},
        {"precision": "int8"},
        {"shape": (1, 3, 32, 32)},
    ):
        assert trt.cache_dir(**{**base, **change}) != one, change  # type: ignore[arg-type]
    assert trt.cache_dir(**base) == one  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "precision, fp16, int8", [("fp32", "False", "False"), ("fp16", "True", "False"), ("int8", "True", "True")]
)
def test_precision_options(precision: str, fp16: str, int8: str, tmp_path: Path) -> None:
    o = trt.options(precision, tmp_path, {"trt_profile_opt_shapes": "x:1x3x8x8"})
    assert (o["trt_fp16_enable"], o["trt_int8_enable"]) == (fp16, int8)
    assert o["trt_engine_cache_path"] == str(tmp_path) and o["trt_engine_cache_enable"] == "True"
    assert o["trt_profile_opt_shapes"] == "x:1x3x8x8"
    assert "trt_engine_cache_path" not in trt.options(precision)
    assert trt.graph_for(precision) == ("int8" if precision == "int8" else "fp32")


def test_tensorrt_refuses_other_precisions() -> None:
    with pytest.raises(UserError, match="TensorRT runs fp32, fp16, int8"):
        trt.options("bf16")


def test_the_bench_runs_tensorrt_int8_from_the_qdq_graph() -> None:
    assert engines.precisions_for("tensorrt", ["fp32", "fp16", "int8", "bf16", "int8.opt-cpu"]) == [
        "fp32",
        "fp16",
        "int8",
    ]
    assert [engines.graph_key("tensorrt", p) for p in ("fp32", "fp16", "int8")] == ["fp32", "fp32", "int8"]
    assert trt.COMPUTE_PRECISION == {"fp32": "tf32", "fp16": "fp16", "int8": "int8"}


@pytest.mark.parametrize("extra", [[], ["--precision", "int8", "--explain"]])
def test_parity_on_tensorrt_without_tensorrt_is_one_line(extra: list[str], exported, capsys) -> None:
    folder = exported("lenet5").onnx_path.parent
    code = parity_main([str(folder), "--engine", "tensorrt", "--no-rebuild", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and err[0].startswith("error: tensorrt: not available"), err


def test_parity_on_tensorrt_on_the_cpu_is_refused(exported, capsys) -> None:
    folder = exported("lenet5").onnx_path.parent
    assert parity_main([str(folder), "--engine", "tensorrt", "--device", "cpu"]) == 2
    assert "--engine tensorrt runs on CUDA" in capsys.readouterr().err
