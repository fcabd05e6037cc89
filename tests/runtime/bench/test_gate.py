"""The regression gate (``--baseline``): ratios against an earlier run with intervals from both runs' samples."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from runtime.bench.__main__ import main
from runtime.bench.baseline import BaselineFile, BaselineRow, compare_runs, load_baseline
from runtime.bench.rows import BenchRow
from runtime.bench.stats import KEEP_ALL_SAMPLES, bootstrap_medians, ratio_interval, summarize, summarize_samples
from tests.helpers import fifo, strict_load

from .conftest import QUICK


def _row(samples_ms: np.ndarray, *, engine: str = "onnxruntime", batch: int = 1, status: str = "ok") -> BenchRow:
    stats = summarize(samples_ms / 1e3, batch, np.random.default_rng(0)) if status == "ok" else None
    return BenchRow(
        run_id="r",
        model="lenet5",
        engine=engine,
        precision="fp32",
        device="cpu",
        machine="test CPU",
        batch_size=batch,
        input_shape=[3, 32, 32],
        threads=1,
        status=status,  # type: ignore[arg-type]
        reason="parity: output 'logits': cosine 0.5 < 0.99999" if status == "parity-failed" else None,
        **(stats.to_dict() if stats else {}),
        sample_summary=summarize_samples(samples_ms) if status == "ok" else None,
    )


def _times(n: int, median_ms: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return median_ms * rng.lognormal(0.0, 0.05, size=n)


def _baseline(rows: list[BenchRow], scale: float = 1.0, keep_samples: bool = True) -> BaselineFile:
    """The rows as an earlier run's results would hold them, every time multiplied by ``scale``."""
    out = []
    for r in rows:
        d = r.model_dump(mode="json")
        for k in ("median_ms", "median_ci_low_ms", "median_ci_high_ms"):
            if d[k] is not None:
                d[k] *= scale
        if d["sample_summary"] is not None and keep_samples:
            d["sample_summary"]["values"] = [v * scale for v in d["sample_summary"]["values"]]
        if not keep_samples:
            d.pop("sample_summary")
        out.append(BaselineRow.model_validate(d))
    return BaselineFile(path="old/results.json", run_id="old", rows=out)


def test_the_kept_window_bootstraps_the_median_as_the_full_samples_do() -> None:
    x = _times(20_000, 1.0, seed=1)
    kept = summarize_samples(x)
    assert not kept.complete and len(kept.values) < 1000  # a window, not 20,000 numbers
    assert kept.median == pytest.approx(float(np.median(x)), abs=1e-9)
    full = bootstrap_medians(x, np.random.default_rng(5))
    window = bootstrap_medians(kept, np.random.default_rng(5))
    assert np.allclose(full, window, atol=1e-9)  # the same draws: every one landed inside the window
    small = summarize_samples(x[:KEEP_ALL_SAMPLES])
    assert small.complete and len(small.values) == KEEP_ALL_SAMPLES


def test_a_ratio_against_a_summary_is_the_ratio_against_the_samples() -> None:
    a, b = _times(3000, 1.0, seed=2), _times(1500, 1.3, seed=3)
    full = ratio_interval(a, b, np.random.default_rng(9))
    kept = ratio_interval(summarize_samples(a), summarize_samples(b), np.random.default_rng(9))
    assert kept.value == pytest.approx(full.value, rel=1e-9)
    assert (kept.low, kept.high) == pytest.approx((full.low, full.high), rel=1e-9)


def test_the_gate_passes_its_own_run_and_fails_a_baseline_twice_as_fast() -> None:
    rows = [_row(_times(400, 0.1, seed=4)), _row(_times(150, 0.3, seed=5), engine="openvino")]
    same = compare_runs(rows, {}, _baseline(rows))
    assert same.passed and {r.verdict for r in same.rows} == {"same"}
    assert all(r.method == "bootstrap" and r.ratio == pytest.approx(1.0) for r in same.rows)
    fast = compare_runs(rows, {}, _baseline(rows, scale=0.5))
    assert not fast.passed and {r.verdict for r in fast.rows} == {"slower"}
    assert all(r.ratio_ci_low > 1.9 for r in fast.rows)  # type: ignore[operator]
    slow = compare_runs(rows, {}, _baseline(rows, scale=2.0))
    assert slow.passed and {r.verdict for r in slow.rows} == {"faster"}


