"""Export one model end to end: build, trace, check, simplify, verify against PyTorch, write.

This is the library API behind ``python -m exporter``; tests call :func:`export_model`.
"""

from __future__ import annotations

import hashlib
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import onnx
import torch
from torch import nn

from . import artifacts
from .errors import ExportFailed, UserError
from .graph import check_graph, io_shapes, io_spec, op_counts, simplify_graph
from .trace import BATCH_DIM, DEFAULT_OPSET, trace_to_onnx, validate_opset
from .user_model import build_user_model, is_user_model_ref
from .weights import DEFAULT_SEED, calibrate_batchnorm, load_weights
from .zoo import count_params, get_spec

TRACE_BATCH = 2
VERIFY_BATCHES = (1, 3)
MANIFEST_VERSION = 1


@dataclass
class PreparedModel:
    """A PyTorch model ready to export, with what is needed to rebuild it identically."""

    name: str
    model: nn.Module
    input_shape: tuple[int, ...]
    num_params: int
    weights: dict[str, object]
    source: dict[str, object]


@dataclass
class ExportResult:
    name: str
    onnx_path: Path
    manifest_path: Path
    manifest: dict[str, object]
    seconds: float
    messages: list[str] = field(default_factory=list)


def _versions() -> dict[str, str]:
    import onnxruntime
    import onnxsim

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxsim": getattr(onnxsim, "__version__", "unknown"),
        "onnxruntime": onnxruntime.__version__,
    }


def prepare_model(
    target: str | nn.Module,
    *,
    weights: str | Path | None = None,
    input_shape: tuple[int, ...] | None = None,
    seed: int = DEFAULT_SEED,
    name: str | None = None,
) -> PreparedModel:
    """Build a zoo model, a ``file.py:Builder`` model or wrap a given module, in eval mode.

    Without ``weights`` the parameters are random but deterministic: torch is seeded
    with ``seed`` before building, and BatchNorm statistics are calibrated on a seeded
    batch, so the same call always yields the same weights.
    """
    torch.manual_seed(seed)
    training_only: tuple[str, ...] = ()
    if isinstance(target, nn.Module):
        if input_shape is None:
            raise UserError("an nn.Module needs input_shape (per sample, batch excluded)")
        model, model_name = target, name or type(target).__name__.lower()
        source: dict[str, object] = {"kind": "module", "class": type(target).__qualname__}
    elif is_user_model_ref(target):
        if input_shape is None:
            raise UserError(f"{target} is your own model: give its --input-shape, e.g. 3x32x32")
        builder_name, model = build_user_model(target)
        model_name = name or builder_name.lower()
        source = {"kind": "file", "ref": str(target)}
    else:
        spec = get_spec(target)
        model = spec.build()
        model_name = name or spec.name
        training_only = spec.training_only
        if input_shape is None:
            input_shape = spec.input_shape
        source = {"kind": "zoo", "model": spec.name}

    assert input_shape is not None
    if weights is not None:
        digest = load_weights(model, weights, optional_prefixes=training_only)
        weight_info: dict[str, object] = {"kind": "file", "path": str(Path(weights).resolve()), "sha256": digest}
    else:
        calibrated = (
            calibrate_batchnorm(model, tuple(input_shape), seed) if not isinstance(target, nn.Module) else False
        )
        weight_info = {"kind": "random", "seed": seed, "batchnorm_calibrated": calibrated}
    model.eval()
    return PreparedModel(
        name=model_name,
        model=model,
        input_shape=tuple(input_shape),
        num_params=count_params(model, training_only),
        weights=weight_info,
        source=source,
    )


