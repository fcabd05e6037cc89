"""Throughput mode (``--streams``, ``--concurrency``): settings, windows, rows, parity, the gate on them."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.errors import UserError
from runtime.bench.__main__ import main
from runtime.bench.baseline import BaselineFile, BaselineRow, compare_runs
from runtime.bench.throughput import Setting, settings_from, window_throughput
from tests.helpers import strict_load


def test_settings_pair_streams_with_requests_in_flight() -> None:
    assert settings_from([1, 2], None) == [Setting(1, 1), Setting(2, 2)]
    assert settings_from(None, [1, 4]) == [Setting(1, 1), Setting(1, 4)]
    assert settings_from([2], [2, 4]) == [Setting(2, 2), Setting(2, 4)]
    with pytest.raises(UserError, match="at least 1"):
        settings_from([0], None)


def test_a_window_counts_the_part_of_each_request_inside_it() -> None:
    # two workers over [0, 1]: one does requests of 0.3 s (the fourth straddles the end), the other 0.5 s
    spans = [(0.0, 0.3), (0.3, 0.6), (0.6, 0.9), (0.9, 1.2), (0.0, 0.5), (0.5, 1.0)]
    assert window_throughput(spans, 0.0, 1.0, batch=4) == pytest.approx(4 * (3 + 1 / 3 + 2))
    # a request wholly outside the window does not count; one of zero length counts where it happened
    assert window_throughput([(1.5, 1.7), (0.5, 0.5)], 0.0, 1.0, batch=1) == pytest.approx(1.0)


QUICK_THROUGHPUT = ["--iterations", "4", "--warmup", "1", "--threads", "2", "--no-roofline", "--min-seconds", "0"]


def run_throughput(arts: Path, out: Path, *extra: str, engines: tuple[str, ...] = ("onnxruntime", "openvino")) -> int:
    return main(["--models", "lenet5", "--batch-size", "1", "4", "--engines", *engines, *QUICK_THROUGHPUT, *extra,
                 "--artifacts-dir", str(arts), "--output", str(out)])  # fmt: skip


def test_throughput_rows_per_setting_with_intervals_and_percentiles(
    arts: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("openvino")
    out = tmp_path / "t"
    code = run_throughput(arts, out, "--streams", "1", "2", engines=("onnxruntime", "openvino", "pytorch"))
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "Throughput on CPU" in printed.out and "| in flight |" in printed.out
    assert "pytorch: not available (throughput mode runs the deployable engines" in printed.err
    doc = strict_load(out / "results.json")
    rows = doc["rows"]
    assert {(r["engine"], r["batch_size"], r["streams"], r["concurrency"]) for r in rows} == {
        (e, b, s, s) for e in ("onnxruntime", "openvino") for b in (1, 4) for s in (1, 2)
    }
    for r in rows:
        assert r["mode"] == "throughput" and r["status"] == "ok" and r["parity"] == "pass"
        assert r["windows"] == 4 and r["rounds"] == 4  # --iterations: exactly that many windows, one per round
        assert r["threads_per_stream"] == 2 // r["streams"]
        assert r["throughput_ci_low_ips"] <= r["throughput_ips"] <= r["throughput_ci_high_ips"]
        assert r["throughput_ips"] == pytest.approx(1 / r["seconds_per_image"])
        assert r["samples"] >= r["concurrency"] * 4  # every window: at least one request per worker
        assert (r["p99_ms"] is None) == (r["samples"] < 100)
        assert r["window_summary"]["count"] == 4 and r["sample_summary"]["count"] == r["samples"]
        assert r["cold_start"]["create_s"] > 0 and r["cold_start"]["first_inference_s"] > 0
    ort = {(r["batch_size"], r["streams"]): r for r in rows if r["engine"] == "onnxruntime"}
    assert ort[(1, 2)]["settings"]["sessions"] == 2 and ort[(1, 2)]["settings"]["intra_op_threads"] == 1
    ov = {(r["batch_size"], r["streams"]): r for r in rows if r["engine"] == "openvino"}
    assert ov[(4, 2)]["settings"]["num_streams"] == "2"  # read back from the compiled model
    assert ov[(4, 1)]["settings"]["performance_hint"] == "LATENCY"
    best = [r for r in rows if r["batch_size"] == 4 and r["vs_best"] == 1.0]
    assert len(best) == 1 and all(r["vs_best"] >= 1.0 for r in rows if r["batch_size"] == 4)
    assert not (out / "latency.png").exists()  # a latency plot of throughput rows would mislead


def test_concurrency_above_the_streams_queues_on_them(arts: Path, tmp_path: Path) -> None:
    out = tmp_path / "t"
    assert run_throughput(arts, out, "--streams", "1", "--concurrency", "3", engines=("onnxruntime",)) == 0
    rows = strict_load(out / "results.json")["rows"]
    assert {(r["streams"], r["concurrency"]) for r in rows} == {(1, 3)}
    assert all(r["samples"] >= 12 for r in rows)


def test_a_setting_failing_parity_is_reported_not_timed(
    arts: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("openvino")
    from exporter.artifact import Tolerance
    from runtime.bench import gate

    monkeypatch.setattr(gate, "tolerance_for", lambda *a: Tolerance(atol=0.0, rtol=0.0, min_cosine=1.0))
    out = tmp_path / "t"
    assert run_throughput(arts, out, "--streams", "2", engines=("openvino",)) == 1
    rows = strict_load(out / "results.json")["rows"]
    assert [r["status"] for r in rows] == ["parity-failed"] * 2
    assert all(r["throughput_ips"] is None and r["streams"] == 2 and "exceeds atol 0" in r["reason"] for r in rows)


def test_the_gate_compares_throughput_rows_setting_by_setting(arts: Path, tmp_path: Path) -> None:
    out = tmp_path / "t"
    assert run_throughput(arts, out, "--streams", "1", "2", engines=("onnxruntime",)) == 0
    doc = strict_load(out / "results.json")
    rows = [BaselineRow.model_validate(r) for r in doc["rows"]]
    own = compare_runs(rows, {}, BaselineFile(path="own", rows=rows))
    # 4 windows on a shared CPU: the run against itself is ratio 1, its interval as wide as the noise
    assert own.passed and len(own.rows) == 4 and {r.verdict for r in own.rows} <= {"same", "inconclusive"}
    assert all(r.unit == "s per image" and r.streams in (1, 2) and r.ratio == pytest.approx(1) for r in own.rows)
    fast = []
    for r in rows:  # a baseline with 50x the throughput in every window: beyond any noise of 4 windows
        kept = r.window_summary.scaled(0.02)  # type: ignore[union-attr]
        fast.append(r.model_copy(update={"window_summary": kept, "seconds_per_image": r.seconds_per_image / 50}))
    gate = compare_runs(rows, {}, BaselineFile(path="fast", rows=fast))
    assert not gate.passed and {r.verdict for r in gate.rows} == {"slower"}
    # a latency baseline does not match throughput rows: different figures are never compared
    latency = [r.model_copy(update={"mode": "latency", "streams": None, "concurrency": None}) for r in rows]
    apart = compare_runs(rows, {}, BaselineFile(path="latency", rows=latency))
    assert not apart.rows and len(apart.only_here) == 4
