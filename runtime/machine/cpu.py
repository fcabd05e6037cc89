"""What the CPU is, read from /proc/cpuinfo and sysfs, and what its vector units allow in theory.

Nothing here measures: the theoretical peaks are clock x cores x operations per cycle, with the
operations per cycle derived from the vector width and the instructions the CPU reports (never
from a table of CPU models). They are printed beside the measured peaks, which are what rows are
held to (:mod:`runtime.machine.probes`).
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

#: /proc/cpuinfo flags the toolkit reads (recorded in every benchmark's environment).
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
#: The features the commands print, by the name users know them under, and the flags that mean them.
NAMED_FEATURES: dict[str, tuple[str, ...]] = {
    "AVX2": ("avx2",),
    "FMA": ("fma",),
    "AVX-512": ("avx512f",),
    "VNNI": ("avx512_vnni", "avx_vnni"),
    "AVX512-BF16": ("avx512_bf16",),
    "AMX-INT8": ("amx_int8",),
    "AMX-BF16": ("amx_bf16",),
}
#: FMA (and integer multiply-add) pipes per core assumed by the theoretical peak: two on every
#: x86 server core of the last decade but some low-end AVX-512 parts (which have one).
FMA_UNITS = 2


def _cpuinfo_lines() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def cpu_model() -> str:
    for line in _cpuinfo_lines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _flag_set(lines: list[str] | None = None) -> set[str]:
    for line in _cpuinfo_lines() if lines is None else lines:
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_flags() -> dict[str, bool]:
    """The flags of :data:`CPU_FLAGS` this CPU reports (empty where /proc/cpuinfo cannot be read)."""
    flags = _flag_set()
    return {f: f in flags for f in CPU_FLAGS} if flags else {}


def named_features(flags: dict[str, bool] | None = None) -> dict[str, bool]:
    """AVX2, FMA, AVX-512, VNNI, AVX512-BF16, AMX-INT8, AMX-BF16: which this CPU has."""
    flags = cpu_flags() if flags is None else flags
    return {name: any(flags.get(f, False) for f in fs) for name, fs in NAMED_FEATURES.items()}


def features_line(features: dict[str, bool]) -> str:
    """``AVX-512 no, VNNI no, AVX512-BF16 no, AMX-INT8 no, AMX-BF16 no (AVX2 yes, FMA yes)``."""
    main = ["AVX-512", "VNNI", "AVX512-BF16", "AMX-INT8", "AMX-BF16"]
    base = ", ".join(f"{n} {'yes' if features.get(n) else 'no'}" for n in ("AVX2", "FMA"))
    return ", ".join(f"{n} {'yes' if features.get(n) else 'no'}" for n in main) + f" ({base})"


def physical_cores(lines: list[str] | None = None) -> int:
    """Distinct (package, core) pairs in /proc/cpuinfo: hyperthreads share one core's vector units."""
    lines = _cpuinfo_lines() if lines is None else lines
    cores: set[tuple[str, str]] = set()
    package = core = None
    for line in [*lines, ""]:
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "physical id":
            package = value.strip()
        elif key == "core id":
            core = value.strip()
        elif not line.strip():
            if package is not None and core is not None:
                cores.add((package, core))
            package = core = None
    return len(cores) or (os.cpu_count() or 1)


def clock_ghz(lines: list[str] | None = None) -> tuple[float | None, str]:
    """The highest clock the OS reports (cpufreq's maximum, else /proc/cpuinfo's ``cpu MHz``)."""
    try:
        khz = int(Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text())
        if khz > 0:
            return khz / 1e6, "cpufreq maximum"
    except (OSError, ValueError):
        pass
    mhz = []
    for line in _cpuinfo_lines() if lines is None else lines:
        if line.startswith("cpu MHz"):
            try:
                mhz.append(float(line.split(":", 1)[1]))
            except ValueError:
                continue
    return (max(mhz) / 1e3, "/proc/cpuinfo cpu MHz") if mhz else (None, "no clock reported")


def last_level_cache_bytes() -> int | None:
    """The CPU's largest cache (L3 on most machines) from sysfs; None where it cannot be read."""
    best: tuple[int, int] | None = None
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            level = int((index / "level").read_text())
            if (index / "type").read_text().strip() == "Instruction":
                continue
            text = (index / "size").read_text().strip().upper()
        except (OSError, ValueError):
            continue
        units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
        size = int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)
        if best is None or level > best[0]:
            best = (level, size)
    return best[1] if best else None


@dataclass(frozen=True)
class Theoretical:
    """One precision's peak from the clock and the vector units, and how it was derived."""

    gflops: float
    how: str


def ops_per_cycle(flags: dict[str, bool]) -> dict[str, tuple[float, str]]:
    """Operations (2 per multiply-accumulate) per cycle and core, per precision, from the flags.

    * fp32: FMA pipes x fp32 lanes (16 with AVX-512, 8 with AVX2) x 2;
    * int8 (u8 x s8): AMX's tile unit does 1024 multiply-accumulates per cycle; VNNI's
      ``vpdpbusd`` does 4 per 32-bit lane in one instruction; without it ``vpmaddubsw`` +
      ``vpmaddwd`` need two instructions for the same 4, halving the rate;
    * bf16: AMX 512 multiply-accumulates per cycle; AVX512-BF16's ``vdpbf16ps`` 2 per lane.
    """
    f = flags
    lanes = 16 if f.get("avx512f") else 8 if f.get("avx2") else 4
    width = f"{lanes * 32}-bit"
    out: dict[str, tuple[float, str]] = {
        "fp32": (FMA_UNITS * lanes * 2.0, f"{FMA_UNITS} FMA pipes x {lanes} fp32 lanes ({width}) x 2")
    }
    if f.get("amx_int8"):
        out["int8"] = (2048.0, "AMX-INT8: 1024 u8s8 multiply-accumulates per cycle x 2")
    elif f.get("avx512_vnni") or f.get("avx_vnni"):
        vnni_lanes = 16 if f.get("avx512_vnni") and f.get("avx512f") else 8
        out["int8"] = (
            FMA_UNITS * vnni_lanes * 4 * 2.0,
            f"VNNI vpdpbusd: {FMA_UNITS} pipes x {vnni_lanes} lanes x 4 int8 x 2",
        )
    elif f.get("avx2"):
        int_lanes = 16 if f.get("avx512bw") else 8
        out["int8"] = (
            FMA_UNITS * int_lanes * 4 * 2.0 / 2,
            f"vpmaddubsw + vpmaddwd (no VNNI): {FMA_UNITS} pipes x {int_lanes} lanes x 4 int8 x 2 / 2 instructions",
        )
    if f.get("amx_bf16"):
        out["bf16"] = (1024.0, "AMX-BF16: 512 multiply-accumulates per cycle x 2")
    elif f.get("avx512_bf16"):
        out["bf16"] = (FMA_UNITS * 16 * 2 * 2.0, f"AVX512-BF16 vdpbf16ps: {FMA_UNITS} pipes x 16 lanes x 2 bf16 x 2")
    return out


def theoretical_peaks(
    flags: dict[str, bool], ghz: float | None, cores: int, clock_source: str = "clock"
) -> dict[str, Theoretical]:
    """Each precision's theoretical peak for ``cores`` cores at ``ghz`` (none without a clock)."""
    if not ghz or cores < 1:
        return {}
    return {
        p: Theoretical(ops * ghz * cores, f"{cores} core(s) x {ghz:.2f} GHz ({clock_source}) x {how}")
        for p, (ops, how) in ops_per_cycle(flags).items()
    }
