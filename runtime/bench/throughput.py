"""Throughput mode (``--streams``, ``--concurrency``): several streams of one engine at work at once.

A *setting* is ``streams`` S and ``concurrency`` C (requests kept in flight):

* **onnxruntime**: S sessions of the graph, the run's threads split between them (``threads //
  S`` intra-op threads each, at least one); C workers each issue one request after another,
  worker i on session ``i mod S``. With C > S a session takes concurrent calls (onnxruntime's
  ``Run`` is thread-safe) and the requests share its thread pool, as they would in a server.
  This is what Triton's onnxruntime backend does with S instances of ``intra_op_thread_count``
  threads each.
* **TensorRT** (CUDA): S sessions of onnxruntime's TensorRT provider sharing one engine cache,
  fed host arrays (copies included; the latency mode binds device buffers).
* **OpenVINO**: one compiled model with ``NUM_STREAMS`` S and ``INFERENCE_NUM_THREADS`` the
  run's threads (OpenVINO splits them across its streams), ``PERFORMANCE_HINT`` THROUGHPUT
  (LATENCY for one stream), and C infer requests, one per worker: what ``benchmark_app -nstreams
  S -nireq C`` runs, and what Triton's OpenVINO backend runs with ``NUM_STREAMS`` S and C
  instances (each instance is one infer request on the model's one compiled model). The
  streams and threads OpenVINO really took are read back into the row's settings.

**How it is timed.** In rounds, like the latency mode: each setting of a (model, batch) group
runs one *window* in turn, until each has ``min_samples`` windows and ``min_seconds`` of them.
In a window every worker runs requests back to back from the window's start; at its end they
issue no new request, and the window's throughput counts each request by the fraction of it
that fell inside the window (a request straddling the end is not a whole image yet), over the
window's length. So every window is one sample of throughput (stored as seconds per image),
and the row gives the median with its 95% bootstrap interval, beside the latency of every
request (median with its interval, p90, p99 where there are 100 requests). The requests still
in flight at a window's end finish before the next window starts (untimed). A window lasts the
policy's block time, and at least three request latencies.

The engines run the same prepared batch every request (its bytes fixed, as in the latency mode).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from exporter.errors import UserError, first_line

from ..openvino_model import check_hint, precision_hint
from ..sessions import create_session, create_tensorrt_session, run
from .engines import ModelContext, Runner, graph_key, wall_timer
from .rows import describe_setting
from .stats import Interval, median_interval, ratio_interval, summarize, summarize_samples
from .timing import TimingPolicy

#: Engines that run in throughput mode, and why the others do not.
THROUGHPUT_ENGINES = ("onnxruntime", "openvino", "tensorrt")
NOT_IN_THROUGHPUT = {
    "pytorch": "throughput mode runs the deployable engines (onnxruntime, openvino, tensorrt); "
    "PyTorch eager is the reference",
    "torch-compile": "throughput mode runs the deployable engines (onnxruntime, openvino, tensorrt)",
}
#: A window lasts at least this many typical request latencies.
WINDOW_REQUESTS = 3


@dataclass(frozen=True)
class Setting:
    streams: int
    concurrency: int

    def describe(self, threads_per_stream: int | None = None) -> str:
        return describe_setting(self.streams, threads_per_stream, self.concurrency)


def settings_from(streams: Sequence[int] | None, concurrency: Sequence[int] | None) -> list[Setting]:
    """Every (streams, concurrency) pair asked for; concurrency defaults to the streams, streams to 1."""
    s = list(dict.fromkeys(streams or [1]))
    bad = [v for v in [*s, *(concurrency or [])] if v < 1]
    if bad:
        raise UserError(f"--streams and --concurrency must be at least 1, got {bad[0]}")
    if not concurrency:
        return [Setting(v, v) for v in s]
    return [Setting(a, c) for a in s for c in dict.fromkeys(concurrency)]


@dataclass
class Workers:
    """One engine ready to run a setting: a request function per in-flight slot."""

    engine: str
    precision: str
    device: str
    setting: Setting
    threads_per_stream: int | None
    slots: list[Callable[[], None]]
    #: a plain runner on the first stream, for the parity gate (``infer``) and the labels
    probe: Runner
    settings: dict[str, str | int | float | bool | None] = field(default_factory=dict)
    cold_start: dict[str, float | bool | None] = field(default_factory=dict)
    graph: str | None = None
    close: Callable[[], None] = lambda: None
    #: images per request
    batch: int = 1

    @property
    def label(self) -> str:
        return f"{self.engine} {self.precision} [{self.setting.describe(self.threads_per_stream)}]"


def split_threads(threads: int, streams: int) -> int:
    return max(1, threads // streams)


def prepare_onnxruntime_streams(ctx: ModelContext, precision: str, x: np.ndarray, setting: Setting) -> Workers:
    per = split_threads(ctx.threads, setting.streams)
    config = replace(ctx.session, threads=per, cuda_graph=False)
    sessions = []
    started = time.perf_counter()
    for _ in range(setting.streams):
        sess, info = create_session(ctx.graphs[precision], config)
        if info.device != ctx.device:
            raise UserError(f"onnxruntime ran on {info.device}, this run is on {ctx.device}: {info.reason}")
        sessions.append(sess)
    create_s = time.perf_counter() - started
    dtype = np.float16 if sessions[0].get_inputs()[0].type == "tensor(float16)" else np.float32
    feed = np.ascontiguousarray(x, dtype=dtype)
    name = sessions[0].get_inputs()[0].name

    def slot(sess) -> Callable[[], None]:  # type: ignore[no-untyped-def]
        return lambda: sess.run(None, {name: feed})

    slots = [slot(sessions[i % setting.streams]) for i in range(setting.concurrency)]
    first = wall_timer(slots[0])

    def infer(inp: np.ndarray) -> list[np.ndarray]:
        return [np.asarray(o, dtype=np.float32) for o in run(sessions[0], inp.astype(dtype))]

    settings: dict[str, str | int | float | bool | None] = {
        "providers": ",".join(info.providers),
        "sessions": setting.streams,
        "intra_op_threads": per,
        "allow_spinning": config.allow_spinning,
        "graph_optimization": config.graph_optimization,
        "io_binding": False,
    }
    probe = Runner("onnxruntime", precision, info.device, slots[0], infer, settings=settings)
    return Workers(
        "onnxruntime", precision, info.device, setting, per, slots, probe, settings,
        {"create_s": create_s, "first_inference_s": first}, ctx.graph_paths[precision], batch=int(x.shape[0]),
    )  # fmt: skip


def openvino_config(precision: str, streams: int, threads: int, hint: str | None = None) -> dict[str, object]:
    """The compile properties of an OpenVINO setting (the same the Triton repository names); ``hint``: the
    precision hint the graph was verified with where not its precision's default (``ModelContext.openvino_hint``)."""
    return {
        "INFERENCE_PRECISION_HINT": precision_hint(precision, hint),
        "INFERENCE_NUM_THREADS": threads,
        "NUM_STREAMS": streams,
        "PERFORMANCE_HINT": "THROUGHPUT" if streams > 1 else "LATENCY",
    }


