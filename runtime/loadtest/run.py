"""The load test itself (:func:`run_load_test`); see :mod:`runtime.loadtest`."""

from __future__ import annotations

import os
import platform
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from exporter.artifact import OutputComparison, Tolerance, now
from exporter.errors import UserError
from exporter.files import finite_or_none

from ..bench.stats import min_samples_for
from ..compare import compare, default_tolerance, override
from ..resolve import Resolved
from . import DEFAULT_CONCURRENCY, PROTOCOLS
from .client import RequestRefused, ServerModel, TritonEndpoint, check_loopback, split_url
from .metrics import MetricsUnavailable, ServerFigures, difference, scrape

if TYPE_CHECKING:
    from ..serve.config import GraphIO

MAX_CONCURRENCY = 256
MAX_SECONDS = 600.0
#: percentiles need enough samples to mean anything
MIN_SAMPLES_P99 = min_samples_for(99)
MIN_SAMPLES_P90 = min_samples_for(90)


@dataclass(frozen=True)
class LoadTestConfig:
    url: str = "127.0.0.1:8001"
    protocol: str = "grpc"
    #: None: no metrics (no formed batch sizes)
    metrics_port: int | None = 8002
    model_name: str | None = None
    concurrency: tuple[int, ...] = DEFAULT_CONCURRENCY
    seconds: float = 10.0
    warmup_seconds: float = 1.0
    batch: int = 1
    #: at most this many requests per concurrency level
    max_requests: int = 200_000
    local_baseline: bool = True
    local_device: str = "auto"
    timeout_s: float = 30.0
    seed: int = 0
    tolerance: Tolerance | None = None
    #: the user's --atol/--rtol over the default tolerance of the device local onnxruntime really runs on
    atol: float | None = None
    rtol: float | None = None

    def check(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise UserError(f"unknown protocol {self.protocol!r}: choose {', '.join(PROTOCOLS)}")
        if not self.concurrency or any(c < 1 or c > MAX_CONCURRENCY for c in self.concurrency):
            raise UserError(f"--concurrency takes levels from 1 to {MAX_CONCURRENCY}, got {list(self.concurrency)}")
        if not 0 < self.seconds <= MAX_SECONDS:
            raise UserError(f"--seconds must be above 0 and at most {MAX_SECONDS:.0f}, got {self.seconds}")
        if not 0 <= self.warmup_seconds <= 60:
            raise UserError(f"--warmup-seconds must be between 0 and 60, got {self.warmup_seconds}")
        if self.batch < 1:
            raise UserError(f"--batch-size must be at least 1, got {self.batch}")
        if self.max_requests < 1:
            raise UserError(f"--max-requests must be at least 1, got {self.max_requests}")
        if self.metrics_port is not None and not 0 < self.metrics_port < 65536:
            raise UserError(f"--metrics-port {self.metrics_port} is not a port number")
        for flag, value in (("--atol", self.atol), ("--rtol", self.rtol)):
            if value is not None and not (np.isfinite(value) and value >= 0):
                raise UserError(f"{flag} must be a finite number >= 0, got {value}")
        host, _ = split_url(self.url)
        check_loopback(host)


@dataclass
class Row:
    """One measurement: the server at one concurrency level, or local onnxruntime in a loop."""

    artifact: str
    variant: str
    model_name: str
    mode: str  # "triton" or "local"
    protocol: str | None
    concurrency: int
    batch_size: int
    requests: int
    errors: int
    seconds: float
    throughput_ips: float | None
    throughput_rps: float | None
    median_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    mean_ms: float | None
    min_ms: float | None
    max_ms: float | None
    mean_formed_batch: float | None = None
    #: cores the whole machine kept busy on average over the measured window (clients, server and anything
    #: else running; /proc/stat), None where it cannot be read
    cpu_busy_cores: float | None = None
    executions: int | None = None
    queue_ms: float | None = None
    compute_ms: float | None = None
    load_1m: float | None = None
    device: str | None = None
    first_error: str | None = None
    run_id: str = ""
    measured_at: str = ""

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class ParityResult:
    batch_sizes: list[int]
    tolerance: Tolerance
    comparisons: list[OutputComparison]
    device: str

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.comparisons)

    def failures(self) -> list[str]:
        return [f"batch {c.batch_size}, output '{c.output}': {f}" for c in self.comparisons for f in c.failures]

    def to_dict(self) -> dict[str, object]:
        return {
            "passed": self.passed,
            "device": self.device,
            "batch_sizes": self.batch_sizes,
            "tolerance": self.tolerance.model_dump(mode="json"),
            "comparisons": [c.model_dump(mode="json") for c in self.comparisons],
        }


