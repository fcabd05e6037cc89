"""A real Triton on 127.0.0.1: queried over HTTP and gRPC, load-tested, stopped with nothing left behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

pytest.importorskip("pytriton", reason="the serve extra (nvidia-pytriton) is not installed")
pytest.importorskip("tritonclient.grpc", reason="the serve extra (tritonclient) is not installed")

from runtime.compare import compare, default_tolerance  # noqa: E402
from runtime.loadtest import LoadTestConfig, run_load_test  # noqa: E402
from runtime.loadtest.client import RequestRefused, TritonEndpoint  # noqa: E402
from runtime.loadtest.metrics import scrape  # noqa: E402
from runtime.loadtest.report import read_existing, write_results  # noqa: E402
from runtime.serve import LocalServer, ServeOptions, ServerFailed, libpython_dir, server_environment  # noqa: E402
from runtime.sessions import SessionConfig, create_session  # noqa: E402
from tests.helpers import ROOT, run_cli, strict_loads  # noqa: E402

from .conftest import free_ports  # noqa: E402

pytestmark = pytest.mark.serve


def _local(resolved, x: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    sess, _ = create_session(resolved.graph, SessionConfig(device="cpu"))
    return sess.run(["output"], {"input": x})[0]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_outputs_equal_local_onnxruntime(triton_server, resolved_resnet, protocol: str) -> None:
    info = triton_server.info
    url = info.endpoints.http if protocol == "http" else info.endpoints.grpc
    tolerance = default_tolerance("cpu", "fp32")
    with TritonEndpoint(url, protocol) as endpoint:
        model = endpoint.model("resnet_cifar")
        assert model.max_batch_size == 16 and model.inputs[0].shape == (-1, 3, 32, 32)
        for batch in (1, 3, 16):
            x = np.random.default_rng(batch).uniform(-1, 1, (batch, 3, 32, 32)).astype(np.float32)
            got = endpoint.infer_arrays("resnet_cifar", {"input": x}, ["output"])["output"]
            result = compare(_local(resolved_resnet, x), got, tolerance)
            assert got.shape == (batch, 10) and result.passed, result.failures


def test_malformed_requests_are_one_clear_line(triton_server) -> None:
    with TritonEndpoint(triton_server.info.endpoints.grpc, "grpc") as endpoint:
        bad_shape = np.zeros((1, 3, 31, 32), np.float32)
        with pytest.raises(RequestRefused) as info:
            endpoint.infer_arrays("resnet_cifar", {"input": bad_shape}, ["output"])
        assert "\n" not in str(info.value) and "shape" in str(info.value)
        with pytest.raises(RequestRefused, match="batch-size must be <= 16"):
            endpoint.infer_arrays("resnet_cifar", {"input": np.zeros((17, 3, 32, 32), np.float32)}, ["output"])
        with pytest.raises(RequestRefused, match="FP64"):
            endpoint.infer_arrays("resnet_cifar", {"input": np.zeros((1, 3, 32, 32), np.float64)}, ["output"])
    with TritonEndpoint(triton_server.info.endpoints.http, "http") as endpoint:
        with pytest.raises(RequestRefused) as info:
            endpoint.infer_arrays("resnet_cifar", {"image": np.zeros((1, 3, 32, 32), np.float32)}, ["output"])
        assert "\n" not in str(info.value)


def test_server_processes_and_environment(triton_server) -> None:
    pids = triton_server.pids()
    assert set(pids) >= {"server (onnxruntime)", "tritonserver", "python stub"}
    assert sum(triton_server.rss_bytes().values()) > 50 << 20
    worker = psutil.Process(pids["server (onnxruntime)"][0])
    env_path = worker.environ().get("LD_LIBRARY_PATH", "")
    if libpython_dir():  # the pitfall's fix: this Python's LIBDIR comes first for the stub
        assert env_path.split(":")[0] == libpython_dir()


def test_server_environment_puts_this_pythons_libdir_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run on any Python: a shared libpython is made up (CI's Python may have none, and must not skip)."""
    import sysconfig

    (tmp_path / "libpython3.x.so.1.0").write_bytes(b"")
    values = {"LIBDIR": str(tmp_path), "INSTSONAME": "libpython3.x.so.1.0"}
    monkeypatch.setattr(sysconfig, "get_config_var", values.get)
    libdir = libpython_dir()
    assert libdir == str(tmp_path)
    env = server_environment({"LD_LIBRARY_PATH": f"/opt/x:{libdir}:/usr/lib", "PATH": "/usr/bin"})
    assert env["LD_LIBRARY_PATH"] == f"{libdir}:/opt/x:/usr/lib"
    assert server_environment({"PATH": "/usr/bin"})["LD_LIBRARY_PATH"] == libdir
    (tmp_path / "libpython3.x.so.1.0").unlink()  # a static Python: LD_LIBRARY_PATH left as it was
    assert libpython_dir() is None
    assert server_environment({"LD_LIBRARY_PATH": "/opt/x", "PATH": "/usr/bin"})["LD_LIBRARY_PATH"] == "/opt/x"


