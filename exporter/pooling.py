"""Adaptive pooling that exports with a symbolic height and width, and the input-size limits of a model.

Why this module exists
----------------------
torch's TorchScript exporter refuses ``AdaptiveAvgPool2d``/``AdaptiveMaxPool2d`` when the
input's height or width is symbolic (pytorch issue 74034: the symbolic needs the input size
to pick a fixed kernel), and the dynamo exporter bakes the kernel of the tracing size into the
graph, so e.g. AlexNet exported that way at 224x224 fails in onnxruntime at 256x300.
:func:`dynamic_adaptive_pooling` swaps every such module for :class:`DynamicAdaptivePool2d`
while a model is traced; its forward computes PyTorch's exact bins from the *runtime* size,
so the graph is right at every input size.

The formulation
---------------
PyTorch's bin ``i`` of ``n`` over a length ``L`` spans ``floor(i*L/n) <= j < ceil((i+1)*L/n)``.
Both bounds turn into integer comparisons without any division::

    j >= floor(i*L/n)   <=>   i*L < (j+1)*n
    j <  ceil((i+1)*L/n) <=>  j*n < (i+1)*L

so ``Range`` + ``Mul`` + ``Less`` + ``And`` build an exact ``(n, L)`` boolean bin mask from the
``Shape`` of the input, with no rounding anywhere, at every opset 13-20.

* Average: the 0/1 masks ``Mh (nh x H)`` and ``Mw (nw x W)`` give the bin sums as two MatMuls,
  ``S = Mh @ X @ Mw^T``, and one ``Div`` by the bin areas ``count_h x count_w`` (the row sums of
  the masks). Summing first and dividing once mirrors PyTorch (sum / area); MatMul is the
  fastest reduction onnxruntime has, the masks are tiny (``n x L``), and no intermediate is
  bigger than the larger of input and output. Bins may overlap (when ``L`` is not a multiple of ``n``), which
  rules out a reshape-and-reduce formulation, and a ``Loop`` over bins would be slow and
  awkward for simplifiers.
* Max: a sum cannot express a max, so each axis is masked with ``Where(mask, X, -inf)`` on a
  broadcast ``(..., n, L, other)`` tensor and reduced with ``ReduceMax``; first H, then W, so the
  largest intermediate is ``nh`` times the input (never ``nh * nw`` times). ``Where`` rather than
  adding ``-inf`` keeps ``+inf`` activations intact.

Both are exact for any ``L >= 1`` (including ``L < n``, where bins repeat elements) and use
only standard ONNX ops, so the graph passes the full checker, strict shape inference and
onnxsim. An output size of ``(1, 1)`` is left to the original module, which exports as
``GlobalAveragePool`` / ``GlobalMaxPool``; a ``None`` entry (keep that dimension) leaves that
axis untouched. Known differences from PyTorch, outside finite activations: an ``inf`` in an
average bin gives ``NaN`` in the whole row/column of bins (``0 * inf`` in the MatMul), NaN
propagation through ``ReduceMax`` follows onnxruntime, and an empty axis (``L == 0``, which
PyTorch rejects) gives NaN or an empty tensor instead of an error.

Size limits
-----------
:func:`find_size_limits` runs a weightless copy of the model on the ``meta`` device (shapes
only, no arithmetic; shape-preserving element-wise calls are short-circuited, which makes a
ResNet-152 probe ~15 ms instead of ~600 ms) to find the smallest height and width it accepts,
and refuses models whose classifier fixes the input size, naming the layer that does.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from .errors import ExportFailed
from .probe import ShapesOnly, real_copy, shape_copy

_ADAPTIVE = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


# --------------------------------------------------------------------------- pooling


class FixedSizeModel(ExportFailed):
    """The model has a layer (typically a Linear after a flatten) that fixes its input size."""


def bin_mask(length: int | torch.Tensor, bins: int) -> torch.Tensor:
    """``(bins, length)`` boolean mask of PyTorch's adaptive-pooling bins over ``length``.

    Row ``i`` is True on ``floor(i*length/bins) <= j < ceil((i+1)*length/bins)``. ``length``
    may be a Python int (eager) or the 0-d tensor a traced ``x.shape[d]`` gives (export).
    """
    i = torch.arange(bins).unsqueeze(1)  # (bins, 1)
    j = torch.arange(length).unsqueeze(0)  # (1, length)
    i_len = i * length
    j_bins = j * bins
    return (i_len < j_bins + bins) & (j_bins < i_len + length)


def _output_size(module: nn.Module, where: str) -> tuple[int | None, int | None]:
    """The module's output size as an (h, w) pair, ``None`` meaning "keep that dimension"."""
    size = module.output_size
    pair = (size, size) if isinstance(size, int) or size is None else tuple(size)
    if len(pair) != 2 or not all(s is None or (isinstance(s, int) and s >= 1) for s in pair):
        raise ExportFailed(
            f"layer '{where}' ({type(module).__name__}) has output_size={size!r}: --dynamic-size needs "
            "positive integers or None for (height, width)"
        )
    return pair[0], pair[1]


