"""Latency statistics that say how far they can be trusted.

* Percentiles are reported only where the sample count supports them: the p-th percentile
  needs at least ``1 / (1 - p/100)`` samples (p90: 10, p99: 100); below that it is None.
* Every median comes with a 95% bootstrap confidence interval, and so does every ratio of
  medians (a speedup). The bootstrap is seeded, so one set of samples always gives the same
  interval.
* A figure whose interval is wider than ``max_width`` of the figure itself is unstable.

The bootstrap distribution of a sample median is drawn exactly without materialising the
resamples: resampling n values with replacement from the sorted sample ``x`` is applying the
empirical quantile function ``u -> x[ceil(n*u) - 1]`` to n uniforms, which keeps their order,
so the k-th order statistic of a resample is ``x[ceil(n*B) - 1]`` with ``B ~ Beta(k, n-k+1)``
(the k-th order statistic of n uniforms). An even n needs the (k+1)-th as well, which given
``B`` is ``B + (1-B)*Beta(1, n-k)``. This costs O(draws) instead of O(draws * n), so a run
with 50,000 samples of a 20-microsecond model costs as little as one with 10.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict

from .defaults import DEFAULT_MAX_CI_WIDTH

#: Bootstrap draws per interval.
DRAWS = 4000
#: Two-sided confidence level of every interval.
CONFIDENCE = 0.95


def min_samples_for(percentile: float) -> int:
    """Samples needed before the ``percentile``-th percentile means anything (p90: 10, p99: 100)."""
    if not 0 < percentile < 100:
        raise ValueError("percentile must be between 0 and 100")
    return math.ceil(round(1 / (1 - percentile / 100), 9))


@dataclass(frozen=True)
class Interval:
    """A point estimate and its confidence interval."""

    value: float
    low: float
    high: float

    @property
    def width(self) -> float:
        """Width of the interval relative to the estimate (0.2 = spans 20% of the figure)."""
        if self.value == 0 or not math.isfinite(self.value):
            return math.inf
        return (self.high - self.low) / abs(self.value)

    def unstable(self, max_width: float = DEFAULT_MAX_CI_WIDTH) -> bool:
        return not self.width <= max_width


@dataclass(frozen=True)
class LatencyStats:
    """Per-iteration latency in milliseconds; percentiles None where the count does not support them."""

    samples: int
    median_ms: float
    median_ci_low_ms: float
    median_ci_high_ms: float
    mean_ms: float
    p90_ms: float | None
    p99_ms: float | None
    min_ms: float
    max_ms: float
    std_ms: float
    throughput_ips: float

    @property
    def median(self) -> Interval:
        return Interval(self.median_ms, self.median_ci_low_ms, self.median_ci_high_ms)

    def to_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


#: Up to this many samples a row keeps them all (sorted); beyond, the window below.
KEEP_ALL_SAMPLES = 256
#: The median's bootstrap draws the k-th order statistic with k/n ~ Beta(n/2, n/2), whose standard
#: deviation is sqrt(n)/2 order statistics; a window of this many deviations each side (plus the
#: even-n neighbour) holds every order statistic a draw reaches but with probability ~2e-9.
WINDOW_SIGMAS = 6.0


class SampleSummary(BaseModel):
    """What a row keeps of its samples so that a later run can bootstrap a ratio against it.

    ``values`` are the sorted samples (milliseconds, or seconds per image for throughput
    windows) from order statistic ``first`` (0-based) on: all of them for up to
    :data:`KEEP_ALL_SAMPLES`, else the window around the median that the median's bootstrap
    reaches (:data:`WINDOW_SIGMAS`). The bootstrap of the median drawn from a summary is the one
    drawn from the full samples (see the module docstring: it only reads order statistics).
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)

    count: int
    first: int
    values: list[float]

    @property
    def complete(self) -> bool:
        return self.first == 0 and len(self.values) == self.count

    @property
    def median(self) -> float:
        n = self.count
        k = (n - 1) // 2
        lo = self.values[k - self.first]
        return lo if n % 2 else (lo + self.values[k + 1 - self.first]) / 2

    def scaled(self, factor: float) -> SampleSummary:
        """The same samples times ``factor`` (a baseline made faster or slower, in tests and what-ifs)."""
        return SampleSummary(count=self.count, first=self.first, values=[v * factor for v in self.values])

    def order_statistics(self, index: np.ndarray) -> np.ndarray:
        """The order statistics at 0-based ``index`` (clipped to the window kept)."""
        arr = np.asarray(self.values, dtype=np.float64)
        return arr[np.clip(index - self.first, 0, arr.size - 1)]


