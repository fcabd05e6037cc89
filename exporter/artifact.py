"""The artifact contract: what an exported model is on disk, typed, versioned, read and written only here.

An artifact is a folder ``<artifacts>/NAME/`` holding the fp32 graph ``NAME.onnx``, its
variants (``NAME.fp16.onnx``, ``NAME.int8.opt-cpu.onnx``...) and ``manifest.json``, which
records how the graph was made (source, weights, export settings), what it is (inputs,
outputs, operators, sha256) and how well it agrees with PyTorch. :class:`Manifest` is that
file's schema: it is validated on every read (a bad manifest is one error naming the
field) and written as strict JSON (no NaN/Infinity). No other module reads manifest keys.

Every read-modify-write of an artifact happens under its lock (:func:`artifact_lock`), so
concurrent runs either both land or one waits for the other.

The manifest never causes code to run: it records where a user model came from
(``source.ref``) for the reader's information, but nothing here or elsewhere imports it.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import hashlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from filelock import FileLock, Timeout
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, field_validator, model_validator

from .errors import UserError, describe_os_error
from .files import AtomicWriter, NotRegularFile, read_regular_text, sha256_file, strict_json
from .options import ARTIFACTS_DIR, PRECISIONS, TARGETS

#: A variant's precision: a graph precision, or ``auto``, the mixed int8/float (``--target cpu``) or
#: fp16/float (``--target cuda``) graph the precision search chose (``NAME.auto.onnx``)
VARIANT_PRECISIONS = (*PRECISIONS, "auto")

SCHEMA_VERSION = 2
MANIFEST_FILE = "manifest.json"
DEFAULT_ARTIFACTS_DIR = ARTIFACTS_DIR
BATCH_DIM = "batch"
HEIGHT_DIM = "height"
WIDTH_DIM = "width"

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")
#: Longest artifact name: the longest file made from it (``.NAME.int8.opt-cuda.onnx.<random>.partial``)
#: must stay within the usual 255-byte limit of a file name.
MAX_NAME = 128
_ZOO_NAME = re.compile(r"^[A-Za-z0-9_]+$")


class ArtifactError(UserError):
    """An artifact that is missing, stale or whose manifest does not follow the contract."""


class DamagedManifest(ArtifactError):
    """A ``manifest.json`` that cannot be read as the contract (truncated, not JSON, an older schema, a FIFO):
    only exporting the model again mends it. Every command reading one says so in the same words."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path, self.problem = path, problem  # the problem alone, for a caller giving its own remedy
        super().__init__(f"{path} {problem}: {reexport_advice(path.parent)}")


def reexport_advice(directory: Path) -> str:
    """How to mend an artifact whose manifest is damaged: what it recorded (model, weights) is unreadable,
    so the command names the folder and leaves MODEL to the user."""
    return (
        f"remove it and export the model again: python -m exporter MODEL --output {directory} "
        "(MODEL: the zoo name or your FILE.py:Builder; add --weights FILE where it held trained weights)"
    )


