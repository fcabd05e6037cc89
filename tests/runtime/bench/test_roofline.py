"""Roofline arithmetic on known numbers, and FLOPs counted on known layers."""

from __future__ import annotations

import pytest
from torch import nn

from runtime.bench.roofline import count_flops, roofline, weight_bytes


def test_compute_bound_row() -> None:
    # 2 GFLOP in 10 ms on a 400 GFLOP/s machine reading 4 MB of weights at 20 GB/s
    r = roofline(flops=2e9, weight_bytes=4e6, median_ms=10.0, peak_gflops=400.0, bandwidth_gbs=20.0)
    assert r.achieved_gflops == pytest.approx(200.0)
    assert r.fraction_of_peak == pytest.approx(0.5)
    assert r.floor_ms == pytest.approx(5.0)  # compute 5 ms > memory 0.2 ms
    assert r.time_over_floor == pytest.approx(2.0)
    assert r.bound == "compute"


def test_memory_bound_row() -> None:
    # 0.1 GFLOP but 240 MB of weights (alexnet-like at batch 1): reading them takes 12 ms at 20 GB/s
    r = roofline(flops=1e8, weight_bytes=240e6, median_ms=15.0, peak_gflops=400.0, bandwidth_gbs=20.0)
    assert r.floor_ms == pytest.approx(12.0)
    assert r.time_over_floor == pytest.approx(1.25)
    assert r.bound == "memory"
    assert r.achieved_gflops == pytest.approx(1e8 / 0.015 / 1e9)


def test_weight_bytes_follow_the_precision() -> None:
    assert [weight_bytes(1000, p) for p in ("fp32", "fp16", "bf16", "int8", "int8.opt-cpu")] == [
        4000,
        2000,
        2000,
        1000,
        1000,
    ]


def test_flops_of_known_layers() -> None:
    assert count_flops(nn.Linear(10, 5), (10,)) == 2 * 10 * 5
    conv = nn.Conv2d(3, 8, 3, padding=1)
    assert count_flops(conv, (3, 16, 16)) == 2 * (3 * 3 * 3) * 8 * 16 * 16


def test_flops_of_a_model_that_cannot_run_at_that_size_are_unknown() -> None:
    assert count_flops(nn.Linear(10, 5), (7,)) is None


@pytest.mark.parametrize("bad", [dict(median_ms=0.0), dict(peak_gflops=0.0), dict(bandwidth_gbs=-1.0)])
def test_rejects_non_positive_figures(bad) -> None:
    args = dict(flops=1e9, weight_bytes=1e6, median_ms=1.0, peak_gflops=100.0, bandwidth_gbs=10.0) | bad
    with pytest.raises(ValueError):
        roofline(**args)


def test_weights_that_fit_in_the_cache_are_not_read_from_memory() -> None:
    # lenet5-like: 250 KB of weights, 0.65 MFLOP; a 2 MB cache keeps them
    args = dict(flops=6.5e5, weight_bytes=250e3, median_ms=0.02, peak_gflops=100.0, bandwidth_gbs=10.0)
    uncached = roofline(**args)
    cached = roofline(**args, cache_bytes=2 << 20)
    assert uncached.bound == "memory" and uncached.floor_ms == pytest.approx(0.025)
    assert cached.bound == "compute (weights in cache)" and cached.floor_ms == pytest.approx(0.0065)
    assert roofline(**{**args, "weight_bytes": 4e6}, cache_bytes=2 << 20).bound == "memory"


def test_rows_get_their_roofline_again_against_the_final_peak() -> None:
    """A row faster than the measured peak allows is flagged; against a higher peak it is not."""
    from runtime.bench.rows import BenchRow
    from runtime.bench.runner import BELOW_FLOOR, with_roofline
    from runtime.machine import MachinePeak, merge_peaks

    def peak(gflops: float) -> MachinePeak:
        return MachinePeak(
            device="cpu",
            threads=2,
            matmul_gflops=gflops,
            matmul="m",
            bandwidth_gbs=10.0,
            bandwidth="b",
            probe_seconds=1.0,
        )

    row = BenchRow(
        run_id="r", model="m", engine="onnxruntime", precision="fp32", device="cpu", machine="cpu", batch_size=1,
        input_shape=[3, 8, 8], threads=2, status="ok", median_ms=10.0, gflop=2.0, weight_bytes=4_000_000,
    )  # fmt: skip
    busy = with_roofline(row, peak(100.0))  # floor 20 ms: the row beat it
    assert busy.time_over_floor == pytest.approx(0.5) and busy.unstable and busy.unstable_reasons == [BELOW_FLOOR]
    merged = merge_peaks(peak(100.0), peak(400.0))
    assert merged.matmul_gflops == 400.0 and merged.matmul_gflops_probes == [100.0, 400.0]
    final = with_roofline(busy, merged)
    assert final.floor_ms == pytest.approx(5.0) and final.time_over_floor == pytest.approx(2.0)
    assert not final.unstable and final.unstable_reasons == []


def test_every_row_is_held_to_the_peak_of_its_own_precision() -> None:
    """int8 rows to the int8 peak, fp32 (and fp16 on CPU, which computes in fp32) to the fp32 peak;
    a precision the machine has no peak for gets no floor, never the fp32 one; onnxruntime's
    convolutions running a few percent above the GEMM probes is no sign of a disturbed probe."""
    from runtime.bench.rows import BenchRow
    from runtime.bench.runner import BELOW_FLOOR, with_roofline
    from runtime.machine import MachinePeak, PrecisionPeak

    def p(precision: str, gflops: float) -> PrecisionPeak:
        return PrecisionPeak(precision=precision, gflops=gflops, probe=f"{precision} probe", probes={"x": gflops})

    peak = MachinePeak(
        device="cpu", threads=2, matmul_gflops=100.0, matmul="m", bandwidth_gbs=10.0, bandwidth="b",
        probe_seconds=1.0, peaks={"fp32": p("fp32", 100.0), "int8": p("int8", 400.0)},
        missing={"bf16": "no bf16 arithmetic"},
    )  # fmt: skip

    def row(precision: str, median_ms: float, engine: str = "onnxruntime") -> BenchRow:
        return BenchRow(
            run_id="r", model="m", engine=engine, precision=precision, device="cpu", machine="cpu",
            batch_size=1, input_shape=[3, 8, 8], threads=2, status="ok", median_ms=median_ms, gflop=2.0,
            weight_bytes=4_000_000,
        )  # fmt: skip

    fp32 = with_roofline(row("fp32", 19.0), peak)  # 5% above the GEMM peak: plausible
    assert not fp32.unstable and fp32.peak_precision == "fp32" and fp32.floor_ms == pytest.approx(20.0)
    assert with_roofline(row("fp32", 10.0), peak).unstable_reasons == [BELOW_FLOOR]
    int8 = with_roofline(row("int8.opt-cpu", 10.0), peak)
    assert int8.peak_precision == "int8" and int8.floor_ms == pytest.approx(5.0)
    assert int8.time_over_floor == pytest.approx(2.0) and int8.fraction_of_peak == pytest.approx(0.5)
    assert not int8.unstable
    assert with_roofline(row("int8", 2.0, engine="openvino"), peak).unstable_reasons == [BELOW_FLOOR]
    assert with_roofline(row("fp16", 40.0), peak).peak_precision == "fp32"
    bf16 = with_roofline(row("bf16", 5.0, engine="openvino"), peak)
    assert bf16.floor_ms is None and bf16.peak_precision is None and not bf16.unstable