class DynamicAdaptivePool2d(nn.Module):
    """Adaptive average/max pooling with PyTorch's exact bins, computed from the runtime size.

    Has no parameters or buffers, so swapping it in keeps ``state_dict`` keys unchanged.
    ``output_size`` entries may be ``None`` (keep that dimension, as in PyTorch). ``static``:
    the bins are fixed at the traced size (constants in the graph), for fixed-size exports.
    """

    def __init__(self, output_size: tuple[int | None, int | None], mode: str, static: bool = False) -> None:
        super().__init__()
        if mode not in ("avg", "max"):
            raise ValueError(f"mode must be 'avg' or 'max', not {mode!r}")
        self.output_size = (output_size[0], output_size[1])
        self.mode = mode
        self.static = static

    @classmethod
    def from_module(cls, module: nn.Module, where: str = "", static: bool = False) -> DynamicAdaptivePool2d:
        """The replacement for an ``nn.AdaptiveAvgPool2d`` / ``nn.AdaptiveMaxPool2d``."""
        if isinstance(module, nn.AdaptiveMaxPool2d):
            if module.return_indices:
                raise ExportFailed(
                    f"layer '{where}' (AdaptiveMaxPool2d, return_indices=True) cannot be exported with "
                    "--dynamic-size: only the pooled values can be computed for a symbolic size"
                )
            return cls(_output_size(module, where), "max", static)
        if isinstance(module, nn.AdaptiveAvgPool2d):
            return cls(_output_size(module, where), "avg", static)
        raise TypeError(f"not an adaptive 2-D pool: {type(module).__name__}")

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}, mode={self.mode!r}, static={self.static}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out_h, out_w = self.output_size
        # While tracing, x.shape[d] is a 0-d tensor recorded as Shape+Gather: the bins follow
        # the runtime size. In eager mode it is an int and the same code runs. Static: ints, so
        # the bins are constants (and no Shape node is shared with the graph's other pools).
        h, w = (int(x.shape[-2]), int(x.shape[-1])) if self.static else (x.shape[-2], x.shape[-1])
        mask_h = None if out_h is None else bin_mask(h, out_h)
        mask_w = None if out_w is None else bin_mask(w, out_w)
        if self.mode == "avg":
            return self._average(x, mask_h, mask_w)
        return self._maximum(x, mask_h, mask_w)

    @staticmethod
    def _average(x: torch.Tensor, mask_h: torch.Tensor | None, mask_w: torch.Tensor | None) -> torch.Tensor:
        area: torch.Tensor | None = None
        if mask_h is not None:
            weights_h = mask_h.to(x.dtype)
            x = torch.matmul(weights_h, x)  # (nh, H) @ (..., H, W) -> (..., nh, W)
            area = weights_h.sum(1, keepdim=True)  # (nh, 1)
        if mask_w is not None:
            weights_w = mask_w.to(x.dtype)
            x = torch.matmul(x, weights_w.transpose(0, 1))  # (..., nh, W) @ (W, nw) -> (..., nh, nw)
            count_w = weights_w.sum(1).unsqueeze(0)  # (1, nw)
            area = count_w if area is None else area * count_w
        return x if area is None else x / area

    @staticmethod
    def _maximum(x: torch.Tensor, mask_h: torch.Tensor | None, mask_w: torch.Tensor | None) -> torch.Tensor:
        if mask_h is not None:  # (nh, H, 1) against (..., 1, H, W) -> (..., nh, H, W) -> max over H
            x = torch.where(mask_h.unsqueeze(-1), x.unsqueeze(-3), float("-inf")).amax(-2)
        if mask_w is not None:  # (nw, W) against (..., nh, 1, W) -> (..., nh, nw, W) -> max over W
            x = torch.where(mask_w, x.unsqueeze(-2), float("-inf")).amax(-1)
        return x


