"""A crashed Triton is restarted (bounded, with back-off, each crash told), and leaves nothing behind.

The crash the serve tests provoke is a real one: one HTTP request whose JSON declares 2^40 rows.
Triton's HTTP front end allocates what the declared shape needs before anything compares it
with ``max_batch_size``, and the ``std::bad_alloc`` ends tritonserver.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from exporter.errors import UserError
from runtime.serve.server import SHM_DIR, Crash, ServerFailed, _model_copy, _tail
from runtime.serve.supervise import RestartPolicy, Supervisor
from tests.helpers import ROOT

from .conftest import free_ports

# --- without a server ---------------------------------------------------------------------------


def _crash(uptime: float = 1.0, code: int | None = -9) -> Crash:
    return Crash("tritonserver", 42, code, None, ["last line"], uptime)


class _FakeServer:
    """poll() gives the crashes of ``script`` one after another; start() fails where it says so."""

    def __init__(self, crashes: list[Crash], start_fails: list[bool]) -> None:
        self.crashes, self.start_fails = list(crashes), list(start_fails)
        self.starts = self.stops = 0
        self.log_path = Path("/tmp/x.log")

    def poll(self) -> Crash | None:
        if not self.crashes:
            raise KeyboardInterrupt  # the user stops the supervision
        return self.crashes.pop(0)

    def stop(self) -> None:
        self.stops += 1

    def start(self) -> object:
        self.starts += 1
        if self.start_fails and self.start_fails.pop(0):
            raise UserError("port 8000 (HTTP) on 127.0.0.1 is in use")
        return object()


def test_crash_says_which_process_and_how() -> None:
    assert _crash(code=-9).describe() == "tritonserver (pid 42) was killed by SIGKILL"
    assert Crash("server process", 7, 1, "boom", [], 0).describe() == "server process (pid 7) exited with code 1: boom"
    assert Crash("python stub", 9, None, None, [], 0).describe() == "python stub (pid 9) is gone"
    assert (
        Crash("restart", None, None, "Triton did not start", [], 0).describe() == "restart failed: Triton did not start"
    )


def test_restarts_are_bounded_with_back_off_and_a_stable_server_starts_a_new_row() -> None:
    waits: list[float] = []
    policy = RestartPolicy(max_restarts=2, backoff_s=1.0, max_backoff_s=3.0, stable_s=60.0)
    # two quick crashes (restarted), one after an hour (a new row), then three quick ones: given up
    server = _FakeServer([_crash(), _crash(), _crash(3600), _crash(), _crash()], [])
    told: list[str] = []
    sup = Supervisor(server, policy, on_crash=lambda r: told.append(f"crash {r.number}"), sleep=waits.append)  # type: ignore[arg-type]
    with pytest.raises(ServerFailed) as info:
        sup.run()
    message = str(info.value)
    assert "\n" not in message and "tritonserver (pid 42) was killed by SIGKILL" in message
    assert "crashed 3 times in a row (--max-restarts 2; 4 restarts in all)" in message and "/tmp/x.log" in message
    assert len(sup.restarts) == 4 and [r.in_a_row for r in sup.restarts] == [1, 2, 1, 2]
    assert waits == [1.0, 2.0, 1.0, 2.0] and told == ["crash 1", "crash 2", "crash 3", "crash 4"]
    assert server.starts == 4 and server.stops == 5  # the last stop before giving up


def test_a_restart_that_fails_is_retried_and_counted() -> None:
    waits: list[float] = []
    server = _FakeServer([_crash()], [True, False])
    sup = Supervisor(server, RestartPolicy(max_restarts=3, backoff_s=0.5), sleep=waits.append)  # type: ignore[arg-type]
    with pytest.raises(KeyboardInterrupt):
        sup.run()
    assert [r.error is not None for r in sup.restarts] == [True, False]
    assert "in use" in (sup.restarts[0].error or "") and waits == [0.5, 1.0]


def test_no_restart_at_all_with_zero() -> None:
    server = _FakeServer([_crash()], [])
    with pytest.raises(ServerFailed, match=r"; not restarted \(--max-restarts 0\)"):
        Supervisor(server, RestartPolicy(max_restarts=0), sleep=lambda _s: None).run()  # type: ignore[arg-type]
    assert server.starts == 0
    with pytest.raises(UserError, match="--max-restarts must be 0 or more"):
        RestartPolicy(max_restarts=-1).check()


def test_log_tail_leaves_out_triton_backtraces(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text(
        "earlier run\n"
        "terminate called after throwing an instance of 'std::bad_alloc'\n"
        "  what():  std::bad_alloc\nSignal (6) received.\n"
        " 0# 0x0000555FE8D8252D in /tmp/x/tritonserver\n 7FF36C29D524 in /lib/x86_64-linux-gnu/libstdc++.so.6\n"
        "tritonserver\n"
    )
    assert _tail(log, start=len("earlier run\n")) == [
        "terminate called after throwing an instance of 'std::bad_alloc'",
        "  what():  std::bad_alloc",
        "Signal (6) received.",
    ]


def test_only_tritons_own_model_copy_is_ever_removed() -> None:
    stub = "/srv/x/triton_python_backend_stub"
    assert _model_copy([stub, "/tmp/folderAb12Cd/1/model.py", "pytrtion1-x"]) == [Path("/tmp/folderAb12Cd")]
    assert _model_copy([stub, "/home/me/models/lenet/1/model.py"]) == []
    assert _model_copy([stub, "/tmp/folderAb12Cd/../../etc/1/model.py"]) == []


# --- a real Triton --------------------------------------------------------------------------------


def _crash_request(http_port: int) -> None:
    """One inference request declaring 2^40 rows in JSON: tritonserver dies of std::bad_alloc."""
    body = json.dumps({"inputs": [{"name": "input", "shape": [2**40, 3, 32, 32], "datatype": "FP32", "data": [0.0]}]})
    conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=30)
    with contextlib.suppress(OSError, http.client.HTTPException):
        conn.request("POST", "/v2/models/lenet5/infer", body=body, headers={"Content-Type": "application/json"})
        conn.getresponse().read()
    conn.close()


def _leftovers_of(pids: list[int]) -> tuple[set[str], set[Path]]:
    """The shared-memory segments the processes hold and the model copy their Python stub runs."""
    shm, copies = set(), set()
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            p = psutil.Process(pid)
            shm |= {f.path for f in p.open_files() if f.path.startswith(str(SHM_DIR) + "/")}
            copies |= set(_model_copy(p.cmdline()))
    return shm, copies


def _tree(pid: int) -> dict[int, float]:
    p = psutil.Process(pid)
    return {c.pid: c.create_time() for c in [p, *p.children(recursive=True)]}


def _still_running(seen: dict[int, float]) -> list[int]:
    left = []
    for pid, created in seen.items():
        with contextlib.suppress(psutil.NoSuchProcess):
            p = psutil.Process(pid)
            if p.create_time() == created and p.status() != psutil.STATUS_ZOMBIE:
                left.append(pid)
    return left


class _Serve:
    """``python -m runtime.serve lenet5`` in the background, its stderr read line by line."""

    def __init__(self, artifacts_dir: Path, *extra: str) -> None:
        self.http, grpc, metrics = free_ports(3)
        cmd = [sys.executable, "-m", "runtime.serve", "lenet5", "--artifacts-dir", str(artifacts_dir), "--no-rebuild"]
        cmd += ["--http-port", str(self.http), "--grpc-port", str(grpc), "--metrics-port", str(metrics)]
        cmd += ["--max-batch-size", "8", *extra]
        env = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="200")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.err: queue.Queue[str] = queue.Queue()
        self.err_lines: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stderr:  # type: ignore[union-attr]
            self.err.put(line.rstrip("\n"))

    def wait_serving(self) -> list[str]:
        lines = []
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()  # type: ignore[union-attr]
            if not line:
                break
            lines.append(line)
            if line.startswith("serving until Ctrl-C"):
                return lines
        raise AssertionError("".join(lines) + "\n".join(self.err_lines))

    def wait_err(self, prefix: str, timeout: float = 180) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.err.get(timeout=1)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            self.err_lines.append(line)
            if line.startswith(prefix):
                return line
        raise AssertionError(f"no line starting {prefix!r} on stderr:\n" + "\n".join(self.err_lines))

    def finish(self, timeout: float = 90) -> tuple[str, str]:
        try:
            self.proc.wait(timeout=timeout)  # stderr is read by the pump, stdout here
            stdout = self.proc.stdout.read()  # type: ignore[union-attr]
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        time.sleep(0.2)
        while not self.err.empty():
            self.err_lines.append(self.err.get())
        return stdout, "\n".join(self.err_lines)


@pytest.mark.serve
def test_a_request_that_crashes_tritonserver_is_survived(resolved_lenet, artifacts_dir: Path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("pytriton", reason="the serve extra (nvidia-pytriton) is not installed")
    from runtime.loadtest.client import TritonEndpoint

    serve = _Serve(artifacts_dir)
    try:
        serve.wait_serving()
        seen = _tree(serve.proc.pid)
        shm, copies = _leftovers_of(list(seen))
        assert copies, "the Python stub runs Triton's copy of the model in /tmp"
        _crash_request(serve.http)
        crashed = serve.wait_err("Triton crashed")
        assert "tritonserver (pid" in crashed and "std::bad_alloc" in crashed, crashed
        assert "restart 1 (1 of at most 5 in a row) in 1 s" in crashed, crashed
        again = serve.wait_err("Triton ready again")
        assert f"HTTP 127.0.0.1:{serve.http}" in again
        # the crashed run's processes, shared memory and model copy are gone before the restart
        assert _still_running(seen) == [serve.proc.pid]
        assert not any(Path(p).exists() for p in shm) and not any(c.exists() for c in copies)
        with TritonEndpoint(f"127.0.0.1:{serve.http}", "http") as endpoint:  # the same address serves again
            out = endpoint.infer_arrays("lenet5", {"input": np.zeros((2, 3, 32, 32), np.float32)}, ["output"])
        assert out["output"].shape == (2, 10)
        seen |= _tree(serve.proc.pid)
        shm2, copies2 = _leftovers_of(list(seen))
        serve.proc.send_signal(signal.SIGINT)
        stdout, stderr = serve.finish()
    finally:
        if serve.proc.poll() is None:
            serve.proc.kill()
    assert serve.proc.returncode == 0, stderr
    assert "no server process left; Triton crashed and was restarted 1 time (last: tritonserver" in stdout
    assert _still_running(seen) == []
    assert not any(Path(p).exists() for p in shm | shm2) and not any(c.exists() for c in copies | copies2)


@pytest.mark.serve
def test_out_of_restarts_is_one_line_and_leaves_nothing(resolved_lenet, artifacts_dir: Path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("pytriton", reason="the serve extra (nvidia-pytriton) is not installed")
    serve = _Serve(artifacts_dir, "--max-restarts", "0")
    try:
        serve.wait_serving()
        seen = _tree(serve.proc.pid)
        shm, copies = _leftovers_of(list(seen))
        triton = next(pid for pid in seen if psutil.Process(pid).name() == "tritonserver")
        os.kill(triton, signal.SIGKILL)
        stdout, stderr = serve.finish()
    finally:
        if serve.proc.poll() is None:
            serve.proc.kill()
    lines = stderr.strip().splitlines()
    assert serve.proc.returncode == 3 and len(lines) == 1, stderr
    assert lines[0].startswith(f"error: Triton crashed: tritonserver (pid {triton}) was killed by SIGKILL; ")
    assert "not restarted (--max-restarts 0) (log: " in lines[0]
    log = Path(lines[0].rsplit("(log: ", 1)[1].rstrip(")"))
    assert log.is_file()  # the one thing kept, and named
    log.unlink()
    assert _still_running(seen) == []
    assert not any(Path(p).exists() for p in shm) and not any(c.exists() for c in copies)


def test_a_start_sweeps_the_scratch_folders_of_servers_whose_owner_is_gone(tmp_path: Path) -> None:
    """Defect (hostile pass): ``kill -9`` of runtime.serve skipped every clean-up and left
    /tmp/cnn-serve-XXXX/ (spec.json) behind for good. A later start removes folders whose owner pid is
    dead; a live owner's folder, and a folder without an owner file, are left alone."""
    from runtime.serve.server import OWNER_FILE, WORKDIR_PREFIX, sweep_orphaned_workdirs

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan, live, unknown = (tmp_path / f"{WORKDIR_PREFIX}{n}" for n in ("orphan", "live", "unknown"))
    for folder in (orphan, live, unknown):
        folder.mkdir()
        (folder / "spec.json").write_text("{}")
    (orphan / OWNER_FILE).write_text(str(dead.pid))
    (live / OWNER_FILE).write_text(str(os.getpid()))
    assert sweep_orphaned_workdirs(tmp_path) == [orphan]
    assert not orphan.exists() and live.is_dir() and unknown.is_dir()