def prepare_openvino_streams(ctx: ModelContext, precision: str, x: np.ndarray, setting: Setting) -> Workers:
    import openvino as ov

    if ctx.openvino_core is None:
        ctx.openvino_core = ov.Core()
    core: ov.Core = ctx.openvino_core  # type: ignore[assignment]
    key = graph_key("openvino", precision)
    assert key is not None
    started = time.perf_counter()
    model = core.read_model(ctx.graphs[key])
    if len(model.inputs) != 1:
        raise UserError(f"openvino: {ctx.name} has {len(model.inputs)} inputs; the benchmark feeds one")
    model.reshape(list(x.shape))
    compile_started = time.perf_counter()
    config = openvino_config(precision, setting.streams, ctx.threads, ctx.openvino_hint(key))
    compiled = core.compile_model(model, "CPU", config)
    compile_s = time.perf_counter() - compile_started
    feed = np.ascontiguousarray(x, dtype=np.float32)
    requests = []
    for _ in range(setting.concurrency):
        req = compiled.create_infer_request()
        req.set_input_tensor(ov.Tensor(feed, shared_memory=True))
        requests.append(req)
    create_s = time.perf_counter() - started
    slots = [req.infer for req in requests]
    first = wall_timer(slots[0])
    settings: dict[str, str | int | float | bool | None] = {"openvino": ov.__version__}
    for prop in ("INFERENCE_PRECISION_HINT", "INFERENCE_NUM_THREADS", "PERFORMANCE_HINT", "NUM_STREAMS",
                 "OPTIMAL_NUMBER_OF_INFER_REQUESTS", "ENABLE_CPU_PINNING", "ENABLE_HYPER_THREADING"):  # fmt: skip
        try:
            settings[prop.lower()] = str(compiled.get_property(prop))
        except Exception:
            continue
    check_hint(compiled, str(config["INFERENCE_PRECISION_HINT"]), f"the {precision} graph")
    if settings.get("num_streams") not in (None, str(setting.streams)):
        raise UserError(f"openvino: asked for {setting.streams} streams, compiled with {settings['num_streams']}")

    def infer(inp: np.ndarray) -> list[np.ndarray]:
        req = compiled.create_infer_request()
        req.infer({0: np.ascontiguousarray(inp, dtype=np.float32)})
        return [np.array(req.get_output_tensor(i).data, dtype=np.float32) for i in range(len(compiled.outputs))]

    probe = Runner("openvino", precision, "cpu", slots[0], infer, settings=settings)
    per = split_threads(ctx.threads, setting.streams)
    return Workers(
        "openvino", precision, "cpu", setting, per, slots, probe, settings,
        {"create_s": create_s, "compile_s": compile_s, "first_inference_s": first}, ctx.graph_paths[key],
        batch=int(x.shape[0]),
    )  # fmt: skip


