"""A real Triton Inference Server on this machine, serving an artifact with dynamic batching.

``nvidia-pytriton`` bundles ``tritonserver`` and serves a Python callable: the model is an
onnxruntime session made by :func:`runtime.sessions.create_session`, and Triton's dynamic
batcher hands it the batches it forms. :class:`LocalServer` runs all of it in one child
process (the *server process*, ``python -m runtime.serve._worker``) whose output goes to a
log file, then waits until the model answers, and on :meth:`LocalServer.stop` shuts it down
and makes sure that no process it started is left (those that do not stop in time are
killed by id), nor what they leave behind when one of them crashes: the shared-memory segments
of pytriton and of Triton's Python backend in ``/dev/shm``, and the folder ``/tmp/folderXXXXXX``
where Triton copies a model it is given over its load API. :meth:`LocalServer.poll` says how a
server that died ended (which process, its exit code or signal, the log's last lines), and
:meth:`LocalServer.start` starts it again on the same ports: :mod:`runtime.serve.supervise`
restarts a crashed server that way.

Known pitfall handled here: pytriton's Python stub (``triton_python_backend_stub``) links
``libpython3.X.so.1.0`` and the dynamic loader finds the system's copy first; with a Python
built elsewhere (pyenv) the stub then runs that library against this Python's standard
library and dies with ``AttributeError: '_thread.RLock' object has no attribute
'_recursion_count'``. The server process is therefore started with this Python's own
``LIBDIR`` first on ``LD_LIBRARY_PATH`` (:func:`server_environment`), which tritonserver and
the stub inherit.

Nothing here prints; failures are :class:`ServerFailed` (one line, plus the log's tail).
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import json
import os
import platform
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from exporter.errors import UserError

from ..resolve import Resolved
from .config import (
    ModelOptions,
    ServeDependencyMissing,
    build_config,
    default_model_name,
    graph_io,
    summarize,
)
from .processes import end_processes

HOST = "127.0.0.1"
MIN_GLIBC = (2, 35)
LOG_TAIL_LINES = 15
#: Triton log lines that say nothing when something failed.
_NOISE = ("Found 0 model versions", "Found 1 HTTP service", "Found 0 live models", "Timeout ")


#: The server's scratch folder in the system's temporary folder (pytriton's Unix sockets need a short path).
WORKDIR_PREFIX = "cnn-serve-"
#: In each scratch folder: the pid of the process that made it, so a later start can tell an orphan.
OWNER_FILE = "owner.pid"


def sweep_orphaned_workdirs(root: Path | None = None) -> list[Path]:
    """Remove the scratch folders of servers whose owning process is gone (``kill -9`` skips every clean-up);
    a folder without an owner file, or whose owner lives, is left alone. Returns what was removed."""
    removed = []
    for folder in Path(root or tempfile.gettempdir()).glob(f"{WORKDIR_PREFIX}*"):
        owner = folder / OWNER_FILE
        if folder.is_symlink() or not folder.is_dir() or not owner.is_file():
            continue
        try:
            pid = int(owner.read_text().strip())
            os.kill(pid, 0)
            continue  # alive (or another user's): not an orphan
        except ProcessLookupError:
            pass
        except (OSError, ValueError):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


class ServerFailed(UserError):
    """The server did not start, or died: one line, with the tail of its log kept for the reader."""

    exit_code = 3

    def __init__(self, message: str, log_tail: Sequence[str] = (), log_path: Path | None = None) -> None:
        super().__init__(message)
        self.log_tail = list(log_tail)
        self.log_path = log_path


@dataclass(frozen=True)
class ServedGraph:
    """The graph a server serves: a resolved artifact's, or a model repository's ``model.onnx``."""

    name: str  # the artifact's name (a repository's model name where there is no artifact)
    variant: str
    path: Path
    graph: bytes
    #: one sample's input shape (batch excluded), for warm-up requests
    input_shape: tuple[int, ...]
    min_size: tuple[int, int] | None = None

    @classmethod
    def of(cls, source: Resolved | ServedGraph) -> ServedGraph:
        if isinstance(source, ServedGraph):
            return source
        manifest = source.artifact.manifest
        return cls(
            name=source.artifact.name,
            variant=str(source.key),
            path=Path(source.path),
            graph=source.graph,
            input_shape=tuple(manifest.input_shape),
            min_size=tuple(manifest.min_size) if manifest.min_size else None,  # type: ignore[arg-type]
        )


@dataclass(frozen=True)
class ServeOptions:
    """Where and how to serve: ports on 127.0.0.1 (0 picks a free one) and the model's settings."""

    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    model: ModelOptions = field(default_factory=ModelOptions)
    model_name: str | None = None
    startup_timeout_s: float = 120.0
    #: how long Triton waits for requests in flight when stopping
    exit_timeout_s: int = 3
    #: keep the server's log here (default: a temporary file, removed after a clean stop)
    log_path: Path | None = None


