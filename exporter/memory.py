"""How much memory a batch will take, estimated before anything is allocated.

Running a model at a batch the machine cannot hold does not fail cleanly: the process grows
until the kernel kills it. The estimate runs the model once on PyTorch's ``meta`` device
(shapes only, no data, no weights copied: :mod:`exporter.probe`) and records every activation's size; a batch is
refused up front when its estimate exceeds the memory available now.
"""

from __future__ import annotations

import psutil
import torch
from torch import nn

from .errors import INTERRUPTS, UserError
from .probe import ShapesOnly, shape_copy

#: Fraction of the available memory a run may plan to use.
HEADROOM = 0.8


def _numel(out: object) -> int:
    return sum(t.numel() for t in (out if isinstance(out, (tuple, list)) else (out,)) if isinstance(t, torch.Tensor))


def activation_bytes(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[int, int]:
    """(largest single activation, model outputs) in bytes for ONE sample, float32.

    Measured with forward hooks on a ``meta`` copy of the model, so it costs no compute.
    A model that does not run at this size gives (0, 0): the caller reports the failure
    where it happens.
    """
    sizes: list[int] = [0]

    def hook(_m: nn.Module, _inp: object, out: object) -> None:
        sizes.append(_numel(out) * 4)

    meta = shape_copy(model)
    handles = [m.register_forward_hook(hook) for m in meta.modules() if not list(m.children())]
    try:
        with torch.no_grad(), ShapesOnly():
            out = meta(torch.empty((1, *input_shape), device="meta"))
    except INTERRUPTS:
        raise
    except BaseException:  # sys.exit() in forward too: the forward pass that follows reports it
        return 0, 0
    finally:
        for h in handles:
            h.remove()
    return max(sizes), _numel(out) * 4


def estimate_run_bytes(
    model: nn.Module, input_shape: tuple[int, ...], batch: int, engines: int = 2, weights_bytes: int | None = None
) -> int:
    """Peak memory to run ``batch`` samples through ``engines`` engines side by side and compare them.

    Per engine: its copy of the input, the two largest live activations (a layer's input and
    output) and the weights (PyTorch eager frees intermediates as it goes, onnxruntime plans
    its buffers similarly); then the comparison of the outputs, which works on about a dozen
    float64 arrays of the outputs' size. Deliberately an upper-middle estimate: it is there
    to refuse batches that cannot fit, not to predict the exact peak.
    """
    largest, outputs = activation_bytes(model, input_shape)
    sample_in = 4
    for d in input_shape:
        sample_in *= d
    weights = weights_bytes if weights_bytes is not None else sum(p.numel() * 4 for p in model.parameters())
    per_engine = batch * (2 * sample_in + 2 * largest + outputs) + weights
    comparison = batch * outputs * 2 * 12  # float64 is twice float32's 4 bytes
    return engines * per_engine + comparison


def check_fits(model: nn.Module, input_shape: tuple[int, ...], batch: int, what: str, engines: int = 2) -> None:
    """Refuse a batch whose estimate exceeds what the machine has free, saying both figures."""
    need = estimate_run_bytes(model, input_shape, batch, engines)
    free = psutil.virtual_memory().available
    if need > HEADROOM * free:
        raise UserError(
            f"{what} at batch {batch} needs about {need / 1e9:.1f} GB of memory (estimated), "
            f"{free / 1e9:.1f} GB is available: use a smaller batch size"
        )