class _Record(BaseModel):
    """Base of every manifest record: unknown keys and non-finite numbers are refused."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


# --- numerical agreement, as recorded -------------------------------------------------------


class Tolerance(_Record):
    """Pass criteria for one output: elementwise ``|got - ref| <= atol + rtol*|ref|`` and summary floors.

    ``atol=None`` turns the elementwise test off (int8 is judged by SQNR and cosine);
    ``min_top1=None`` means top-1 agreement is reported, not enforced (it means nothing
    on the near-constant logits of an untrained network).
    """

    atol: float | None
    rtol: float
    min_cosine: float
    min_sqnr_db: float | None = None
    min_top1: float | None = None
    #: with a labelled held-out set: the graph's accuracy may trail PyTorch fp32's by at most this
    max_accuracy_drop: float | None = None


class OutputComparison(_Record):
    """One output of one batch at one input size, compared with PyTorch, and the verdict.

    Error figures are None where the graph's output was not finite; ``sqnr_db`` is None
    where the outputs are identical (no quantization noise at all).
    """

    output: str
    batch_size: int
    height: int | None = None
    width: int | None = None
    max_abs_err: float | None
    max_rel_err: float | None
    mean_abs_err: float | None
    ref_max_abs: float
    cosine_min: float | None
    sqnr_db: float | None
    top1_agreement: float | None
    top5_agreement: float | None
    needed_atol: float | None
    needed_rtol: float | None
    passed: bool
    failures: list[str]


class Accuracy(_Record):
    """Accuracy of both sides on a labelled held-out set (digits-trained models)."""

    dataset: str
    n: int
    pytorch_fp32: float
    onnx: float
    top1_agreement: float
    passed: bool = True
    failure: str | None = None


class ParityRecord(_Record):
    """A parity run: where it ran, on what inputs, against which tolerance, every comparison."""

    device: str
    providers: list[str]
    precision: str
    inputs: str
    seed: int
    batch_sizes: list[int]
    sizes: list[tuple[int, int]] = Field(default_factory=list)
    tolerance: Tolerance
    passed: bool
    results: list[OutputComparison]
    accuracy: Accuracy | None = None
    #: where the graph ran: onnxruntime (with ``providers``) or openvino, with the inference precision it ran
    #: its float parts in (OpenVINO's hint, read back from the compiled model)
    engine: str = "onnxruntime"
    inference_precision: str | None = None

    def failures(self) -> list[str]:
        out = []
        for r in self.results:
            where = f"batch {r.batch_size}" + (f" at {r.height}x{r.width}" if r.height else "")
            out += [f"{where}, output '{r.output}': {f}" for f in r.failures]
        if self.accuracy is not None and self.accuracy.failure:
            out.append(self.accuracy.failure)
        return out

    def worst(self, figure: str) -> float | None:
        """The largest value of an error figure over all comparisons (None if any is not finite)."""
        values = [getattr(r, figure) for r in self.results]
        return None if any(v is None for v in values) or not values else max(values)


# --- what the graph is and how it was made ------------------------------------------------


class TensorSpec(_Record):
    name: str
    shape: list[int | str]
    dtype: str


class Source(_Record):
    """Where the model came from. ``ref`` is recorded for the reader; it is never imported."""

    kind: Literal["zoo", "file", "module"]
    model: str | None = None
    ref: str | None = None
    class_name: str | None = None

    @model_validator(mode="after")
    def _zoo_names_a_zoo_model(self) -> Source:
        # A zoo source is rebuilt by name; a name that looks like FILE.py:Builder would be imported.
        if self.kind == "zoo" and not (self.model and _ZOO_NAME.match(self.model)):
            raise ValueError(f"a zoo source names a zoo model (letters, digits, '_'), not {self.model!r}")
        return self


class Weights(_Record):
    """The exported weights. ``random``: a zoo model seeded with ``seed`` (BatchNorm statistics
    calibrated when ``batchnorm_calibrated``); ``file``: loaded from ``path`` (``sha256``);
    ``as_given``: the user's model exactly as their builder or code returned it.
    ``state_sha256`` fingerprints the exported state_dict, whatever its origin;
    ``params_sha256`` the same without BatchNorm running statistics."""

    kind: Literal["random", "file", "as_given"]
    seed: int | None = None
    batchnorm_calibrated: bool = False
    path: str | None = None
    sha256: str | None = None
    state_sha256: str
    params_sha256: str


class TraceNote(_Record):
    """A place in the model's Python code whose outcome the trace froze into the graph: an ``if`` on a
    tensor's values or on the batch size, ``int(x.shape[0])``, a loop over ``range(x.shape[0])``...
    The graph computes what that line decided for the export's example input, whatever the input."""

    #: the user's source file and line (None where no frame outside torch could be found)
    file: str | None = None
    line: int | None = None
    #: the source line itself, as it read when the model was exported
    code: str | None = None
    message: str

    def where(self) -> str:
        if self.file is None:
            return "forward()"
        return f"{self.file}:{self.line}" + (f" ({self.code})" if self.code else "")

    def __str__(self) -> str:
        return f"{self.where()}: {self.message}"


class ExportSettings(_Record):
    """Everything the exporter was asked for: exporting again with these gives the same graph."""

    opset: int
    seed: int
    simplify: bool
    dynamic_size: bool
    input_shape: list[PositiveInt]
    weights: str | None = None


