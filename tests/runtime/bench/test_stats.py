"""Latency statistics against a series whose figures are known in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest

from runtime.stats import summarize


def test_statistics_of_one_to_hundred_ms() -> None:
    s = summarize([i / 1000 for i in range(1, 101)], batch_size=4)
    assert s.iterations == 100
    assert s.median_ms == pytest.approx(50.5)
    assert s.mean_ms == pytest.approx(50.5)
    assert s.p90_ms == pytest.approx(90.1)
    assert s.p99_ms == pytest.approx(99.01)
    assert s.min_ms == pytest.approx(1.0) and s.max_ms == pytest.approx(100.0)
    assert s.std_ms == pytest.approx(math.sqrt((100**2 - 1) / 12))
    assert s.throughput_ips == pytest.approx(4 / 0.0505)


def test_outlier_moves_mean_not_median() -> None:
    s = summarize([0.010] * 99 + [1.0], batch_size=1)
    assert s.median_ms == pytest.approx(10.0)
    assert s.mean_ms == pytest.approx(19.9)
    assert s.throughput_ips == pytest.approx(100.0)


def test_shuffled_series_gives_same_figures() -> None:
    series = np.random.default_rng(3).permutation(np.arange(1, 51) / 1000)
    assert summarize(series, 2) == summarize(sorted(series), 2)


@pytest.mark.parametrize("series, batch", [([], 1), ([0.01], 0)])
def test_rejects_empty_series_and_bad_batch(series, batch) -> None:
    with pytest.raises(ValueError):
        summarize(series, batch)
