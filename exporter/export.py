"""Export one model end to end: build, trace, check, simplify, verify against PyTorch, write.

This is the library behind ``python -m exporter``; :func:`export_model` returns a typed
:class:`ExportResult` whose manifest is the one written. Nothing is written unless every
step passed; the artifact's lock is held throughout, so a concurrent run on the same
artifact waits rather than interleaving its files with this one's.
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import torch
from torch import nn

from . import artifact as art
from .data import random_input
from .errors import ExportFailed, UserError
from .files import (
    atomic_outputs,
    check_folder,
    made_folder,
    remove_stale_partials,
    require_free_space,
    sha256_bytes,
)
from .graph import check_graph, io_spec, op_counts, simplify_graph
from .layers import map_modules
from .memory import check_fits
from .reference import Prepared, forward_outputs, nondeterminism, prepare
from .trace import DEFAULT_OPSET, Traced, output_names, trace_export, validate_opset
from .user_model import kept_modes
from .weights import DEFAULT_SEED, kept_weights

TRACE_BATCH = 2
#: The batch of the second trace, which finds Python code depending on the batch size (and, for a
#: dynamic-size graph, on the input size; see :mod:`exporter.frozen`): the cheapest other batch.
OTHER_BATCH = 1


@dataclass
class ExportResult:
    name: str
    directory: Path
    onnx_path: Path
    manifest: art.Manifest
    seconds: float
    messages: list[str] = field(default_factory=list)
    #: Python decisions in forward() the trace froze into the graph (also in ``manifest.trace_notes``)
    notes: list[art.TraceNote] = field(default_factory=list)


def versions() -> dict[str, str]:
    """Versions of everything that shaped the graph, for the manifest."""
    import onnxruntime
    import onnxsim
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxsim": getattr(onnxsim, "__version__", "unknown"),
        "onnxruntime": onnxruntime.__version__,
    }


def weight_bytes(prepared: Prepared) -> int:
    """At least the bytes the exported graph's weights take: the parameters it runs (training-only heads not
    counted) at the narrowest parameter width, so the check before the trace never refuses a graph that fits."""
    width = min((p.element_size() for p in prepared.model.parameters()), default=4)
    return prepared.num_params * width


def _size_limits(prepared: Prepared) -> tuple[tuple[int, int], list[tuple[int, int]]]:
    """The smallest height and width a dynamic-size graph accepts, and the sizes to check it at."""
    from runtime.parity import check_sizes

    from .pooling import find_size_limits

    limits = find_size_limits(prepared.model, prepared.input_shape, name=prepared.name)  # type: ignore[arg-type]
    if limits.rejected:
        # The manifest promises "any size from the minimum"; a model with gaps cannot keep it.
        gaps = ", ".join(f"{h}x{w}" for h, w in limits.rejected[:3])
        raise ExportFailed(
            f"{prepared.name} accepts sizes from {limits.min_height}x{limits.min_width} but not all above it "
            f"({gaps} fail): a --dynamic-size graph would accept inputs the model cannot take"
        )
    min_size = (limits.min_height, limits.min_width)
    return min_size, check_sizes(tuple(prepared.input_shape[1:]), min_size)  # type: ignore[arg-type]


def _same_artifact(directory: Path, held: str, name: str) -> None:
    """An artifact's files are named after it: a folder holding one artifact never takes another's."""
    if held != name:
        raise UserError(
            f"{directory} holds the artifact {held}: export it as --name {held} or into another folder, not as {name}"
        )


def keeps_real_weights(directory: Path, previous: art.Manifest | None, weights: art.Weights) -> None:
    """Refuse to replace an artifact's real weights (a file, a checkpoint, a model's own) with random ones:
    the trained graph and its variants would silently become a random model's."""
    if previous is None or previous.weights.kind == "random" or weights.kind != "random":
        return
    held = previous.weights.path if previous.weights.kind == "file" else None
    what = f"the weights of {held}" if held else "the weights your code built"
    again = f"--weights {held}" if held else "--weights FILE"
    raise UserError(
        f"{directory} holds {previous.name} exported with {what}: exporting it again with random weights would "
        f"replace them; pass {again} to export with them, or export into another folder (--name or --output)"
    )


