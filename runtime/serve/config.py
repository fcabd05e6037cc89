"""Triton model configurations for an exported graph: built, written as text, parsed back and validated.

A configuration is the ``ModelConfig`` protobuf message that ``tritonclient`` ships
(``model_config.proto``, the schema ``tritonserver`` itself parses ``config.pbtxt`` with).
:func:`build_config` makes one for Triton's onnxruntime backend from the graph's own inputs
and outputs; :func:`render_config` writes it in protobuf text format; :func:`parse_config`
reads text back with the same protobuf (a malformed value, an unknown field or enum is one
error naming the line); :func:`validate_config` then applies the rules the server and the
onnxruntime backend enforce when they load a model, which the parser does not check: the
names, data types and dims must match the graph, the batch dimension must be symbolic when
``max_batch_size`` > 0, preferred batch sizes may not exceed the maximum, warm-up inputs
must be complete, accelerators must exist for the instance kind. A configuration this module
accepts is one the server would load for that graph.

Two backends: ``onnxruntime`` (the default) and ``openvino`` (Triton's OpenVINO backend, which
reads the same ``model.onnx`` when ``default_model_filename`` names it, and takes
``NUM_STREAMS``, ``INFERENCE_NUM_THREADS``, ``PERFORMANCE_HINT``, ``HINT_BF16`` as parameters,
checked here as that backend parses them; it runs CPU instances only).

Nothing here prints; problems are :class:`ConfigError` (one line).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from exporter.errors import UserError

#: Triton's variable-size dimension.
WILDCARD = -1
PLATFORM = "onnxruntime_onnx"
BACKEND = "onnxruntime"
OPENVINO_BACKEND = "openvino"
BACKENDS = (BACKEND, OPENVINO_BACKEND)
#: Triton's OpenVINO backend: the parameters it parses, and their values (case-insensitive)
OPENVINO_NUMBER_PARAMETERS = ("INFERENCE_NUM_THREADS", "COMPILATION_NUM_THREADS")
OPENVINO_HINTS = ("LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT")
OPENVINO_BOOL_PARAMETERS = ("SKIP_OV_DYNAMIC_BATCHSIZE", "ENABLE_BATCH_PADDING", "RESHAPE_IO_LAYERS")
MODEL_FILE = "model.onnx"
CONFIG_FILE = "config.pbtxt"
DEVICES = ("auto", "cpu", "cuda")
INSTANCE_KINDS = {"auto": "KIND_AUTO", "cpu": "KIND_CPU", "cuda": "KIND_GPU"}
TENSORRT_PRECISIONS = ("fp16", "fp32")
#: Execution accelerators the onnxruntime backend knows (others make it refuse the model).
GPU_ACCELERATORS = ("tensorrt", "cuda")
CPU_ACCELERATORS = ("openvino",)
TRT_PRECISION_MODES = ("FP32", "FP16", "INT8")
#: Model names: one plain folder name in the repository, as Triton and pytriton accept them.
_MODEL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")

#: ONNX TensorProto element types -> Triton data types (the onnxruntime backend's mapping).
_ONNX_TO_TRITON = {
    1: "TYPE_FP32",
    2: "TYPE_UINT8",
    3: "TYPE_INT8",
    4: "TYPE_UINT16",
    5: "TYPE_INT16",
    6: "TYPE_INT32",
    7: "TYPE_INT64",
    8: "TYPE_STRING",
    9: "TYPE_BOOL",
    10: "TYPE_FP16",
    11: "TYPE_FP64",
    12: "TYPE_UINT32",
    13: "TYPE_UINT64",
    16: "TYPE_BF16",
}
#: Triton data types -> numpy dtype names (for requests and warm-up data).
TRITON_TO_NUMPY = {
    "TYPE_FP32": "float32",
    "TYPE_FP16": "float16",
    "TYPE_FP64": "float64",
    "TYPE_UINT8": "uint8",
    "TYPE_INT8": "int8",
    "TYPE_UINT16": "uint16",
    "TYPE_INT16": "int16",
    "TYPE_INT32": "int32",
    "TYPE_INT64": "int64",
    "TYPE_UINT32": "uint32",
    "TYPE_UINT64": "uint64",
    "TYPE_BOOL": "bool",
}


class ConfigError(UserError):
    """A model configuration Triton would refuse, or that does not fit its graph."""


class ServeDependencyMissing(UserError):
    """The ``serve`` extra (nvidia-pytriton, tritonclient) is not installed."""


def model_config_pb2():  # type: ignore[no-untyped-def]
    """The ``model_config_pb2`` module ``tritonclient`` ships (the server's own schema)."""
    try:
        from tritonclient.grpc import model_config_pb2 as pb2
    except ImportError as exc:
        raise ServeDependencyMissing(
            f"Triton support needs the serve extra ({exc.name or 'tritonclient'} is missing): pip install -e '.[serve]'"
        ) from exc
    return pb2


# --- the graph's side ------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorIO:
    """One input or output of the graph as onnxruntime (and so Triton's backend) sees it.

    ``shape`` holds ints for fixed dimensions and the symbolic name (``"batch"``,
    ``"height"``) or ``None`` for the others.
    """

    name: str
    triton_type: str
    shape: tuple[int | str | None, ...]

    @property
    def dims(self) -> list[int]:
        """The shape with every non-fixed dimension as Triton's -1."""
        return [d if isinstance(d, int) else WILDCARD for d in self.shape]

    @property
    def batch_symbolic(self) -> bool:
        return bool(self.shape) and not isinstance(self.shape[0], int)

    @property
    def wire_type(self) -> str:
        """The data type as requests name it (``FP32``)."""
        return self.triton_type.removeprefix("TYPE_")

    @property
    def numpy_dtype(self) -> str:
        return TRITON_TO_NUMPY.get(self.triton_type, "object")

    def describe(self) -> str:
        return "[" + ", ".join(str(d) if d is not None else "?" for d in self.shape) + "]"


@dataclass(frozen=True)
class GraphIO:
    inputs: tuple[TensorIO, ...]
    outputs: tuple[TensorIO, ...]


def graph_io(graph: bytes) -> GraphIO:
    """The inputs (initializers excluded) and outputs of an ONNX graph, with Triton data types."""
    import onnx

    try:
        model = onnx.load_model_from_string(graph)
    except Exception as exc:  # a broken file: the toolkit's graphs are sha256-checked before this
        raise ConfigError(f"the graph is not a readable ONNX model: {exc}") from exc
    initializers = {i.name for i in model.graph.initializer}

    def spec(value) -> TensorIO:  # type: ignore[no-untyped-def]
        t = value.type.tensor_type
        dims: list[int | str | None] = []
        for d in t.shape.dim:
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(int(d.dim_value))
            else:
                dims.append(d.dim_param or None)
        return TensorIO(value.name, _ONNX_TO_TRITON.get(t.elem_type, "TYPE_INVALID"), tuple(dims))

    inputs = tuple(spec(v) for v in model.graph.input if v.name not in initializers)
    return GraphIO(inputs, tuple(spec(v) for v in model.graph.output))


# --- what the user asks for ------------------------------------------------------------------


@dataclass(frozen=True)
class ModelOptions:
    """How Triton should run the model: batching, instances, warm-up, accelerators.

    ``max_batch`` 0 turns batching off (the only setting a fixed-batch graph allows);
    ``preferred_batch_sizes`` default to ``(max_batch,)``, which is what Triton does when
    none are given; ``device`` picks the instance kind (``auto`` lets Triton choose a GPU
    where there is one); ``tensorrt`` (``fp16``/``fp32``) and ``cuda_graphs`` ask for
    the GPU accelerators; ``threads`` sets onnxruntime's intra-op threads per instance.

    ``backend="openvino"``: Triton's OpenVINO backend on the same graph, CPU instances only;
    ``threads`` is then ``INFERENCE_NUM_THREADS`` (shared by the model's streams),
    ``openvino_streams`` its ``NUM_STREAMS``, ``openvino_hint`` its ``PERFORMANCE_HINT`` and
    ``bf16`` its ``HINT_BF16``. Each instance is one infer request on the one compiled model.
    """

    max_batch: int = 32
    preferred_batch_sizes: tuple[int, ...] | None = None
    max_queue_delay_us: int = 500
    instances: int = 1
    device: str = "auto"
    warmup: bool = True
    tensorrt: str | None = None
    cuda_graphs: bool = False
    threads: int | None = None
    backend: str = BACKEND
    openvino_streams: int | None = None
    openvino_hint: str | None = None
    bf16: bool = False

    def check(self) -> None:
        """Refuse settings that make no sense whatever the graph (one line each)."""
        if self.backend not in BACKENDS:
            raise ConfigError(f"unknown backend {self.backend!r}: choose {', '.join(BACKENDS)}")
        if self.backend == OPENVINO_BACKEND:
            if self.device == "cuda" or self.tensorrt or self.cuda_graphs:
                raise ConfigError("Triton's OpenVINO backend runs CPU instances only (no CUDA, TensorRT, CUDA graphs)")
            if self.openvino_streams is not None and self.openvino_streams < 1:
                raise ConfigError(f"OpenVINO streams must be at least 1, got {self.openvino_streams}")
            if self.openvino_hint is not None and self.openvino_hint not in OPENVINO_HINTS:
                raise ConfigError(
                    f"OpenVINO performance hint {self.openvino_hint!r}: choose {', '.join(OPENVINO_HINTS)}"
                )
        elif self.openvino_streams is not None or self.openvino_hint is not None or self.bf16:
            raise ConfigError("OpenVINO streams, hint and bf16 go with the openvino backend")
        if self.max_batch < 0:
            raise ConfigError(f"--max-batch-size must be 0 (no batching) or more, got {self.max_batch}")
        if self.max_queue_delay_us < 0:
            raise ConfigError(f"--max-queue-delay-us must be 0 or more, got {self.max_queue_delay_us}")
        if self.instances < 1:
            raise ConfigError(f"--instances must be at least 1, got {self.instances}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads must be at least 1, got {self.threads}")
        if self.device not in DEVICES:
            raise ConfigError(f"unknown device {self.device!r}: choose {', '.join(DEVICES)}")
        if self.tensorrt is not None and self.tensorrt not in TENSORRT_PRECISIONS:
            raise ConfigError(f"--tensorrt takes {' or '.join(TENSORRT_PRECISIONS)}, got {self.tensorrt!r}")
        if (self.tensorrt or self.cuda_graphs) and self.device == "cpu":
            what = "TensorRT" if self.tensorrt else "CUDA graphs"
            raise ConfigError(f"{what} runs on GPU instances only: use --device cuda (or auto), not cpu")
        if self.preferred_batch_sizes is not None:
            if self.max_batch == 0:
                raise ConfigError("--preferred-batch-sizes needs batching: set --max-batch-size above 0")
            bad = [b for b in self.preferred_batch_sizes if b < 1 or b > self.max_batch]
            if bad:
                raise ConfigError(
                    f"preferred batch size {bad[0]} is outside 1..{self.max_batch} (--max-batch-size): "
                    "Triton refuses preferred sizes above max_batch_size"
                )

    @property
    def preferred(self) -> list[int]:
        if self.max_batch == 0:
            return []
        return sorted(set(self.preferred_batch_sizes or (self.max_batch,)))


def default_model_name(artifact: str, variant: str) -> str:
    """The Triton model name for an artifact's graph: the artifact's name, with the variant for variants."""
    return artifact if variant == "fp32" else f"{artifact}_{variant.replace('.', '_')}"


def check_model_name(name: str) -> str:
    if not _MODEL_NAME.match(name or ""):
        raise ConfigError(
            f"bad model name {name!r}: use letters, digits, '.', '_' and '-' (it names one folder of the repository)"
        )
    return name


# --- building ----------------------------------------------------------------------------------


def refuse_fixed_batch(name: str, io: GraphIO, max_batch: int) -> None:
    """The onnxruntime backend's rule: with max_batch_size > 0 every input's and output's first dim is symbolic."""
    if max_batch == 0:
        return
    for kind, tensors in (("input", io.inputs), ("output", io.outputs)):
        for t in tensors:
            if not t.batch_symbolic:
                first = f"a fixed batch dimension of {t.shape[0]}" if t.shape else "no dimensions"
                raise ConfigError(
                    f"{name}: {kind} '{t.name}' has {first} (shape {t.describe()}), so the graph cannot batch; "
                    f"with max_batch_size {max_batch} Triton's onnxruntime backend refuses it: "
                    "export it with a symbolic batch (python -m exporter does) or set --max-batch-size 0"
                )


def build_config(
    name: str,
    io: GraphIO,
    options: ModelOptions,
    *,
    warmup_shape: Sequence[int] | None = None,
):  # type: ignore[no-untyped-def]
    """The ``ModelConfig`` for ``io`` under ``options``, validated (:class:`ConfigError` where it cannot be).

    ``warmup_shape`` is one sample's input shape (batch excluded) for graphs with symbolic
    height/width; warm-up needs concrete dims.
    """
    pb2 = model_config_pb2()
    options.check()
    check_model_name(name)
    refuse_fixed_batch(name, io, options.max_batch)
    batching = options.max_batch > 0
    if options.backend == OPENVINO_BACKEND:
        # the OpenVINO backend looks for model.xml unless told: it reads the same ONNX graph
        config = pb2.ModelConfig(
            name=name, backend=OPENVINO_BACKEND, max_batch_size=options.max_batch, default_model_filename=MODEL_FILE
        )
    else:
        config = pb2.ModelConfig(name=name, platform=PLATFORM, backend=BACKEND, max_batch_size=options.max_batch)

    def dims(t: TensorIO) -> list[int]:
        return t.dims[1:] if batching else t.dims

    for t in io.inputs:
        config.input.add(name=t.name, data_type=pb2.DataType.Value(t.triton_type), dims=dims(t))
    for t in io.outputs:
        config.output.add(name=t.name, data_type=pb2.DataType.Value(t.triton_type), dims=dims(t))
    if batching:
        config.dynamic_batching.preferred_batch_size.extend(options.preferred)
        config.dynamic_batching.max_queue_delay_microseconds = options.max_queue_delay_us
    kind = "KIND_CPU" if options.backend == OPENVINO_BACKEND else INSTANCE_KINDS[options.device]
    config.instance_group.add(kind=pb2.ModelInstanceGroup.Kind.Value(kind), count=options.instances)
    if options.tensorrt or options.cuda_graphs:
        gpu = config.optimization.execution_accelerators.gpu_execution_accelerator
        if options.tensorrt:
            trt = gpu.add(name="tensorrt")
            trt.parameters["precision_mode"] = options.tensorrt.upper()
            trt.parameters["max_workspace_size_bytes"] = str(1 << 30)
            trt.parameters["trt_engine_cache_enable"] = "1"
            if options.cuda_graphs:
                trt.parameters["trt_cuda_graph_enable"] = "1"
        else:
            gpu.add(name="cuda").parameters["enable_cuda_graph"] = "1"
    if options.backend == OPENVINO_BACKEND:
        params = {
            "NUM_STREAMS": str(options.openvino_streams) if options.openvino_streams else None,
            "INFERENCE_NUM_THREADS": str(options.threads) if options.threads else None,
            "PERFORMANCE_HINT": options.openvino_hint,
            "HINT_BF16": "YES" if options.bf16 else None,
        }
        for key, value in params.items():
            if value is not None:
                config.parameters[key].string_value = value
    elif options.threads:
        config.parameters["intra_op_thread_count"].string_value = str(options.threads)
        config.parameters["inter_op_thread_count"].string_value = "1"
    if options.warmup:
        for batch in sorted({1, options.max_batch} if batching else {1}):
            warm = config.model_warmup.add(name=f"batch_{batch}", batch_size=batch, count=1)
            for t in io.inputs:
                shape = dims(t)
                if any(d == WILDCARD for d in shape):
                    shape = _concrete(t, shape, batching, warmup_shape)
                warm.inputs[t.name].data_type = pb2.DataType.Value(t.triton_type)
                warm.inputs[t.name].dims.extend(shape)
                warm.inputs[t.name].zero_data = True
    validate_config(config, io)
    return config


def _concrete(t: TensorIO, shape: list[int], batching: bool, sample: Sequence[int] | None) -> list[int]:
    """Warm-up dims for a tensor with variable dims: the sample shape the graph was exported at."""
    if sample is not None and len(sample) == len(shape) - (0 if batching else 1):
        full = list(sample) if batching else [1, *sample]
        return [s if d == WILDCARD else d for d, s in zip(shape, full)]
    raise ConfigError(
        f"input '{t.name}' has variable dims {shape} and no sample shape to warm up with: pass --no-warmup"
    )


# --- text ----------------------------------------------------------------------------------------


def _scalar(fd, value) -> str:  # type: ignore[no-untyped-def]
    from google.protobuf import text_encoding

    if fd.type == fd.TYPE_ENUM:
        return fd.enum_type.values_by_number[value].name
    if fd.type == fd.TYPE_BOOL:
        return "true" if value else "false"
    if fd.type in (fd.TYPE_STRING, fd.TYPE_BYTES):
        raw = value.encode() if isinstance(value, str) else value
        return '"' + text_encoding.CEscape(raw, as_utf8=True) + '"'
    return repr(value) if fd.type in (fd.TYPE_FLOAT, fd.TYPE_DOUBLE) else str(value)


#: Field order in the written text: Triton's documentation order, not the proto's field numbers.
_ORDER = {
    "inference.ModelConfig": (
        "name",
        "platform",
        "backend",
        "default_model_filename",
        "max_batch_size",
        "input",
        "output",
        "dynamic_batching",
        "instance_group",
        "optimization",
        "parameters",
        "model_warmup",
    ),
    "inference.ModelInstanceGroup": ("name", "kind", "count"),
}
#: Fields written even at their default value, because the reader should see them.
_ALWAYS = {("inference.ModelInstanceGroup", "kind")}


def _fields(message):  # type: ignore[no-untyped-def]
    desc = message.DESCRIPTOR
    present = dict(message.ListFields())
    for full, field_name in _ALWAYS:
        if desc.full_name == full:
            fd = desc.fields_by_name[field_name]
            present.setdefault(fd, getattr(message, field_name))
    order = _ORDER.get(desc.full_name, ())
    rank = {n: i for i, n in enumerate(order)}
    return sorted(present.items(), key=lambda item: (rank.get(item[0].name, len(order)), item[0].number))


def _render(message, indent: int) -> list[str]:  # type: ignore[no-untyped-def]
    pad = "  " * indent
    lines: list[str] = []
    for fd, value in _fields(message):
        is_map = fd.message_type is not None and fd.message_type.GetOptions().map_entry
        if is_map:
            key_fd, value_fd = fd.message_type.fields_by_name["key"], fd.message_type.fields_by_name["value"]
            for key in sorted(value):
                lines.append(f"{pad}{fd.name} {{")
                lines.append(f"{pad}  key: {_scalar(key_fd, key)}")
                if value_fd.message_type is not None:
                    lines += [f"{pad}  value {{", *_render(value[key], indent + 2), f"{pad}  }}"]
                else:
                    lines.append(f"{pad}  value: {_scalar(value_fd, value[key])}")
                lines.append(f"{pad}}}")
        elif fd.label == fd.LABEL_REPEATED and fd.message_type is not None:
            lines.append(f"{pad}{fd.name} [")
            for i, item in enumerate(value):
                lines += [f"{pad}  {{", *_render(item, indent + 2), f"{pad}  }}" + ("," if i < len(value) - 1 else "")]
            lines.append(f"{pad}]")
        elif fd.label == fd.LABEL_REPEATED:
            lines.append(f"{pad}{fd.name}: [" + ", ".join(_scalar(fd, v) for v in value) + "]")
        elif fd.message_type is not None:
            lines += [f"{pad}{fd.name} {{", *_render(value, indent + 1), f"{pad}}}"]
        else:
            lines.append(f"{pad}{fd.name}: {_scalar(fd, value)}")
    return lines


def render_config(config, header: Sequence[str] = ()) -> str:  # type: ignore[no-untyped-def]
    """``config`` as ``config.pbtxt`` text (lists inline, as Triton's documentation writes them).

    The text is parsed back and must give the same message: what is written is exactly
    what was validated.
    """
    text = "".join(f"# {line}\n" for line in header) + "\n".join(_render(config, 0)) + "\n"
    if parse_config(text, where="(rendered)") != config:
        raise AssertionError("config.pbtxt rendering does not round-trip")  # a bug, not a user error
    return text


def parse_config(text: str, where: str = CONFIG_FILE):  # type: ignore[no-untyped-def]
    """Parse ``config.pbtxt`` text with the ModelConfig protobuf; a malformed one is a ConfigError."""
    from google.protobuf import text_format

    pb2 = model_config_pb2()
    config = pb2.ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise ConfigError(f"{where} is not a valid Triton model configuration: {exc}") from exc
    return config


# --- validation ------------------------------------------------------------------------------------


def _type_name(pb2, value: int) -> str:  # type: ignore[no-untyped-def]
    try:
        return pb2.DataType.Name(value)
    except ValueError:
        return str(value)


def validate_config(config, io: GraphIO, where: str | None = None) -> None:  # type: ignore[no-untyped-def]
    """Apply the server's and the onnxruntime backend's load-time rules to ``config`` for the graph ``io``.

    Raises :class:`ConfigError` naming the first rule broken.
    """
    pb2 = model_config_pb2()
    name = config.name
    at = where or (f"model '{name}'" if name else "the configuration")

    def fail(problem: str) -> None:
        raise ConfigError(f"{at}: {problem}")

    if not name:
        fail("must specify 'name'")
    if not config.platform and not config.backend:
        fail(f"must specify platform '{PLATFORM}' or backend '{BACKEND}'")
    if config.backend and config.backend not in BACKENDS:
        fail(
            f"backend '{config.backend}' is not one of {', '.join(BACKENDS)} "
            "(this toolkit configures ONNX graphs for these two)"
        )
    openvino = config.backend == OPENVINO_BACKEND
    if config.platform and (openvino or config.platform != PLATFORM):
        fail(f"platform '{config.platform}' does not go with backend '{config.backend or BACKEND}'")
    if openvino and config.default_model_filename != MODEL_FILE:
        fail(
            f"the openvino backend reads model.xml unless default_model_filename names the graph: "
            f'set default_model_filename: "{MODEL_FILE}"'
        )
    mbs = config.max_batch_size
    if mbs < 0:
        fail(f"max_batch_size must be 0 or more, got {mbs}")

    # inputs and outputs: the server's shape rules, then the backend's comparison with the graph
    for kind, declared, graph_side in (("input", config.input, io.inputs), ("output", config.output, io.outputs)):
        seen: set[str] = set()
        for t in declared:
            if not t.name:
                fail(f"an {kind} must specify 'name'")
            if t.name in seen:
                fail(f"{kind} '{t.name}' is declared twice")
            seen.add(t.name)
            if t.data_type == pb2.TYPE_INVALID:
                fail(f"{kind} '{t.name}' must specify 'data_type'")
            if not t.dims:
                fail(f"{kind} '{t.name}' must specify 'dims'")
            bad = [d for d in t.dims if d < 1 and d != WILDCARD]
            if bad:
                fail(f"{kind} '{t.name}': dimension {bad[0]} must be an integer >= 1, or -1 for a variable size")
            if t.HasField("reshape"):
                fail(f"{kind} '{t.name}': reshape is not supported by this toolkit's configurations")
            graph = next((g for g in graph_side if g.name == t.name), None)
            if graph is None:
                names = ", ".join(g.name for g in graph_side)
                fail(f"unexpected {kind} '{t.name}': the graph's {kind}s are {names}")
            assert graph is not None
            declared_type = _type_name(pb2, t.data_type)
            if declared_type != graph.triton_type:
                fail(
                    f"{kind} '{t.name}' is declared {declared_type}, the graph's is {graph.triton_type}: "
                    "the data types must match"
                )
            _compare_dims(fail, kind, t.name, graph, list(t.dims), mbs, exact=kind == "output")
    if len(config.input) != len(io.inputs):
        missing = [g.name for g in io.inputs if g.name not in {t.name for t in config.input}]
        fail(f"declares {len(config.input)} inputs, the graph has {len(io.inputs)} (missing: {', '.join(missing)})")
    if not config.output:
        fail("declares no outputs")

    # dynamic batching (core's ValidateModelConfig)
    if config.HasField("dynamic_batching"):
        for size in config.dynamic_batching.preferred_batch_size:
            if size <= 0:
                fail(f"dynamic batching preferred size must be positive, got {size}")
            if size > mbs:
                fail(f"dynamic batching preferred size {size} must be <= max_batch_size ({mbs})")
    if config.HasField("sequence_batching"):
        fail("sequence batching is for stateful models; these graphs are stateless")

    # instance groups
    kinds = []
    for group in config.instance_group:
        kind = pb2.ModelInstanceGroup.Kind.Name(group.kind)
        kinds.append(kind)
        if group.count < 0:
            fail(f"instance group count must be at least 1, got {group.count}")
        if kind in ("KIND_CPU", "KIND_MODEL") and group.gpus:
            fail(f"instance group of kind {kind} specifies GPUs {list(group.gpus)}")
        if group.profile:
            fail("instance group 'profile' is only supported for TensorRT plan models")

    if openvino:
        _validate_openvino(fail, config, kinds)
        return _validate_warmup(fail, config, mbs)

    # accelerators: the backend refuses unknown names; GPU ones are never used by CPU-only instances
    accel = config.optimization.execution_accelerators
    for acc in accel.gpu_execution_accelerator:
        if acc.name not in GPU_ACCELERATORS:
            fail(
                f"unknown GPU execution accelerator '{acc.name}': "
                f"the onnxruntime backend knows {', '.join(GPU_ACCELERATORS)}"
            )
        if kinds and all(k == "KIND_CPU" for k in kinds):
            fail(f"GPU execution accelerator '{acc.name}' with only KIND_CPU instances would never be used")
        mode = acc.parameters.get("precision_mode")
        if mode is not None and mode not in TRT_PRECISION_MODES:
            fail(f"TensorRT precision_mode '{mode}' is not one of {', '.join(TRT_PRECISION_MODES)}")
    for acc in accel.cpu_execution_accelerator:
        if acc.name not in CPU_ACCELERATORS:
            fail(
                f"unknown CPU execution accelerator '{acc.name}': "
                f"the onnxruntime backend knows {', '.join(CPU_ACCELERATORS)}"
            )
    for key in ("intra_op_thread_count", "inter_op_thread_count"):
        if key in config.parameters:
            value = config.parameters[key].string_value
            if not value.isdigit():
                fail(f"parameter {key} must be a whole number, got {value!r}")

    _validate_warmup(fail, config, mbs)


def _validate_openvino(fail, config, kinds: list[str]) -> None:  # type: ignore[no-untyped-def]
    """Triton's OpenVINO backend: CPU instances, no accelerators, its parameters as it parses them."""
    if any(k != "KIND_CPU" for k in kinds):
        fail(f"the openvino backend runs KIND_CPU instances only, got {', '.join(kinds)}")
    accel = config.optimization.execution_accelerators
    if accel.gpu_execution_accelerator or accel.cpu_execution_accelerator:
        fail("execution accelerators belong to the onnxruntime backend, not the openvino backend")
    for key, param in config.parameters.items():
        value = param.string_value.strip().lower()
        if key in OPENVINO_NUMBER_PARAMETERS and not value.isdigit():
            fail(f"parameter {key} must be a non-negative number, got {param.string_value!r}")
        if key == "NUM_STREAMS" and not (value.isdigit() or value in ("auto", "numa")):
            fail(f"parameter NUM_STREAMS must be AUTO, NUMA or a number, got {param.string_value!r}")
        if key == "PERFORMANCE_HINT" and value.upper() not in OPENVINO_HINTS:
            fail(f"parameter PERFORMANCE_HINT must be one of {', '.join(OPENVINO_HINTS)}, got {param.string_value!r}")
        if key == "HINT_BF16" and value != "yes":
            fail(f"parameter HINT_BF16 must be YES, got {param.string_value!r}")


def _validate_warmup(fail, config, mbs: int) -> None:  # type: ignore[no-untyped-def]
    # warm-up (the server builds these requests itself; every variable dim must be concrete)
    pb2 = model_config_pb2()
    declared_inputs = {t.name: t for t in config.input}
    for warm in config.model_warmup:
        label = f"model_warmup '{warm.name or '?'}'"
        if warm.batch_size < 0 or warm.batch_size > max(mbs, 1):
            fail(f"{label}: batch_size {warm.batch_size} must be between 1 and {max(mbs, 1)}")
        for input_name, data in warm.inputs.items():
            t = declared_inputs.get(input_name)
            if t is None:
                fail(f"{label} names input '{input_name}', which the configuration does not declare")
            assert t is not None
            if data.data_type != t.data_type:
                fail(
                    f"{label}: input '{input_name}' is {_type_name(pb2, data.data_type)}, "
                    f"declared {_type_name(pb2, t.data_type)}"
                )
            if any(d < 1 for d in data.dims):
                fail(f"{label}: input '{input_name}' needs every dimension concrete (>= 1), got {list(data.dims)}")
            if len(data.dims) != len(t.dims) or any(d != w for d, w in zip(t.dims, data.dims) if d != WILDCARD):
                fail(f"{label}: input '{input_name}' dims {list(data.dims)} do not fit the declared {list(t.dims)}")
            if data.WhichOneof("input_data_type") is None:
                fail(f"{label}: input '{input_name}' needs zero_data, random_data or input_data_file")
        missing = [n for n in declared_inputs if n not in warm.inputs]
        if missing:
            fail(f"{label} gives no data for input '{missing[0]}'")


def _compare_dims(fail, kind: str, name: str, graph: TensorIO, dims: list[int], mbs: int, exact: bool) -> None:  # type: ignore[no-untyped-def]
    """The onnxruntime backend's CompareDimsSupported, with its messages made plain."""
    model = graph.dims
    if mbs > 0:
        if not model or model[0] != WILDCARD:
            first = f"a fixed batch dimension of {model[0]}" if model else "no dimensions"
            fail(
                f"{kind} '{name}' has {first} in the graph (shape {graph.describe()}), so with max_batch_size {mbs} "
                "Triton's onnxruntime backend refuses it: "
                "export the graph with a symbolic batch, or use max_batch_size 0"
            )
        full = [WILDCARD, *dims]
        how = f"max_batch_size {mbs} adds a batch dimension: [-1] + dims"
    else:
        full = dims
        how = "max_batch_size 0: dims are the whole shape"
    ok = len(model) == len(full) and all((m == f) for m, f in zip(model, full) if exact or m != WILDCARD)
    if not ok:
        fail(f"{kind} '{name}': dims {dims} give shape {full} ({how}), the graph's is {graph.describe()}")


@dataclass
class ConfigSummary:
    """What a configuration says, in a few words, for the commands to print."""

    name: str
    max_batch_size: int
    preferred_batch_sizes: list[int]
    max_queue_delay_us: int | None
    instances: list[str] = field(default_factory=list)
    accelerators: list[str] = field(default_factory=list)
    warmup: list[str] = field(default_factory=list)
    backend: str = BACKEND
    parameters: dict[str, str] = field(default_factory=dict)


def summarize(config) -> ConfigSummary:  # type: ignore[no-untyped-def]
    pb2 = model_config_pb2()
    batching = config.HasField("dynamic_batching")
    return ConfigSummary(
        name=config.name,
        max_batch_size=config.max_batch_size,
        preferred_batch_sizes=list(config.dynamic_batching.preferred_batch_size) if batching else [],
        max_queue_delay_us=config.dynamic_batching.max_queue_delay_microseconds if batching else None,
        instances=[f"{max(g.count, 1)}x {pb2.ModelInstanceGroup.Kind.Name(g.kind)}" for g in config.instance_group],
        accelerators=[a.name for a in config.optimization.execution_accelerators.gpu_execution_accelerator],
        warmup=[w.name for w in config.model_warmup],
        backend=config.backend or BACKEND,
        parameters={k: v.string_value for k, v in sorted(config.parameters.items())},
    )


# --- reading a configuration back -------------------------------------------------------------------

_KINDS_TO_DEVICE = {"KIND_CPU": "cpu", "KIND_GPU": "cuda", "KIND_AUTO": "auto"}


def options_from_config(config) -> ModelOptions:  # type: ignore[no-untyped-def]
    """The :class:`ModelOptions` a validated configuration says, so the local server can run it.

    :func:`build_config` of the result gives the same configuration back, which the caller can
    check (:func:`same_settings`): a setting this toolkit cannot reproduce is then named, not
    quietly dropped.
    """
    pb2 = model_config_pb2()
    kinds = {pb2.ModelInstanceGroup.Kind.Name(g.kind) for g in config.instance_group} or {"KIND_AUTO"}
    if len(kinds) > 1:
        raise ConfigError(f"model '{config.name}': instance groups of several kinds ({', '.join(sorted(kinds))})")
    params = {k: v.string_value for k, v in config.parameters.items()}
    openvino = config.backend == OPENVINO_BACKEND
    gpu = list(config.optimization.execution_accelerators.gpu_execution_accelerator)
    trt = next((a for a in gpu if a.name == "tensorrt"), None)
    streams = params.get("NUM_STREAMS", "")
    batching = config.HasField("dynamic_batching")
    threads_key = "INFERENCE_NUM_THREADS" if openvino else "intra_op_thread_count"
    return ModelOptions(
        max_batch=config.max_batch_size,
        preferred_batch_sizes=tuple(config.dynamic_batching.preferred_batch_size) if batching else None,
        max_queue_delay_us=config.dynamic_batching.max_queue_delay_microseconds if batching else 0,
        instances=sum(max(g.count, 1) for g in config.instance_group) or 1,
        device=_KINDS_TO_DEVICE[kinds.pop()],
        warmup=bool(config.model_warmup),
        tensorrt=(trt.parameters.get("precision_mode", "FP16").lower() if trt is not None else None),
        cuda_graphs=any(
            a.parameters.get("enable_cuda_graph") == "1" or a.parameters.get("trt_cuda_graph_enable") == "1"
            for a in gpu
        ),  # fmt: skip
        threads=int(params[threads_key])
        if params.get(threads_key, "").isdigit() and int(params[threads_key])
        else None,
        backend=config.backend or BACKEND,
        openvino_streams=int(streams) if openvino and streams.isdigit() else None,
        openvino_hint=params["PERFORMANCE_HINT"].upper() if openvino and "PERFORMANCE_HINT" in params else None,
        bf16=openvino and params.get("HINT_BF16", "").lower() == "yes",
    )


def same_settings(given, rebuilt) -> list[str]:  # type: ignore[no-untyped-def]
    """What ``given`` sets that ``rebuilt`` (from :func:`options_from_config`) does not: empty when equal."""
    a, b = summarize(given), summarize(rebuilt)
    # sequential execution (the default) never uses inter-op threads: that parameter changes nothing
    for side in (a, b):
        side.parameters.pop("inter_op_thread_count", None)
    out = []
    for key in ("max_batch_size", "preferred_batch_sizes", "max_queue_delay_us", "instances", "accelerators",
                "backend", "parameters"):  # fmt: skip
        if getattr(a, key) != getattr(b, key):
            out.append(f"{key} {getattr(a, key)} (the local server would run {getattr(b, key)})")
    if given.optimization.HasField("graph") or given.optimization.priority:
        out.append("optimization.graph / priority")
    return out