def test_short_load_test_forms_batches_and_writes_results(triton_server, resolved_resnet, tmp_path: Path) -> None:
    info = triton_server.info
    config = LoadTestConfig(
        url=info.endpoints.grpc,
        metrics_port=info.endpoints.metrics_port,
        concurrency=(1, 6),
        seconds=1.5,
        warmup_seconds=0.3,
    )
    result = run_load_test(resolved_resnet, config)
    assert result.parity is not None and result.parity.passed
    local, one, six = result.rows
    assert local.mode == "local" and local.requests > 10
    assert one.mean_formed_batch == pytest.approx(1.0) and one.errors == 0
    assert six.mean_formed_batch is not None and six.mean_formed_batch > 1.2  # Triton really batched
    assert six.executions and six.executions < six.requests + 6 * 2
    assert six.p99_ms is None or six.requests >= 100
    written = write_results(result, tmp_path)
    doc = read_existing(tmp_path)
    assert doc is not None and len(doc["results"]) == 3
    assert {p.name for p in written.paths.values()} == {"results.json", "results.csv", "throughput.png"}
    before = scrape("127.0.0.1", info.endpoints.metrics_port, "resnet_cifar")
    assert before["nv_inference_exec_count"] > 0


def _loadtest_http(server, artifacts_dir: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    e = server.info.endpoints
    return run_cli(
        "runtime.loadtest",
        "resnet_cifar",
        "--artifacts-dir",
        str(artifacts_dir),
        "--url",
        e.http,
        "--protocol",
        "http",
        "--metrics-port",
        str(e.metrics_port),
        "--output",
        str(out),
        *extra,
    )


def test_loadtest_cli_over_http(triton_server, artifacts_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "lt"
    r = _loadtest_http(
        triton_server, artifacts_dir, out, "--concurrency", "1", "4", "--seconds", "1", "--warmup-seconds", "0.2"
    )
    assert r.returncode == 0, r.stderr
    assert "parity through the server: pass" in r.stderr
    assert "Triton http" in r.stdout and "onnxruntime (local)" in r.stdout
    doc = strict_loads((out / "results.json").read_text())
    assert [row["concurrency"] for row in doc["results"]] == [1, 1, 4]
    # the same run again replaces its rows; nothing is ever dropped
    r = _loadtest_http(
        triton_server,
        artifacts_dir,
        out,
        "--concurrency",
        "2",
        "--seconds",
        "0.5",
        "--warmup-seconds",
        "0",
        "--no-local",
    )
    assert r.returncode == 0, r.stderr
    doc = strict_loads((out / "results.json").read_text())
    assert [row["concurrency"] for row in doc["results"]] == [1, 1, 2, 4]


def test_loadtest_names_a_model_the_server_lacks(
    triton_server, resolved_lenet, artifacts_dir: Path, tmp_path: Path
) -> None:
    r = run_cli(
        "runtime.loadtest",
        "lenet5",
        "--artifacts-dir",
        str(artifacts_dir),
        "--url",
        triton_server.info.endpoints.grpc,
        "--seconds",
        "1",
        "--output",
        str(tmp_path / "lt"),
    )
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "has no ready model 'lenet5'" in lines[0], r.stderr


def test_busy_port_is_one_line(resolved_lenet, artifacts_dir: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        r = run_cli(
            "runtime.serve",
            "lenet5",
            "--artifacts-dir",
            str(artifacts_dir),
            "--grpc-port",
            str(busy),
            "--http-port",
            "0",
            "--metrics-port",
            "0",
        )
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == (
        f"error: port {busy} (gRPC) on 127.0.0.1 is in use: pick another with --grpc-port (0 picks a free one) "
        "or stop what listens there"
    )


def test_a_server_that_fails_to_start_shows_its_log(resolved_lenet, tmp_path: Path, monkeypatch) -> None:
    """A port taken between the check and Triton's bind: Triton exits, and the error says why."""
    import runtime.serve.server as server_module

    monkeypatch.setattr(server_module, "check_port", lambda *a, **k: None)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        server = LocalServer(
            resolved_lenet, ServeOptions(http_port=0, grpc_port=busy, metrics_port=0, log_path=tmp_path / "log")
        )
        started = time.monotonic()
        with pytest.raises(ServerFailed) as info:
            server.start()
    assert time.monotonic() - started < 60
    message = str(info.value)
    assert "\n" not in message and "tritonserver exited during start-up" in message and "already in use" in message
    assert info.value.log_tail and any("already in use" in line for line in info.value.log_tail)
    assert server.processes() == []


def test_serve_command_stops_on_ctrl_c_leaving_no_process(resolved_lenet, artifacts_dir: Path) -> None:
    http, grpc, metrics = free_ports(3)
    cmd = [sys.executable, "-m", "runtime.serve", "lenet5", "--artifacts-dir", str(artifacts_dir)]
    cmd += ["--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics), "--max-batch-size", "8"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: dict[int, float] = {}
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            if not line:
                break
            lines.append(line)
            if line.startswith("serving until Ctrl-C"):
                break
        assert lines and lines[-1].startswith("serving until Ctrl-C"), "".join(lines) + proc.stderr.read()  # type: ignore[union-attr]
        for p in psutil.Process(proc.pid).children(recursive=True):
            seen[p.pid] = p.create_time()
        assert any("tritonserver" in psutil.Process(pid).name() for pid in seen)
        with TritonEndpoint(f"127.0.0.1:{http}", "http") as endpoint:
            out = endpoint.infer_arrays("lenet5", {"input": np.zeros((2, 3, 32, 32), np.float32)}, ["output"])
            assert out["output"].shape == (2, 10)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    assert "no server process left" in stdout
    left = []
    for pid, created in seen.items():
        try:
            p = psutil.Process(pid)
            if p.create_time() == created and p.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{pid} {p.name()}")
        except psutil.NoSuchProcess:
            pass
    assert left == []
    assert not any(
        "tritonserver" in (p.info["name"] or "") and p.info["pid"] in seen for p in psutil.process_iter(["pid", "name"])
    )