def _previous(directory: Path) -> tuple[art.Manifest | None, str | None]:
    """The manifest already in ``directory`` (None where there is none), and why one there could not be read.

    An unreadable manifest beside graphs or weights is refused: what they hold (weights someone
    trained, variants built from them) cannot be checked, so an export must not replace them."""
    try:
        return art.read_manifest(directory), None
    except art.ArtifactError as exc:
        # the problem without the readers' remedy (export again): this export is that, and says what it does
        problem = f"{exc.path} {exc.problem}" if isinstance(exc, art.DamagedManifest) else str(exc)
        held = sorted(
            p.name for p in directory.iterdir() if p.suffix in _ARTIFACT_SUFFIXES and not p.name.startswith(".")
        )
        if held:
            raise UserError(
                f"{problem}; the files beside it ({', '.join(held[:3])}{' ...' if len(held) > 3 else ''}) cannot be "
                "checked against it, so the export does not replace them: remove manifest.json to export afresh "
                "over them, or export into another folder (--name or --output)"
            ) from exc
        return None, problem


_ARTIFACT_SUFFIXES = (".onnx", ".pth", ".pt", ".data")


def _check_types(name: object, paths: dict[str, object], batch_sizes: object, flags: dict[str, object]) -> None:
    """The API's arguments of the wrong type are one line naming the argument, not a TypeError deep inside."""
    if name is not None and not isinstance(name, str):
        raise UserError(f"name must be a str, not the {type(name).__name__} {name!r}")
    for label, value in paths.items():
        if value is not None and not isinstance(value, (str, os.PathLike)):
            raise UserError(f"{label} must be a path (a str or a Path), not the {type(value).__name__} {value!r}")
    if batch_sizes is not None and (
        not isinstance(batch_sizes, (list, tuple, range))
        or not all(isinstance(b, int) and not isinstance(b, bool) for b in batch_sizes)
    ):
        raise UserError(f"batch_sizes must be a sequence of ints such as (1, 3, 5), not {batch_sizes!r}")
    for label, value in flags.items():
        if not isinstance(value, bool):
            raise UserError(f"{label} must be True or False, not the {type(value).__name__} {value!r}")


def _check_arguments(
    opset: int, batch_sizes: Sequence[int] | None, name: str | None, directory: object, output_dir: object
) -> tuple[int, ...]:
    """The verification batch sizes, once the arguments are checked (before any work, one line each)."""
    from runtime.parity import DEFAULT_BATCH_SIZES

    validate_opset(opset)
    batches = tuple(batch_sizes or DEFAULT_BATCH_SIZES)
    if any(b < 1 or b == TRACE_BATCH for b in batches):
        raise UserError(f"verification batch sizes must be >= 1 and differ from the trace batch {TRACE_BATCH}")
    if name is not None:
        art.validate_name(name)
    if directory is not None and output_dir is not None:
        raise UserError("give the artifact's folder (directory) or the folder of artifacts (output_dir), not both")
    return batches


def _before_trace(
    prepared: Prepared, folder: Path | None, out_root: Path, dynamic_size: bool, batches: Sequence[int]
) -> Path:
    """The artifact's folder, once what would refuse the export after its trace is refused now (and again under
    the lock where it can change): the folder, the artifact already in it, the model's size, the disk."""
    directory = folder if folder is not None else art.artifact_dir(prepared.name, out_root)
    if folder is None:  # a --name that is a symlink loop: refused now, not after the whole export
        check_folder(directory)
    held, _unreadable = _previous(directory)
    if folder is not None and held is not None:
        _same_artifact(folder, held.name, prepared.name)
    keeps_real_weights(directory, held, prepared.weights)
    if len(prepared.input_shape) != 3 and dynamic_size:
        raise UserError("--dynamic-size needs an image input (C x H x W)")
    check_fits(prepared.model, prepared.input_shape, max(TRACE_BATCH, *batches), what=prepared.name)
    # The graph holds the weights: a disk without room for them is said now, not after the trace (19 s of
    # vgg16's tracing and checking before the write found it). The write checks its real size again.
    require_free_space(out_root, weight_bytes(prepared), f"{prepared.name}.onnx")
    return directory


def _manifest(
    prepared: Prepared,
    traced: Traced,
    raw: onnx.ModelProto,
    final: onnx.ModelProto,
    graph_bytes: bytes,
    parity: art.ParityRecord,
    layers: art.LayerMap,
    min_size: tuple[int, int] | None,
    settings: art.ExportSettings,
) -> art.Manifest:
    """The exported graph's manifest: what it is, where it came from, and how it was verified."""
    return art.Manifest(
        schema_version=art.SCHEMA_VERSION,
        name=prepared.name,
        created=art.now(),
        file=art.BASE.file_name(prepared.name),
        sha256=sha256_bytes(graph_bytes),
        size_bytes=len(graph_bytes),
        source=prepared.source,
        weights=prepared.weights,
        settings=settings,
        **io_spec(final),  # type: ignore[arg-type]
        min_size=min_size,
        trace_batch=TRACE_BATCH,
        num_params=prepared.num_params,
        nodes_raw=len(raw.graph.node),
        nodes=len(final.graph.node),
        op_counts=op_counts(final),
        parity=parity,
        versions=versions(),
        layers=layers,
        trace_notes=traced.notes,
    )