class LayerMap(_Record):
    """Which module of the PyTorch model each node of a graph came from (``exporter/layers.py``).

    ``nodes``: node name -> module path (``/layer1/layer1.0/conv1/Conv`` -> ``layer1.0.conv1``);
    ``scopes``: the node-name scope prefixes -> module path, for names an engine derives from
    them; ``module_types``: module path -> class (``Conv2d``); ``unmapped``: nodes traced outside
    any submodule, or added by a tool, which keep their own names. A variant's map holds
    ``nodes`` and ``unmapped`` of its own graph; the scopes and types are the fp32 graph's.
    """

    nodes: dict[str, str] = Field(default_factory=dict)
    scopes: dict[str, str] = Field(default_factory=dict)
    module_types: dict[str, str] = Field(default_factory=dict)
    unmapped: list[str] = Field(default_factory=list)


class QuantizationRecord(_Record):
    format: str
    activations: str
    weights: str
    per_channel: bool
    reduce_range: bool
    calibration_method: str
    calibration_images: int
    calibration_source: str
    calibration_dir: str | None = None
    #: the (height, width) of each group of calibration images, for a dynamic-size graph (the sizes
    #: it is verified at, or a folder's images at their own sizes); empty: the export size only
    calibration_sizes: list[tuple[int, int]] = Field(default_factory=list)
    float_nodes: list[str]
    cpu_features: dict[str, bool]
    #: why each group of ``float_nodes`` stayed float (one line per reason)
    float_reasons: list[str] = Field(default_factory=list)
    #: the graphs tried before this one and their verdicts, e.g. "all layers int8: SQNR 13.6 dB ... failed"
    attempts: list[str] = Field(default_factory=list)
    #: the PyTorch model's own agreement with itself when only its input is rounded to this graph's
    #: 8-bit input grid (random weights): no int8 graph can do much better
    input_rounding_sqnr_db: float | None = None
    input_rounding_cosine: float | None = None
    #: why the verification tolerance differs from the default for int8, where it does
    tolerance_reason: str | None = None


class LayerCost(_Record):
    """One quantizable layer as the precision search measured it (``--precision auto``)."""

    #: module path (``layer1.0.conv1``), or the node's own name where the layer map has none
    layer: str
    nodes: list[str]
    #: output SQNR (dB, against PyTorch fp32) of the graph with only this layer float, minus that of all-int8
    recovered_db: float | None
    #: output SQNR (dB) of the graph with only this layer int8 (every other layer float): its own noise; in
    #: a search for CUDA (``precision`` fp16) with only this layer fp16, and the times below are fp16's
    alone_int8_sqnr_db: float | None = None
    #: what keeping it float costs: its profiled time in fp32 minus in int8 (ms, batch of the search)
    cost_ms: float | None
    fp32_ms: float | None = None
    int8_ms: float | None = None


class EngineCheck(_Record):
    """One engine's verdict on a search candidate: the parity check (and the labelled top-1) run in it."""

    engine: str
    #: the precision OpenVINO ran the float parts in (its hint, read back); None for onnxruntime
    inference_precision: str | None = None
    sqnr_db: float | None
    cosine_min: float | None
    accuracy_drop_pp: float | None = None
    passed: bool
    failure: str | None = None


class SearchCandidate(_Record):
    """One mixed-precision graph the search built, verified against the budget and timed against fp32."""

    label: str
    #: the layers kept float (module paths; BatchNorms that cannot fold are float in every candidate)
    float_layers: list[str]
    float_nodes: list[str]
    sqnr_db: float | None
    cosine_min: float | None
    #: top-1 of the candidate on the labelled set minus that of PyTorch fp32, in points (None: no labels)
    accuracy_drop_pp: float | None = None
    top5_drop_pp: float | None = None
    passed: bool
    failure: str | None = None
    #: median latency (ms) and its 95% bootstrap interval; None where it was not timed
    latency_ms: float | None = None
    latency_low_ms: float | None = None
    latency_high_ms: float | None = None
    #: fp32 median / candidate median with its 95% bootstrap interval (above 1: faster than fp32)
    speedup: float | None = None
    speedup_low: float | None = None
    speedup_high: float | None = None
    chosen: bool = False
    #: each engine's verdict where the candidate was judged in more than onnxruntime (``--engine openvino``):
    #: it passes only where every one passes, and ``sqnr_db``/``cosine_min`` are the worst of them
    checks: list[EngineCheck] = Field(default_factory=list)
    #: ``bf16``: the same graph with its float layers in OpenVINO's bf16 (its precision hint), judged and timed
    #: so (``--engine openvino`` on a CPU with bf16 arithmetic); None: OpenVINO's f32 hint, or onnxruntime
    openvino_hint: Literal["f32", "bf16"] | None = None


