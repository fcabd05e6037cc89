"""Every CUDA row is held to the floor of the precision it computes in, from a stub GPU's probe result:
fp32 with TF32 to the TF32 peak, fp16 to the fp16 tensor-core peak, TensorRT's int8 to the int8 peak."""

from __future__ import annotations

import pytest

from runtime.bench.rows import BenchRow
from runtime.bench.runner import BELOW_FLOOR, with_roofline
from runtime.machine.cuda import measure_cuda

from ..machine.test_peaks import StubGpu

N = 1000
OPS = 2.0 * N**3 / 1e9  # G operations per stub GEMM


def _row(engine: str, precision: str, tf32: bool | None, **settings: object) -> BenchRow:
    return BenchRow(
        run_id="r",
        model="m",
        engine=engine,
        precision=precision,
        device="cuda",
        machine="stub",
        batch_size=32,
        input_shape=[3, 224, 224],
        threads=1,
        status="ok",
        median_ms=10.0,
        gflop=100.0,
        weight_bytes=1 << 20,  # inside the stub's 50 MiB L2: compute floors
        tf32=tf32,
        settings=settings,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    "engine, precision, tf32, settings, held_to, speedup",
    [
        ("onnxruntime", "fp32", True, {}, "tf32", 4),
        ("onnxruntime", "fp32", False, {}, "fp32", 1),
        ("onnxruntime", "fp16", True, {}, "fp16", 10),
        ("onnxruntime", "int8", True, {}, "tf32", 4),  # QDQ on the CUDA provider: dequantized, float convolutions
        ("pytorch", "fp32", True, {}, "tf32", 4),
        ("tensorrt", "fp32", True, {"compute_precision": "tf32"}, "tf32", 4),
        ("tensorrt", "fp16", None, {"compute_precision": "fp16"}, "fp16", 10),
        ("tensorrt", "int8", None, {"compute_precision": "int8"}, "int8", 20),
    ],
)
def test_cuda_rows_get_their_precisions_floor(
    engine: str, precision: str, tf32: bool | None, settings: dict, held_to: str, speedup: float
) -> None:
    machine = measure_cuda(threads=1, tf32=True, backend=StubGpu(), n=N)
    row = with_roofline(_row(engine, precision, tf32, **settings), machine)
    peak = OPS * speedup  # the stub: fp32 1 s, TF32 0.25 s, fp16 0.1 s, int8 0.05 s per GEMM
    assert row.peak_precision == held_to
    assert row.floor_ms == pytest.approx(100.0 / peak * 1e3)
    assert row.fraction_of_peak == pytest.approx(100.0 / 0.01 / peak)
    assert row.time_over_floor == pytest.approx(10.0 / row.floor_ms)
    assert row.bound == "compute (weights in cache)"


def test_a_row_faster_than_its_floor_says_the_probe_is_suspect() -> None:
    machine = measure_cuda(threads=1, tf32=True, backend=StubGpu(), n=N)
    row = _row("onnxruntime", "fp32", True).model_copy(update=dict(median_ms=1e-6))
    assert BELOW_FLOOR in with_roofline(row, machine).unstable_reasons


def test_a_precision_the_gpu_has_no_peak_for_gets_no_floor() -> None:
    """bf16 fails on the stub: a bf16 row keeps no floor instead of borrowing another precision's."""
    machine = measure_cuda(threads=1, tf32=True, backend=StubGpu(), n=N)
    row = with_roofline(_row("tensorrt", "fp16", None, compute_precision="bf16"), machine)
    assert row.peak_precision is None and row.floor_ms is None
