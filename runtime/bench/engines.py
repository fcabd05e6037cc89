"""The engines a run can time, each prepared for one (model, precision, batch, input size).

=================  ============================================================  =====================
engine             what runs                                                     precisions
=================  ============================================================  =====================
``onnxruntime``    the artifact's graph (or variant) in onnxruntime              fp32, fp16, int8, .opt-*
``pytorch``        the PyTorch reference, eager, ``inference_mode``              fp32
``torch-compile``  ``torch.compile`` (inductor, freezing on); compile timed      fp32
                   separately and excluded from latency
``openvino``       OpenVINO reading the same ONNX graph, f32 precision hint      fp32, bf16, int8
                   (bf16 hint as its own precision where the CPU has bf16; a
                   variant's recorded ``openvino_hint`` where it has one)
``tensorrt``       onnxruntime's TensorRT execution provider on CUDA, profiles   fp32, fp16, int8 (QDQ)
                   from the manifest, version-keyed engine cache, build timed
=================  ============================================================  =====================

Each optional engine says why it cannot run (:func:`unavailable_reason`) instead of failing
half-way. A prepared :class:`Runner` has ``step()`` (one inference on its bound batch,
finished when the timer stops) and ``infer(x)`` (outputs for an input, for the parity gate).
"""

from __future__ import annotations

import copy
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from statistics import median

import numpy as np
import torch

from exporter.artifact import Artifact
from exporter.errors import UserError, first_line
from exporter.reference import Prepared

from ..openvino_model import check_hint, compile_config, hint_for
from ..sessions import (
    CUDA_PROVIDER,
    SessionConfig,
    SessionInfo,
    check_feed,
    create_session,
    create_tensorrt_session,
    run,
    tensorrt_missing,
)
from .cuda import BoundRun, GraphDecision, bind, capture, decide, max_abs_diff, time_pairs
from .defaults import ENGINES, TORCH_COMPILE_MODES

TORCH_ENGINES = ("pytorch", "torch-compile")
#: Precisions other than the graph variants; only some engines take them.
EXTRA_PRECISIONS = ("bf16",)


def _install_hint(extra: str, package: str) -> str:
    return f"pip install -e '.[{extra}]' (or pip install {package})"


def openvino_missing(device: str) -> str | None:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return f"not installed: {_install_hint('openvino', 'openvino')}"
    if device != "cpu":
        return f"runs on CPU only, and this run is on {device}"
    return None