def prepare_tensorrt_streams(ctx: ModelContext, precision: str, x: np.ndarray, setting: Setting) -> Workers:
    """S sessions of onnxruntime's TensorRT provider on one engine cache (the first builds, the others load)."""
    cache = ctx.artifact.directory / "tensorrt-cache"
    cache.mkdir(parents=True, exist_ok=True)
    name = ctx.artifact.manifest.inputs[0].name
    shape = f"{name}:{'x'.join(str(d) for d in x.shape)}"
    options = {
        "trt_fp16_enable": "True" if precision == "fp16" else "False",
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": str(cache),
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": str(cache),
        "trt_profile_min_shapes": shape,
        "trt_profile_opt_shapes": shape,
        "trt_profile_max_shapes": shape,
    }
    cached = any(cache.glob("*.engine"))
    feed = np.ascontiguousarray(x, dtype=np.float32)
    sessions = []
    started = time.perf_counter()
    build_s = 0.0
    for i in range(setting.streams):
        sess, info = create_tensorrt_session(ctx.graphs["fp32"], ctx.session, options)
        in_name = sess.get_inputs()[0].name
        took = wall_timer(lambda s=sess, n=in_name: s.run(None, {n: feed}))  # builds (or loads) the engine
        if i == 0:
            build_s = took
        sessions.append(sess)
    create_s = time.perf_counter() - started - build_s
    in_name = sessions[0].get_inputs()[0].name

    def slot(sess) -> Callable[[], None]:  # type: ignore[no-untyped-def]
        return lambda: sess.run(None, {in_name: feed})

    slots = [slot(sessions[i % setting.streams]) for i in range(setting.concurrency)]
    first = wall_timer(slots[0])

    def infer(inp: np.ndarray) -> list[np.ndarray]:
        return [np.asarray(o, dtype=np.float32) for o in run(sessions[0], np.ascontiguousarray(inp, np.float32))]

    settings: dict[str, str | int | float | bool | None] = {
        "providers": ",".join(info.providers),
        "sessions": setting.streams,
        "fp16": precision == "fp16",
        "engine_cache": str(cache),
        "io_binding": False,
        "tf32": None,
    }
    probe = Runner("tensorrt", precision, "cuda", slots[0], infer, settings=settings)
    cold = {"create_s": create_s, "build_s": build_s, "engine_cached": cached, "first_inference_s": first}
    return Workers(
        "tensorrt", precision, "cuda", setting, None, slots, probe, settings, cold, ctx.graph_paths["fp32"],
        batch=int(x.shape[0]),
    )  # fmt: skip


