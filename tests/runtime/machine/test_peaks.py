"""The machine record: each precision's peak from several probes, the theoretical peak from the flags,
the CUDA path (on a stub), and the benchmark holding every row to its own precision's peak."""

from __future__ import annotations

import pytest

from runtime.machine import (
    DeviceChoice,
    MachinePeak,
    PrecisionPeak,
    compute_precision,
    measure_peak,
    merge_peaks,
    named_features,
    peak_lines,
)
from runtime.machine.cpu import ops_per_cycle, physical_cores, theoretical_peaks
from runtime.machine.cuda import measure_cuda
from runtime.machine.probes import Probe, precision_peaks, run_probes
from runtime.sessions import SessionConfig

AVX2 = {"avx2": True, "fma": True}
VNNI = {**AVX2, "avx512f": True, "avx512bw": True, "avx512_vnni": True}
AMX = {**VNNI, "avx512_bf16": True, "amx_bf16": True, "amx_int8": True}


def test_theoretical_peaks_follow_the_vector_units() -> None:
    avx2, vnni, amx = ops_per_cycle(AVX2), ops_per_cycle(VNNI), ops_per_cycle(AMX)
    assert avx2["fp32"][0] == 32 and vnni["fp32"][0] == 64  # 2 FMA pipes x 8 / 16 lanes x 2
    assert avx2["int8"][0] == 64  # vpmaddubsw + vpmaddwd: twice fp32, not four times
    assert vnni["int8"][0] == 256  # vpdpbusd: four times fp32
    assert amx["int8"][0] == 2048 and amx["bf16"][0] == 1024
    assert "bf16" not in avx2 and "bf16" not in vnni
    peaks = theoretical_peaks(AVX2, 2.5, 2)
    assert peaks["fp32"].gflops == pytest.approx(160.0) and peaks["int8"].gflops == pytest.approx(320.0)
    assert "2 core(s) x 2.50 GHz" in peaks["fp32"].how
    assert theoretical_peaks(AVX2, None, 2) == {}


def test_features_by_their_names() -> None:
    assert named_features(AMX) == {
        "AVX2": True,
        "FMA": True,
        "AVX-512": True,
        "VNNI": True,
        "AVX512-BF16": True,
        "AMX-INT8": True,
        "AMX-BF16": True,
    }
    assert named_features(AVX2)["VNNI"] is False and named_features({"avx_vnni": True})["VNNI"] is True


def test_hyperthreads_share_a_core() -> None:
    lines = []
    for cpu, core in enumerate([0, 0, 1, 1]):
        lines += [f"processor\t: {cpu}", "physical id\t: 0", f"core id\t\t: {core}", ""]
    assert physical_cores(lines) == 2


def test_the_peak_is_the_best_probe_and_failures_are_kept() -> None:
    def boom() -> object:
        raise RuntimeError("no kernel here\nsecond line")

    probes = [
        Probe("fp32", "slow", lambda: lambda: None),
        Probe("fp32", "fast", lambda: lambda: None),
        Probe("int8", "broken", boom),
    ]
    times = {"slow": 0.02, "fast": 0.01}
    order = iter(["slow", "fast"])
    figures, failed = run_probes(probes, 2e9, 0.0, timer=lambda call, seconds: times[next(order)])
    assert figures == {"fp32": {"slow": pytest.approx(100.0), "fast": pytest.approx(200.0)}}
    assert failed == {"int8": {"broken": "RuntimeError: no kernel here"}}
    peaks, missing = precision_peaks(figures, failed, {"fp32": (300.0, "how")})
    assert peaks["fp32"].gflops == pytest.approx(200.0) and peaks["fp32"].probe == "fast"
    assert peaks["fp32"].theoretical_gflops == 300.0
    assert "int8" not in peaks and "every probe failed" in missing["int8"]


def _record(fp32: float, int8: float | None = None, **extra: object) -> MachinePeak:
    peaks = {"fp32": PrecisionPeak(precision="fp32", gflops=fp32, probe="a", probes={"a": fp32, "b": fp32 / 2})}
    if int8 is not None:
        peaks["int8"] = PrecisionPeak(precision="int8", gflops=int8, probe="q", probes={"q": int8})
    return MachinePeak(
        device="cpu", threads=2, matmul_gflops=fp32, matmul="a", bandwidth_gbs=10.0, bandwidth="b",
        probe_seconds=1.0, matmul_gflops_probes=[fp32], peaks=peaks, **extra,
    )  # fmt: skip