@dataclass
class LoadTestResult:
    run_id: str
    artifact: str
    variant: str
    graph_sha256: str
    model_name: str
    url: str
    protocol: str
    server: dict[str, object]
    parity: ParityResult | None
    rows: list[Row] = field(default_factory=list)
    environment: dict[str, object] = field(default_factory=dict)
    config: dict[str, object] = field(default_factory=dict)
    interrupted: bool = False
    metrics_note: str | None = None
    #: "running" while measuring; then "complete", "interrupted" (Ctrl-C), "ended early" (the server
    #: failed) or "parity failed" (nothing timed)
    status: str = "running"
    #: why the run ended before its last level, naming the level (None: it did not)
    ended_early: str | None = None
    #: the concurrency level at which it ended early
    ended_at_level: int | None = None

    def triton_rows(self) -> list[Row]:
        return [r for r in self.rows if r.mode == "triton"]

    def local_row(self) -> Row | None:
        return next((r for r in self.rows if r.mode == "local"), None)

    def batching_gain(self) -> tuple[float, Row, Row] | None:
        """Throughput of the best level at concurrency >= 4 over concurrency 1, where both were measured."""
        rows = {r.concurrency: r for r in self.triton_rows() if r.throughput_ips}
        if 1 not in rows:
            return None
        higher = [r for c, r in rows.items() if c >= 4]
        if not higher:
            return None
        best = max(higher, key=lambda r: r.throughput_ips or 0.0)
        return (best.throughput_ips or 0.0) / (rows[1].throughput_ips or 1.0), rows[1], best


# --- pieces -------------------------------------------------------------------------------------


def environment() -> dict[str, object]:
    import onnxruntime

    try:
        import tritonclient

        client_version = getattr(tritonclient, "__version__", "")
    except ImportError:
        client_version = ""
    if not client_version:
        from importlib.metadata import PackageNotFoundError, version

        try:
            client_version = version("tritonclient")
        except PackageNotFoundError:
            client_version = ""
    return {
        "cpu_cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
        "tritonclient": client_version,
        "load_avg_start": list(os.getloadavg()),
    }


def check_model(resolved: Resolved, io: GraphIO, server: ServerModel, batch: int) -> None:
    """Refuse a served model that is not this artifact's graph (``io``: its names, types, shapes)
    or a batch it cannot take."""
    who = f"the server's model '{server.name}'"
    for kind, mine, theirs in (("input", io.inputs, server.inputs), ("output", io.outputs, server.outputs)):
        served = {t.name: t for t in theirs}
        for t in mine:
            s = served.get(t.name)
            if s is None:
                raise UserError(
                    f"{who} has no {kind} '{t.name}' ({kind}s: {', '.join(served) or 'none'}): "
                    f"it is not {resolved.artifact.name}; pass the artifact it serves, or --model-name"
                )
            if s.datatype != t.wire_type:
                raise UserError(
                    f"{who}: {kind} '{t.name}' is {s.datatype} there, "
                    f"{t.wire_type} in {resolved.artifact.name} [{resolved.key}]"
                )
            local = [d if isinstance(d, int) else -1 for d in t.shape]
            if len(s.shape) != len(local) or any(a != b for a, b in zip(s.shape, local) if a != -1 and b != -1):
                raise UserError(
                    f"{who}: {kind} '{t.name}' has shape {list(s.shape)} there, "
                    f"{t.describe()} in {resolved.artifact.name}"
                )
    if server.max_batch_size and batch > server.max_batch_size:
        raise UserError(
            f"--batch-size {batch} is above the server's max batch size {server.max_batch_size} for '{server.name}'"
        )
    if server.max_batch_size == 0:
        first = next((t.shape[0] for t in server.inputs if t.shape), -1)
        if first not in (-1, batch):
            raise UserError(f"{who} does not batch and takes batch {first} only: use --batch-size {first}")