class PrecisionSearchRecord(_Record):
    """How ``--precision auto`` chose its graph: the budget, what it measured, every candidate tried."""

    #: the budget in words (``output SQNR >= 25 dB``) and as the tolerance it was verified with
    budget: str
    metric: Literal["sqnr", "cosine", "accuracy"]
    threshold: float
    target: str
    engine: str
    device: str
    threads: int
    batch_size: int
    #: what the layers not kept float are: int8 (QDQ, ``--target cpu``) or fp16 (``--target cuda``); the
    #: default is what every search before ``--target cuda`` made
    precision: Literal["int8", "fp16"] = "int8"
    fp32_ms: float
    fp32_low_ms: float
    fp32_high_ms: float
    float_layers: list[str]
    #: why each layer stayed float (what it recovers, what it costs, where it stood in the search)
    float_reasons: list[str] = Field(default_factory=list)
    layers: list[LayerCost] = Field(default_factory=list)
    candidates: list[SearchCandidate] = Field(default_factory=list)
    #: the Pareto plot (latency against loss) beside the graph, or None where matplotlib is missing
    plot: str | None = None
    notes: list[str] = Field(default_factory=list)
    #: the engines every candidate was verified in (manifests from before this field: onnxruntime only)
    judged_in: list[str] = Field(default_factory=lambda: ["onnxruntime"])
    #: OpenVINO's inference precision hint the candidates were timed, profiled and judged with (engine openvino;
    #: a candidate whose ``openvino_hint`` is bf16 was judged and timed with that one instead)
    inference_precision: str | None = None


class OptimizationRecord(_Record):
    target: str
    level: str
    providers: list[str]


class VariantRecord(_Record):
    """One variant of the fp32 graph (``key`` such as ``int8`` or ``fp16.opt-cuda``)."""

    key: str
    file: str
    sha256: str
    size_bytes: int
    base_sha256: str
    created: str
    nodes: int
    op_counts: dict[str, int]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    identity_nodes_removed: int
    io_dtype: str
    kept_fp32_ops: list[str] = Field(default_factory=list)
    #: an fp16 graph's nodes kept float32 by name (an ``auto`` graph the search made for CUDA: its float
    #: layers and reductions; an int8 graph's float nodes are in ``quantization``)
    float_nodes: list[str] = Field(default_factory=list)
    quantization: QuantizationRecord | None = None
    optimization: OptimizationRecord | None = None
    #: ``auto``: the precision search that chose this graph
    precision_search: PrecisionSearchRecord | None = None
    #: the inference precision hint OpenVINO must compile this graph with where it was verified with another
    #: than its precision's default (f32): ``bf16``, an ``auto`` graph whose float layers the precision search
    #: verified and timed in OpenVINO's bf16; None: the default. onnxruntime runs those layers in fp32.
    openvino_hint: Literal["f32", "bf16"] | None = None
    parity: ParityRecord
    #: which module each node of this graph came from (None: built before layer maps were recorded)
    layers: LayerMap | None = None