def summarize_samples(samples: Sequence[float] | np.ndarray, digits: int = 9) -> SampleSummary:
    """The :class:`SampleSummary` of ``samples`` (rounded to ``digits`` decimals: 1 ns in milliseconds)."""
    x = np.sort(np.asarray(samples, dtype=np.float64))
    n = int(x.size)
    if n == 0:
        raise ValueError("no samples")
    if n <= KEEP_ALL_SAMPLES:
        first, last = 0, n
    else:
        half = math.ceil(WINDOW_SIGMAS * math.sqrt(n) / 2) + 2
        mid = (n - 1) // 2
        first, last = max(0, mid - half), min(n, mid + 1 + half)
    return SampleSummary(count=n, first=first, values=[round(float(v), digits) for v in x[first:last]])


Samples = Sequence[float] | np.ndarray | SampleSummary


def _order_statistics(samples: Samples) -> tuple[int, Callable[[np.ndarray], np.ndarray]]:
    """The sample count and a lookup of 0-based order statistics, for full samples or a summary."""
    if isinstance(samples, SampleSummary):
        return samples.count, samples.order_statistics
    x = np.sort(np.asarray(samples, dtype=np.float64))
    return int(x.size), lambda i: x[np.clip(i, 0, x.size - 1)]


def sample_median(samples: Samples) -> float:
    if isinstance(samples, SampleSummary):
        return samples.median
    return float(np.median(np.asarray(samples, dtype=np.float64)))


def bootstrap_medians(samples: Samples, rng: np.random.Generator, draws: int = DRAWS) -> np.ndarray:
    """``draws`` medians drawn from the bootstrap distribution of the sample median (exactly; see above)."""
    n, stat = _order_statistics(samples)
    if n == 0:
        raise ValueError("no samples")
    if n == 1:
        return np.full(draws, stat(np.zeros(1, dtype=np.int64))[0])

    def pick(u: np.ndarray) -> np.ndarray:
        return stat(np.clip(np.ceil(u * n).astype(np.int64) - 1, 0, n - 1))

    k = (n + 1) // 2 if n % 2 else n // 2
    lower = rng.beta(k, n - k + 1, size=draws)
    if n % 2:
        return pick(lower)
    upper = lower + (1.0 - lower) * rng.beta(1, n - k, size=draws)
    return (pick(lower) + pick(upper)) / 2


def _interval(value: float, draws: np.ndarray) -> Interval:
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return Interval(float(value), float(min(low, value)), float(max(high, value)))


def median_interval(samples: Sequence[float] | np.ndarray, rng: np.random.Generator) -> Interval:
    """The sample median and its 95% percentile-bootstrap interval."""
    x = np.asarray(samples, dtype=np.float64)
    return _interval(float(np.median(x)), bootstrap_medians(x, rng))


def ratio_interval(numerator: Samples, denominator: Samples, rng: np.random.Generator) -> Interval:
    """median(numerator) / median(denominator) with a 95% bootstrap interval (both resampled independently).

    A speedup of B over A is ``ratio_interval(a_times, b_times)``: above 1 when B is faster.
    Either side may be a :class:`SampleSummary` (an earlier run's row).
    """
    num = bootstrap_medians(numerator, rng)
    den = bootstrap_medians(denominator, rng)
    return _interval(sample_median(numerator) / sample_median(denominator), num / den)


def summarize(seconds: Sequence[float] | np.ndarray, batch_size: int, rng: np.random.Generator) -> LatencyStats:
    """Statistics of per-iteration times in seconds (warm-up excluded).

    Percentiles use linear interpolation and are None below their minimum sample count;
    throughput is images per second at the median (batch / median); std is the population
    standard deviation.
    """
    t = np.asarray(seconds, dtype=np.float64) * 1e3
    if t.size == 0:
        raise ValueError("no timed iterations")
    if batch_size < 1:
        raise ValueError("batch size must be at least 1")
    median = median_interval(t, rng)

    def pct(p: float) -> float | None:
        return float(np.percentile(t, p)) if t.size >= min_samples_for(p) else None

    return LatencyStats(
        samples=int(t.size),
        median_ms=median.value,
        median_ci_low_ms=median.low,
        median_ci_high_ms=median.high,
        mean_ms=float(t.mean()),
        p90_ms=pct(90),
        p99_ms=pct(99),
        min_ms=float(t.min()),
        max_ms=float(t.max()),
        std_ms=float(t.std()),
        throughput_ips=batch_size / (median.value / 1e3),
    )