def sample_inputs(resolved: Resolved, io: GraphIO, batch: int, seed: int) -> dict[str, np.ndarray]:
    """Seeded inputs for the graph's inputs (``io``) at its export size: uniform in [-1, 1) for floats."""
    rng = np.random.default_rng(seed)
    shape = list(resolved.artifact.manifest.input_shape)
    arrays = {}
    for t in io.inputs:
        dims = [d if isinstance(d, int) else None for d in t.shape]
        full = (
            [batch] + [d if d is not None else s for d, s in zip(dims[1:], shape)]
            if len(dims) == len(shape) + 1
            else None
        )
        if full is None or any(d is None for d in full):
            raise UserError(f"cannot make inputs for '{t.name}' of shape {t.describe()} from the export shape {shape}")
        dtype = np.dtype(t.numpy_dtype)
        if dtype.kind == "f":
            arrays[t.name] = rng.uniform(-1.0, 1.0, size=full).astype(dtype)
        else:
            arrays[t.name] = rng.integers(0, 2, size=full).astype(dtype)
    return arrays


def _latency_stats(latencies_s: Sequence[float]) -> dict[str, float | None]:
    if not latencies_s:
        return {k: None for k in ("median_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "max_ms")}
    t = np.asarray(latencies_s, dtype=np.float64) * 1e3
    return {
        "median_ms": float(np.median(t)),
        "p90_ms": float(np.percentile(t, 90)) if t.size >= MIN_SAMPLES_P90 else None,
        "p99_ms": float(np.percentile(t, 99)) if t.size >= MIN_SAMPLES_P99 else None,
        "mean_ms": float(t.mean()),
        "min_ms": float(t.min()),
        "max_ms": float(t.max()),
    }


# --- the run ------------------------------------------------------------------------------------


class _Stop:
    """Shared by the client threads of one level: a deadline, a request budget, and Ctrl-C."""

    def __init__(self, deadline: float, budget: int) -> None:
        self.deadline = deadline
        self._budget = budget
        self._lock = threading.Lock()
        self.event = threading.Event()

    def take(self) -> bool:
        if self.event.is_set() or time.perf_counter() >= self.deadline:
            return False
        with self._lock:
            if self._budget <= 0:
                self.event.set()
                return False
            self._budget -= 1
            return True


def _drive(
    config: LoadTestConfig,
    model: str,
    output_names: list[str],
    arrays: dict[str, np.ndarray],
    concurrency: int,
    measure_from: float,
    stop: _Stop,
) -> tuple[list[float], int, str | None, list[float]]:
    """Run ``concurrency`` client threads until ``stop``.

    Returns the latencies of requests started after ``measure_from`` and finished before the
    deadline, the error count and first error, and every completion time.
    """
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    ends: list[list[float]] = [[] for _ in range(concurrency)]
    errors = [0] * concurrency
    first_error: list[str | None] = [None]
    ready = threading.Barrier(concurrency + 1)

    def client(i: int) -> None:
        endpoint = None
        try:
            endpoint = TritonEndpoint(config.url, config.protocol, config.timeout_s)
            inputs = endpoint.prepare(arrays)
        except UserError as exc:
            first_error[0] = first_error[0] or str(exc)
            errors[i] += 1
            ready.abort()
            return
        try:
            ready.wait()
        except threading.BrokenBarrierError:
            endpoint.close()
            return
        try:
            while stop.take():
                started = time.perf_counter()
                try:
                    endpoint.infer(model, inputs, output_names)
                except UserError as exc:
                    errors[i] += 1
                    first_error[0] = first_error[0] or str(exc)
                    if errors[i] >= 3 and not latencies[i]:
                        stop.event.set()  # every request fails: no point going on
                    continue
                finished = time.perf_counter()
                ends[i].append(finished)
                if started >= measure_from and finished <= stop.deadline:
                    latencies[i].append(finished - started)
        finally:
            endpoint.close()

    threads = [
        threading.Thread(target=client, args=(i,), daemon=True, name=f"loadtest-client-{i}") for i in range(concurrency)
    ]
    for t in threads:
        t.start()
    try:
        ready.wait()
    except threading.BrokenBarrierError:
        pass
    try:
        for t in threads:
            while t.is_alive():
                t.join(timeout=0.2)
    except KeyboardInterrupt:
        stop.event.set()
        for t in threads:
            t.join(timeout=config.timeout_s)
        raise
    return [x for per in latencies for x in per], sum(errors), first_error[0], [x for per in ends for x in per]


def run_load_test(
    resolved: Resolved,
    config: LoadTestConfig,
    on_progress: Callable[[str], None] | None = None,
    on_level: Callable[[LoadTestResult], None] | None = None,
) -> LoadTestResult:
    """Check the served model, check parity through the server, then measure.

    ``on_level`` gets the result after every finished level (local onnxruntime included). Ctrl-C,
    or a server that stops answering during a level, ends the run with the levels finished before.
    """
    from exporter.files import sha256_bytes

    from ..serve.config import default_model_name, graph_io
    from ..sessions import SessionConfig, create_session

    config.check()
    say = on_progress or (lambda _m: None)
    artifact = resolved.artifact.name
    variant = str(resolved.key)
    model_name = config.model_name or default_model_name(artifact, variant)
    run_id = uuid.uuid4().hex[:12]
    host, _ = split_url(config.url)

    with TritonEndpoint(config.url, config.protocol, config.timeout_s) as endpoint:
        served = endpoint.model(model_name)
        version = ""
        try:
            version = endpoint.server_version()
        except UserError:
            pass
        io = graph_io(resolved.graph)  # parsed once, for the check and every set of inputs
        check_model(resolved, io, served, config.batch)

        # the same session settings as the server's instances (spinning off, as in the benchmark): the
        # difference between the two measurements is Triton's path, not onnxruntime's configuration
        sess, info = create_session(resolved.graph, SessionConfig(device=config.local_device, allow_spinning=False))
        output_names = [o.name for o in sess.get_outputs()]
        tolerance = config.tolerance or override(
            default_tolerance(info.device, resolved.key.precision), config.atol, config.rtol
        )
        result = LoadTestResult(
            run_id=run_id,
            artifact=artifact,
            variant=variant,
            graph_sha256=sha256_bytes(resolved.graph),
            model_name=model_name,
            url=endpoint.url,
            protocol=config.protocol,
            server={
                "triton_version": version,
                "max_batch_size": served.max_batch_size,
                "preferred_batch_sizes": list(served.preferred_batch_sizes),
                "max_queue_delay_us": served.max_queue_delay_us,
                "backend": served.backend,
                "instances": served.instances,
            },
            parity=None,
            environment=environment(),
            config={
                **{k: v for k, v in asdict(config).items() if k != "tolerance"},
                "concurrency": list(config.concurrency),
                "local_device": info.device,
            },
        )

        # parity through the server, every run, before anything is timed
        limit = served.max_batch_size or config.batch
        sizes = (
            sorted({1, config.batch, min(3, limit)} & set(range(1, limit + 1)))
            if served.max_batch_size
            else [config.batch]
        )
        comparisons = []
        say(f"parity through the server at batch sizes {', '.join(map(str, sizes))}")
        for size in sizes:
            arrays = sample_inputs(resolved, io, size, seed=config.seed + size)
            local = dict(zip(output_names, sess.run(output_names, arrays)))
            remote = endpoint.infer_arrays(model_name, arrays, output_names)
            for name in output_names:
                got = np.asarray(remote[name])
                if got.shape != local[name].shape:
                    raise RequestRefused(
                        f"the server returned output '{name}' with shape {got.shape} for batch {size}, "
                        f"expected {local[name].shape}"
                    )
                comparisons.append(
                    compare(local[name].astype(np.float32), got.astype(np.float32), tolerance, output=name)
                )
        result.parity = ParityResult(sizes, tolerance, comparisons, info.device)
        if not result.parity.passed:
            result.status = "parity failed"
            return result

    arrays = sample_inputs(resolved, io, config.batch, seed=config.seed)
    finished = on_level or (lambda _r: None)
    level: int | None = None
    try:
        if config.local_baseline:
            say(f"local onnxruntime, batch {config.batch}, {config.seconds:g} s")
            result.rows.append(_local_row(result, sess, arrays, output_names, config, info.device))
            finished(result)
        del sess
        for level in config.concurrency:
            say(f"Triton over {config.protocol}, concurrency {level}, batch {config.batch}, {config.seconds:g} s")
            row = _measure_level(result, config, host, output_names, arrays, level)
            if row is None:
                break
            result.rows.append(row)
            finished(result)
        else:
            result.status = "complete"
    except KeyboardInterrupt:
        result.interrupted = True
        result.status = "interrupted"
        result.ended_early = "interrupted" + (f" during concurrency {level}" if level is not None else "")
        result.ended_at_level = level
    result.environment["load_avg_end"] = list(os.getloadavg())
    return result


def _measure_level(
    result: LoadTestResult,
    config: LoadTestConfig,
    host: str,
    output_names: list[str],
    arrays: dict[str, np.ndarray],
    level: int,
) -> Row | None:
    """One level's row; None where the server failed during it (the run then ends early, saying why).

    A level whose requests all failed, or after which the server no longer answers, is not a
    measurement of the server: it is not kept. One where some requests failed and the server
    still answers is kept with its error count.
    """
    position = f"concurrency {level} (level {config.concurrency.index(level) + 1} of {len(config.concurrency)})"
    try:
        row = _triton_row(result, config, host, output_names, arrays, level)
    except UserError as exc:
        why = str(exc)
    else:
        if not row.errors:
            return row
        try:
            with TritonEndpoint(config.url, config.protocol, config.timeout_s) as endpoint:
                endpoint.model(result.model_name)
            return row
        except UserError as exc:
            why = f"{row.first_error or 'requests failed'}; then {exc}"
    result.status = "ended early"
    result.ended_early = f"the server failed during {position}: {why}"
    result.ended_at_level = level
    return None


def _row(
    result: LoadTestResult,
    config: LoadTestConfig,
    mode: str,
    requests: int,
    window: float,
    latencies: Sequence[float],
    load: float,
    **fields: object,
) -> Row:
    """A row of this run: ``requests`` completed in ``window`` seconds, with the fields both modes share."""
    return Row(
        artifact=result.artifact,
        variant=result.variant,
        model_name=result.model_name,
        mode=mode,
        batch_size=config.batch,
        requests=requests,
        seconds=window,
        throughput_ips=requests * config.batch / window if requests else None,
        throughput_rps=requests / window if requests else None,
        **_latency_stats(latencies),
        load_1m=load,
        run_id=result.run_id,
        measured_at=now(),
        **fields,  # type: ignore[arg-type]
    )


def _scrape_or_note(result: LoadTestResult, config: LoadTestConfig, host: str) -> dict[str, float] | None:
    if config.metrics_port is None:
        return None
    try:
        return scrape(host, config.metrics_port, result.model_name)
    except MetricsUnavailable as exc:
        result.metrics_note = str(exc)
        return None


def cpu_jiffies() -> tuple[int, int, int] | None:
    """(busy, total, cpus) from the ``cpu`` lines of /proc/stat: busy is everything but idle and iowait; None off
    Linux. Busy cores over a window: the busy share of the total's difference times the CPUs."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    head = [int(v) for v in lines[0].split()[1:]] if lines and lines[0].startswith("cpu ") else []
    if len(head) < 5:
        return None
    cpus = sum(1 for line in lines if line.startswith("cpu") and line[3:4].isdigit())
    total = sum(head[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)
    return total - head[3] - head[4], total, max(cpus, 1)


def busy_cores(before: tuple[int, int, int] | None, after: tuple[int, int, int] | None) -> float | None:
    """Cores busy on average between two :func:`cpu_jiffies` readings."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return round((after[0] - before[0]) / (after[1] - before[1]) * after[2], 3)


def _triton_row(
    result: LoadTestResult,
    config: LoadTestConfig,
    host: str,
    output_names: list[str],
    arrays: dict[str, np.ndarray],
    level: int,
) -> Row:
    """One concurrency level: warm-up, then the measured window, with Triton's counters around it."""
    load = os.getloadavg()[0]
    measure_from = time.perf_counter() + config.warmup_seconds
    stop = _Stop(measure_from + config.seconds, config.max_requests)
    box: dict[str, dict[str, float] | None] = {}

    def scrape_when_measuring() -> None:  # the counters at the start of the measured window
        while time.perf_counter() < measure_from and not stop.event.is_set():
            time.sleep(0.005)
        cpu["before"] = cpu_jiffies()
        box["before"] = _scrape_or_note(result, config, host)

    cpu: dict[str, tuple[int, int, int] | None] = {}
    scraper = threading.Thread(target=scrape_when_measuring, daemon=True)
    scraper.start()
    latencies, errors, first_error, ends = _drive(
        config, result.model_name, output_names, arrays, level, measure_from, stop
    )
    cpu_after = cpu_jiffies()
    scraper.join(timeout=10)
    before = box.get("before")
    after = _scrape_or_note(result, config, host) if before is not None else None
    figures: ServerFigures | None = difference(before, after) if before is not None and after is not None else None
    # completions inside the window count for throughput; latencies are of requests wholly inside it
    done = [e for e in ends if measure_from <= e <= stop.deadline]
    last = max(done) if done else stop.deadline
    window = max((last if stop.event.is_set() else stop.deadline) - measure_from, 1e-9)
    if not latencies and errors:
        raise RequestRefused(first_error or "every request failed")
    return _row(
        result,
        config,
        "triton",
        len(done),
        window,
        latencies,
        load,
        protocol=config.protocol,
        concurrency=level,
        errors=errors,
        mean_formed_batch=finite_or_none(figures.mean_batch) if figures else None,
        cpu_busy_cores=busy_cores(cpu.get("before"), cpu_after),
        executions=figures.executions if figures else None,
        queue_ms=figures.queue_us / 1e3 if figures and figures.queue_us is not None else None,
        compute_ms=figures.compute_us / 1e3 if figures and figures.compute_us is not None else None,
        first_error=first_error,
    )


def _local_row(
    result: LoadTestResult,
    sess,  # type: ignore[no-untyped-def]
    arrays: dict[str, np.ndarray],
    output_names: list[str],
    config: LoadTestConfig,
    device: str,
) -> Row:
    """Plain onnxruntime in this process: one request after another, the same inputs, the same time budget."""
    load = os.getloadavg()[0]
    warm_until = time.perf_counter() + min(config.warmup_seconds, config.seconds)
    while time.perf_counter() < warm_until:
        sess.run(output_names, arrays)
    latencies: list[float] = []
    start = time.perf_counter()
    deadline = start + config.seconds
    while len(latencies) < config.max_requests:
        t0 = time.perf_counter()
        if t0 >= deadline:
            break
        sess.run(output_names, arrays)
        latencies.append(time.perf_counter() - t0)
    window = time.perf_counter() - start
    return _row(
        result,
        config,
        "local",
        len(latencies),
        window,
        latencies,
        load,
        protocol=None,
        concurrency=1,
        errors=0,
        device=device,
    )


__all__ = [
    "DEFAULT_CONCURRENCY",
    "LoadTestConfig",
    "LoadTestResult",
    "ParityResult",
    "Row",
    "check_model",
    "run_load_test",
    "sample_inputs",
]