class Manifest(_Record):
    """``manifest.json``: one exported model and its variants."""

    schema_version: Literal[2]
    name: str
    created: str
    file: str
    sha256: str
    size_bytes: int
    source: Source
    weights: Weights
    settings: ExportSettings
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    min_size: tuple[PositiveInt, PositiveInt] | None = None
    trace_batch: int
    num_params: int
    nodes_raw: int
    nodes: int
    op_counts: dict[str, int]
    parity: ParityRecord
    versions: dict[str, str]
    variants: dict[str, VariantRecord] = Field(default_factory=dict)
    #: which module each node of the fp32 graph came from (None: exported before layer maps were recorded)
    layers: LayerMap | None = None
    #: Python decisions in forward() the trace froze into the graph (see :class:`TraceNote`)
    trace_notes: list[TraceNote] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str) -> str:
        _check_name(name)
        return name

    @model_validator(mode="after")
    def _files_inside_the_folder(self) -> Manifest:
        # Every file a manifest names is derived from its name: a hand-edited manifest can never
        # make the toolkit read or write outside the artifact's folder.
        if self.file != BASE.file_name(self.name):
            raise ValueError(f"file must be {BASE.file_name(self.name)!r}, not {self.file!r}")
        for key_text, record in self.variants.items():
            key = VariantKey.parse(key_text)
            if key.is_base or record.key != key_text or record.file != key.file_name(self.name):
                raise ValueError(f"variant {key_text!r} must be recorded as file {key.file_name(self.name)!r}")
        return self

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The per-sample input shape the graph was exported (and traced) at."""
        return tuple(self.settings.input_shape)

    @property
    def dynamic_size(self) -> bool:
        return self.settings.dynamic_size

    def with_variant(self, record: VariantRecord) -> Manifest:
        return self.model_copy(update={"variants": {**self.variants, record.key: record}})


def now() -> str:
    """The current UTC time, ISO 8601, to the second."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


# --- variant keys --------------------------------------------------------------------------


@dataclass(frozen=True)
class VariantKey:
    """A graph of an artifact: ``fp32`` (the exported graph), ``fp16``, ``int8``, each optionally
    offline-optimized for a provider (``int8.opt-cpu``)."""

    precision: str = "fp32"
    optimize_for: str | None = None

    def __post_init__(self) -> None:
        if self.precision not in VARIANT_PRECISIONS:
            raise UserError(f"unknown precision {self.precision!r}: choose {', '.join(VARIANT_PRECISIONS)}")
        if self.optimize_for not in (None, *TARGETS):
            raise UserError(f"unknown optimization target {self.optimize_for!r}: choose {', '.join(TARGETS)}")

    @classmethod
    def parse(cls, text: str) -> VariantKey:
        """``fp32``, ``fp16``, ``int8``, optionally followed by ``.opt-cpu`` or ``.opt-cuda``."""
        precision, sep, target = text.strip().partition(".opt-")
        if (sep and not target) or "." in precision:
            raise UserError(f"bad variant {text!r}: use fp32, fp16 or int8, optionally with .opt-cpu or .opt-cuda")
        return cls(precision, target or None)

    def __str__(self) -> str:
        return self.precision + (f".opt-{self.optimize_for}" if self.optimize_for else "")

    @property
    def is_base(self) -> bool:
        """Whether this is the exported graph itself rather than a variant of it."""
        return self.precision == "fp32" and self.optimize_for is None

    def file_name(self, artifact: str) -> str:
        middle = ("" if self.precision == "fp32" else f".{self.precision}") + (
            f".opt-{self.optimize_for}" if self.optimize_for else ""
        )
        return f"{artifact}{middle}.onnx"


BASE = VariantKey()


# --- locations -----------------------------------------------------------------------------


def _check_name(name: str) -> None:
    if not _NAME.match(name or "") or name in (".", ".."):
        raise ValueError(
            f"bad artifact name {name!r}: use letters, digits, '.', '_' and '-' "
            "(it names one folder inside the output directory)"
        )
    if len(name) > MAX_NAME:
        raise ValueError(f"bad artifact name: at most {MAX_NAME} characters, not {len(name)}")
    if name.endswith(".onnx"):
        raise ValueError(f"bad artifact name {name!r}: a name ending in .onnx would read as a graph file")


def validate_name(name: str) -> str:
    """An artifact name is one plain folder name: it can never point outside the output folder."""
    try:
        _check_name(name)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    return name


def artifact_dir(name: str, artifacts_dir: str | Path = DEFAULT_ARTIFACTS_DIR) -> Path:
    return Path(artifacts_dir) / validate_name(name)


def results_name(directory: Path, artifacts_dir: str | Path = DEFAULT_ARTIFACTS_DIR) -> str:
    """The folder name a command keeps an artifact's results under (``tune/``, ``profile/``): the
    folder's own name for the artifact at ``artifacts_dir/<name>``, else ``<name>-<8 hex digits of its
    resolved path>``, so two folders never share (and replace) each other's results, whatever their
    names: ``/tmp/x/lenet5`` is ``lenet5-1a2b3c4d`` beside ``artifacts/lenet5``'s ``lenet5``."""
    resolved = Path(directory).resolve()
    if resolved == (Path(artifacts_dir) / resolved.name).resolve():
        return resolved.name
    return f"{resolved.name}-{hashlib.sha256(str(resolved).encode()).hexdigest()[:8]}"