@dataclass(frozen=True)
class Endpoints:
    host: str
    http_port: int
    grpc_port: int
    metrics_port: int

    @property
    def http(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"


@dataclass
class ServerInfo:
    """A started server: what it serves, where, on what, and the processes it runs as."""

    model_name: str
    artifact: str
    variant: str
    graph_sha256: str
    endpoints: Endpoints
    device: str
    providers: list[str]
    device_reason: str
    triton_version: str
    start_seconds: float
    pids: dict[str, list[int]]
    max_batch_size: int
    preferred_batch_sizes: list[int]
    max_queue_delay_us: int | None
    instances: int
    threads: int | None
    log_path: Path

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["endpoints"] = {"http": self.endpoints.http, "grpc": self.endpoints.grpc, "metrics": self.endpoints.metrics}
        d["log_path"] = str(self.log_path)
        return d


@dataclass
class StopReport:
    seconds: float
    killed: list[int]
    remaining: list[int]
    #: what the server's processes left that the stop removed (shared memory, Triton's model copy)
    cleaned: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Crash:
    """How a running server died: which of its processes, how it ended, and the log's last lines."""

    process: str  # "tritonserver", "python stub", "server process", or "restart" (a restart that failed)
    pid: int | None
    #: the exit code, negative for the signal that killed it; None where it is not known
    returncode: int | None
    #: the log line that says why, where one does
    reason: str | None
    log_tail: list[str]
    #: seconds the server had been ready before it died
    uptime_s: float

    @property
    def how(self) -> str:
        if self.process == "restart":
            return "failed"
        if self.returncode is None:
            return "is gone"
        if self.returncode < 0:
            try:
                name = signal.Signals(-self.returncode).name
            except ValueError:
                name = f"signal {-self.returncode}"
            return f"was killed by {name}"
        return f"exited with code {self.returncode}"

    def describe(self) -> str:
        """One line: ``tritonserver was killed by SIGKILL`` (and the log's reason, where it gives one)."""
        who = f"{self.process} (pid {self.pid})" if self.pid else self.process
        return f"{who} {self.how}" + (f": {self.reason}" if self.reason else "")


# --- the environment ------------------------------------------------------------------------------


def check_serve_dependencies() -> None:
    """The serve extra is installed and this machine can run the bundled tritonserver."""
    missing = [m for m in ("pytriton", "tritonclient") if importlib.util.find_spec(m) is None]
    if missing:
        names = {"pytriton": "nvidia-pytriton", "tritonclient": "tritonclient[grpc,http]"}
        raise ServeDependencyMissing(
            f"serving needs the serve extra ({', '.join(names[m] for m in missing)} missing): pip install -e '.[serve]'"
        )
    if sys.platform != "linux":
        raise UserError(f"the bundled Triton server runs on Linux only (this is {sys.platform})")
    libc, version = platform.libc_ver()
    if libc == "glibc" and version:
        parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
        if parts < MIN_GLIBC:
            raise UserError(
                f"the bundled Triton server needs glibc >= {'.'.join(map(str, MIN_GLIBC))}, this system has {version}"
            )
    stub = _pytriton_root() / "tritonserver" / "python_backend_stubs" / f"{sys.version_info[0]}.{sys.version_info[1]}"
    if not stub.is_dir():
        raise UserError(
            f"nvidia-pytriton has no Python stub for Python {platform.python_version()} (it ships 3.8-3.13)"
        )


def _pytriton_root() -> Path:
    spec = importlib.util.find_spec("pytriton")
    assert spec is not None and spec.origin is not None
    return Path(spec.origin).parent


def libpython_dir() -> str | None:
    """This Python's own shared-library folder, where it has a shared libpython (None otherwise)."""
    libdir = sysconfig.get_config_var("LIBDIR")
    soname = sysconfig.get_config_var("INSTSONAME") or sysconfig.get_config_var("LDLIBRARY")
    if libdir and soname and (Path(libdir) / soname).exists():
        return str(libdir)
    return None


def server_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for the server process and everything it starts.

    This Python's ``LIBDIR`` goes first on ``LD_LIBRARY_PATH`` so that pytriton's Python stub
    loads the libpython of this very Python, not the system's (see the module's docstring).
    """
    env = dict(os.environ if base is None else base)
    libdir = libpython_dir()
    if libdir:
        rest = [p for p in env.get("LD_LIBRARY_PATH", "").split(":") if p and p != libdir]
        env["LD_LIBRARY_PATH"] = ":".join([libdir, *rest])
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("PYTHONPATH", "")
    root = str(Path(__file__).resolve().parents[2])  # the toolkit's checkout, for a non-installed run
    env["PYTHONPATH"] = ":".join([root, *[p for p in env["PYTHONPATH"].split(":") if p and p != root]])
    return env


# --- ports ------------------------------------------------------------------------------------------

_PORT_FLAGS = {"HTTP": "--http-port", "gRPC": "--grpc-port", "metrics": "--metrics-port"}


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def check_port(port: int, what: str, host: str = HOST) -> None:
    """Refuse a port something already listens on (one line naming the flag)."""
    if not 0 < port < 65536:
        raise UserError(f"{_PORT_FLAGS.get(what, 'port')} {port} is not a port number (1-65535, or 0 for any free one)")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            why = "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be used ({exc.strerror})"
            raise UserError(
                f"port {port} ({what}) on {host} {why}: pick another with {_PORT_FLAGS.get(what, '--port')} "
                "(0 picks a free one) or stop what listens there"
            ) from exc


def choose_ports(options: ServeOptions, host: str = HOST) -> Endpoints:
    wanted = {"HTTP": options.http_port, "gRPC": options.grpc_port, "metrics": options.metrics_port}
    fixed = [p for p in wanted.values() if p]
    if len(fixed) != len(set(fixed)):
        raise UserError(
            "the HTTP, gRPC and metrics ports must differ, "
            f"got {options.http_port}, {options.grpc_port}, {options.metrics_port}"
        )
    chosen: dict[str, int] = {}
    for what, port in wanted.items():
        if port:
            check_port(port, what, host)
            chosen[what] = port
    for what, port in wanted.items():
        if not port:
            candidate = free_port(host)
            while candidate in chosen.values():
                candidate = free_port(host)
            chosen[what] = candidate
    return Endpoints(host, chosen["HTTP"], chosen["gRPC"], chosen["metrics"])


# --- the server -----------------------------------------------------------------------------------


def _tail(path: Path, lines: int = LOG_TAIL_LINES, start: int = 0) -> list[str]:
    """The log's last meaningful lines from byte ``start`` on (Triton's tables and stack frames left out)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(start)
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    kept = [
        line.rstrip()
        for line in text.splitlines()
        if line.strip()
        and not any(n in line for n in _NOISE)
        and not line.lstrip().startswith(("|", "+-"))
        and not _FRAME.match(line)
    ]
    return kept[-lines:]