def test_only_a_whole_interval_beyond_the_threshold_fails() -> None:
    rows = [_row(_times(60, 1.0, seed=6))]
    # 4% slower than the baseline with an interval of several percent: not a proven 5% slowdown
    near = compare_runs(rows, {}, _baseline(rows, scale=1 / 1.04))
    assert near.passed and near.rows[0].verdict in ("inconclusive", "same")
    assert near.rows[0].ratio == pytest.approx(1.04)
    strict = compare_runs(rows, {}, _baseline(rows, scale=1 / 1.04), max_slowdown=0.0)
    assert strict.rows[0].verdict in ("slower", "inconclusive")


def test_a_baseline_without_samples_is_judged_on_its_intervals_and_says_so() -> None:
    rows = [_row(_times(200, 0.5, seed=7))]
    fast = compare_runs(rows, {}, _baseline(rows, scale=0.5, keep_samples=False))
    r = fast.rows[0]
    assert r.method == "confidence bounds" and r.verdict == "slower" and not fast.passed
    assert "kept no samples" in (r.note or "")
    same = compare_runs(rows, {}, _baseline(rows, keep_samples=False))
    assert same.passed and same.rows[0].verdict == "same"
    # a row with neither samples nor an interval cannot be judged, and does not fail
    bare = _baseline(rows, keep_samples=False)
    bare.rows[0] = bare.rows[0].model_copy(update={"median_ci_low_ms": None, "median_ci_high_ms": None})
    judged = compare_runs(rows, {}, bare)
    assert judged.passed and judged.rows[0].verdict == "not judged" and judged.rows[0].ratio == pytest.approx(1.0)


def test_unmatched_rows_are_listed_and_parity_failures_fail() -> None:
    rows = [_row(_times(100, 0.1, seed=8)), _row(_times(100, 0.2, seed=9), batch=4)]
    base = _baseline([rows[0], _row(_times(100, 0.9, seed=10), batch=32)])
    gate = compare_runs(rows, {}, base)
    assert len(gate.rows) == 1 and gate.passed
    assert gate.only_here == ["lenet5 3x32x32 batch 4 onnxruntime fp32"]
    assert gate.only_baseline == ["lenet5 3x32x32 batch 32 onnxruntime fp32"]
    broken = compare_runs([_row(np.zeros(0), status="parity-failed")], {}, _baseline(rows[:1]))
    assert not broken.passed and broken.rows[0].verdict == "parity failed" and "cosine" in broken.rows[0].note
    elsewhere = base.model_copy(update={"environment": {"cpu_model": "B"}})
    env = compare_runs(rows, {"cpu_model": "A", "threads": 2}, elsewhere)
    assert any("CPU B" in n for n in env.notes)


def test_a_bad_baseline_is_one_clear_line(tmp_path: Path) -> None:
    from exporter.errors import UserError

    with pytest.raises(UserError, match="no such results file"):
        load_baseline(tmp_path / "nothing.json")
    (tmp_path / "results.json").write_text('{"rows": [{"model": 1}]}')
    with pytest.raises(UserError, match="holds no rows"):
        load_baseline(tmp_path)
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(UserError, match="not readable results JSON"):
        load_baseline(tmp_path / "results.json")


def test_a_baseline_that_is_a_fifo_is_refused_unread(tmp_path: Path) -> None:
    """Defect: a FIFO given as --baseline was "no such results file", though it was there."""
    from exporter.errors import UserError

    with fifo(tmp_path / "results.json") as path, pytest.raises(UserError) as info:
        load_baseline(path)
    assert "is a FIFO (named pipe), not a regular file: give a results.json" in str(info.value)


def _scaled_copy(results: Path, target: Path, scale: float) -> Path:
    doc = strict_load(results)
    for r in doc["rows"]:
        for k in ("median_ms", "median_ci_low_ms", "median_ci_high_ms"):
            if r.get(k) is not None:
                r[k] *= scale
        if r.get("sample_summary"):
            r["sample_summary"]["values"] = [v * scale for v in r["sample_summary"]["values"]]
    target.mkdir(parents=True)
    (target / "results.json").write_text(json.dumps(doc))
    return target