def prepare_streams(engine: str, ctx: ModelContext, precision: str, x: np.ndarray, setting: Setting) -> Workers:
    if engine == "onnxruntime":
        return prepare_onnxruntime_streams(ctx, precision, x, setting)
    if engine == "openvino":
        return prepare_openvino_streams(ctx, precision, x, setting)
    if engine == "tensorrt":
        return prepare_tensorrt_streams(ctx, precision, x, setting)
    raise UserError(NOT_IN_THROUGHPUT.get(engine, f"{engine} does not run in throughput mode"))


# --- timing ------------------------------------------------------------------------------------------


@dataclass
class ThroughputTimed:
    """The windows (seconds per image) and request latencies (seconds) of one setting in one group."""

    workers: Workers
    windows: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    spent: float = 0.0
    rounds: int = 0
    window_seconds: float = 0.0
    error: str | None = None
    capped: bool = False


def run_window(slots: Sequence[Callable[[], None]], batch: int, seconds: float) -> tuple[float, list[float]]:
    """One window: every slot runs requests back to back for ``seconds``; returns (images per
    second, each request's latency). Requests straddling the window's end count by the fraction
    inside it."""
    spans: list[list[tuple[float, float]]] = [[] for _ in slots]
    errors: list[BaseException] = []
    gate = threading.Barrier(len(slots) + 1)
    box: dict[str, float] = {}

    def work(i: int) -> None:
        try:
            gate.wait()
            end_at = box["end"]
            while True:
                t0 = time.perf_counter()
                if t0 >= end_at:
                    return
                slots[i]()
                spans[i].append((t0, time.perf_counter()))
        except threading.BrokenBarrierError:
            return
        except BaseException as exc:  # the engine's failure: the window's, reported once
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(len(slots))]
    for t in threads:
        t.start()
    start = time.perf_counter()
    box["start"], box["end"] = start, start + seconds
    gate.wait()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    every = [span for per in spans for span in per]
    return window_throughput(every, start, box["end"], batch), [b - a for a, b in every]


def window_throughput(spans: Sequence[tuple[float, float]], start: float, end: float, batch: int) -> float:
    """Images per second in ``[start, end]`` from requests' (start, end) times: each request counts
    by the fraction of it inside the window (one straddling the end is partly done)."""
    done = 0.0
    for a, b in spans:
        inside = max(0.0, min(b, end) - max(a, start))
        done += inside / (b - a) if b > a else float(start <= a <= end)
    return done * batch / (end - start)


def _enough(t: ThroughputTimed, policy: TimingPolicy, min_requests: int = 0) -> bool:
    if policy.exact is not None:
        return len(t.windows) >= policy.exact
    return len(t.windows) >= policy.min_samples and t.spent >= policy.min_seconds and len(t.latencies) >= min_requests


def run_each(slots: Sequence[Callable[[], None]], count: int, seconds: float) -> list[float]:
    """Every slot at once, ``count`` requests each or until ``seconds`` have passed (at least one):
    the latencies."""
    latencies: list[float] = []
    errors: list[BaseException] = []
    until = time.perf_counter() + seconds

    def work(i: int) -> None:
        try:
            for n in range(count):
                t0 = time.perf_counter()
                if n and t0 >= until:
                    return
                slots[i]()
                latencies.append(time.perf_counter() - t0)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(len(slots))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return latencies