def openvino_bf16_missing() -> str | None:
    """Why OpenVINO cannot run bf16 here, or None where the CPU has bf16 arithmetic."""
    import openvino as ov

    caps = [str(c) for c in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")]
    if "BF16" in caps:
        return None
    return f"this CPU has no bf16 arithmetic (OpenVINO's CPU capabilities: {', '.join(caps)})"


def torch_compile_missing(device: str) -> str | None:
    try:
        import torch._inductor.config  # noqa: F401
    except ImportError as exc:
        return f"this torch build has no inductor ({exc})"
    if device == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return "inductor needs triton on CUDA: pip install triton"
        return None
    if not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        return "inductor's CPU backend needs a C++ compiler (apt-get install g++)"
    return None


def tensorrt_unavailable(device: str) -> str | None:
    if device != "cuda":
        return f"CUDA only, and this run is on {device}"
    return tensorrt_missing()


def unavailable_reason(engine: str, device: str) -> str | None:
    """Why ``engine`` cannot run on ``device`` here, or None when it can."""
    if engine in ("onnxruntime", "pytorch"):
        return None
    if engine == "openvino":
        return openvino_missing(device)
    if engine == "torch-compile":
        return torch_compile_missing(device)
    if engine == "tensorrt":
        return tensorrt_unavailable(device)
    raise UserError(f"unknown engine {engine!r}: choose from {', '.join(ENGINES)}")


def precisions_for(engine: str, requested: list[str]) -> list[str]:
    """The precisions ``engine`` runs in a run that asked for ``requested``.

    PyTorch and torch-compile are the fp32 reference and always run fp32.
    """
    if engine in TORCH_ENGINES:
        return ["fp32"]
    if engine == "onnxruntime":
        return [p for p in requested if p not in EXTRA_PRECISIONS]
    if engine == "openvino":
        return [p for p in requested if p in ("fp32", "bf16") or openvino_reads(p)]
    if engine == "tensorrt":
        return [p for p in requested if p in ("fp32", "fp16", "int8")]
    return []


def graph_key(engine: str, precision: str) -> str | None:
    """The artifact graph (variant key) an engine reads at a precision; None for PyTorch engines."""
    if engine in TORCH_ENGINES:
        return None
    if engine == "onnxruntime":
        return precision
    if engine == "openvino":
        return precision if openvino_reads(precision) else "fp32"
    return "int8" if precision == "int8" else "fp32"  # tensorrt: fp16 from the fp32 graph, int8 from the QDQ graph


def openvino_reads(precision: str) -> bool:
    """Whether OpenVINO runs this graph variant itself: the int8 QDQ graphs (and any other quantized
    variant, such as a mixed-precision one), not fp16 nor graphs offline-optimized for onnxruntime."""
    from exporter.artifact import VariantKey

    if precision in EXTRA_PRECISIONS or precision == "fp32":
        return False
    try:
        key = VariantKey.parse(precision)
    except Exception:
        return False
    return key.optimize_for is None and key.precision not in ("fp16", "fp32")


# --- prepared engines ---------------------------------------------------------------------------


def wall_timer(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def cuda_event_timer(fn: Callable[[], None]) -> float:
    """Time one call on the GPU with CUDA events (seconds)."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3


@dataclass
class Runner:
    """One engine ready to time at one (precision, batch, input size)."""

    engine: str
    precision: str
    device: str
    step: Callable[[], None]
    infer: Callable[[np.ndarray], list[np.ndarray]]
    timer: Callable[[Callable[[], None]], float] = wall_timer
    settings: dict[str, str | int | float | bool | None] = field(default_factory=dict)
    setup_seconds: float | None = None
    graph: str | None = None
    close: Callable[[], None] = lambda: None
    #: what it took to get the first result (seconds; see :class:`runtime.bench.rows.ColdStart`)
    cold_start: dict[str, float | bool | None] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.engine} {self.precision}"


@dataclass
class ModelContext:
    """What the engines of one model share: its graphs (verified bytes), reference, device, settings."""

    name: str
    artifact: Artifact
    graphs: dict[str, bytes]
    graph_paths: dict[str, str]
    reference: Prepared | None
    device: str
    session: SessionConfig
    threads: int
    sessions: dict[object, tuple[object, SessionInfo]] = field(default_factory=dict)
    #: seconds each cached session took to create (same keys as ``sessions``)
    session_seconds: dict[object, float] = field(default_factory=dict)
    cuda_model: torch.nn.Module | None = None
    openvino_core: object | None = None
    #: ``--cuda-graph``: on, off or auto (measured per batch: :mod:`runtime.bench.cuda`)
    cuda_graph: str = "off"
    #: per graph key: how the graph timed differs from the artifact's file (``--fp16-io``), for its rows
    graph_notes: dict[str, dict[str, str | int | float | bool | None]] = field(default_factory=dict)
    #: ``--torch-compile-mode`` (auto: max-autotune on CUDA, default on CPU)
    torch_compile_mode: str = "auto"
    #: TensorRT's optimization profile bounds from the manifest and the run: (min, max) of batch, H, W
    trt_bounds: tuple[tuple[int, int, int], tuple[int, int, int]] | None = None
    #: per graph key: the OpenVINO precision hint to compile it with, over what the manifest records for that
    #: key (a precision search's candidate is not the variant of that name: it was judged with its own hint)
    openvino_hints: dict[str, str] = field(default_factory=dict)

    def openvino_hint(self, key: str) -> str | None:
        """The precision hint OpenVINO compiles the graph ``key`` with where it is not its precision's
        default: the one given here, else the variant's recorded one (:func:`runtime.openvino_model.hint_for`)."""
        if key in self.openvino_hints:
            return self.openvino_hints[key]
        return hint_for(self.artifact, key) if self.artifact is not None else None

    def release(self) -> None:
        self.sessions.clear()
        self.session_seconds.clear()
        self.cuda_model = None
        self.openvino_core = None
        if self.device == "cuda":
            torch.cuda.empty_cache()


def _float32(outputs: list) -> list[np.ndarray]:  # type: ignore[type-arg]
    return [np.asarray(o, dtype=np.float32) for o in outputs]


def _feed_dtype(sess) -> type:  # type: ignore[no-untyped-def]
    return np.float16 if sess.get_inputs()[0].type == "tensor(float16)" else np.float32


def _bound_cuda_step(sess, x: np.ndarray, cuda_graph: bool) -> tuple[Callable[[], None], int]:  # type: ignore[no-untyped-def]
    """IO binding on the GPU (:func:`runtime.bench.cuda.bind`): the timed runs move no data."""
    bound = bind(sess, x, cuda_graph)
    return bound.step, bound.fixed_outputs


def _session(ctx: ModelContext, key: object, precision: str, config: SessionConfig) -> tuple[object, SessionInfo, bool]:
    """The cached session under ``key`` (made now if new), its info, and whether it was shared."""
    shared = key in ctx.sessions
    if not shared:
        started = time.perf_counter()
        ctx.sessions[key] = create_session(ctx.graphs[precision], config)
        ctx.session_seconds[key] = time.perf_counter() - started
    sess, info = ctx.sessions[key]
    return sess, info, shared


def _graph_session(
    ctx: ModelContext, precision: str, x: np.ndarray, plain: BoundRun
) -> tuple[BoundRun | None, GraphDecision, float]:
    """The captured-graph run for this batch where ``--cuda-graph`` (on, or auto and measured to pay)
    keeps it, with the decision; the creation seconds of its session."""
    mode = ctx.cuda_graph
    if mode == "off":
        return None, GraphDecision(mode, False, "off (--no-cuda-graph)"), 0.0
    key = (precision, x.shape, "cuda-graph")
    try:
        sess, _info, _ = _session(ctx, key, precision, replace(ctx.session, cuda_graph=True))
        graph = bind(sess, x, cuda_graph=True)
    except UserError as exc:
        ctx.sessions.pop(key, None)
        if mode == "on":
            raise
        return None, GraphDecision(mode, False, f"auto: off ({first_line(exc)})"), 0.0
    capture_s, first = capture(graph.step)
    diff = max_abs_diff(plain.outputs(), graph.outputs())  # the replay computes what the plain run does
    created = ctx.session_seconds.get(key, 0.0)
    if mode == "on":
        return graph, GraphDecision(mode, True, "on (--cuda-graph)", None, None, 0, capture_s, first, diff), created
    a, b = time_pairs(plain.step, graph.step)
    use, reason = decide(a, b)
    decision = GraphDecision(mode, use, reason, median(a) * 1e3, median(b) * 1e3, len(a), capture_s, first, diff)
    if not use:
        ctx.sessions.pop(key, None)  # the plain run is kept: free the graph's buffers
        return None, decision, 0.0
    return graph, decision, created


def prepare_onnxruntime(ctx: ModelContext, precision: str, x: np.ndarray) -> Runner:
    config = replace(ctx.session, cuda_graph=False)
    sess, info, shared = _session(ctx, precision, precision, config)
    if info.device != ctx.device:
        raise UserError(f"onnxruntime ran on {info.device}, this run is on {ctx.device}: {info.reason}")
    feed = x.astype(_feed_dtype(sess))
    check_feed(sess, feed)
    in_name = sess.get_inputs()[0].name
    settings: dict[str, str | int | float | bool | None] = {
        "providers": ",".join(info.providers),
        "intra_op_threads": config.threads,
        "allow_spinning": config.allow_spinning,
        "graph_optimization": config.graph_optimization,
        "io_binding": False,
        "tf32": False,
        "io_dtype": np.dtype(_feed_dtype(sess)).name,
        **ctx.graph_notes.get(precision, {}),
    }

    def infer(inp: np.ndarray) -> list[np.ndarray]:
        return _float32(run(sess, inp.astype(_feed_dtype(sess))))

    def step() -> None:
        sess.run(None, {in_name: feed})

    create_s = ctx.session_seconds.get(precision)
    cold: dict[str, float | bool | None] = {"create_s": create_s, "shared": shared}
    if info.device == "cuda":
        settings.update(cuda_settings(config, info))
        use_binding = config.io_binding or ctx.cuda_graph == "on"
        settings["io_binding"] = use_binding
        if not use_binding:
            why = "off: a CUDA graph needs IO binding (--no-io-binding)"
            settings.update(GraphDecision(ctx.cuda_graph, False, why).settings())
        else:
            plain = bind(sess, x, cuda_graph=False)
            cold["first_inference_s"] = wall_timer(plain.step)  # cuDNN's algorithm search happens here
            step = plain.step
            settings.update(bound_outputs=plain.fixed_outputs, input_transfer=plain.input_transfer)
            graph, decision, graph_create_s = _graph_session(ctx, precision, x, plain)
            settings.update(decision.settings())
            if graph is not None:
                step = graph.step
                # the graph's own session: its creation, its allocating and capturing calls, its first replay
                cold.update(
                    create_s=graph_create_s or create_s,
                    capture_s=decision.capture_s,
                    first_inference_s=decision.first_calls_ms[-1] / 1e3,
                    shared=False,
                )
    if "first_inference_s" not in cold:
        cold["first_inference_s"] = wall_timer(step)
    return Runner(
        "onnxruntime",
        precision,
        info.device,
        step,
        infer,
        wall_timer,
        settings,
        graph=ctx.graph_paths[precision],
        cold_start=cold,
    )


def cuda_settings(config: SessionConfig, info: SessionInfo) -> dict[str, str | int | float | bool | None]:
    """The CUDA provider's settings of a session as a row records them: what was asked, what onnxruntime
    reports it uses (read back), and what this build could not honour."""
    from ..cudaep import nhwc_support

    got = info.read_back.get(CUDA_PROVIDER, {})
    out: dict[str, str | int | float | bool | None] = {
        "cudnn_conv_algo_search": config.cudnn_conv_algo_search,
        "cudnn_conv_use_max_workspace": config.cudnn_max_workspace,
        "tf32": config.tf32,
        "prefer_nhwc": info.provider_options.get(CUDA_PROVIDER, {}).get("prefer_nhwc") == "1",
        "prefer_nhwc_asked": config.prefer_nhwc,
        "nhwc_build": nhwc_support().reason,
    }
    for key in ("prefer_nhwc", "cudnn_conv_use_max_workspace", "cudnn_conv_algo_search", "use_tf32"):
        if key in got:
            out[f"read_back_{key}"] = got[key]
    if info.notes:
        out["session_notes"] = "; ".join(info.notes)
    return out


def _torch_model(ctx: ModelContext) -> torch.nn.Module:
    """The PyTorch model on the run's device: the reference itself on CPU, a copy on CUDA (the
    reference stays on the CPU, where the parity gate runs it)."""
    if ctx.reference is None:
        raise UserError(f"{ctx.name}: no PyTorch model (give --reference FILE.py:Builder)")
    if ctx.device != "cuda":
        return ctx.reference.model
    if ctx.cuda_model is None:
        ctx.cuda_model = copy.deepcopy(ctx.reference.model).to("cuda").eval()
    return ctx.cuda_model


def _torch_cuda_settings(ctx: ModelContext) -> dict[str, str | int | float | bool | None]:
    torch.backends.cudnn.benchmark = ctx.session.cudnn_conv_algo_search == "EXHAUSTIVE"
    torch.backends.cudnn.allow_tf32 = ctx.session.tf32
    torch.backends.cuda.matmul.allow_tf32 = ctx.session.tf32
    return {
        "tf32": bool(torch.backends.cudnn.allow_tf32),
        "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
    }


def _torch_infer(
    model: torch.nn.Module, device: str, grad_mode: Callable[[], object]
) -> Callable[[np.ndarray], list[np.ndarray]]:
    def infer(inp: np.ndarray) -> list[np.ndarray]:
        with grad_mode():  # type: ignore[attr-defined]
            out = model(torch.from_numpy(np.ascontiguousarray(inp, dtype=np.float32)).to(device))
        outs = list(out) if isinstance(out, (tuple, list)) else [out]
        return [o.detach().float().cpu().numpy() for o in outs]

    return infer


def prepare_pytorch(ctx: ModelContext, precision: str, x: np.ndarray) -> Runner:
    model = _torch_model(ctx)
    dev = "cuda" if ctx.device == "cuda" else "cpu"
    xt = torch.from_numpy(x).to(dev)
    settings: dict[str, str | int | float | bool | None] = {
        "mode": "eager, inference_mode",
        "threads": torch.get_num_threads(),
        "tf32": False,
    }
    if dev == "cuda":
        settings.update(_torch_cuda_settings(ctx))

    def step() -> None:
        with torch.inference_mode():
            model(xt)

    timer = cuda_event_timer if dev == "cuda" else wall_timer
    first = wall_timer(lambda: (step(), torch.cuda.synchronize() if dev == "cuda" else None))
    return Runner(
        "pytorch",
        precision,
        dev,
        step,
        _torch_infer(model, dev, torch.inference_mode),
        timer,
        settings,
        cold_start={"first_inference_s": first},
    )


def compile_mode(asked: str, device: str) -> str:
    """``--torch-compile-mode``: auto is max-autotune on CUDA (autotuned kernels replayed as CUDA graphs),
    the default mode on CPU."""
    if asked not in TORCH_COMPILE_MODES:
        raise UserError(f"unknown torch.compile mode {asked!r}: choose one of {', '.join(TORCH_COMPILE_MODES)}")
    if asked == "auto":
        return "max-autotune" if device == "cuda" else "default"
    return asked


def prepare_torch_compile(ctx: ModelContext, precision: str, x: np.ndarray) -> Runner:
    import torch._dynamo
    import torch._inductor.config as inductor_config

    model = _torch_model(ctx)
    dev = "cuda" if ctx.device == "cuda" else "cpu"
    xt = torch.from_numpy(x).to(dev)
    mode = compile_mode(ctx.torch_compile_mode, dev)
    settings: dict[str, str | int | float | bool | None] = {
        "backend": "inductor",
        "freezing": True,
        "dynamic": False,
        "mode": mode,
        "cuda_graphs": dev == "cuda" and mode in ("max-autotune", "reduce-overhead"),
        "threads": torch.get_num_threads(),
        "tf32": False,
    }
    if dev == "cuda":
        settings.update(_torch_cuda_settings(ctx))
    previous = inductor_config.freezing
    inductor_config.freezing = True  # kept on while this runner lives: guards must not see it change
    torch._dynamo.reset()  # a fresh compile for this batch shape (no stale cache entries, no recompile limit)
    started = time.perf_counter()
    compiled = torch.compile(model, backend="inductor", dynamic=False, mode=None if mode == "default" else mode)
    create_s = time.perf_counter() - started
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    started = time.perf_counter()
    try:
        with torch.no_grad():
            compiled(xt)
        sync()
    except Exception:
        inductor_config.freezing = previous
        raise
    compile_s = time.perf_counter() - started

    def step() -> None:
        with torch.no_grad():
            compiled(xt)

    def close() -> None:
        inductor_config.freezing = previous
        torch._dynamo.reset()

    first = wall_timer(lambda: (step(), sync()))

    timer = cuda_event_timer if dev == "cuda" else wall_timer
    return Runner(
        "torch-compile",
        precision,
        dev,
        step,
        _torch_infer(compiled, dev, torch.no_grad),
        timer,
        settings,
        setup_seconds=compile_s,
        close=close,
        cold_start={"create_s": create_s + compile_s, "compile_s": compile_s, "first_inference_s": first},
    )


def prepare_openvino(ctx: ModelContext, precision: str, x: np.ndarray) -> Runner:
    import openvino as ov

    if ctx.openvino_core is None:
        ctx.openvino_core = ov.Core()
    core: ov.Core = ctx.openvino_core  # type: ignore[assignment]
    key = graph_key("openvino", precision)
    assert key is not None
    started = time.perf_counter()
    model = core.read_model(ctx.graphs[key])  # the same verified ONNX bytes onnxruntime runs
    if len(model.inputs) != 1:
        raise UserError(f"openvino: {ctx.name} has {len(model.inputs)} inputs; the benchmark feeds one")
    model.reshape(list(x.shape))  # static shapes for this batch and size: OpenVINO's fastest path
    # the hint the graph was verified with (an auto graph's float layers in bf16), else its precision's default
    config = compile_config(precision, ctx.threads, hint=ctx.openvino_hint(key))
    read_s = time.perf_counter() - started
    started = time.perf_counter()
    compiled = core.compile_model(model, "CPU", config)
    compile_s = time.perf_counter() - started
    request = compiled.create_infer_request()
    feed = np.ascontiguousarray(x, dtype=np.float32)
    request.set_input_tensor(ov.Tensor(feed, shared_memory=True))
    create_s = time.perf_counter() - started + read_s
    first = wall_timer(request.infer)
    setup_s = create_s - read_s + first
    settings: dict[str, str | int | float | bool | None] = {"openvino": ov.__version__}
    for prop in (
        "INFERENCE_PRECISION_HINT",
        "INFERENCE_NUM_THREADS",
        "PERFORMANCE_HINT",
        "NUM_STREAMS",
        "EXECUTION_MODE_HINT",
        "ENABLE_CPU_PINNING",
        "ENABLE_HYPER_THREADING",
        "SCHEDULING_CORE_TYPE",
    ):
        try:
            settings[prop.lower()] = str(compiled.get_property(prop))
        except Exception:
            continue
    check_hint(compiled, str(config["INFERENCE_PRECISION_HINT"]), f"the {precision} graph")

    def step() -> None:
        _ = feed
        request.infer()

    def infer(inp: np.ndarray) -> list[np.ndarray]:
        req = compiled.create_infer_request()
        req.infer({0: np.ascontiguousarray(inp, dtype=np.float32)})
        return [np.array(req.get_output_tensor(i).data, dtype=np.float32) for i in range(len(compiled.outputs))]

    return Runner(
        "openvino",
        precision,
        "cpu",
        step,
        infer,
        wall_timer,
        settings,
        setup_seconds=setup_s,
        graph=ctx.graph_paths[key],
        cold_start={"create_s": create_s, "compile_s": compile_s, "first_inference_s": first},
    )


def prepare_tensorrt(ctx: ModelContext, precision: str, x: np.ndarray) -> Runner:
    from .. import tensorrt as trt
    from ..sessions import tensorrt_version

    key = trt.graph_for(precision)
    graph = ctx.graphs[key]
    version = tensorrt_version()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    cache = trt.cache_dir(ctx.artifact.directory / "tensorrt-cache", version, gpu, graph, precision, x.shape)
    cache.mkdir(parents=True, exist_ok=True)
    name = ctx.artifact.manifest.inputs[0].name
    profile = trt.profile_shapes(name, x.shape, ctx.trt_bounds)
    options = trt.options(precision, cache, profile)
    cached = any(cache.glob("*.engine"))
    started = time.perf_counter()
    sess, info = create_tensorrt_session(graph, ctx.session, options)
    create_s = time.perf_counter() - started
    feed = np.ascontiguousarray(x, dtype=np.float32)
    check_feed(sess, feed)
    step, fixed = _bound_cuda_step(sess, feed, cuda_graph=False)
    engine_s = wall_timer(step)  # builds the engine (or loads it from the cache)
    build_s = time.perf_counter() - started
    first = wall_timer(step)
    settings: dict[str, str | int | float | bool | None] = {
        "providers": ",".join(info.providers),
        "tensorrt": version,
        "fp16": precision in ("fp16", "int8"),
        "int8": precision == "int8",
        "engine_cache": str(cache),
        "engine_cached": cached,
        **profile,
        "io_binding": True,
        "bound_outputs": fixed,
        "tf32": precision == "fp32",  # TensorRT's builder allows TF32 unless told otherwise
        "compute_precision": trt.COMPUTE_PRECISION[precision],
    }

    def infer(inp: np.ndarray) -> list[np.ndarray]:
        return _float32(run(sess, np.ascontiguousarray(inp, dtype=np.float32)))

    return Runner(
        "tensorrt",
        precision,
        "cuda",
        step,
        infer,
        wall_timer,
        settings,
        setup_seconds=build_s,
        graph=ctx.graph_paths[key],
        cold_start={"create_s": create_s, "build_s": engine_s, "engine_cached": cached, "first_inference_s": first},
    )


PREPARE: dict[str, Callable[[ModelContext, str, np.ndarray], Runner]] = {
    "onnxruntime": prepare_onnxruntime,
    "pytorch": prepare_pytorch,
    "torch-compile": prepare_torch_compile,
    "openvino": prepare_openvino,
    "tensorrt": prepare_tensorrt,
}


def prepare(engine: str, ctx: ModelContext, precision: str, x: np.ndarray) -> Runner:
    """``engine`` ready to time ``x`` (a batch at one input size) at ``precision``."""
    return PREPARE[engine](ctx, precision, x)
