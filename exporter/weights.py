"""Model weights: deterministic random initialisation, or a user's state_dict file."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .errors import UserError, first_line
from .files import file_problem, sha256_file
from .user_model import kept_modes

DEFAULT_SEED = 0


def calibrate_batchnorm(model: nn.Module, input_shape: tuple[int, ...], seed: int, batch: int = 8) -> bool:
    """Give BatchNorm layers realistic running statistics from one seeded random batch.

    Freshly initialised BN layers (mean 0, var 1) leave activations unnormalised, so deep
    random networks produce vanishing or exploding logits and parity figures say little.
    One forward pass in training mode with cumulative averaging sets mean/var as a
    trained network would have them. Returns whether the model has BN layers.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return False
    saved = [(m, m.momentum) for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.rand((batch, *input_shape), generator=gen) * 2 - 1
    threads = torch.get_num_threads()
    # One thread: a reduction's result depends on how it is split over threads, and the
    # statistics must come out bit-identical whenever the reference is rebuilt.
    torch.set_num_threads(1)
    with kept_modes(model):  # every submodule's own flag comes back, not the top module's for all
        model.train()
        try:
            with torch.no_grad():
                model(x)
        finally:
            torch.set_num_threads(threads)
    for m, momentum in saved:
        m.momentum = momentum
    return True


def _extract_state_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if isinstance(obj, dict):
        obj = {k: v for k, v in obj.items() if k != "meta"}
    if isinstance(obj, dict) and any(isinstance(v, torch.Tensor) and v.layout != torch.strided for v in obj.values()):
        raise UserError(f"{path} holds sparse or other non-dense tensors: save a plain state_dict")
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(
            f"{path} holds no state_dict: expected a dict of tensors, or a checkpoint dict with one under 'state_dict'"
        )
    state = {str(k): v for k, v in obj.items()}
    if all(k.startswith("module.") for k in state):  # saved from DataParallel / DDP
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _preview(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


def _kind(dtype: torch.dtype) -> str:
    """bool, int, float or complex: what a tensor's values are, whatever their precision."""
    if dtype.is_complex:
        return "complex"
    if dtype.is_floating_point:
        return "float"
    return "bool" if dtype == torch.bool else "int"


@dataclass(frozen=True)
class LoadedWeights:
    """Which file was loaded (its sha256) and the ``meta`` a checkpoint carried, if any."""

    sha256: str
    meta: dict[str, object] | None


def load_weights(model: nn.Module, path: str | Path, optional_prefixes: tuple[str, ...] = ()) -> LoadedWeights:
    """Load a ``.pth`` state_dict into ``model`` strictly; mismatches name the offending keys.

    Keys under ``optional_prefixes`` (training-only heads) may be absent from the file.
    Returns the file's sha256 (the manifest records exactly which weights were used) and
    the checkpoint's ``meta`` (``python -m exporter.train`` records its dataset there).
    """
    p = Path(path)
    problem = file_problem(p)
    if problem == "does not exist":
        raise UserError(f"weights file not found: {p}")
    if problem == "is a folder, not a regular file":
        raise UserError(f"weights file {p} is a folder, not a .pth file")
    if problem:  # a FIFO would block torch.load forever, /dev/zero never ends
        raise UserError(f"weights file {p} {problem}: give the .pth file itself")
    if p.stat().st_size == 0:
        raise UserError(f"weights file {p} is empty")
    with p.open("rb") as f:
        head = f.read(4)
    # torch.save writes a zip archive; files of torch < 1.6 (and plain pickles) start with a pickle's PROTO
    # opcode. Anything else (a text file) makes torch.load fail with a bare KeyError('101')
    if not (head.startswith(b"PK\x03\x04") or head.startswith(b"\x80")):
        raise UserError(
            f"weights file {p} is not a PyTorch checkpoint (torch.save writes a zip archive; it starts with "
            f"{head!r}): give the .pth file torch.save wrote"
        )
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"cannot read weights file {p} as a PyTorch checkpoint: {first_line(exc)}") from exc
    meta = obj.get("meta") if isinstance(obj, dict) and isinstance(obj.get("meta"), dict) else None
    state = _extract_state_dict(obj, p)
    expected = model.state_dict()

    def optional(key: str) -> bool:
        return any(key.startswith(pre + ".") for pre in optional_prefixes)

    missing = [k for k in expected if k not in state and not optional(k)]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} {tuple(state[k].shape)} != expected {tuple(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    # load_state_dict copies across kinds silently: int64 weights become floats, complex ones lose
    # their imaginary part. Only a change of precision within a kind (fp16 into fp32) is a value kept.
    kinds = [
        f"{k} is {str(state[k].dtype).removeprefix('torch.')}, the model holds "
        f"{str(expected[k].dtype).removeprefix('torch.')}"
        for k in expected
        if k in state and _kind(state[k].dtype) != _kind(expected[k].dtype)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_preview(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_preview(unexpected)}")
    if wrong:
        problems.append(f"shape mismatch: {_preview(wrong, 3)}")
    if kinds:
        problems.append(f"type mismatch: {_preview(kinds, 3)} (convert them before saving)")
    if problems:
        raise UserError(f"weights in {p} do not fit the model: " + "; ".join(problems))
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise UserError(f"weights in {p} do not load into the model: {first_line(exc)}") from exc
    return LoadedWeights(sha256_file(p), meta)


def _tensors(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    return [*model.named_parameters(), *model.named_buffers()]


def changed_in_place(model: nn.Module, versions: dict[str, int]) -> list[str]:
    """The parameters and buffers of ``model`` changed in place since ``versions`` (:func:`tensor_versions`)."""
    return [k for k, t in _tensors(model) if versions.get(k) != t._version]


def tensor_versions(model: nn.Module) -> dict[str, int]:
    """Each parameter's and buffer's in-place version counter: a change costs nothing to find."""
    return {k: t._version for k, t in _tensors(model)}


@contextlib.contextmanager
def kept_weights(model: object) -> Iterator[None]:
    """Put back, on exit, any weight of a user's ``nn.Module`` that code run on it changed in place
    (a ``forward()`` that edits its own parameters): what the export does never shows on their module."""
    if not isinstance(model, nn.Module):
        yield
        return
    saved = {k: t.detach().clone() for k, t in _tensors(model)}
    versions = tensor_versions(model)
    try:
        yield
    finally:
        changed = set(changed_in_place(model, versions))
        if changed:
            with torch.no_grad():
                for k, t in _tensors(model):
                    if k in changed:
                        t.copy_(saved[k])


BN_STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


def state_fingerprints(model: nn.Module) -> tuple[str, str]:
    """sha256 over every state_dict entry (name, dtype, shape, bytes), with and without the
    BatchNorm running statistics: the weights' identity.

    Recorded at export and checked when a reference model is rebuilt, so a parity check
    can never compare a graph against different weights without saying so. The second
    leaves out the BatchNorm running statistics: calibrated ones come from a forward pass
    whose last bits can differ between CPUs. One pass fills both (VGG's state is ~550 MB).
    """
    state, params = hashlib.sha256(), hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        t = value.detach().cpu().contiguous()
        header = f"{key}|{t.dtype}|{tuple(t.shape)}|".encode()
        data = t.view(-1).view(torch.uint8).numpy() if t.numel() else b""
        hashers = (state,) if key.rsplit(".", 1)[-1] in BN_STATISTICS else (state, params)
        for h in hashers:
            h.update(header)
            h.update(data)
    return state.hexdigest(), params.hexdigest()
