"""Latency statistics over timed iterations (warm-up already excluded)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class LatencyStats:
    """Per-iteration latency in milliseconds, and throughput at the median."""

    iterations: int
    median_ms: float
    mean_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    max_ms: float
    std_ms: float
    throughput_ips: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def summarize(seconds: list[float] | np.ndarray, batch_size: int) -> LatencyStats:
    """Statistics of per-iteration times in seconds; percentiles use linear interpolation.

    Throughput is images per second at the median latency (batch / median), which a
    few slow outliers do not drag down; std is the population standard deviation.
    """
    t = np.asarray(seconds, dtype=np.float64) * 1e3
    if t.size == 0:
        raise ValueError("no timed iterations")
    if batch_size < 1:
        raise ValueError("batch size must be at least 1")
    median = float(np.median(t))
    return LatencyStats(
        iterations=int(t.size),
        median_ms=median,
        mean_ms=float(t.mean()),
        p90_ms=float(np.percentile(t, 90)),
        p99_ms=float(np.percentile(t, 99)),
        min_ms=float(t.min()),
        max_ms=float(t.max()),
        std_ms=float(t.std()),
        throughput_ips=batch_size / (median / 1e3),
    )
