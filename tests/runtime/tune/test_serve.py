"""Tune's deployment on the local Triton: served from its repository, and the ``--serve`` configuration search."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtime.tune.deploy import read_deploy, read_report
from runtime.tune.overhead import corrected_ips
from tests.helpers import ROOT, run_cli

from ..serve.conftest import free_ports
from .conftest import QUICK_TUNE, Tuned

pytestmark = pytest.mark.serve


def serve_repository(repository: Path) -> tuple[subprocess.Popen[str], int, str]:
    """``python -m runtime.serve --repository`` until it serves; (process, gRPC port, what it printed)."""
    http, grpc, metrics = free_ports(3)
    proc = subprocess.Popen(
        [sys.executable, "-m", "runtime.serve", "--repository", str(repository), "--http-port", str(http),
         "--grpc-port", str(grpc), "--metrics-port", str(metrics)],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    lines: list[str] = []
    deadline = time.monotonic() + 240
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "serving until Ctrl-C" in line:
            break
    return proc, grpc, "".join(lines)


def assert_serves_as_chosen(out: Path) -> None:
    """The repository tune wrote under ``out`` passes ``--check-repository``, and ``runtime.serve --repository``
    serves it with the chosen engine and settings: the recorded graph, parity through the server, throughput."""
    deploy = read_deploy(out)
    checked = run_cli("runtime.serve", "--check-repository", deploy.triton.repository)
    assert checked.returncode == 0 and "| ok " in checked.stdout, checked.stdout + checked.stderr
    proc, grpc, printed = serve_repository(Path(deploy.triton.repository))
    try:
        assert "serving until Ctrl-C" in printed, printed
        assert f"({deploy.triton.backend} backend)" in printed and f"{deploy.triton.instances} instance(s)" in printed
        if deploy.chosen.engine == "openvino":
            assert f"{deploy.chosen.streams} streams" in printed
        from exporter.artifact import VariantKey
        from exporter.files import sha256_bytes
        from runtime.loadtest import LoadTestConfig, run_load_test
        from runtime.resolve import resolve

        resolved = resolve(deploy.artifact.directory, key=VariantKey.parse(deploy.triton.variant), rebuild=False,
                           say=lambda _m: None)  # fmt: skip
        assert sha256_bytes(resolved.graph) == deploy.triton.graph_sha256
        result = run_load_test(resolved, LoadTestConfig(url=f"127.0.0.1:{grpc}", metrics_port=None,
                                                        model_name=deploy.triton.model_name, concurrency=(2,),
                                                        seconds=1.0, batch=deploy.chosen.batch_size,
                                                        local_baseline=False))  # fmt: skip
        assert result.parity is not None and result.parity.passed
        assert result.triton_rows()[0].throughput_ips
    finally:
        proc.send_signal(signal.SIGINT)
        out_text, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "no server process left" in out_text


def test_runtime_serve_serves_the_tuned_repository_as_chosen(tuned: Tuned) -> None:
    pytest.importorskip("pytriton")
    assert tuned.result.returncode == 0, tuned.result.stderr[-3000:]
    assert_serves_as_chosen(tuned.out)


@pytest.mark.slow  # resnet18 at 224x224: a few minutes here
def test_tune_on_resnet18_writes_a_repository_runtime_serve_serves(exported, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("pytriton")
    pytest.importorskip("openvino")
    arts = tmp_path / "artifacts"
    shutil.copytree(exported("resnet18").onnx_path.parent, arts / "resnet18")
    # batch 1, fp32 only: no int8 variant to calibrate at 224x224
    quick = [q if q != "4" else "1" for q in QUICK_TUNE if q != "int8"]
    out = tmp_path / "tuned"
    r = run_cli("runtime.tune", "resnet18", "--target", "throughput", *quick, "--finalists", "1",
                "--artifacts-dir", str(arts), "--output", str(out), timeout=1200)  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = read_report(out)
    assert {(c.engine, c.streams) for c in report.candidates} == {(e, s) for e in ("onnxruntime", "openvino")
                                                                  for s in (1, 2)}  # fmt: skip
    assert read_deploy(out).triton.validated
    assert_serves_as_chosen(out)


def test_serve_searches_triton_configurations_and_reports_beside_the_prediction(
    tune_arts: Path, tmp_path: Path
) -> None:
    pytest.importorskip("pytriton")
    pytest.importorskip("openvino")
    out = tmp_path / "served"
    quick = [q if q != "4" else "1" for q in QUICK_TUNE]
    r = run_cli("runtime.tune", "resnet_cifar", "--target", "throughput", *quick, "--engines", "onnxruntime",
                "--precision", "fp32", "--serve", "--serve-configs", "2", "--serve-seconds", "1",
                "--artifacts-dir", str(tune_arts), "--output", str(out), timeout=1200)  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "Triton configurations on the local server" in r.stdout and "served through Triton:" in r.stdout
    deploy = read_deploy(out)
    served = deploy.served
    assert served is not None and len(served.configs) == 2 and served.chosen is not None
    assert served.parity_through_server and served.chosen.status == "ok"
    assert served.predicted_ips == deploy.chosen.best.throughput_ips  # type: ignore[union-attr]
    assert served.served_over_predicted == pytest.approx(served.chosen.throughput_ips / served.predicted_ips)
    assert served.bench_before_ips and served.bench_after_ips and served.served_final_ips
    # the search starts from the bench's own setting: its figure through Triton is the like-for-like comparison
    assert served.as_measured_ips == served.configs[0].throughput_ips
    assert served.as_measured_over_predicted == pytest.approx(served.as_measured_ips / served.predicted_ips)
    assert "the bench's own setting through Triton" in r.stdout
    # the serving path measured with a trivial model served the same way, before and after the final check,
    # and the prediction that charges it
    path = served.serving_overhead
    assert path is not None and path.note is None and len(path.requests_per_s) == 2, path
    assert path.concurrency == served.chosen.concurrency and path.request_batch == deploy.chosen.batch_size
    assert path.instances == served.chosen.instances and path.max_batch_size == served.chosen.max_batch_size
    assert path.seconds_per_request == pytest.approx(sum(1 / r for r in path.requests_per_s) / 2)
    # the served configuration benched beside the final check's load test: the check's prediction
    setting = served.served_config_setting
    assert setting is not None and served.served_config_note is None, served.served_config_note
    assert setting.engine == deploy.chosen.engine and setting.streams == served.chosen.instances  # onnxruntime
    assert setting.in_flight <= served.chosen.instances and setting.batch <= served.chosen.max_batch_size
    assert served.served_config_bench_before_ips and served.served_config_bench_after_ips
    assert served.check_basis == "served configuration" and served.check_served_ips == served.served_final_ips
    assert served.check_bench_ips == served.served_config_bench_ips
    expected = corrected_ips(served.served_config_bench_ips, path.request_batch, path.seconds_per_request)
    assert served.corrected_predicted_ips == pytest.approx(expected) and expected < served.served_config_bench_ips
    assert served.served_over_corrected == pytest.approx(served.served_final_ips / served.corrected_predicted_ips)
    alone = path.request_batch / path.seconds_per_request
    assert served.pipelined_predicted_ips == pytest.approx(min(served.served_config_bench_ips, alone))
    assert served.check and f"the bench of the served configuration, {setting.label}" in served.check
    assert served.within_15pct_pipelined is not None
    assert served.within_15pct is not None and served.check and served.check in r.stdout
    assert "serving path (an Identity graph served the same way" in r.stdout
    assert not list(out.glob("serving-path-*"))  # its temporary folder is gone
    # the repository holds the configuration the search chose
    assert deploy.triton.instances == served.chosen.instances
    assert deploy.triton.max_batch_size == served.chosen.max_batch_size
    assert deploy.triton.max_queue_delay_us == served.chosen.max_queue_delay_us
    checked = run_cli("runtime.serve", "--check-repository", deploy.triton.repository)
    assert checked.returncode == 0