def manifest_path(directory: Path) -> Path:
    return directory / MANIFEST_FILE


@contextlib.contextmanager
def artifact_lock(
    directory: Path, on_wait: Callable[[str], None] | None = None, *, reading: bool = False
) -> Iterator[None]:
    """Hold the artifact's lock (a file beside its folder, at its real path) for a read-modify-write.

    Another process holding it makes this one wait, saying so once through ``on_wait``.
    ``reading``: where the lock file cannot be created (a read-only folder), nothing can write
    there either, so a reader goes on without it.
    """
    try:
        real = directory.resolve()  # a symlinked path must take the same lock as the real one
    except (RuntimeError, OSError) as exc:  # a symlink loop (RuntimeError up to Python 3.12)
        raise UserError(f"{directory} is a symbolic link loop: remove the link or name another folder") from exc
    purpose = "to read it" if reading else "for writing"
    lock_path = real.parent / f".{real.name}.lock"
    if lock_path.is_dir() or (lock_path.exists() and not lock_path.is_file()):
        kind = "a folder" if lock_path.is_dir() else "not a regular file"
        raise UserError(
            f"cannot lock {directory} {purpose}: its lock file {lock_path} is {kind}: "
            "remove it (the toolkit creates a plain file there)"
        )
    try:
        real.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(lock_path))
        try:
            lock.acquire(timeout=0.5)
        except Timeout:
            if on_wait is not None:
                on_wait(f"waiting for another process working on {directory} ...")
            lock.acquire()
    except OSError as exc:
        if reading and exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            yield
            return
        raise UserError(describe_os_error(exc, f"cannot lock {directory} {purpose}")) from exc
    try:
        yield
    finally:
        lock.release()


def _field_errors(exc: ValidationError) -> str:
    parts = []
    for e in exc.errors()[:3]:
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        parts.append(f"field '{loc}': {e['msg']}")
    more = f" (+{exc.error_count() - 3} more)" if exc.error_count() > 3 else ""
    return "; ".join(parts) + more


