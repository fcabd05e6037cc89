"""A load test keeps every level it finished, whatever happens to the server after.

The server's tritonserver is killed (SIGKILL) as the third concurrency level starts: the load
test ends with one line naming that level, and ``--output`` holds the levels finished before it
(JSON and CSV written after each level, the plot with them), with the run marked as ended early.
Rows of an earlier, fuller run that this one did not measure again are kept.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtime.loadtest import LoadTestResult, Row
from runtime.loadtest.report import write_results
from tests.helpers import ROOT, strict_loads

pytestmark = pytest.mark.serve


def _earlier_run(levels: list[int]) -> LoadTestResult:
    """An earlier complete run of lenet5 over gRPC at batch 1, as the results file would hold it."""
    rows = [
        Row("lenet5", "fp32", "lenet5", "triton", "grpc", c, 1, 100, 0, 1.0, 100.0, 100.0, 1, 1, 1, 1, 1, 1)
        for c in levels
    ]
    for r in rows:
        r.run_id = "earlier"
    result = LoadTestResult("earlier", "lenet5", "fp32", "sha", "lenet5", "127.0.0.1:1", "grpc", {}, None, rows)
    result.status = "complete"
    return result


def test_a_server_killed_during_the_third_level_keeps_the_first_two(
    exported,  # type: ignore[no-untyped-def]
    artifacts_dir: Path,
    tmp_path: Path,
) -> None:
    pytest.importorskip("pytriton", reason="the serve extra (nvidia-pytriton) is not installed")
    from runtime.resolve import resolve
    from runtime.serve import LocalServer, ModelOptions, ServeOptions

    exported("lenet5")
    resolved = resolve("lenet5", artifacts_dir=artifacts_dir, rebuild=False, say=lambda _m: None)
    out = tmp_path / "lt"
    write_results(_earlier_run([1, 2, 4, 8]), out)
    server = LocalServer(
        resolved, ServeOptions(http_port=0, grpc_port=0, metrics_port=0, model=ModelOptions(max_batch=8))
    )
    server.start()
    try:
        e = server.info.endpoints  # type: ignore[union-attr]
        cmd = [sys.executable, "-m", "runtime.loadtest", "lenet5", "--artifacts-dir", str(artifacts_dir)]
        cmd += ["--url", e.grpc, "--metrics-port", str(e.metrics_port), "--concurrency", "1", "2", "4"]
        cmd += ["--seconds", "2", "--warmup-seconds", "0.2", "--output", str(out)]
        env = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="200")
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines: list[str] = []
        killed = None
        deadline = time.monotonic() + 300
        for line in proc.stderr:  # type: ignore[union-attr]
            lines.append(line.rstrip("\n"))
            if killed is None and line.startswith("Triton over grpc, concurrency 4,"):
                killed = server.pids()["tritonserver"][0]
                os.kill(killed, signal.SIGKILL)
            if time.monotonic() > deadline:
                proc.kill()
        proc.wait(timeout=60)
    finally:
        server.stop()
    assert killed is not None, "\n".join(lines)
    assert proc.returncode == 2, "\n".join(lines)
    assert not any("Traceback" in line for line in lines)
    last = lines[-1]
    assert last.startswith("error: load test ended early: the server failed during concurrency 4 (level 3 of 3): ")
    assert last.endswith(f"kept local onnxruntime, concurrency 1, concurrency 2 in {out / 'results.json'}"), last

    doc = strict_loads((out / "results.json").read_text())
    mine = [r for r in doc["results"] if r["run_id"] != "earlier"]
    assert [(r["mode"], r["concurrency"]) for r in mine] == [("local", 1), ("triton", 1), ("triton", 2)]
    assert all(r["errors"] == 0 and r["requests"] > 0 for r in mine)
    # the earlier run's levels this one did not finish are kept; its 1 and 2 were measured again
    earlier = sorted(r["concurrency"] for r in doc["results"] if r["run_id"] == "earlier")
    assert earlier == [4, 8]
    run = doc["runs"][mine[0]["run_id"]]
    assert run["status"] == "ended early" and "concurrency 4" in run["ended_early"]
    with open(out / "results.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == len(doc["results"]) == 5
    assert (out / "throughput.png").stat().st_size > 1000
