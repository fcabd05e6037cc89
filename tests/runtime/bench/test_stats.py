"""Latency statistics, bootstrap intervals and the unstable flag, on data whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from runtime.bench.stats import (
    Interval,
    bootstrap_medians,
    median_interval,
    min_samples_for,
    ratio_interval,
    summarize,
)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_statistics_of_one_to_hundred_ms() -> None:
    s = summarize([i / 1000 for i in range(1, 101)], batch_size=4, rng=rng())
    assert s.samples == 100
    assert s.median_ms == pytest.approx(50.5)
    assert s.mean_ms == pytest.approx(50.5)
    assert s.p90_ms == pytest.approx(90.1)
    assert s.p99_ms == pytest.approx(99.01)
    assert s.min_ms == pytest.approx(1.0) and s.max_ms == pytest.approx(100.0)
    assert s.std_ms == pytest.approx(math.sqrt((100**2 - 1) / 12))
    assert s.throughput_ips == pytest.approx(4 / 0.0505)
    assert s.median_ci_low_ms < 50.5 < s.median_ci_high_ms


def test_percentiles_need_the_samples_to_support_them() -> None:
    assert (min_samples_for(90), min_samples_for(99)) == (10, 100)
    s99 = summarize(np.arange(1, 100) / 1000, 1, rng())
    assert s99.samples == 99 and s99.p99_ms is None and s99.p90_ms is not None
    s9 = summarize(np.arange(1, 10) / 1000, 1, rng())
    assert s9.p90_ms is None and s9.p99_ms is None and s9.median_ms == pytest.approx(5.0)


def test_outlier_moves_mean_not_median() -> None:
    s = summarize([0.010] * 99 + [1.0], batch_size=1, rng=rng())
    assert s.median_ms == pytest.approx(10.0)
    assert s.mean_ms == pytest.approx(19.9)
    assert s.throughput_ips == pytest.approx(100.0)
    assert (s.median_ci_low_ms, s.median_ci_high_ms) == pytest.approx((10.0, 10.0))


@pytest.mark.parametrize("n", [10, 11])
def test_exact_bootstrap_matches_resampling(n: int) -> None:
    """The O(draws) median bootstrap draws from the same distribution as literal resampling."""
    data = np.random.default_rng(5).lognormal(0.0, 0.5, n)
    fast = bootstrap_medians(data, rng(1), draws=40_000)
    idx = np.random.default_rng(2).integers(0, n, size=(40_000, n))
    slow = np.median(data[idx], axis=1)
    for q in (2.5, 10, 25, 50, 75, 90, 97.5):
        assert np.percentile(fast, q) == pytest.approx(np.percentile(slow, q), rel=0.03), q


def test_bootstrap_interval_covers_the_true_median_about_95_percent() -> None:
    """Exponential samples (true median ln 2): the 95% interval covers it in about 95% of datasets."""
    gen = np.random.default_rng(11)
    covered = 0
    trials = 400
    for i in range(trials):
        iv = median_interval(gen.exponential(1.0, 61), rng(i))
        assert iv.low <= iv.value <= iv.high
        covered += iv.low <= math.log(2) <= iv.high
    assert 0.90 <= covered / trials <= 0.99


def test_intervals_are_seeded() -> None:
    data = np.random.default_rng(3).normal(10, 1, 50)
    assert median_interval(data, rng(7)) == median_interval(data, rng(7))


def test_ratio_interval_of_known_speedup() -> None:
    gen = np.random.default_rng(4)
    slow = 20.0 * (1 + 0.01 * gen.standard_normal(200))
    fast = 10.0 * (1 + 0.01 * gen.standard_normal(200))
    iv = ratio_interval(slow, fast, rng())
    assert iv.value == pytest.approx(np.median(slow) / np.median(fast))
    assert iv.low < 2.0 < iv.high and iv.high / iv.low < 1.02
    inverse = ratio_interval(fast, slow, rng())
    assert inverse.value == pytest.approx(1 / iv.value) and inverse.low < 0.5 < inverse.high


def test_unstable_flag_on_a_wide_spread() -> None:
    gen = np.random.default_rng(8)
    tight = median_interval(10 + 0.05 * gen.standard_normal(100), rng())
    wide = median_interval(gen.lognormal(np.log(10), 1.0, 12), rng())
    assert not tight.unstable(0.2) and tight.width < 0.05
    assert wide.unstable(0.2) and wide.width > 0.2
    assert Interval(1.0, 0.4, 2.5).unstable(0.2)  # a ratio whose interval spans a factor of 6


@pytest.mark.parametrize("series, batch", [([], 1), ([0.01], 0)])
def test_rejects_empty_series_and_bad_batch(series, batch) -> None:
    with pytest.raises(ValueError):
        summarize(series, batch, rng())