#: what the log says when tritonserver itself has exited (pytriton's and Triton's own words)
_EXITED = ("Triton Inference Server exited with failure", '] "failed to start')
#: error lines Triton logs on every CPU-only start, which explain nothing
_BENIGN = ("CudaDriverHelper", "config modification time", "chttp2_server", "Failed to initialize NVML", "DCGM")
#: glog's prefix on Triton's lines: severity, date, time, thread, file:line]
_GLOG = re.compile(r'^[EWIF]\d{4} [\d:.]+\s+\d+ [^\]]+\]\s*"?(?P<text>.*?)"?\s*$')
#: a stack frame of the backtrace Triton prints when a signal ends it, or a piece of one that
#: other lines cut in two
_FRAME = re.compile(r"^\s*\d+# |^\s*(\S+\s)?in /\S+$|^\s*tritonserver\s*$")
#: the C++ runtime's words when an exception nobody caught ends the process
_UNCAUGHT = re.compile(r"terminate called after throwing an instance of '[^']+'")
#: where Triton copies a model given over its load API (hard-coded /tmp, not $TMPDIR)
_MODEL_COPY = re.compile(r"^/tmp/folder[A-Za-z0-9]{6}$")
#: the shared-memory segments pytriton (multiprocessing) and Triton's Python backend create
_SHM_PREFIXES = ("psm_", "pytrtion")
SHM_DIR = Path("/dev/shm")