def random_input(input_shape: tuple[int, ...], batch: int, seed: int) -> torch.Tensor:
    """Fresh random input in [-1, 1) (never zeros), reproducible from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    return torch.rand((batch, *input_shape), generator=gen) * 2 - 1


def _verify(prepared: PreparedModel, graph: bytes, batches: tuple[int, ...]) -> list[dict[str, object]]:
    """Run the written graph on onnxruntime (CPU) against PyTorch at batch sizes != the trace batch."""
    from runtime.metrics import compare, default_tolerance
    from runtime.sessions import SessionConfig, create_session, run

    sess, _ = create_session(graph, SessionConfig(device="cpu"))
    tol = default_tolerance("cpu", "fp32")
    figures = []
    for i, batch in enumerate(batches):
        x = random_input(prepared.input_shape, batch, seed=1000 + i)
        with torch.inference_mode():
            ref = prepared.model(x)
        refs = [r.numpy() for r in (ref if isinstance(ref, (tuple, list)) else (ref,))]
        outs = run(sess, x.numpy())
        for out_name, r, o in zip([o.name for o in sess.get_outputs()], refs, outs):
            cmp = compare(r, o, tol)
            figures.append({"output": out_name, **cmp.to_dict()})
            if not cmp.passed:
                raise ExportFailed(
                    f"{prepared.name}: onnxruntime disagrees with PyTorch at batch {batch} "
                    f"({out_name}): {'; '.join(cmp.failures)}"
                )
    return figures


def export_model(
    target: str | nn.Module,
    *,
    opset: int = DEFAULT_OPSET,
    output_dir: str | Path = artifacts.DEFAULT_OUTPUT_DIR,
    weights: str | Path | None = None,
    simplify: bool = True,
    input_shape: tuple[int, ...] | None = None,
    seed: int = DEFAULT_SEED,
    name: str | None = None,
    verify_batches: tuple[int, ...] = VERIFY_BATCHES,
    on_step: Callable[[str], None] | None = None,
) -> ExportResult:
    """Export ``target`` to ``<output_dir>/NAME/NAME.onnx`` plus ``manifest.json``; see the README.

    Raises :class:`UserError` for bad input and :class:`ExportFailed` when the graph
    cannot be produced or does not match PyTorch. On any failure nothing is written.
    """
    step = on_step or (lambda _msg: None)
    started = time.perf_counter()
    validate_opset(opset)
    if any(b == TRACE_BATCH or b < 1 for b in verify_batches):
        raise UserError(f"verification batch sizes must be >= 1 and differ from the trace batch {TRACE_BATCH}")
    out_root = Path(output_dir)
    artifacts.ensure_writable_dir(out_root)

    step("building model")
    prepared = prepare_model(target, weights=weights, input_shape=input_shape, seed=seed, name=name)
    example = random_input(prepared.input_shape, TRACE_BATCH, seed=seed)

    step(f"tracing to ONNX (opset {opset})")
    raw = trace_to_onnx(prepared.model, example, opset)
    raw = check_graph(raw, "exported graph")
    nodes_raw = len(raw.graph.node)
    final = raw
    if simplify:
        step("simplifying with onnxsim")
        final = simplify_graph(raw)
    shapes = io_shapes(final)
    if any(not dims or dims[0] != BATCH_DIM for dims in shapes.values()):
        raise ExportFailed(f"graph lacks the symbolic batch dimension: {shapes}")
    graph_bytes = final.SerializeToString()
    if len(graph_bytes) >= 2**31:
        raise ExportFailed("graph exceeds 2 GB; external-data export is not supported yet")

    step(f"verifying with onnxruntime at batch sizes {', '.join(map(str, verify_batches))}")
    parity = _verify(prepared, graph_bytes, verify_batches)

    onnx_file = artifacts.onnx_path(prepared.name, out_root)
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "name": prepared.name,
        "source": prepared.source,
        "file": onnx_file.name,
        "sha256": hashlib.sha256(graph_bytes).hexdigest(),
        "size_bytes": len(graph_bytes),
        "opset": opset,
        "input_shape": list(prepared.input_shape),
        "trace_batch": TRACE_BATCH,
        "batch_dim": BATCH_DIM,
        **io_spec(final),
        "num_params": prepared.num_params,
        "weights": prepared.weights,
        "simplified": simplify,
        "nodes": {"raw": nodes_raw, "simplified": len(final.graph.node) if simplify else None},
        "op_counts": op_counts(final),
        "parity": {"device": "cpu", "batch_sizes": list(verify_batches), "results": parity},
        "versions": _versions(),
    }
    step("writing")
    model_dir = artifacts.model_dir(prepared.name, out_root)
    with artifacts.atomic_outputs(model_dir) as writer:
        writer.write_bytes(onnx_file, graph_bytes)
        writer.write_json(artifacts.manifest_path(prepared.name, out_root), manifest)
    return ExportResult(
        name=prepared.name,
        onnx_path=onnx_file,
        manifest_path=artifacts.manifest_path(prepared.name, out_root),
        manifest=manifest,
        seconds=time.perf_counter() - started,
    )
