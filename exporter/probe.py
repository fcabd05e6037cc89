"""Running a model on shapes only: a weightless copy on PyTorch's ``meta`` device, made fast.

Used to find the input sizes a model accepts (:mod:`exporter.pooling`) and to estimate the
memory a batch needs (:mod:`exporter.memory`) without computing anything or touching the
user's model.
"""

from __future__ import annotations

import copy
import itertools

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from .errors import ExportFailed, first_line

_SHAPE_PRESERVING = {
    F.relu, F.relu_, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_,
    F.relu6, F.leaky_relu, F.gelu, F.silu, F.hardswish, F.hardtanh, F.elu,
    torch.sigmoid, torch.tanh, torch.Tensor.sigmoid, torch.Tensor.tanh,
    F.batch_norm, torch.batch_norm, F.dropout, F.dropout2d, F.local_response_norm,
}  # fmt: skip
_ADDITIONS = {torch.add, torch.Tensor.add, torch.Tensor.add_, torch.Tensor.__add__, torch.Tensor.__iadd__}


class ShapesOnly(TorchFunctionMode):
    """On meta tensors, answer shape-preserving element-wise calls with their input.

    PyTorch runs meta kernels of element-wise ops through Python decompositions (~0.3-1 ms a
    call); their output shape is their input's, so the probe skips them. Everything that can
    change or check a spatial size (conv, pooling, linear, view, cat, a broadcasting add) runs.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if args and isinstance(args[0], torch.Tensor) and args[0].is_meta:
            if func in _SHAPE_PRESERVING:
                return args[0]
            if (
                func in _ADDITIONS
                and len(args) > 1
                and isinstance(args[1], torch.Tensor)
                and args[0].shape == args[1].shape
                and args[0].dtype == args[1].dtype
            ):
                return args[0]
        return func(*args, **(kwargs or {}))


def shape_copy(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` whose weights are ``meta`` tensors: shapes only, nothing copied."""
    memo: dict[int, object] = {}
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        shadow = tensor.detach().to("meta")
        memo[id(tensor)] = (
            nn.Parameter(shadow, requires_grad=tensor.requires_grad) if isinstance(tensor, nn.Parameter) else shadow
        )
    return _deepcopy(model, memo)


def real_copy(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with its weights, for models that do not run on ``meta``."""
    return _deepcopy(model, {})


def _deepcopy(model: nn.Module, memo: dict[int, object]) -> nn.Module:
    try:
        clone = copy.deepcopy(model, memo)
    except Exception as exc:
        raise ExportFailed(f"cannot copy the model to probe its input sizes: {first_line(exc)}") from exc
    return clone.eval()