def _needs_swap(module: nn.Module) -> bool:
    if not isinstance(module, _ADAPTIVE):
        return False
    size = module.output_size
    pair = (size, size) if isinstance(size, int) or size is None else tuple(size)
    return tuple(pair) != (1, 1)  # global pooling exports as GlobalAveragePool / GlobalMaxPool


def _indivisible_pools(model: nn.Module, example: torch.Tensor) -> set[int]:
    """ids of the adaptive pools torch's TorchScript exporter refuses even at a fixed size: an
    output size that does not divide the input they get from ``example``, or one left ``None``."""
    seen: set[int] = set()
    if not any(_needs_swap(m) for m in model.modules()):
        return seen  # nothing to probe: spare the forward pass

    def note(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        h, w = args[0].shape[-2:]
        oh, ow = _output_size(module, type(module).__name__)
        if oh is None or ow is None or h % oh or w % ow:
            seen.add(id(module))

    hooks = [m.register_forward_pre_hook(note) for m in model.modules() if _needs_swap(m)]
    try:
        with torch.inference_mode():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    return seen


@contextlib.contextmanager
def dynamic_adaptive_pooling(model: nn.Module, indivisible_at: torch.Tensor | None = None) -> Iterator[int]:
    """Temporarily replace adaptive 2-D pools (except global ``(1, 1)`` ones) by :class:`DynamicAdaptivePool2d`.

    With ``indivisible_at`` (a fixed-size export's example input) only the pools torch cannot
    export at that size are replaced, with static bins: the rest export as plain pools.
    Like :func:`exporter.trace.native_lrn`: yields the number of modules swapped and restores
    the original modules on exit, even on error. Raises :class:`ExportFailed` (before swapping
    anything) for an ``AdaptiveMaxPool2d`` with ``return_indices=True`` or an invalid output size.
    Functional calls (``F.adaptive_avg_pool2d``) are not modules and are not swapped.
    """
    only = _indivisible_pools(model, indivisible_at) if indivisible_at is not None else None
    planned: list[tuple[nn.Module, str, nn.Module, nn.Module]] = []
    for parent_name, parent in model.named_modules():
        for child_name, child in parent.named_children():
            if _needs_swap(child) and (only is None or id(child) in only):
                where = f"{parent_name}.{child_name}" if parent_name else child_name
                replacement = DynamicAdaptivePool2d.from_module(child, where, static=only is not None)
                planned.append((parent, child_name, child, replacement))
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    try:
        for parent, child_name, child, replacement in planned:
            setattr(parent, child_name, replacement)
            swapped.append((parent, child_name, child))
        yield len(swapped)
    finally:
        for parent, child_name, child in reversed(swapped):
            setattr(parent, child_name, child)


# --------------------------------------------------------------------------- size limits


@dataclass(frozen=True)
class SizeLimits:
    """The input sizes a model accepts around its export shape ``channels x height x width``.

    ``min_height``/``min_width``: the smallest sizes accepted (each searched with the other
    dimension at its export size; the pair itself was verified). ``rejected``: sizes at or above
    the minimum that were probed and failed, i.e. the accepted set is not "every size from the
    minimum up" (empty for the zoo models).
    """

    channels: int
    height: int
    width: int
    min_height: int
    min_width: int
    rejected: tuple[tuple[int, int], ...] = ()

    @property
    def min_size(self) -> tuple[int, int]:
        return (self.min_height, self.min_width)

    @property
    def monotonic(self) -> bool:
        """True when every probed size at or above the minimum ran."""
        return not self.rejected

    def describe(self) -> str:
        """One line for logs and manifests."""
        text = f"accepts {self.channels}xHxW with H >= {self.min_height} and W >= {self.min_width}"
        if self.rejected:
            shown = ", ".join(f"{h}x{w}" for h, w in self.rejected[:4])
            text += f" except some sizes (e.g. {shown})"
        return text


def _first_line(exc: BaseException, limit: int = 160) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


class _Prober:
    """Runs a private copy of a model (weightless on ``meta``, or real as a fallback) at given sizes."""

    def __init__(self, model: nn.Module, channels: int, device: str) -> None:
        self.channels = channels
        self.device = device
        self.model = shape_copy(model) if device == "meta" else real_copy(model)
        self._seen: dict[tuple[int, int], BaseException | None] = {}

    def error(self, height: int, width: int) -> BaseException | None:
        """The exception the model raises at ``height x width`` (batch 1), or None if it runs."""
        key = (height, width)
        if key not in self._seen:
            self._seen[key] = self._run(height, width)
        return self._seen[key]

    def ok(self, height: int, width: int) -> bool:
        return self.error(height, width) is None

    def _run(self, height: int, width: int) -> BaseException | None:
        x = torch.zeros(1, self.channels, height, width, device=self.device)
        mode = ShapesOnly() if self.device == "meta" else contextlib.nullcontext()
        try:
            with torch.no_grad(), mode:
                self.model(x)
        except Exception as exc:  # any failure means "does not take this size"
            return exc
        return None

    def culprit(self, height: int, width: int) -> tuple[str, nn.Module, BaseException]:
        """The innermost submodule (dotted name, module, exception) active when the model failed."""
        active: list[tuple[str, nn.Module]] = []

        def enter(module: nn.Module, args: object, name: str = "") -> None:
            active.append((name, module))

        def leave(module: nn.Module, args: object, output: object) -> None:
            active.pop()  # returns None: a hook that returns a value would replace the output

        handles = []
        for name, module in self.model.named_modules():
            handles.append(module.register_forward_pre_hook(functools.partial(enter, name=name)))
            handles.append(module.register_forward_hook(leave))
        try:
            exc = self._run(height, width)
        finally:
            for handle in handles:
                handle.remove()
        if exc is None:
            raise AssertionError(f"the model ran at {height}x{width} when probed again")
        name, module = active[-1] if active else ("", self.model)
        return name, module, exc


def _smallest(accepts, low: int, high: int) -> int:  # type: ignore[no-untyped-def]
    """Smallest ``s`` in ``[low, high]`` with ``accepts(s)``, given ``accepts(high)``; assumes a threshold."""
    if accepts(low):
        return low
    while high - low > 1:  # invariant: not accepts(low), accepts(high)
        mid = (low + high) // 2
        if accepts(mid):
            high = mid
        else:
            low = mid
    return high


def _largest(accepts, low: int, high: int) -> int:  # type: ignore[no-untyped-def]
    """Largest ``s`` in ``[low, high)`` with ``accepts(s)``, given ``accepts(low)`` and not ``accepts(high)``."""
    while high - low > 1:
        mid = (low + high) // 2
        if accepts(mid):
            low = mid
        else:
            high = mid
    return low


def _layer_phrase(name: str, module: nn.Module, exc: BaseException) -> str:
    kind = type(module).__name__
    if isinstance(module, nn.Linear):
        return f"layer '{name}' (Linear, in_features={module.in_features})"
    if not name:
        return f"{kind}.forward ({_first_line(exc)})"
    return f"layer '{name}' ({kind}: {_first_line(exc)})"


def find_size_limits(model: nn.Module, input_shape: tuple[int, int, int], *, name: str | None = None) -> SizeLimits:
    """Find the smallest height and width ``model`` accepts, for per-sample shape ``(C, H, W)``.

    Runs a private eval-mode copy (weightless, on the ``meta`` device; a real CPU copy only if
    the model does not run on ``meta``); the user's model is never touched.

    The rule for a *fixed* size: the model must run at double the export height, double the
    width, and both doubled. Doubling keeps every power-of-two divisibility of the export size,
    so it tests "variable size" without tripping over stride constraints, and any layer that
    fixes the number of features (a ``Linear`` after a plain flatten) fails there. A model that
    fails raises :class:`ExportFailed` naming the layer that fails. Otherwise each dimension's
    minimum is found by bisection below the export size, the pair is verified, and a handful of
    sizes above it (min+1..3, halfway, export+1/+8/+32, a non-square one) are probed: those that
    fail land in :attr:`SizeLimits.rejected`.
    """
    channels, height, width = (int(d) for d in input_shape)
    label = name or type(model).__name__
    shape = f"{channels}x{height}x{width}"
    prober = _Prober(model, channels, "meta")
    if not prober.ok(height, width):
        meta_error = prober.error(height, width)
        prober = _Prober(model, channels, "cpu")  # the model may need real values (data-dependent code)
        if not prober.ok(height, width):
            raise ExportFailed(
                f"{label} does not run at its own input size {shape}: {_first_line(prober.error(height, width))}"
            ) from meta_error

    fixed_h = not prober.ok(2 * height, width)
    fixed_w = not prober.ok(height, 2 * width)
    if fixed_h or fixed_w or not prober.ok(2 * height, 2 * width):
        probe = (2 * height, width) if fixed_h else (height, 2 * width) if fixed_w else (2 * height, 2 * width)
        layer = _layer_phrase(*prober.culprit(*probe))
        what = "input height" if fixed_h and not fixed_w else "input width" if fixed_w and not fixed_h else "input size"
        raise FixedSizeModel(
            f"{label} cannot be exported with --dynamic-size: {layer} needs a fixed {what} "
            f"({_accepted_window(prober, channels, height, width, fixed_h, fixed_w)}; "
            f"{channels}x{probe[0]}x{probe[1]} fails)"
        )

    min_h = _smallest(lambda h: prober.ok(h, width), 1, height)
    min_w = _smallest(lambda w: prober.ok(height, w), 1, width)
    if not prober.ok(min_h, min_w):  # the dimensions interact: grow both until the pair runs
        grow = _smallest(
            lambda k: prober.ok(min(min_h + k, height), min(min_w + k, width)), 0, max(height - min_h, width - min_w)
        )
        min_h, min_w = min(min_h + grow, height), min(min_w + grow, width)

    probes = {(min_h, min_w), (min_h + 1, min_w + 1), (height + 8, width + 32), (min_h, width + 32)}
    for step in (1, 2, 3):
        probes |= {(min_h + step, width), (height, min_w + step)}
    probes |= {((min_h + height) // 2, width), (height, (min_w + width) // 2)}
    for extra in (1, 8, 32):
        probes |= {(height + extra, width), (height, width + extra), (height + extra, width + extra)}
    rejected = tuple(sorted(p for p in probes if not prober.ok(*p)))
    return SizeLimits(channels, height, width, min_h, min_w, rejected)


def _accepted_window(prober: _Prober, channels: int, height: int, width: int, fixed_h: bool, fixed_w: bool) -> str:
    """Which sizes around the export size run, for the fixed-size message."""
    low_h = _smallest(lambda h: prober.ok(h, width), 1, height)
    low_w = _smallest(lambda w: prober.ok(height, w), 1, width)
    high_h = _largest(lambda h: prober.ok(h, width), height, 2 * height) if fixed_h else None
    high_w = _largest(lambda w: prober.ok(height, w), width, 2 * width) if fixed_w else None
    if fixed_h and fixed_w:
        assert high_h is not None and high_w is not None
        if (low_h, low_w) == (high_h, high_w) == (height, width):
            return f"it accepted {channels}x{height}x{width} only"
        if prober.ok(low_h, low_w) and prober.ok(high_h, high_w):
            return f"it accepted {channels}x{low_h}x{low_w} to {channels}x{high_h}x{high_w} only"
        return f"it accepted {channels}x{height}x{width}"
    if fixed_h:
        return f"it accepted heights {low_h}-{high_h} only" if low_h != high_h else f"it accepted height {height} only"
    if fixed_w:
        return f"it accepted widths {low_w}-{high_w} only" if low_w != high_w else f"it accepted width {width} only"
    return f"it accepted {channels}x{height}x{width} and doubled sizes separately, not together"