def test_merging_keeps_each_precisions_maximum() -> None:
    merged = merge_peaks(_record(100.0, 150.0), _record(120.0, 140.0))
    assert merged.matmul_gflops == 120.0 and merged.peak_gflops("fp32") == 120.0
    assert merged.peak_gflops("int8") == 150.0 and merged.peaks["int8"].readings == [150.0, 140.0]
    assert merged.matmul_gflops_probes == [100.0, 120.0]


def test_the_precision_each_graph_computes_in() -> None:
    assert [compute_precision(p, "cpu") for p in ("fp32", "fp16", "int8", "int8.opt-cpu", "bf16")] == [
        "fp32",
        "fp32",  # no half-precision arithmetic on x86: onnxruntime computes it in fp32
        "int8",
        "int8",
        "bf16",
    ]
    assert [compute_precision(p, "cuda", tf32=True) for p in ("fp32", "fp16", "int8")] == ["tf32", "fp16", "tf32"]
    assert compute_precision("fp32", "cuda", tf32=False) == "fp32"


class StubGpu:
    """A GPU whose GEMMs take known times: fp32 1 s, TF32 0.25 s, fp16 0.1 s, bf16 fails, int8 0.05 s."""

    name = "Stub GPU"
    seconds = {"fp32": 1.0, "tf32": 0.25, "fp16": 0.1, "int8": 0.05}

    def gemm_seconds(self, precision: str, n: int) -> float:
        if precision == "bf16":
            raise RuntimeError("bf16 GEMM unsupported on this stub")
        return self.seconds[precision]

    def copy_seconds(self, nbytes: int) -> float:
        return 0.001

    def l2_bytes(self) -> int | None:
        return 50 << 20


@pytest.mark.parametrize("tf32", [True, False])
def test_cuda_peaks_on_a_stub_gpu(tf32: bool) -> None:
    m = measure_cuda(threads=1, tf32=tf32, backend=StubGpu(), n=1000)
    ops = 2.0 * 1000**3 / 1e9
    assert m.device == "cuda" and m.device_name == "Stub GPU" and m.tf32 is tf32
    assert m.peak_gflops("fp32") == pytest.approx(ops) and m.peak_gflops("tf32") == pytest.approx(4 * ops)
    assert m.peak_gflops("fp16") == pytest.approx(10 * ops) and m.peak_gflops("int8") == pytest.approx(20 * ops)
    assert m.matmul_gflops == pytest.approx(4 * ops if tf32 else ops)  # the fp32 the run computes
    assert "bf16" not in m.peaks and "bf16 GEMM unsupported" in m.missing["bf16"]
    assert m.bandwidth_gbs == pytest.approx(2 * (1 << 30) / 0.001 / 1e9) and m.cache_bytes == 50 << 20
    text = "\n".join(peak_lines(m))
    assert "tf32 peak" in text and "fp16 peak" in text and "bf16: no peak" in text


def test_cpu_peaks_come_from_the_probes() -> None:
    """On this CPU: fp32 and int8 peaks, each the best of several libraries' probes (small matrices:
    the figures are not the machine's limit, only the code path), theoretical beside them."""
    config = SessionConfig(device="cpu", threads=1, allow_spinning=False)
    m = measure_peak(DeviceChoice("cpu", "test", ["CPUExecutionProvider"]), config, 1, seconds=0.05, n=512)
    for precision in ("fp32", "int8"):
        p = m.peaks[precision]
        assert p.gflops == max(p.probes.values()) > 0
        assert len(p.probes) + len(p.failed) >= 3 and len(p.probes) >= 2, p
    assert any(k.startswith("onnxruntime") for k in m.peaks["int8"].probes)
    assert m.matmul_gflops == m.peaks["fp32"].gflops
    features = m.cpu_features
    assert set(features) >= {"AVX-512", "VNNI", "AVX512-BF16", "AMX-INT8", "AMX-BF16"}
    has_bf16 = features["AVX512-BF16"] or features["AMX-BF16"]
    assert ("bf16" in m.peaks or "bf16" in m.missing) and (has_bf16 or "bf16" in m.missing)
    if m.peaks["fp32"].theoretical_gflops is not None:
        assert m.peaks["int8"].theoretical_gflops >= m.peaks["fp32"].theoretical_gflops
    assert any("CPU features: AVX-512" in line for line in peak_lines(m))
