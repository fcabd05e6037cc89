"""Trace a PyTorch model to an in-memory ONNX graph with a symbolic batch dimension.

Uses torch's TorchScript-based exporter (``dynamo=False``): it emits exactly the
requested opset (13-20) instead of converting down from 18, and lets us map
``nn.LocalResponseNorm`` to ONNX's native ``LRN`` node through a symbolic function.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field

import onnx
import torch
from torch import nn

from .artifact import BATCH_DIM, HEIGHT_DIM, WIDTH_DIM, TraceNote
from .errors import ExportFailed, UserError
from .frozen import NoteList, compare_traces, tracer_warnings
from .opsets import DEFAULT_OPSET, SUPPORTED_OPSETS, validate_opset  # noqa: F401  (trace's public names)
from .pooling import dynamic_adaptive_pooling

INPUT_NAME = "input"
OUTPUT_NAME = "output"


class _LRNFunction(torch.autograd.Function):
    """Local response norm that exports as one ONNX ``LRN`` node."""

    @staticmethod
    def forward(ctx, x, size, alpha, beta, k):  # type: ignore[override]
        return nn.functional.local_response_norm(x, size, alpha, beta, k)

    @staticmethod
    def symbolic(g, x, size, alpha, beta, k):  # type: ignore[no-untyped-def]
        return g.op("LRN", x, size_i=size, alpha_f=alpha, beta_f=beta, bias_f=k)


class _NativeLRN(nn.Module):
    def __init__(self, lrn: nn.LocalResponseNorm) -> None:
        super().__init__()
        self.size, self.alpha, self.beta, self.k = lrn.size, float(lrn.alpha), float(lrn.beta), float(lrn.k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _LRNFunction.apply(x, self.size, self.alpha, self.beta, self.k)


@contextlib.contextmanager
def native_lrn(model: nn.Module) -> Iterator[int]:
    """Temporarily replace odd-sized ``nn.LocalResponseNorm`` modules with the native-LRN version.

    ONNX's LRN window is centred the same way as PyTorch's only for odd sizes; even
    sizes keep PyTorch's decomposition so the graph stays numerically equal.
    Yields the number of modules swapped; the model is restored on exit.
    """
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    for parent in model.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.LocalResponseNorm) and child.size % 2 == 1:
                swapped.append((parent, child_name, child))
                setattr(parent, child_name, _NativeLRN(child))
    try:
        yield len(swapped)
    finally:
        for parent, child_name, child in swapped:
            setattr(parent, child_name, child)


@contextlib.contextmanager
def _native_stdout_dropped() -> Iterator[None]:
    """Send file descriptor 1 to /dev/null: on some failures torch's C++ side prints the whole
    TorchScript graph to stdout (dozens of lines before the one-line error); Python-level
    redirection cannot catch it."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def output_names(count: int) -> list[str]:
    """``output``, then ``output_1``, ``output_2``... for a model returning several tensors."""
    return [OUTPUT_NAME] + [f"{OUTPUT_NAME}_{i}" for i in range(1, count)]


@dataclass
class Traced:
    """The traced graph and what the trace could not record (see :mod:`exporter.frozen`)."""

    proto: onnx.ModelProto
    notes: list[TraceNote] = field(default_factory=list)
    #: the model's outputs at the second trace's input (None where there was no second trace)
    other_outputs: list[torch.Tensor] | None = None


def trace_to_onnx(
    model: nn.Module, example: torch.Tensor, opset: int, *, dynamic_size: bool = False
) -> onnx.ModelProto:
    """:func:`trace_export`'s graph alone."""
    return trace_export(model, example, opset, dynamic_size=dynamic_size).proto


def trace_export(
    model: nn.Module,
    example: torch.Tensor,
    opset: int,
    *,
    dynamic_size: bool = False,
    n_outputs: int | None = None,
    other: torch.Tensor | None = None,
) -> Traced:
    """Export ``model`` (already in eval mode) traced on ``example``; batch axis named ``batch``.

    Inputs are named ``input``; outputs ``output`` (or ``output``, ``output_1``, ... when
    the model returns several tensors; ``n_outputs`` spares the forward pass that counts them).

    With ``dynamic_size`` the input's dims 2 and 3 are symbolic too (``height``, ``width``) and
    adaptive pools are swapped for :class:`exporter.pooling.DynamicAdaptivePool2d` while
    tracing, so they compute PyTorch's bins from the runtime size (at a fixed size, only the
    pools whose output does not divide their input are, which torch refuses to export). Outputs keep ``batch``;
    any spatial output dims keep the names the exporter derives. This does not check that the
    model accepts other sizes: see :func:`exporter.pooling.find_size_limits`.

    Python decisions the trace froze are returned as notes: torch's TracerWarnings, and, given
    ``other`` (another batch, and size), a difference between the graphs traced at ``example``
    and at ``other`` (see :func:`exporter.frozen.compare_traces`).
    """
    validate_opset(opset)
    if dynamic_size and example.dim() != 4:
        raise UserError(
            f"--dynamic-size needs a 4-D (batch, channels, height, width) input; the example has shape "
            f"{tuple(example.shape)}"
        )
    if n_outputs is None:
        with torch.inference_mode():
            probe = model(example.clone())  # a forward that changes its input in place changes only the copy
        n_outputs = len(probe) if isinstance(probe, (tuple, list)) else 1
    names = output_names(n_outputs)
    dynamic_axes = {name: {0: BATCH_DIM} for name in [INPUT_NAME, *names]}
    if dynamic_size:
        dynamic_axes[INPUT_NAME] = {0: BATCH_DIM, 2: HEIGHT_DIM, 3: WIDTH_DIM}
    # at a fixed size only the pools torch cannot export (output not dividing input) are swapped
    pooling = dynamic_adaptive_pooling(model, None if dynamic_size else example)
    buf = io.BytesIO()
    notes = NoteList()
    other_outputs = None
    try:
        with native_lrn(model), pooling, tracer_warnings(notes), _native_stdout_dropped():
            torch.onnx.export(
                model,
                (example.clone(),),
                buf,
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=names,
                dynamic_axes=dynamic_axes,
                do_constant_folding=True,
            )
            if other is not None:
                other_outputs = compare_traces(model, example, other, notes, sized=dynamic_size, what="the model")
    except UserError:  # a refusal from the pooling swap is already one clear line
        raise
    except Exception as exc:  # torch raises many types; the user needs the first line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportFailed(f"torch.onnx.export failed at opset {opset}: {first}") from exc
    proto = onnx.load_from_string(buf.getvalue())
    declared = opset_of(proto)
    if declared != opset:
        raise ExportFailed(f"exporter wrote opset {declared} instead of the requested {opset}; nothing written")
    return Traced(proto, list(notes), other_outputs)


def opset_of(model: onnx.ModelProto) -> int:
    """The default-domain opset the model declares."""
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    raise ExportFailed("the graph declares no default-domain opset")
