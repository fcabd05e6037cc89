"""The machine record: each precision's measured peak (best of several probes), its theoretical
peak, and the memory bandwidth, for one device and thread count.

The benchmark's roofline, the profile and tune read this one record; a row or a layer is held
to the peak of the precision it computes in (:func:`compute_precision`).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from .cpu import features_line

#: Precisions a machine record can hold a peak for. ``tf32``: CUDA fp32 on tensor cores.
PEAK_PRECISIONS = ("fp32", "tf32", "fp16", "bf16", "int8")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, allow_inf_nan=False, extra="forbid")


class PrecisionPeak(_Frozen):
    """One precision's limit: the best measured probe, every probe's figure, the theoretical one.

    Figures are G operations per second (2 per multiply-accumulate): GFLOP/s for float
    precisions, GOP/s for int8.
    """

    precision: str
    gflops: float
    #: the probe that reached ``gflops``
    probe: str
    #: every probe that ran: its description -> its best figure
    probes: dict[str, float]
    #: probes that could not run here, and why
    failed: dict[str, str] = Field(default_factory=dict)
    theoretical_gflops: float | None = None
    theoretical: str | None = None
    #: the best figure of every measurement merged into this one (a peak is a maximum)
    readings: list[float] = Field(default_factory=list)

    @property
    def unit(self) -> str:
        return "GOP/s" if self.precision == "int8" else "GFLOP/s"


class MachinePeak(_Frozen):
    """What the hardware reached in this run: the limits every row is compared with.

    ``matmul_gflops`` is the fp32 peak (on CUDA: fp32 as the run's TF32 setting computes it);
    ``peaks`` holds every precision measured here. Records written before ``peaks`` existed
    hold the fp32 figure alone.
    """

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    device: str
    threads: int
    matmul_gflops: float
    matmul: str
    bandwidth_gbs: float
    bandwidth: str
    #: last-level cache (CPU L3, GPU L2) in bytes, None where unknown: weights that fit are not
    #: read from memory on every call, so the roofline's weight term does not apply to them
    cache_bytes: int | None = None
    probe_seconds: float
    #: every probe of this run (at its start and end): the peak and bandwidth are their maxima
    matmul_gflops_probes: list[float] = Field(default_factory=list)
    bandwidth_gbs_probes: list[float] = Field(default_factory=list)
    peaks: dict[str, PrecisionPeak] = Field(default_factory=dict)
    #: precisions with no peak here, and why (``bf16``: "no AVX512-BF16 or AMX-BF16")
    missing: dict[str, str] = Field(default_factory=dict)
    #: AVX-512, VNNI, AVX512-BF16, AMX-INT8, AMX-BF16 (and AVX2, FMA): which the CPU has
    cpu_features: dict[str, bool] = Field(default_factory=dict)
    device_name: str | None = None
    #: whether CUDA fp32 computes on TF32 tensor cores in this run (None on CPU)
    tf32: bool | None = None

    def peak(self, precision: str) -> PrecisionPeak | None:
        """The peak of a compute precision (``fp32``, ``tf32``, ``fp16``, ``bf16``, ``int8``)."""
        if precision in self.peaks:
            return self.peaks[precision]
        if precision == "fp32" and not self.peaks:  # a record from before per-precision peaks
            return PrecisionPeak(
                precision="fp32", gflops=self.matmul_gflops, probe=self.matmul, probes={self.matmul: self.matmul_gflops}
            )
        return None

    def peak_gflops(self, precision: str) -> float | None:
        p = self.peak(precision)
        return p.gflops if p is not None else None


def compute_precision(precision: str, device: str, tf32: bool | None = True) -> str:
    """The arithmetic a graph of ``precision`` (``fp32``, ``fp16``, ``int8``, ``bf16``, or a variant
    key such as ``int8.opt-cpu``) really computes in on ``device``: the peak it is held to.

    On CPU fp16 graphs compute in fp32 (onnxruntime casts around the operators it has no
    half-precision kernel for, which on x86 is every compute one); on CUDA fp32 is TF32 when
    TF32 is on, and int8 QDQ graphs run their convolutions dequantized, in fp32/TF32.
    """
    numeric = precision.split(".", 1)[0]
    if device == "cuda":
        if numeric in ("fp16", "bf16"):
            return numeric
        return "tf32" if tf32 else "fp32"
    if numeric == "fp16":
        return "fp32"
    return numeric


def merge_peaks(first: MachinePeak, second: MachinePeak) -> MachinePeak:
    """One record of two measurements: each figure the larger (each is a maximum), all readings kept."""
    mm = [
        *(first.matmul_gflops_probes or [first.matmul_gflops]),
        *(second.matmul_gflops_probes or [second.matmul_gflops]),
    ]
    bw = [
        *(first.bandwidth_gbs_probes or [first.bandwidth_gbs]),
        *(second.bandwidth_gbs_probes or [second.bandwidth_gbs]),
    ]
    peaks = dict(first.peaks)
    for name, b in second.peaks.items():
        a = peaks.get(name)
        peaks[name] = b if a is None else _merge_one(a, b)
    missing = {k: v for k, v in {**first.missing, **second.missing}.items() if k not in peaks}
    fp32 = peaks.get("tf32" if first.tf32 else "fp32")
    return first.model_copy(
        update=dict(
            matmul_gflops=max(max(mm), fp32.gflops if fp32 else 0.0),
            matmul=fp32.probe if fp32 else first.matmul,
            bandwidth_gbs=max(bw),
            matmul_gflops_probes=mm,
            bandwidth_gbs_probes=bw,
            peaks=peaks,
            missing=missing,
            probe_seconds=first.probe_seconds + second.probe_seconds,
        )
    )


def _merge_one(a: PrecisionPeak, b: PrecisionPeak) -> PrecisionPeak:
    probes = dict(a.probes)
    for k, v in b.probes.items():
        probes[k] = max(v, probes.get(k, 0.0))
    best = max(probes, key=probes.__getitem__)
    failed = {k: v for k, v in {**a.failed, **b.failed}.items() if k not in probes}
    return a.model_copy(
        update=dict(
            gflops=probes[best],
            probe=best,
            probes=probes,
            failed=failed,
            readings=[*(a.readings or [a.gflops]), *(b.readings or [b.gflops])],
        )
    )


def _figure(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.2g}"


def peak_lines(machine: MachinePeak) -> list[str]:
    """The record in a few lines: each precision's peak with its probes and theoretical figure,
    the precisions without one and why, the bandwidth, and (CPU) its vector features."""
    where = machine.device_name or machine.device.upper()
    lines = [f"machine: {where}, {machine.threads} threads; peaks are the best of several probes (G ops/s)"]
    if not machine.peaks:  # a record from before per-precision peaks
        lines.append(f"  fp32 peak {machine.matmul_gflops:.0f} GFLOP/s ({machine.matmul})")
    for name in PEAK_PRECISIONS:
        p = machine.peaks.get(name)
        if p is None:
            continue
        others = ", ".join(f"{k.split(' ', 1)[0]} {_figure(v)}" for k, v in p.probes.items() if k != p.probe)
        theory = f"; theoretical {p.theoretical_gflops:.0f}: {p.theoretical}" if p.theoretical_gflops else ""
        above = (
            " (above the theoretical at the reported clock: the CPU boosts higher)"
            if p.theoretical_gflops and p.gflops > p.theoretical_gflops
            else ""
        )
        also = f"; also {others}" if others else ""
        lines.append(f"  {name} peak {_figure(p.gflops)} {p.unit} ({p.probe}{also}{theory}){above}")
        for probe, why in p.failed.items():
            lines.append(f"    {probe}: could not run ({why})")
    for name, why in machine.missing.items():
        lines.append(f"  {name}: no peak ({why})")
    lines.append(f"  memory bandwidth {machine.bandwidth_gbs:.1f} GB/s ({machine.bandwidth})")
    if machine.cpu_features:
        lines.append(f"  CPU features: {features_line(machine.cpu_features)}")
    return lines
