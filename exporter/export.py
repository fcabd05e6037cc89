"""Export one model end to end: build, trace, check, simplify, verify against PyTorch, write.

This is the library behind ``python -m exporter``; :func:`export_model` returns a typed
:class:`ExportResult` whose manifest is the one written. Nothing is written unless every
step passed; the artifact's lock is held throughout, so a concurrent run on the same
artifact waits rather than interleaving its files with this one's.
"""

from __future__ import annotations

import contextlib
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import onnx
from torch import nn

from . import artifact as art
from .data import random_input
from .errors import ExportFailed, UserError
from .files import atomic_outputs, ensure_writable_dir, remove_stale_partials, require_free_space, sha256_bytes
from .graph import check_graph, io_spec, op_counts, simplify_graph
from .layers import map_modules
from .memory import check_fits
from .reference import Prepared, forward_outputs, prepare
from .trace import DEFAULT_OPSET, trace_to_onnx, validate_opset
from .weights import DEFAULT_SEED

TRACE_BATCH = 2


@dataclass
class ExportResult:
    name: str
    directory: Path
    onnx_path: Path
    manifest: art.Manifest
    seconds: float
    messages: list[str] = field(default_factory=list)


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


def _size_limits(prepared: Prepared) -> tuple[int, int]:
    from .pooling import find_size_limits

    limits = find_size_limits(prepared.model, prepared.input_shape, name=prepared.name)  # type: ignore[arg-type]
    if limits.rejected:
        # The manifest promises "any size from the minimum"; a model with gaps cannot keep it.
        gaps = ", ".join(f"{h}x{w}" for h, w in limits.rejected[:3])
        raise ExportFailed(
            f"{prepared.name} accepts sizes from {limits.min_height}x{limits.min_width} but not all above it "
            f"({gaps} fail): a --dynamic-size graph would accept inputs the model cannot take"
        )
    return limits.min_height, limits.min_width


def _same_artifact(directory: Path, held: str, name: str) -> None:
    """An artifact's files are named after it: a folder holding one artifact never takes another's."""
    if held != name:
        raise UserError(
            f"{directory} holds the artifact {held}: export it as --name {held} or into another folder, not as {name}"
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
    """
    from runtime.parity import DEFAULT_BATCH_SIZES, check, check_sizes

    step = on_step or (lambda _msg: None)
    started = time.perf_counter()
    validate_opset(opset)
    batches = tuple(batch_sizes or DEFAULT_BATCH_SIZES)
    if any(b < 1 or b == TRACE_BATCH for b in batches):
        raise UserError(f"verification batch sizes must be >= 1 and differ from the trace batch {TRACE_BATCH}")
    if name is not None:
        art.validate_name(name)
    if directory is not None and output_dir is not None:
        raise UserError("give the artifact's folder (directory) or the folder of artifacts (output_dir), not both")
    folder = Path(directory) if directory is not None else None
    out_root = folder.parent if folder is not None else Path(output_dir or art.DEFAULT_ARTIFACTS_DIR)
    if folder is not None and folder.exists() and not folder.is_dir():
        raise UserError(f"{folder} exists and is not a folder")
    ensure_writable_dir(out_root)

    # Everything a user can get wrong is checked before the first progress line, so a mistake
    # is one line on stderr.
    prepared = prepare(target, weights=weights, input_shape=input_shape, seed=seed, name=name)
    directory = folder if folder is not None else art.artifact_dir(prepared.name, out_root)
    if folder is not None:  # refused now rather than after the whole export (and again under the lock)
        with contextlib.suppress(art.ArtifactError):
            held = art.read_manifest(folder)
            if held is not None:
                _same_artifact(folder, held.name, prepared.name)
    if len(prepared.input_shape) != 3 and dynamic_size:
        raise UserError("--dynamic-size needs an image input (C x H x W)")
    check_fits(prepared.model, prepared.input_shape, max(TRACE_BATCH, *batches), what=prepared.name)
    example = random_input(prepared.input_shape, TRACE_BATCH, seed=seed)
    forward_outputs(prepared.model, example, prepared.name)

    min_size = None
    sizes: list[tuple[int, int]] = []
    if dynamic_size:
        min_size = _size_limits(prepared)
        sizes = check_sizes(tuple(prepared.input_shape[1:]), min_size)  # type: ignore[arg-type]

    step(f"tracing to ONNX (opset {opset})")
    raw = check_graph(trace_to_onnx(prepared.model, example, opset, dynamic_size=dynamic_size), "exported graph")
    final = simplify_graph(raw) if simplify else raw
    if simplify:
        step("simplified with onnxsim")
    spec = io_spec(final)
    layers = map_modules(prepared.model, final)
    graph_bytes = final.SerializeToString()
    if len(graph_bytes) >= 2**31:
        raise ExportFailed("graph exceeds 2 GB; external-data export is not supported yet")

    step("verifying with onnxruntime against PyTorch")
    parity = check(graph_bytes, prepared, batch_sizes=batches, sizes=sizes, on_step=step)
    if not parity.passed:
        raise ExportFailed(f"{prepared.name}: onnxruntime disagrees with PyTorch: {'; '.join(parity.failures()[:3])}")

    onnx_file = directory / f"{prepared.name}.onnx"
    manifest = art.Manifest(
        schema_version=art.SCHEMA_VERSION,
        name=prepared.name,
        created=art.now(),
        file=onnx_file.name,
        sha256=sha256_bytes(graph_bytes),
        size_bytes=len(graph_bytes),
        source=prepared.source,
        weights=prepared.weights,
        settings=art.ExportSettings(
            opset=opset,
            seed=seed,
            simplify=simplify,
            dynamic_size=dynamic_size,
            input_shape=list(prepared.input_shape),
            weights=prepared.weights.path,
        ),
        inputs=spec["inputs"],
        outputs=spec["outputs"],
        min_size=min_size,
        trace_batch=TRACE_BATCH,
        num_params=prepared.num_params,
        nodes_raw=len(raw.graph.node),
        nodes=len(final.graph.node),
        op_counts=op_counts(final),
        parity=parity,
        versions=versions(),
        layers=layers,
    )
    step("writing")
    messages: list[str] = []
    with art.artifact_lock(directory, on_wait=step):
        removed = remove_stale_partials(directory)
        if removed:
            messages.append(f"removed {len(removed)} partial file(s) an interrupted run had left in {directory}")
        try:
            previous = art.read_manifest(directory)
        except art.ArtifactError as exc:
            previous = None
            messages.append(f"replaced an unreadable manifest ({exc})")
        if previous is not None:
            _same_artifact(directory, previous.name, prepared.name)
        if previous is not None:
            # Variant records stay: those built from this same graph remain current, the others
            # are reported stale (and rebuilt on request) rather than silently dropped.
            manifest = manifest.model_copy(update={"variants": previous.variants})
        require_free_space(out_root, len(graph_bytes), f"{prepared.name}.onnx")
        with atomic_outputs(directory) as writer:
            writer.write_bytes(onnx_file, graph_bytes)
            art.write_manifest(writer, directory, manifest)
    return ExportResult(prepared.name, directory, onnx_file, manifest, time.perf_counter() - started, messages)
