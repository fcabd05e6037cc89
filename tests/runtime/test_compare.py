"""Comparisons and tolerances (runtime/compare.py): metrics on known values, NaN anywhere fails, tolerances
are finite and >= 0."""

from __future__ import annotations

import numpy as np
import pytest

from exporter.errors import UserError
from runtime.compare import compare, default_tolerance, override


@pytest.mark.parametrize(
    "atol, rtol", [(float("nan"), None), (None, float("nan")), (-1e-3, None), (None, -0.1), (float("inf"), None)]
)
def test_non_finite_or_negative_tolerances_are_refused(atol, rtol) -> None:
    with pytest.raises(UserError, match="finite number >= 0"):
        override(default_tolerance("cpu", "fp32"), atol, rtol)


def test_compare_metrics_on_known_values() -> None:
    ref = np.array([[1.0, 2.0, 3.0], [0.0, -1.0, 0.5]], dtype=np.float32)
    got = ref + np.array([[0.0, 0.01, 0.0], [0.0, 0.0, -0.02]], dtype=np.float32)
    c = compare(ref, got, default_tolerance("cpu", "fp32"))
    assert c.max_abs_err == pytest.approx(0.02, rel=1e-5)
    assert c.top1_agreement == 1.0 and not c.passed
    assert c.sqnr_db == pytest.approx(10 * np.log10((ref.astype(np.float64) ** 2).sum() / 0.0005), rel=1e-4)
    nan = compare(ref, np.full_like(ref, np.nan), default_tolerance("cpu", "fp32"))
    assert not nan.passed and nan.max_abs_err is None and "NaN" in nan.failures[0]
    assert compare(ref, ref.copy(), default_tolerance("cpu", "int8")).sqnr_db is None  # identical: no noise


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_one_non_finite_value_among_good_ones_fails(bad: float) -> None:
    """A NaN (or Inf) in one element of one sample fails, not only an output that is all NaN: every figure
    computed over the rest would look fine."""
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((3, 10)).astype(np.float32)
    got = ref.copy()
    got[1, 7] = bad
    for tol in (default_tolerance("cpu", "fp32"), default_tolerance("cpu", "fp16"), default_tolerance("cpu", "int8")):
        c = compare(ref, got, tol)
        assert not c.passed and c.failures == ["output contains NaN or Inf"], c.failures
        assert c.max_abs_err is None and c.cosine_min is None
    assert compare(ref, ref.copy(), default_tolerance("cpu", "fp32")).passed  # the same values without it pass