def parse_manifest(text: str, where: Path) -> Manifest:
    """Validate a manifest's text; any departure from the contract is one error naming the field."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:  # a truncated write, an edit gone wrong: say where it breaks off
        raise DamagedManifest(where, f"is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from exc
    except (ValueError, RecursionError) as exc:
        raise DamagedManifest(where, f"is not valid JSON ({exc})") from exc
    if not isinstance(raw, dict):
        raise DamagedManifest(where, "does not hold a manifest (a JSON object)")
    version = raw.get("schema_version", raw.get("manifest_version"))
    if version != SCHEMA_VERSION:
        raise DamagedManifest(where, f"has schema version {version!r}, this toolkit reads {SCHEMA_VERSION}")
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        raise DamagedManifest(where, f"is not a valid manifest: {_field_errors(exc)}") from exc


def read_manifest(directory: Path) -> Manifest | None:
    """The artifact's manifest, None where the folder has none; invalid ones raise ArtifactError."""
    path = manifest_path(directory)
    try:
        text = read_regular_text(path)  # a FIFO or a link to /dev/zero: refused, never read
    except FileNotFoundError:
        return None
    except NotRegularFile as exc:
        raise DamagedManifest(path, f"is {exc}") from exc
    except UnicodeDecodeError as exc:
        raise DamagedManifest(path, f"is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:  # unreadable (permissions, a failing disk): export again would not mend that
        raise ArtifactError(f"cannot read {path}: {exc}") from exc
    return parse_manifest(text, path)


def write_manifest(writer: AtomicWriter, directory: Path, manifest: Manifest) -> None:
    """Stage ``manifest.json`` (strict JSON) in an atomic write; commit it last, after the graphs."""
    writer.write_text(manifest_path(directory), strict_json(manifest.model_dump(mode="json")))


# --- artifacts as runtime commands name them -----------------------------------------------


@dataclass(frozen=True)
class Artifact:
    """An artifact folder with its validated manifest."""

    directory: Path
    manifest: Manifest

    @property
    def name(self) -> str:
        return self.manifest.name

    def path(self, key: VariantKey = BASE) -> Path:
        return self.directory / (self.manifest.file if key.is_base else key.file_name(self.manifest.name))

    def variant(self, key: VariantKey) -> VariantRecord | None:
        return None if key.is_base else self.manifest.variants.get(str(key))

    def stale_reason(self, key: VariantKey = BASE) -> str | None:
        """Why the graph of ``key`` cannot be used as recorded, or None when it is current."""
        path = self.path(key)
        if key.is_base:
            expected = self.manifest.sha256
        else:
            record = self.variant(key)
            if record is None:
                return f"no {key} variant is recorded in {manifest_path(self.directory)}"
            if record.base_sha256 != self.manifest.sha256:
                return f"the {key} variant was built from an earlier export of {self.name}"
            expected = record.sha256
        if not path.exists():
            return f"{path} is missing"
        if not path.is_file():  # a FIFO or a device is never hashed (it would block or never end)
            return f"{path} is not a regular file"
        if sha256_file(path) != expected:
            return f"{path} does not match its manifest (sha256 differs)"
        return None


@dataclass(frozen=True)
class Location:
    """Where a runtime command's artifact argument points: a folder, and a graph if it named one."""

    directory: Path
    name: str
    key: VariantKey | None = None
    zoo_default: bool = False


def locate(ref: str, artifacts_dir: str | Path = DEFAULT_ARTIFACTS_DIR) -> Location:
    """Resolve a zoo or artifact name (under ``artifacts_dir``), an artifact folder, or a ``.onnx``
    file whose folder holds its manifest. Nothing is read beyond the manifest."""
    path = Path(ref)
    if ref.endswith(".onnx"):
        directory = path.parent
        manifest = read_manifest(directory)
        if manifest is None and not path.exists():
            raise ArtifactError(f"{path} does not exist")
        if manifest is None:
            raise ArtifactError(
                f"{path} has no {MANIFEST_FILE} beside it: the runtime commands check graphs the exporter wrote "
                "(python -m exporter ...); to look at any ONNX file use python -m exporter FILE.onnx --view"
            )
        if path.name == manifest.file:
            return Location(directory, manifest.name, BASE)
        for key_text, record in manifest.variants.items():
            if record.file == path.name:
                return Location(directory, manifest.name, VariantKey.parse(key_text))
        raise ArtifactError(f"{path.name} is not recorded in {manifest_path(directory)}")
    if path.is_dir() and manifest_path(path).exists():  # not a regular file: read_manifest says so
        manifest = read_manifest(path)
        assert manifest is not None
        return Location(path, manifest.name)
    if "/" in ref or "\\" in ref:
        if not path.exists():
            raise ArtifactError(f"{ref} does not exist")
        raise ArtifactError(f"{ref} is not an artifact folder (no {MANIFEST_FILE} in it)")
    directory = artifact_dir(ref, artifacts_dir)
    return Location(directory, ref, zoo_default=not manifest_path(directory).exists())


def open_artifact(directory: Path) -> Artifact:
    """The artifact in ``directory``; ArtifactError where there is none."""
    manifest = read_manifest(directory)
    if manifest is None:
        raise ArtifactError(f"no artifact in {directory} ({MANIFEST_FILE} missing)")
    return Artifact(directory, _weights_in_folder(directory, manifest))


def _weights_in_folder(directory: Path, manifest: Manifest) -> Manifest:
    """A copied or moved artifact keeps using its own weights file: where the recorded path is gone and
    the folder holds a file of that name (``exporter.train --export`` saves the checkpoint beside the
    graph), that file is the artifact's weights. Its sha256 is still checked against the recorded one
    wherever the weights are loaded, so another file of the same name is refused, never used."""
    recorded = manifest.weights.path
    if manifest.weights.kind != "file" or recorded is None or Path(recorded).is_file():
        return manifest
    here = directory / Path(recorded).name
    if not here.is_file():
        return manifest
    weights = manifest.weights.model_copy(update={"path": str(here)})
    settings = manifest.settings.model_copy(update={"weights": str(here)})
    return manifest.model_copy(update={"weights": weights, "settings": settings})