def export_model(
    target: str | nn.Module,
    *,
    opset: int = DEFAULT_OPSET,
    output_dir: str | Path | None = None,
    directory: str | Path | None = None,
    weights: str | Path | None = None,
    simplify: bool = True,
    input_shape: tuple[int, ...] | None = None,
    seed: int = DEFAULT_SEED,
    name: str | None = None,
    dynamic_size: bool = False,
    batch_sizes: Sequence[int] | None = None,
    strict: bool = False,
    on_step: Callable[[str], None] | None = None,
) -> ExportResult:
    """Export ``target`` (a zoo name, ``file.py:Builder`` or ``nn.Module``) to ``<output_dir>/NAME/``.

    ``directory`` instead names the artifact's folder itself: everything is written there and
    nowhere else, whatever the name (which only names the files inside it). A folder that
    already holds another artifact (another name) is refused.

    The graph has a symbolic ``batch`` (and, with ``dynamic_size``, ``height`` and
    ``width``). Before anything is written it passes the ONNX checker, onnxsim, and
    :func:`runtime.parity.check` against the PyTorch model at several batch sizes (and
    input sizes). Raises :class:`UserError` for bad input and :class:`ExportFailed` when
    the graph cannot be produced or does not match PyTorch; on any failure nothing is written.
    An artifact whose weights are real (a file, or a user model's own) is never exported again with
    random ones (:func:`keeps_real_weights`).

    Python decisions in ``forward()`` that the trace froze into the graph (see
    :mod:`exporter.frozen`) are returned in ``notes`` and recorded in the manifest; ``strict``
    refuses such a graph instead. An ``nn.Module`` comes back exactly as it was given, the
    training flag of every submodule included.
    """
    step = on_step or (lambda _msg: None)
    started = time.perf_counter()
    _check_types(
        name,
        {"output_dir": output_dir, "directory": directory, "weights": weights},
        batch_sizes,
        {"simplify": simplify, "dynamic_size": dynamic_size, "strict": strict},
    )
    batches = _check_arguments(opset, batch_sizes, name, directory, output_dir)
    folder = Path(directory) if directory is not None else None
    out_root = folder.parent if folder is not None else Path(output_dir or art.DEFAULT_ARTIFACTS_DIR)
    if folder is not None:
        check_folder(folder)
    # A run that fails leaves no empty folder it made; the user's module comes back as it was.
    with made_folder(out_root), kept_modes(target), kept_weights(target):
        # Everything a user can get wrong is checked before the first progress line, so a mistake
        # is one line on stderr.
        prepared = prepare(target, weights=weights, input_shape=input_shape, seed=seed, name=name)
        directory = _before_trace(prepared, folder, out_root, dynamic_size, batches)
        example = random_input(prepared.input_shape, TRACE_BATCH, seed=seed)
        outputs = forward_outputs(prepared.model, example, prepared.name)
        _check_batch_dims(outputs, TRACE_BATCH)

        min_size, sizes = _size_limits(prepared) if dynamic_size else (None, [])
        step(f"tracing to ONNX (opset {opset})")
        traced = _trace(prepared, example, opset, len(outputs), sizes, strict)
        with _blaming(traced.notes):
            raw = check_graph(traced.proto, "exported graph")
            final = simplify_graph(raw) if simplify else raw
            if simplify:
                step("simplified with onnxsim")
            layers = map_modules(prepared.model, final)
            graph_bytes = final.SerializeToString()
            if len(graph_bytes) >= 2**31:
                raise ExportFailed("graph exceeds 2 GB; external-data export is not supported yet")
            step("verifying with onnxruntime against PyTorch")
            parity = _verify(graph_bytes, prepared, batches, sizes, step)
        settings = art.ExportSettings(
            opset=opset, seed=seed, simplify=simplify, dynamic_size=dynamic_size,
            input_shape=list(prepared.input_shape), weights=prepared.weights.path,
        )  # fmt: skip
        manifest = _manifest(prepared, traced, raw, final, graph_bytes, parity, layers, min_size, settings)
        step("writing")
        messages = _write(directory, out_root, manifest, graph_bytes, step)
    onnx_file = directory / manifest.file
    seconds = time.perf_counter() - started
    return ExportResult(prepared.name, directory, onnx_file, manifest, seconds, messages, list(traced.notes))


