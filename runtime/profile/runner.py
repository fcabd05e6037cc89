"""Profile one graph of an artifact: where the time goes, per layer, under the model's own names.

:func:`profile_artifact` never prints (it reports through ``say``) and returns a typed
:class:`~runtime.profile.records.Profile`. Order of work:

1. validate the request and resolve the graph (``runtime.resolve``: a stale graph is rebuilt
   with its recorded settings, said in one line, or refused with ``rebuild=False``);
2. decide the device once; run the engine's collector (many runs, profiled and unprofiled
   interleaved);
3. map every engine node to its module (the artifact's layer map), count FLOPs from the fp32
   graph's shapes, measure the peaks of the precisions the layers ran in;
4. for a variant: each layer's SQNR against the fp32 graph (``runtime.parity.explain``), joined
   on the same module names; on onnxruntime, the placement audit.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from exporter import artifact as art
from exporter.errors import UserError, first_line
from exporter.layers import LayerIndex, layer_index

from ..machine import DeviceChoice, MachinePeak, compute_precision, measure_peak, resolve_device
from ..openvino_model import hint_for
from ..sessions import DEVICES, SessionConfig
from .audit import audit
from .collectors import ENGINES, WARMUP, EngineRun, OnnxruntimeCollector, OpenvinoCollector
from .records import Profile
from .rows import LayerError, coverage, layer_rows, sqnr_by_layer

#: Precisions besides the artifact's graph variants: bf16 is OpenVINO's hint on the fp32 graph.
EXTRA_PRECISIONS = ("bf16",)


@dataclass(frozen=True)
class ProfileConfig:
    """One profile: which graph (``precision``: fp32, fp16, int8, bf16 or a variant key such as
    ``int8.opt-cpu``; None: the graph the artifact argument names, else fp32), on which engine and
    device, at which batch and input size, with how many runs (None: about 4 s worth, 10-100)."""

    artifact: str
    precision: str | None = None
    engine: str = "onnxruntime"
    device: str = "auto"
    batch_size: int = 1
    input_size: tuple[int, int] | None = None
    threads: int | None = None
    runs: int | None = None
    warmup: int = WARMUP
    reference: str | None = None
    artifacts_dir: Path = art.DEFAULT_ARTIFACTS_DIR
    rebuild: bool = True
    peaks: bool = True
    sqnr: bool = True
    tf32: bool = True
    seed: int = 0

    def validate(self) -> None:
        if self.engine not in ENGINES:
            raise UserError(f"unknown engine {self.engine!r}: choose {', '.join(ENGINES)}")
        if self.device not in DEVICES:
            raise UserError(f"unknown device {self.device!r}: choose one of {', '.join(DEVICES)}")
        if self.batch_size < 1:
            raise UserError("--batch-size must be at least 1")
        if self.threads is not None and self.threads < 1:
            raise UserError("--threads must be at least 1")
        if self.runs is not None and self.runs < 1:
            raise UserError("--runs must be at least 1")
        if self.warmup < 0:
            raise UserError("--warmup must be >= 0")
        if self.precision is not None and self.precision not in EXTRA_PRECISIONS:
            art.VariantKey.parse(self.precision)
        if self.engine == "onnxruntime" and self.precision == "bf16":
            raise UserError("bf16 is OpenVINO's precision hint: add --engine openvino")
        if self.engine == "openvino":
            if self.device == "cuda":
                raise UserError("--engine openvino runs on CPU only: use --device cpu (or auto)")
            # auto: the precision search's int8 QDQ graph with float layers (in bf16 where its record says so)
            if self.precision not in (None, "fp32", "int8", "bf16", "auto"):
                raise UserError(
                    "OpenVINO profiles the fp32 graph (fp32 or bf16 hint), the int8 QDQ graph or the auto graph, "
                    f"not {self.precision}"
                )


def _graph_key(config: ProfileConfig) -> art.VariantKey | None:
    if config.precision is None:
        return None
    if config.precision in EXTRA_PRECISIONS:
        return art.BASE
    return art.VariantKey.parse(config.precision)


def has_sqnr(key: art.VariantKey) -> bool:
    """Whether the graph ``key`` names gets per-layer SQNR against fp32: every variant of another
    precision (fp16, int8, auto's mixed graph, and their offline-optimized forms), never fp32 itself."""
    return key.precision != art.BASE.precision


def input_shape(config: ProfileConfig, manifest: art.Manifest) -> tuple[int, ...]:
    """The per-sample shape to profile at: the export size, or ``--input-size`` on a dynamic-size graph."""
    shape = manifest.input_shape
    if config.input_size is None:
        return tuple(shape)
    if not manifest.dynamic_size:
        raise UserError(
            f"{manifest.name} was exported at a fixed size {'x'.join(map(str, shape))}: "
            "--input-size applies to artifacts exported with --dynamic-size"
        )
    from ..parity import check_sizes

    check_sizes(tuple(shape[1:3]), manifest.min_size, [config.input_size])  # type: ignore[arg-type]
    return (shape[0], *config.input_size)


@dataclass
class _Run:
    config: ProfileConfig
    say: Callable[[str], None]
    notes: list[str] = field(default_factory=list)

    def note(self, line: str) -> None:
        self.notes.append(line)
        self.say(f"note: {line}")

    def collect(  # type: ignore[no-untyped-def]
        self, graph: bytes, x, threads: int, hint: str | None = None
    ) -> tuple[EngineRun, DeviceChoice, SessionConfig]:
        """Profile ``graph`` on ``x``; ``hint``: the OpenVINO precision hint its variant was verified with."""
        c = self.config
        session = SessionConfig(device=c.device, threads=threads, tf32=c.tf32, allow_spinning=False)
        if c.engine == "openvino":
            from ..bench.engines import openvino_missing

            why = openvino_missing("cpu")
            if why:
                raise UserError(f"openvino: {why}")
            if c.precision == "bf16" or hint == "bf16":
                from ..bench.engines import openvino_bf16_missing

                why = openvino_bf16_missing()
                if why and c.precision == "bf16":
                    raise UserError(f"openvino bf16: {why}")
                if why:
                    raise UserError(f"openvino: this graph was verified with OpenVINO's bf16 hint, and {why}")
            choice = DeviceChoice("cpu", "OpenVINO runs on CPU", ["OpenVINO CPU"])
            session = SessionConfig(device="cpu", threads=threads, allow_spinning=False)
            collector = OpenvinoCollector(threads, c.precision or "fp32", hint)
        else:
            choice = resolve_device(session, needs_torch=False)
            self.say(f"running on {choice.device.upper()}: {choice.reason}")
            session = SessionConfig(device=choice.device, threads=threads, tf32=c.tf32, allow_spinning=False)
            collector = OnnxruntimeCollector(session)
        self.say(f"profiling {c.engine} on batch {c.batch_size} ({'x'.join(map(str, x.shape[1:]))})")
        return collector(graph, x, c.warmup, c.runs), choice, session

    def peaks(
        self, choice: DeviceChoice, session: SessionConfig, threads: int, precisions: set[str]
    ) -> MachinePeak | None:
        if not self.config.peaks:
            return None
        wanted = sorted({compute_precision("fp32", choice.device, self.config.tf32), *precisions})
        self.say(f"measuring the machine: peaks of {', '.join(wanted)} and the memory bandwidth")
        try:
            return measure_peak(choice, session, threads, precisions=wanted)
        except UserError as exc:
            self.note(f"no peaks: {first_line(exc)}")
            return None

    def errors(
        self, artifact: art.Artifact, key: art.VariantKey, index: LayerIndex
    ) -> tuple[dict[str, LayerError], str | None]:
        """Each layer's SQNR for a variant (``--explain``'s figures), or why there are none."""
        c = self.config
        if not c.sqnr or not has_sqnr(key):
            return {}, None
        from exporter.reference import rebuild

        from ..parity import DEFAULT_BATCH_SIZES
        from ..parity.explain import explain_artifact
        from ..resolve import resolve

        if artifact.manifest.source.kind != "zoo" and c.reference is None:
            self.note(
                f"no per-layer SQNR: {artifact.name} is your own model; --reference FILE.py:Builder names its code "
                "(code named in a manifest is never imported)"
            )
            return {}, None
        plain = art.VariantKey(key.precision)
        self.say(f"per-layer SQNR of the {plain} graph against fp32 (runtime.parity --explain)")
        try:
            reference = rebuild(artifact.manifest, c.reference)
            graph = resolve(
                str(artifact.directory), key=plain, artifacts_dir=c.artifacts_dir, rebuild=c.rebuild,
                reference=c.reference, say=self.say,
            ).graph  # fmt: skip
            explanation = explain_artifact(artifact, plain, graph, reference, batch_sizes=DEFAULT_BATCH_SIZES)
        except UserError as exc:
            self.note(f"no per-layer SQNR: {first_line(exc)}")
            return {}, None
        source = f"{plain} graph vs the fp32 graph on {explanation.inputs} inputs, batches {explanation.batch_sizes}"
        if key.optimize_for:
            source += f" (the {key} graph is onnxruntime's optimization of it: the same quantization)"
        return sqnr_by_layer(explanation, index), source


def profile_artifact(config: ProfileConfig, say: Callable[[str], None] = lambda _line: None) -> Profile:
    """Profile the graph ``config`` names; see the module docstring."""
    import onnx

    from exporter.data import random_input

    from ..machine import environment
    from ..resolve import resolve
    from .flops import node_flops

    config.validate()
    run = _Run(config, say)
    resolved = resolve(
        config.artifact, key=_graph_key(config), artifacts_dir=config.artifacts_dir, rebuild=config.rebuild,
        reference=config.reference, say=say,
    )  # fmt: skip
    artifact, key = resolved.artifact, resolved.key
    if config.engine == "openvino" and key.optimize_for:
        raise UserError(f"the {key} graph holds onnxruntime-only operators: OpenVINO profiles fp32 or int8")
    shape = input_shape(config, artifact.manifest)
    threads = config.threads or os.cpu_count() or 1
    x = random_input(shape, config.batch_size, seed=config.seed).numpy()
    # a variant verified with another OpenVINO precision hint (an auto graph's float layers in bf16) runs with it
    hint = hint_for(artifact, str(key)) if config.engine == "openvino" else None
    measured, choice, session = run.collect(resolved.graph, x, threads, hint)

    index = layer_index(artifact)
    if not index.known:
        run.note(f"{artifact.name} was exported before layer maps were recorded: layers are node names (export again)")
    base = onnx.load(str(artifact.path()), load_external_data=False)
    flops = node_flops(base, (config.batch_size, *shape))
    if key != art.BASE:  # a variant's own quantized nodes (a QLinearConv of a QOperator graph) count as well
        flops = {**node_flops(onnx.load_from_string(resolved.graph), (config.batch_size, *shape)), **flops}
    precisions = {compute_precision(n.precision, choice.device, config.tf32) for n in measured.nodes if n.precision}
    machine = run.peaks(choice, session, threads, precisions)
    errors, sqnr_source = run.errors(artifact, key, index)
    rows = layer_rows(
        measured.nodes, index, flops=flops, machine=machine, device=choice.device, tf32=config.tf32, errors=errors
    )
    cover = coverage(measured.nodes, measured.profiled_ms, measured.profiled_wall_ms, measured.unprofiled_ms)
    placement = audit(measured.nodes, choice.device, measured.graph_nodes) if config.engine == "onnxruntime" else None
    for line in measured.notes:
        run.note(line)
    env = environment(choice, threads)
    label = "bf16" if config.precision == "bf16" else str(key)
    return Profile(
        created=art.now(),
        artifact=artifact.name,
        graph=label,
        file=str(resolved.path),
        engine=config.engine,
        device=choice.device,
        providers=measured.providers,
        threads=threads,
        batch_size=config.batch_size,
        input_shape=list(shape),
        warmup=measured.warmup,
        runs=measured.runs,
        layers=rows,
        nodes=measured.nodes,
        coverage=cover,
        placement=placement,
        machine=machine,
        layer_map=index.known,
        sqnr_source=sqnr_source,
        notes=run.notes,
        environment=env,
    )