def warm_up(t: ThroughputTimed, policy: TimingPolicy) -> None:
    """Untimed: every slot at once, ``policy.warmup`` requests each (or ``warmup_seconds``); sets the window."""
    latencies = run_each(t.workers.slots, max(1, policy.warmup), policy.warmup_seconds)
    typical = float(np.median(latencies)) if latencies else 0.0
    t.window_seconds = max(policy.block, WINDOW_REQUESTS * typical)


def measure_throughput_interleaved(
    workers: Sequence[Workers],
    policy: TimingPolicy,
    on_round: Callable[[int], None] | None = None,
    min_requests: int = 0,
) -> list[ThroughputTimed]:
    """Time every setting in interleaved rounds of one window each (see the module docstring).

    The settings may differ in batch size (tune confirms its finalists together); ``min_requests``
    asks for at least that many request latencies too (100 for a p99).
    """
    timed = [ThroughputTimed(w) for w in workers]
    for t in timed:
        try:
            warm_up(t, policy)
        except Exception as exc:
            t.error = f"{type(exc).__name__}: {first_line(exc)}"
    started = time.perf_counter()
    rounds = 0
    while True:
        active = [t for t in timed if t.error is None]
        if not active or all(_enough(t, policy, min_requests) for t in active):
            break
        if time.perf_counter() - started >= policy.max_seconds:
            for t in active:
                t.capped = not _enough(t, policy, min_requests)
            break
        for t in active:
            if _enough(t, policy) and policy.exact is not None:
                continue
            try:
                ips, latencies = run_window(t.workers.slots, t.workers.batch, t.window_seconds)
            except Exception as exc:
                t.error = f"{type(exc).__name__}: {first_line(exc)}"
                continue
            if ips <= 0:
                t.error = f"no request finished within a {t.window_seconds:.2f} s window"
                continue
            t.windows.append(1.0 / ips)
            t.latencies += latencies
            t.spent += t.window_seconds
            t.rounds += 1
        rounds += 1
        if on_round is not None:
            on_round(rounds)
    return timed


# --- figures -----------------------------------------------------------------------------------------


@dataclass
class ThroughputFigures:
    """A setting's figures: throughput from its windows, latency from its requests."""

    fields: dict[str, object]
    seconds_per_image: Interval
    own_reasons: list[str]


def figures(t: ThroughputTimed, batch: int, rng: np.random.Generator, max_ci_width: float, spread_limit: float,
            load: float) -> ThroughputFigures:  # fmt: skip
    """Row fields of one timed setting: the request latencies' statistics, and throughput with its interval."""
    lat = summarize(t.latencies, batch, rng)
    spi = median_interval(t.windows, rng)
    reasons = []
    if spi.width > max_ci_width:
        reasons.append(f"throughput 95% CI spans {spi.width:.0%} of it")
    if t.capped:
        reasons.append(f"only {len(t.windows)} windows within --max-seconds")
    best = min(t.windows)
    if best > 0 and spi.value / best > spread_limit:
        reasons.append(
            f"the median window is {spi.value / best:.1f}x slower than the fastest (the CPU was contended; "
            f"load {load:.1f})"
        )
    fields: dict[str, object] = dict(lat.to_dict())
    fields.update(
        throughput_ips=1.0 / spi.value,
        throughput_ci_low_ips=1.0 / spi.high,
        throughput_ci_high_ips=1.0 / spi.low,
        seconds_per_image=spi.value,
        seconds_per_image_ci_low=spi.low,
        seconds_per_image_ci_high=spi.high,
        windows=len(t.windows),
        window_seconds=t.window_seconds,
        sample_summary=summarize_samples(np.asarray(t.latencies) * 1e3),
        window_summary=summarize_samples(t.windows),
    )
    return ThroughputFigures(fields, spi, reasons)


def vs_best(mine: ThroughputTimed, best: ThroughputTimed, rng: np.random.Generator) -> Interval:
    """This setting's seconds per image over the best one's (1 for the best; above 1 is slower)."""
    if mine is best:
        return Interval(1.0, 1.0, 1.0)
    return ratio_interval(mine.windows, best.windows, rng)
