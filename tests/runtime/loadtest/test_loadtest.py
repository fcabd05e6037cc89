"""The load test's parts that need no server: metrics, loopback only, statistics, result files."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from exporter.errors import UserError
from runtime.loadtest.client import check_loopback, split_url
from runtime.loadtest.metrics import MetricsUnavailable, difference, parse
from runtime.loadtest.report import merge, read_existing, write_results
from runtime.loadtest.run import LoadTestConfig, LoadTestResult, Row, _latency_stats
from tests.helpers import assert_one_line, fifo, run_cli, strict_load

METRICS = """\
# HELP nv_inference_count Number of inferences performed
# TYPE nv_inference_count counter
nv_inference_count{model="resnet_cifar",version="1"} 120
nv_inference_count{model="other",version="1"} 7
nv_inference_exec_count{model="resnet_cifar",version="1"} 30
nv_inference_request_success{model="resnet_cifar",version="1"} 120
nv_inference_request_failure{model="resnet_cifar",version="1"} 0
nv_inference_queue_duration_us{model="resnet_cifar",version="1"} 240000
nv_inference_compute_infer_duration_us{model="resnet_cifar",version="1"} 600000
nv_cpu_utilization 0.5
"""


def test_metrics_give_the_batches_triton_formed() -> None:
    before = parse(METRICS, "resnet_cifar")
    after = parse(METRICS.replace("} 120\n", "} 220\n").replace("} 30\n", "} 45\n"), "resnet_cifar")
    assert before["nv_inference_count"] == 120 and before["nv_inference_exec_count"] == 30
    figures = difference(before, after)
    assert figures.inferences == 100 and figures.executions == 15
    assert figures.mean_batch == pytest.approx(100 / 15)
    assert parse(METRICS, "other")["nv_inference_count"] == 7
    with pytest.raises(MetricsUnavailable, match="no counters for model 'absent'"):
        parse(METRICS, "absent")


def test_only_loopback_is_a_target() -> None:
    assert split_url("127.0.0.1:8001") == ("127.0.0.1", 8001)
    assert split_url("http://localhost:8000/") == ("localhost", 8000)
    check_loopback("127.0.0.1")
    check_loopback("::1")
    for host in ("10.1.2.3", "192.168.0.10", "8.8.8.8"):
        with pytest.raises(UserError, match="only targets this machine"):
            check_loopback(host)
    with pytest.raises(UserError, match="HOST:PORT"):
        split_url("127.0.0.1")
    with pytest.raises(UserError, match="only targets this machine"):
        LoadTestConfig(url="10.0.0.5:8001").check()
    with pytest.raises(UserError, match="--concurrency"):
        LoadTestConfig(concurrency=(0,)).check()


def test_percentiles_need_enough_samples() -> None:
    few = _latency_stats([0.001] * 50)
    assert few["median_ms"] == pytest.approx(1.0) and few["p90_ms"] is not None and few["p99_ms"] is None
    many = _latency_stats([0.001] * 99 + [0.1])
    assert many["p99_ms"] is not None and many["max_ms"] == pytest.approx(100.0)
    assert _latency_stats([])["median_ms"] is None


def _result(levels: list[int], run_id: str = "run1") -> LoadTestResult:
    rows = [
        Row(
            "m",
            "fp32",
            "m",
            "triton",
            "grpc",
            c,
            1,
            10 * c,
            0,
            1.0,
            10.0 * c,
            10.0 * c,
            1,
            1,
            None,
            1,
            1,
            1,
            run_id=run_id,
        )
        for c in levels
    ]
    return LoadTestResult(run_id, "m", "fp32", "sha", "m", "127.0.0.1:8001", "grpc", {}, None, rows)


def test_results_are_never_replaced_by_fewer_rows(tmp_path: Path) -> None:
    write_results(_result([1, 4, 16]), tmp_path)
    interrupted = _result([1], run_id="run2")
    interrupted.interrupted = True
    written = write_results(interrupted, tmp_path)
    doc = read_existing(tmp_path)
    assert doc is not None
    assert written.rows == 3 and written.replaced == 1 and written.added == 0
    assert [(r["concurrency"], r["run_id"]) for r in doc["results"]] == [(1, "run2"), (4, "run1"), (16, "run1")]
    assert set(doc["runs"]) == {"run1", "run2"}
    assert (tmp_path / "results.csv").read_text().count("\n") == 4
    assert strict_load(tmp_path / "results.json") == doc  # strict JSON, as read back
    doc2, _, _ = merge(doc, _result([32], run_id="run3"))
    assert len(doc2["results"]) == 4  # type: ignore[arg-type]


def test_a_foreign_results_file_is_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text('{"something": "else"}')
    with pytest.raises(UserError, match="not a load test results file"):
        write_results(_result([1]), tmp_path)
    assert json.loads((tmp_path / "results.json").read_text()) == {"something": "else"}


def test_cli_refusals_are_one_line(exported, artifacts_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("tritonclient.grpc", reason="the serve extra (tritonclient) is not installed")
    r = run_cli("runtime.loadtest", "lenet5", "--url", "10.0.0.7:8001", "--output", str(tmp_path))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "error: the load test only targets this machine (127.0.0.1, ::1, localhost); 10.0.0.7 is 10.0.0.7"
    ]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens once closed
    r = run_cli(
        "runtime.loadtest",
        "lenet5",
        "--url",
        f"127.0.0.1:{port}",
        "--artifacts-dir",
        str(tmp_path / "none"),
        "--output",
        str(tmp_path),
    )
    assert_one_line(r, "error: no artifact for lenet5", code=2)
    exported("lenet5")
    r = run_cli(
        "runtime.loadtest",
        "lenet5",
        "--url",
        f"127.0.0.1:{port}",
        "--artifacts-dir",
        str(artifacts_dir),
        "--output",
        str(tmp_path),
    )
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: no Triton server answers GRPC at 127.0.0.1:{port}"), (
        r.stderr
    )


def test_a_results_file_that_is_a_fifo_is_refused_without_waiting(tmp_path: Path) -> None:
    """Defect: a load test whose results.json was a FIFO waited for a writer forever before it started."""
    with fifo(tmp_path / "results.json"), pytest.raises(UserError) as info:
        read_existing(tmp_path)
    assert "results.json: a FIFO (named pipe), not a regular file" in str(info.value)