#: The stub's samples: seconds per call of the n-th timed group of a run (batch 1 first), the same in every run.
STUB_SAMPLES = 60


def _stub_timings(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Every run times its engines for real, then keeps the same seeded samples in place of the clock's: a rerun
    is then exactly its own baseline, and a baseline scaled by 2 exactly twice as fast, whatever the CPU's load."""
    from runtime.bench import runner

    real = runner.measure_interleaved
    groups = {"n": 0}

    def stubbed(runners, policy, clock=None, on_round=None):  # type: ignore[no-untyped-def]
        timed = real(runners, policy, on_round=on_round)
        groups["n"] += 1
        for t in timed:
            t.samples = list(_times(STUB_SAMPLES, 1e-3 * groups["n"], seed=groups["n"]))
        return timed

    monkeypatch.setattr(runner, "measure_interleaved", stubbed)
    return groups  # the group count: set it back to 0 before each run


def test_bench_with_a_baseline_prints_the_ratios_and_exits_1_on_a_regression(
    arts: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    quick = [q for q in QUICK if q != "pytorch"]  # onnxruntime only: the gate needs no reference engine
    common = ["--models", "lenet5", "--batch-size", "1", "2", *quick, "--artifacts-dir", str(arts)]

    # real timings against a baseline a thousand times faster than this CPU can be: no noise reaches that
    assert main([*common, "--output", str(tmp_path / "real")]) == 0
    real = tmp_path / "real" / "results.json"
    kept = strict_load(real)["rows"][0]["sample_summary"]
    assert kept["count"] >= 3 and 1 <= len(kept["values"]) <= kept["count"]
    code = main([*common, "--output", str(tmp_path / "real2"), "--baseline",
                 str(_scaled_copy(real, tmp_path / "impossible", 1e-3))])  # fmt: skip
    assert code == 1 and "regression gate FAILED (2 rows compared: 2 slower)" in capsys.readouterr().out

    groups = _stub_timings(monkeypatch)

    def bench(out: str, *extra: str) -> tuple[int, str]:
        groups["n"] = 0
        code = main([*common, *extra, "--output", str(tmp_path / out)])
        return code, capsys.readouterr().out

    assert bench("first")[0] == 0
    first = tmp_path / "first" / "results.json"
    kept = strict_load(first)["rows"][0]["sample_summary"]
    assert kept["count"] == STUB_SAMPLES and len(kept["values"]) == STUB_SAMPLES  # few samples: all kept

    # its own run: the same figures again pass
    code, printed = bench("again", "--baseline", str(first))
    assert code == 0, printed
    assert "regression gate passed (2 rows compared: 2 same)" in printed

    # a baseline twice as fast: every row is slower by a whole interval
    fast = _scaled_copy(first, tmp_path / "fast", 0.5)
    code, printed = bench("second", "--baseline", str(fast))
    assert code == 1
    assert "Against the baseline" in printed and "| slower " in printed
    assert "regression gate FAILED (2 rows compared: 2 slower)" in printed
    gate = strict_load(tmp_path / "second" / "results.json")["baseline"]
    assert gate["path"].endswith("fast/results.json") and len(gate["rows"]) == 2
    assert all(r["ratio"] == pytest.approx(2.0) and r["ratio_ci_low"] > 1.9 for r in gate["rows"])

    slow = _scaled_copy(first, tmp_path / "slow", 2.0)
    code, printed = bench("third", "--batch-size", "1", "3", "--baseline", str(slow))
    assert code == 0, printed
    assert "regression gate passed (1 rows compared: 1 faster)" in printed
    assert "not in the baseline (1): lenet5 3x32x32 batch 3" in printed
    assert "in the baseline only (1): lenet5 3x32x32 batch 2" in printed
    shutil.rmtree(tmp_path / "first")


def test_a_bad_baseline_fails_before_anything_is_timed(
    arts: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--models", "lenet5", *QUICK, "--artifacts-dir", str(arts), "--output", str(tmp_path / "o"),
                 "--baseline", str(tmp_path / "missing")])  # fmt: skip
    err = capsys.readouterr().err
    assert code != 0 and "no such results file" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()