def _reason(tail: Sequence[str]) -> str | None:
    """The line of the log that says why, where one does (Triton's error lines first)."""
    for line in reversed(tail):
        s = line.strip()
        m = _GLOG.match(s)
        if m and s.startswith("E") and not any(b in s for b in _BENIGN):
            s = m.group("text").strip()
        elif not ("AttributeError" in s or "Error:" in s or "error:" in s.lower()):
            continue
        return s if len(s) <= 300 else s[:297] + "..."
    return None


def _crash_reason(tail: Sequence[str]) -> str | None:
    """Why a running server died, as its log says: an uncaught C++ exception first, then error lines."""
    for line in tail:
        m = _UNCAUGHT.search(line)
        if m:
            return m.group(0)
    return _reason(tail)


def _hint(tail: Sequence[str]) -> str:
    text = "\n".join(tail)
    if "_recursion_count" in text or "libpython" in text:
        return (
            " (the Python stub loaded another Python's libpython: LD_LIBRARY_PATH must start with "
            f"{sysconfig.get_config_var('LIBDIR')})"
        )
    if "already in use" in text or "Address in use" in text:
        return " (a port is in use: pick others, or 0 for free ones)"
    return ""


class LocalServer:
    """Triton on 127.0.0.1 serving one resolved artifact (or a repository's model); a context manager.

    The model runs in the engine its options name: an onnxruntime session per instance, or for
    ``backend="openvino"`` one OpenVINO compiled model with an infer request per instance, as
    Triton's own backends run them.

    :meth:`start` may be called again after :meth:`stop` (or a crash): the server comes back on
    the ports it had, and its log goes on in the same file.

    >>> with LocalServer(resolve("resnet_cifar"), ServeOptions(http_port=0, grpc_port=0, metrics_port=0)) as srv:
    ...     srv.info.endpoints.grpc
    """

    def __init__(
        self,
        resolved: Resolved | ServedGraph,
        options: ServeOptions | None = None,
        *,
        environment: Callable[[], dict[str, str]] = server_environment,
    ) -> None:
        self.resolved = resolved
        self.served = ServedGraph.of(resolved)
        self.options = options or ServeOptions()
        self._environment = environment
        self.info: ServerInfo | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None
        self._endpoints: Endpoints | None = None  # chosen once: a restart keeps the addresses clients use
        self._log_path: Path | None = None  # one log for every run of this server
        self._temporary_log = False
        self._failed = False  # the last run failed: its temporary log is kept for the reader
        self._status_fd: int | None = None
        self._reset_run()
        # what the server's processes may leave behind, gathered while they run (see _remember)
        self._shm: set[str] = set()
        self._model_copies: set[Path] = set()

    def _reset_run(self) -> None:
        """Forget the processes and messages of a previous run."""
        self._buffer = b""
        self._seen: dict[int, float] = {}  # pid -> create_time of every process the server ran as
        self._roles: dict[int, str] = {}
        self._log_offset = 0
        self._run_log_start = 0
        self._ready_at: float | None = None
        self._watched: dict[int, str] = {}  # the processes the running server cannot do without
        self._tritonserver_exited = False  # the server process said so
        self._tritonserver_exit: int | None = None
        self._error: str | None = None

    # -- lifecycle --

    def __enter__(self) -> LocalServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def model_name(self) -> str:
        return self.options.model_name or default_model_name(self.served.name, self.served.variant)

    @property
    def log_path(self) -> Path | None:
        return self._log_path

    def start(self) -> ServerInfo:
        """Start the server process and return once the model answers (ServerFailed otherwise).

        Called again after a stop or a crash, it starts a fresh server on the same ports.
        """
        if self._proc is not None:
            raise UserError("the server is running: stop it before starting it again")
        check_serve_dependencies()
        opts = self.options
        io = graph_io(self.served.graph)
        config = build_config(self.model_name, io, opts.model, warmup_shape=self.served.input_shape)
        summary = summarize(config)
        if self._endpoints is None:
            self._endpoints = choose_ports(opts)
        else:
            for what, port in (
                ("HTTP", self._endpoints.http_port),
                ("gRPC", self._endpoints.grpc_port),
                ("metrics", self._endpoints.metrics_port),
            ):
                check_port(port, what)
        endpoints = self._endpoints
        started = time.monotonic()
        self._reset_run()
        sweep_orphaned_workdirs()
        self._workdir = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX))
        (self._workdir / OWNER_FILE).write_text(str(os.getpid()))
        try:
            spec = self._launch(io, config, summary, endpoints)
            ready = self._wait_ready(started, opts.startup_timeout_s)
        except BaseException:
            self.stop()
            raise
        self._ready_at = time.monotonic()
        self._failed = False
        self._watched = self._essential()
        assert self._log_path is not None
        self.info = ServerInfo(
            model_name=self.model_name,
            artifact=self.served.name,
            variant=self.served.variant,
            graph_sha256=spec["sha256"],
            endpoints=endpoints,
            device=ready["device"],
            providers=ready["providers"],
            device_reason=ready["reason"],
            triton_version=ready.get("triton_version", ""),
            start_seconds=time.monotonic() - started,
            pids=self.pids(),
            max_batch_size=opts.model.max_batch,
            preferred_batch_sizes=summary.preferred_batch_sizes,
            max_queue_delay_us=summary.max_queue_delay_us,
            instances=opts.model.instances,
            threads=ready.get("threads"),
            log_path=self._log_path,
        )
        return self.info

    def _open_log(self) -> Path:
        """The server's log: ``--log``, or one temporary file for every run (removed after a clean stop)."""
        if self._log_path is None:
            if self.options.log_path is not None:
                self._log_path = self.options.log_path
                self._log_path.parent.mkdir(parents=True, exist_ok=True)
            else:
                fd, name = tempfile.mkstemp(prefix="cnn-serve-", suffix=".log")
                os.close(fd)
                self._log_path, self._temporary_log = Path(name), True
        return self._log_path

    def _launch(self, io, config, summary, endpoints: Endpoints) -> dict[str, object]:  # type: ignore[no-untyped-def]
        """Write the server process's spec and start it, its output going to the log."""
        opts = self.options
        served = self.served
        assert self._workdir is not None
        spec = {
            "graph": str(served.path),
            "sha256": _sha(served.graph),
            "engine": opts.model.backend,
            "openvino": _openvino_properties(opts.model),
            "model_name": self.model_name,
            "inputs": [
                {"name": t.name, "dtype": t.numpy_dtype, "dims": list(d.dims)} for t, d in zip(io.inputs, config.input)
            ],
            "outputs": [
                {"name": t.name, "dtype": t.numpy_dtype, "dims": list(d.dims)}
                for t, d in zip(io.outputs, config.output)
            ],
            "max_batch": opts.model.max_batch,
            "preferred": summary.preferred_batch_sizes,
            "max_queue_delay_us": opts.model.max_queue_delay_us,
            "instances": opts.model.instances,
            "device": opts.model.device,
            "threads": opts.model.threads,
            "warmup": opts.model.warmup,
            "warmup_shape": list(served.input_shape),
            "min_size": list(served.min_size) if served.min_size else None,
            "host": endpoints.host,
            "http_port": endpoints.http_port,
            "grpc_port": endpoints.grpc_port,
            "metrics_port": endpoints.metrics_port,
            "exit_timeout_s": opts.exit_timeout_s,
            "workspace": str(self._workdir / "pytriton"),
        }
        spec_path = self._workdir / "spec.json"
        spec_path.write_text(json.dumps(spec))
        read_fd, write_fd = os.pipe()
        try:
            log_path = self._open_log()
            with open(log_path, "ab") as log:
                self._run_log_start = self._log_offset = log.tell()
                self._proc = subprocess.Popen(
                    [sys.executable, "-m", "runtime.serve._worker", str(spec_path), str(write_fd)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self._environment(),
                    pass_fds=(write_fd,),
                    start_new_session=True,  # Ctrl-C in a terminal reaches this process only; it stops the server
                    preexec_fn=_death_signal(),
                )
        except OSError as exc:
            os.close(read_fd)
            raise UserError(f"cannot start the server process: {exc}") from exc
        finally:
            os.close(write_fd)
        self._status_fd = read_fd
        self._remember()
        return spec

    def _messages(self, timeout: float) -> list[dict[str, object]]:
        """The server process's new status messages (waiting up to ``timeout`` for the first)."""
        out: list[dict[str, object]] = []
        if self._status_fd is None:
            return out
        readable, _, _ = select.select([self._status_fd], [], [], timeout)
        if readable:
            chunk = os.read(self._status_fd, 65536)
            self._buffer += chunk if chunk else b""
            while b"\n" in self._buffer:
                line, self._buffer = self._buffer.split(b"\n", 1)
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
            if not chunk:  # the server process closed its end: it is exiting
                os.close(self._status_fd)
                self._status_fd = None
                out.append({"event": "closed"})
        for msg in out:
            if msg.get("event") == "tritonserver_exited":
                self._tritonserver_exited = True
                if isinstance(msg.get("code"), int):
                    self._tritonserver_exit = msg["code"]  # type: ignore[assignment]
            elif msg.get("event") == "error" and self._error is None:
                self._error = str(msg.get("message"))
        return out

    def _wait_ready(self, started: float, timeout: float) -> dict[str, object]:
        assert self._proc is not None and self._log_path is not None
        deadline = started + timeout
        closed = False
        while True:
            if not closed:
                for msg in self._messages(0.2):
                    if msg.get("event") == "ready":
                        self._remember()
                        return msg
                    if msg.get("event") == "error":
                        raise self._failed_with(f"Triton did not start: {msg.get('message')}")
                    if msg.get("event") == "closed":
                        closed = True
            else:
                time.sleep(0.2)
            self._remember()
            code = self._proc.poll()
            if code is not None:
                raise self._failed_with(f"the Triton server process exited with code {code} before it was ready")
            if self._triton_died():
                time.sleep(0.5)  # let its last lines reach the log
                raise self._failed_with("tritonserver exited during start-up")
            if time.monotonic() > deadline:
                raise self._failed_with(f"Triton was not ready after {timeout:.0f} s")

    def _failed_with(self, message: str) -> ServerFailed:
        """The failure of this run, naming its log (which the stop then keeps)."""
        assert self._log_path is not None
        tail = _tail(self._log_path, start=self._run_log_start)
        reason = _reason(tail)
        if reason and reason not in message:
            message = f"{message}; the log says: {reason}"
        self._failed = True
        return ServerFailed(message + _hint(tail) + f" (log: {self._log_path})", tail, self._log_path)

    def _remember(self) -> None:
        """Record the server process and every descendant, so that stop() can account for each,
        and what each may leave behind if it dies: its shared-memory segments, Triton's model copy."""
        if self._proc is None:
            return
        try:
            root = psutil.Process(self._proc.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            procs = []
        for p in procs:
            with contextlib.suppress(psutil.Error):
                if p.pid not in self._seen:
                    self._seen[p.pid] = p.create_time()
                    self._roles[p.pid] = _role(p)
                    if self._roles[p.pid] == "python stub":
                        self._model_copies.update(_model_copy(p.cmdline()))
        for p in self._alive():  # orphans of a dead server process too
            with contextlib.suppress(psutil.Error):
                for f in p.open_files():
                    path = Path(f.path)
                    if path.parent == SHM_DIR and path.name.startswith(_SHM_PREFIXES):
                        self._shm.add(path.name)

    def _triton_died(self) -> bool:
        """Whether tritonserver has exited (pytriton itself would wait minutes to notice during start-up).

        Either every process seen as tritonserver is gone (a process Triton forks is named
        tritonserver until it runs its own program), or the log says it exited (it can die
        between two looks at the process table).
        """
        seen = [pid for pid, role in self._roles.items() if role == "tritonserver"]
        alive = {p.pid for p in self.processes()}
        if seen and not any(pid in alive for pid in seen):
            return True
        return self._log_says(_EXITED)

    def _log_says(self, markers: Sequence[str]) -> bool:
        """Whether the log's new lines hold one of ``markers`` (read incrementally)."""
        if self._log_path is None:
            return False
        try:
            with open(self._log_path, "rb") as fh:
                start = max(self._run_log_start, self._log_offset - 200)  # a marker may straddle two reads
                fh.seek(start)
                chunk = fh.read()
        except OSError:
            return False
        self._log_offset = start + len(chunk)
        text = chunk.decode("utf-8", errors="replace")
        return any(m in text for m in markers)

    def pids(self) -> dict[str, list[int]]:
        """The live processes of the server, by name."""
        out: dict[str, list[int]] = {}
        for p in self.processes():
            with contextlib.suppress(psutil.Error):
                out.setdefault(_role(p), []).append(p.pid)
        return out

    def processes(self) -> list[psutil.Process]:
        """Every process the server runs as that is still alive (zombies excluded)."""
        self._remember()
        return self._alive()

    def _alive(self) -> list[psutil.Process]:
        alive = []
        for pid, created in self._seen.items():
            with contextlib.suppress(psutil.Error):
                p = psutil.Process(pid)
                if p.create_time() == created and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
        return alive

    def rss_bytes(self) -> dict[str, int]:
        """Resident memory of the server's processes, by role (USS would miss shared pages on purpose)."""
        out: dict[str, int] = {}
        for p in self.processes():
            with contextlib.suppress(psutil.Error):
                role = _role(p)
                out[role] = out.get(role, 0) + p.memory_info().rss
        return out

    def poll(self) -> Crash | None:
        """None while the server runs; once it has died, how (a :class:`Crash`).

        The server is dead when tritonserver, a Python stub (without which every request fails)
        or the server process is gone. The server process is given a moment to report how
        tritonserver ended and the log its last lines.
        """
        if self._proc is None:
            return None
        self._messages(0)
        dead = self._dead()
        if dead is None:
            return None
        process, pid = dead
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline and self._proc.poll() is None:
            if process == "tritonserver" and self._tritonserver_exited:
                break
            if self._status_fd is not None:
                self._messages(0.1)
            else:
                time.sleep(0.1)
        time.sleep(0.3)  # the log's last lines
        self._messages(0)
        returncode = self._proc.poll() if process == "server process" else None
        if process == "tritonserver":
            returncode = self._tritonserver_exit
        assert self._log_path is not None
        tail = _tail(self._log_path, start=self._run_log_start)
        reason = _crash_reason(tail)
        if reason is None and self._error and process == "server process":
            reason = self._error
        self._failed = True
        uptime = time.monotonic() - self._ready_at if self._ready_at is not None else 0.0
        return Crash(process, pid, returncode, reason, tail, uptime)

    def _essential(self) -> dict[int, str]:
        """tritonserver (the server process's child) and the Python stubs, as they run now."""
        assert self._proc is not None
        out: dict[int, str] = {}
        for p in self.processes():
            with contextlib.suppress(psutil.Error):
                role = _role(p)
                if role == "python stub" or (role == "tritonserver" and p.ppid() == self._proc.pid):
                    out[p.pid] = role
        return out

    def _dead(self) -> tuple[str, int | None] | None:
        """Which process of the server died first (None while all run).

        tritonserver, when the server process reported its end; else the server process, when it
        has ended (tritonserver then ends with it); else tritonserver or a Python stub gone.
        """
        assert self._proc is not None
        triton = next((pid for pid, r in self._watched.items() if r == "tritonserver"), None)
        if self._tritonserver_exited:
            return "tritonserver", triton
        if self._proc.poll() is not None:
            return "server process", self._proc.pid
        alive = {p.pid for p in self.processes()}
        gone = {role: pid for pid, role in self._watched.items() if pid not in alive}
        if "tritonserver" in gone or self._log_says(_EXITED):
            return "tritonserver", triton
        if "python stub" in gone:
            return "python stub", gone["python stub"]
        return None

    def check_alive(self) -> None:
        """ServerFailed when the server has died (for a caller that waits on it)."""
        crash = self.poll()
        if crash is not None:
            raise ServerFailed(
                f"the Triton server stopped on its own: {crash.describe()} (log: {self._log_path})",
                crash.log_tail,
                self._log_path,
            )

    def stop(self, grace_s: float | None = None) -> StopReport:
        """Stop the server, make sure none of its processes is left and remove what they left; idempotent.

        The temporary log is removed too, unless the last run failed (the error names it).
        """
        started = time.monotonic()
        killed: list[int] = []
        grace = grace_s if grace_s is not None else self.options.exit_timeout_s + 20.0
        proc = self._proc
        if proc is not None:
            self._remember()
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                        killed.append(proc.pid)
                    proc.wait(timeout=10)
            # whatever the server process left behind is ended by id (never by name)
            killed += end_processes([p for p in self.processes() if p.pid != proc.pid], grace_s=3)
            self._proc = None
        if self._status_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._status_fd)
            self._status_fd = None
        remaining = [p.pid for p in self.processes()]
        cleaned = self._remove_leftovers() if not remaining else []
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        if self._temporary_log and not self._failed and self._log_path is not None:
            with contextlib.suppress(OSError):
                self._log_path.unlink()
            self._log_path, self._temporary_log = None, False
        return StopReport(time.monotonic() - started, killed, remaining, cleaned)

    def _remove_leftovers(self) -> list[str]:
        """Remove the shared memory and the model copy the server's (now ended) processes left."""
        removed: list[str] = []
        for name in sorted(self._shm):
            with contextlib.suppress(FileNotFoundError):
                (SHM_DIR / name).unlink()
                removed.append(str(SHM_DIR / name))
        self._shm.clear()
        for folder in sorted(self._model_copies):
            if folder.is_dir() and not folder.is_symlink():
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(str(folder))
        self._model_copies.clear()
        return removed


def _model_copy(cmdline: Sequence[str]) -> list[Path]:
    """Triton's copy of the model a Python stub runs (``/tmp/folderXXXXXX/1/model.py``), if that is where."""
    if len(cmdline) < 2 or not cmdline[1].endswith("/model.py"):
        return []
    folder = Path(cmdline[1]).parent.parent
    return [folder] if _MODEL_COPY.match(str(folder)) else []


def _role(p: psutil.Process) -> str:
    try:
        name = p.name()
        cmd = " ".join(p.cmdline()[:3])
    except psutil.Error:
        return "?"
    if name == "tritonserver":
        return "tritonserver"
    if name.startswith("triton_python"):
        return "python stub"
    if "runtime.serve._worker" in cmd:
        return "server (onnxruntime)"
    return "helper"


def _sha(graph: bytes) -> str:
    from exporter.files import sha256_bytes

    return sha256_bytes(graph)


def _openvino_properties(model: ModelOptions) -> dict[str, object] | None:
    """The compile properties of an OpenVINO model, as the backend would set them from its parameters.

    The precision hint is f32 unless bf16 is asked for: what the toolkit measured (Triton's
    OpenVINO backend has no f32 hint, and on a CPU with bf16 OpenVINO would choose bf16 itself).
    """
    if model.backend != "openvino":
        return None
    props: dict[str, object] = {"INFERENCE_PRECISION_HINT": "bf16" if model.bf16 else "f32"}
    if model.openvino_streams:
        props["NUM_STREAMS"] = model.openvino_streams
    if model.threads:
        props["INFERENCE_NUM_THREADS"] = model.threads
    if model.openvino_hint:
        props["PERFORMANCE_HINT"] = model.openvino_hint
    return props


def _death_signal() -> Callable[[], None]:
    """A pre-exec hook for the server process: SIGTERM it if the process that started it dies.

    libc is loaded here, in the parent: the hook itself only makes the system call.
    """
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return lambda: None

    def hook() -> None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return hook