def _check_batch_dims(outputs: Sequence[torch.Tensor], batch: int, *, other: int | None = None) -> None:
    """Every output's first dimension must be the batch: the graph declares it so for every output."""
    for name, out in zip(output_names(len(outputs)), outputs):
        if out.dim() == 0 or out.shape[0] != batch:
            dims = ", ".join(str(d) for d in out.shape)
            at = f" at batch {batch}" + (f" (and a batch of {other} gave the same first dimension)" if other else "")
            raise ExportFailed(
                f"output '{name}' has shape [{dims}]{at}: no batch dimension (its first dimension must be the "
                "batch, which the graph makes symbolic); return the batch first, e.g. keep dim 0 in reductions"
            )


def _other_input(prepared: Prepared, sizes: Sequence[tuple[int, int]]) -> torch.Tensor:
    """The second trace's input: another batch, and for a dynamic-size graph another height and width
    (the smallest-area checked size other than the export size and the minimum, ~193x211)."""
    shape = prepared.input_shape
    if sizes:
        export_hw = tuple(shape[1:])
        others = [s for s in sizes[1:-1] if tuple(s) != export_hw] or [s for s in sizes if tuple(s) != export_hw]
        if others:
            h, w = min(others, key=lambda s: s[0] * s[1])
            shape = (shape[0], h, w)
    return random_input(shape, OTHER_BATCH, seed=TRACE_BATCH + 1)


def _trace(
    prepared: Prepared,
    example: torch.Tensor,
    opset: int,
    n_outputs: int,
    sizes: Sequence[tuple[int, int]],
    strict: bool,
) -> Traced:
    """Trace to ONNX, and find the Python decisions the trace froze (refused with ``strict``)."""
    traced = trace_export(
        prepared.model,
        example,
        opset,
        dynamic_size=bool(sizes),
        n_outputs=n_outputs,
        other=_other_input(prepared, sizes),
    )
    if traced.other_outputs is not None:
        _check_batch_dims(traced.other_outputs, OTHER_BATCH, other=TRACE_BATCH)
    if strict and traced.notes:
        more = f" (and {len(traced.notes) - 1} more)" if len(traced.notes) > 1 else ""
        raise ExportFailed(
            f"{prepared.name}: Python control flow in forward() is frozen into the graph at {traced.notes[0]}{more}; "
            "--strict refuses such a graph (nothing written)"
        )
    return traced


@contextlib.contextmanager
def _blaming(notes: Sequence[art.TraceNote]) -> Iterator[None]:
    """A graph that fails after a trace froze Python code most likely fails because of it: say where."""
    try:
        yield
    except UserError as exc:  # an output of another shape at another batch is one too
        if not notes:
            raise
        raise ExportFailed(f"{exc} (the trace froze Python control flow at {notes[0]})") from exc


def _verify(
    graph: bytes,
    prepared: Prepared,
    batches: Sequence[int],
    sizes: Sequence[tuple[int, int]],
    step: Callable[[str], None],
) -> art.ParityRecord:
    from runtime.parity import check

    parity = check(graph, prepared, batch_sizes=batches, sizes=sizes, on_step=step)
    if not parity.passed:
        reason = nondeterminism(prepared)  # a model that disagrees with itself is said so, not blamed on the graph
        if reason:
            raise ExportFailed(f"{prepared.name}: {reason}")
        raise ExportFailed(f"{prepared.name}: onnxruntime disagrees with PyTorch: {'; '.join(parity.failures()[:3])}")
    return parity


def _write(
    directory: Path, out_root: Path, manifest: art.Manifest, graph_bytes: bytes, step: Callable[[str], None]
) -> list[str]:
    """Write the graph and then the manifest, under the artifact's lock; returns what the user should know."""
    messages: list[str] = []
    with art.artifact_lock(directory, on_wait=step):
        removed = remove_stale_partials(directory)
        if removed:
            messages.append(f"removed {len(removed)} partial file(s) an interrupted run had left in {directory}")
        previous, unreadable = _previous(directory)
        if unreadable:
            messages.append(f"replaced an unreadable manifest ({unreadable})")
        if previous is not None:
            _same_artifact(directory, previous.name, manifest.name)
            keeps_real_weights(directory, previous, manifest.weights)
            # Variant records stay: those built from this same graph remain current, the others
            # are reported stale (and rebuilt on request) rather than silently dropped.
            manifest = manifest.model_copy(update={"variants": previous.variants})
        require_free_space(out_root, len(graph_bytes), manifest.file)
        with atomic_outputs(directory) as writer:
            writer.write_bytes(directory / manifest.file, graph_bytes)
            art.write_manifest(writer, directory, manifest)
    return messages
