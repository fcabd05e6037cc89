"""The PyTorch model behind an artifact: built for export, and rebuilt to check the graph against.

Rules of trust:

* A model the user gave (their ``file.py:Builder``, an ``nn.Module`` passed to the API, or
  weights from ``--weights``) is exported exactly as given: no seeding before their builder
  runs, no BatchNorm recalibration. Only zoo models with random weights are seeded and
  calibrated, and the manifest says so (``weights.kind == "random"``).
* A reference is rebuilt from the manifest only for zoo models. A user model's code is
  imported only when the user names it on the command line (``--reference file.py:Builder``);
  nothing in a manifest ever causes an import.
* Every rebuilt reference is checked against the fingerprint of the exported weights
  (``weights.state_sha256``), so a parity figure never silently compares other weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .artifact import Manifest, Source, Weights
from .data import random_input
from .errors import INTERRUPTS, ExportFailed, UserError, describe_exception
from .user_model import build_user_model, is_user_model_ref
from .weights import (
    DEFAULT_SEED,
    calibrate_batchnorm,
    changed_in_place,
    load_weights,
    state_fingerprints,
    tensor_versions,
)
from .zoo import count_params, get_spec

MAX_SEED = 2**63 - 1


@dataclass
class Prepared:
    """A PyTorch model in eval mode with the records that say exactly what it is."""

    name: str
    model: nn.Module
    input_shape: tuple[int, ...]
    num_params: int
    source: Source
    weights: Weights
    #: dataset the weights were trained on, where the checkpoint says (``sklearn digits``)
    trained_on: str | None = None
    #: anything a user should know about how this model was rebuilt
    notes: list[str] = field(default_factory=list)


def validate_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise UserError(f"seed must be an int, not the {type(seed).__name__} {seed!r}")
    if not 0 <= seed <= MAX_SEED:
        raise UserError(f"--seed must be between 0 and {MAX_SEED}, got {seed}")
    return seed


def validate_input_shape(shape: object) -> tuple[int, ...]:
    """A per-sample input shape (batch excluded) given to the API: positive ints, e.g. ``(3, 32, 32)``."""
    import numbers

    if isinstance(shape, (str, bytes)) or not isinstance(shape, (tuple, list, torch.Size)):
        raise UserError(
            f"input_shape must be a tuple of positive ints such as (3, 32, 32), batch excluded, not the "
            f"{type(shape).__name__} {shape!r}"
        )
    if not shape or not all(isinstance(d, numbers.Integral) and not isinstance(d, bool) and d >= 1 for d in shape):
        raise UserError(
            f"bad input_shape {tuple(shape)!r}: give one sample's shape (batch excluded) as positive ints, e.g. "
            "(3, 32, 32); a graph with a symbolic height and width is export_model(..., dynamic_size=True)"
        )
    return tuple(int(d) for d in shape)


def _check_target(target: object) -> None:
    """What export_model can take: a zoo name, ``file.py:Builder``, or a model (an instance, not its class)."""
    if isinstance(target, type) and issubclass(target, nn.Module):
        raise UserError(
            f"got the class {target.__name__}, not a model: pass an instance, e.g. {target.__name__}(), "
            f"or the string 'file.py:{target.__name__}'"
        )
    if not isinstance(target, (str, nn.Module)):
        raise UserError(
            f"cannot export a {type(target).__name__}: give a zoo name, 'file.py:Builder' or an nn.Module instance"
        )


def _zoo_model(name: str, seed: int) -> tuple[nn.Module, tuple[int, int, int], tuple[str, ...]]:
    """Build a zoo model with the global RNG seeded, leaving the caller's RNG state as it was."""
    spec = get_spec(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = spec.build()
    return model, spec.input_shape, spec.training_only


def prepare(
    target: str | nn.Module,
    *,
    weights: str | Path | None = None,
    input_shape: tuple[int, ...] | None = None,
    seed: int = DEFAULT_SEED,
    name: str | None = None,
) -> Prepared:
    """Build a zoo model, a ``file.py:Builder`` model, or take a given module, in eval mode.

    Zoo models without ``weights`` are random but deterministic: built under ``seed`` and
    their BatchNorm statistics calibrated on a seeded batch. Users' models are never
    altered; ``weights`` are loaded strictly where given.
    """
    validate_seed(seed)
    _check_target(target)
    if input_shape is not None:
        input_shape = validate_input_shape(input_shape)
    training_only: tuple[str, ...] = ()
    if isinstance(target, nn.Module):
        if input_shape is None:
            raise UserError("an nn.Module needs input_shape (per sample, batch excluded)")
        model, model_name = target, name or type(target).__name__.lower()
        source = Source(kind="module", class_name=type(target).__qualname__)
    elif is_user_model_ref(target):
        if input_shape is None:
            raise UserError(f"{target} is your own model: give its --input-shape, e.g. 3x32x32")
        builder_name, model = build_user_model(target)
        model_name = name or builder_name.lower()
        source = Source(kind="file", ref=str(target))
    else:
        model, default_shape, training_only = _zoo_model(target, seed)
        model_name = name or target
        if input_shape is not None and len(input_shape) != len(default_shape):
            # the zoo's layers fix the rank; a shape of another rank could only fail in the trace
            raise UserError(
                f"{target} takes a {len(default_shape)}-dimensional input per sample like "
                f"{'x'.join(map(str, default_shape))} (batch excluded), got {'x'.join(map(str, input_shape))}"
            )
        input_shape = input_shape or default_shape
        source = Source(kind="zoo", model=target)
    assert input_shape is not None
    check_model(model, str(target) if isinstance(target, str) else f"the {type(target).__name__} given")

    trained_on = None
    if weights is not None:
        loaded = load_weights(model, weights, optional_prefixes=training_only)
        trained_on = str(loaded.meta.get("dataset")) if loaded.meta and loaded.meta.get("dataset") else None
        record = dict(kind="file", path=str(Path(weights).resolve()), sha256=loaded.sha256)
    elif source.kind == "zoo":
        calibrated = calibrate_batchnorm(model, tuple(input_shape), seed)
        record = dict(kind="random", seed=seed, batchnorm_calibrated=calibrated)
    else:
        record = dict(kind="as_given")
    model.eval()
    state_sha256, params_sha256 = state_fingerprints(model)
    return Prepared(
        name=model_name,
        model=model,
        input_shape=tuple(input_shape),
        num_params=count_params(model, training_only),
        source=source,
        weights=Weights(
            **record,  # type: ignore[arg-type]
            state_sha256=state_sha256,
            params_sha256=params_sha256,
        ),
        trained_on=trained_on,
    )


def _other_weights(manifest: Manifest, builder: str | nn.Module | None) -> str:
    """Why a rebuilt reference is not the exported model, and how to make it so."""
    what = "the zoo's code for it" if builder is None else builder if isinstance(builder, str) else "the module"
    message = f"{what} does not give the weights {manifest.name} was exported with (state_dict fingerprint differs)"
    if builder is None:
        return f"{message}: the zoo's code has changed since; export it again"
    if manifest.weights.kind == "file":
        return f"{message}: its code has changed (the weights file is the same)"
    # An unseeded builder draws other random weights each call: only a weights file makes both sides the same.
    weights = f"{manifest.name}.pth"
    return (
        f"{message}: it builds other weights each call (unseeded) or has changed; save them once, "
        f"torch.save(model.state_dict(), {weights!r}), and export with --weights {weights}: parity loads the same file"
    )


def rebuild(manifest: Manifest, builder: str | nn.Module | None = None) -> Prepared:
    """The PyTorch model an artifact was exported from, with the same weights.

    Zoo models are rebuilt from the manifest (name, seed, or the weights file, whose sha256
    must still be the recorded one). User models need ``builder``: a ``file.py:Builder``
    the user named on the command line, or an ``nn.Module``; the manifest's own ``source.ref``
    is never imported. The rebuilt weights must have the exported fingerprint.

    An ``nn.Module`` builder is returned in eval mode, as every reference runs: to give it back as
    it was afterwards, call this under :func:`exporter.user_model.kept_modes` (``export_model`` does).
    """
    src, w = manifest.source, manifest.weights
    shape = manifest.input_shape
    if builder is None and src.kind != "zoo":
        origin = f" (exported from {src.ref})" if src.ref else f" (an in-memory {src.class_name})"
        hint = f"--reference {src.ref}" if src.ref else "--reference FILE.py:Builder"
        raise UserError(
            f"{manifest.name} is your own model{origin}: name its code to compare against, e.g. {hint} "
            "(code named in a manifest is never imported)"
        )
    weights_file: str | None = None
    if w.kind == "file":
        assert w.path is not None
        weights_file = w.path
        if not Path(weights_file).is_file():
            raise UserError(f"the weights {manifest.name} was exported with are gone: {weights_file}")
    target: str | nn.Module = builder if builder is not None else str(src.model)
    seed = w.seed if w.seed is not None else DEFAULT_SEED
    prepared = prepare(target, weights=weights_file, input_shape=shape, seed=seed, name=manifest.name)
    if w.kind == "file" and prepared.weights.sha256 != w.sha256:
        raise UserError(f"{weights_file} changed since {manifest.name} was exported (its sha256 differs)")
    if prepared.weights.state_sha256 != w.state_sha256 and w.batchnorm_calibrated:
        if prepared.weights.params_sha256 == w.params_sha256:
            # Calibration is single-threaded and seeded, so this happens only on another CPU,
            # whose kernels round the last bits differently: the weights are the same.
            prepared.notes.append(
                "BatchNorm statistics recalibrated here differ in their last bits from the export's "
                "(another CPU's rounding); every other weight is identical"
            )
            return prepared
    if prepared.weights.state_sha256 != w.state_sha256:
        raise UserError(_other_weights(manifest, builder))
    return prepared


def _dtype_hint(model: nn.Module) -> str:
    """Why a forward may have failed when the model computes in another precision than the float32 fed."""
    dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters() if p.is_floating_point()})
    if dtypes and dtypes != ["float32"]:
        return f" (the model's weights are {', '.join(dtypes)} and the exporter feeds float32: export model.float())"
    return ""


def check_model(model: nn.Module, what: str) -> None:
    """Refuse models that cannot be traced as they are, saying what to export instead."""
    if isinstance(model, torch.jit.ScriptModule):
        raise UserError(
            f"{what} is a TorchScript module (torch.jit.script or trace): export the nn.Module it was made from"
        )
    if type(model).__name__ == "OptimizedModule" and isinstance(getattr(model, "_orig_mod", None), nn.Module):
        raise UserError(f"{what} is a torch.compile'd module: export the module it wraps (model._orig_mod)")
    meta = next((k for k, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta), None)
    if meta is not None:
        raise UserError(
            f"{what} holds weights on the meta device (shapes, no values), e.g. {meta}: "
            "load real weights into it first (load_state_dict(..., assign=True))"
        )


def forward_outputs(model: nn.Module, x: torch.Tensor, what: str) -> list[torch.Tensor]:
    """Run ``model`` on its own copy of ``x``; one clear error when it fails or returns something not exportable.

    The copy keeps ``x`` as it was for whatever reads it next (onnxruntime, the other side of a
    comparison): a forward that changes its input in place (``x.mul_(2)``) changes only its copy.
    """
    versions = tensor_versions(model)
    try:
        with torch.inference_mode():
            out = model(x.clone())
    except (MemoryError, *INTERRUPTS):
        raise
    except BaseException as exc:  # the user's forward may even call sys.exit() or raise its own BaseException
        shape = "x".join(str(d) for d in x.shape)
        raise ExportFailed(
            f"{what}: the forward pass at input {shape} failed: {describe_exception(exc)}{_dtype_hint(model)}"
        ) from exc
    changed = changed_in_place(model, versions)
    if changed:
        more = f" and {len(changed) - 1} more" if len(changed) > 1 else ""
        raise ExportFailed(
            f"{what}: forward() changes the model's own weights ({changed[0]}{more}): each call computes another "
            "function, so no graph can be it; change them outside forward()"
        )
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    if isinstance(out, dict) or not outs or not all(isinstance(t, torch.Tensor) for t in outs):
        kind = type(out).__name__
        raise ExportFailed(f"{what} returns a {kind}: export needs a tensor or a tuple/list of tensors")
    return outs


def nondeterminism(prepared: Prepared) -> str | None:
    """Why no graph can match ``prepared``'s model where its forward gives two results for one input (random
    ops, a state it keeps between calls), else None. Run where a comparison failed, to say so."""
    x = random_input(prepared.input_shape, 1, seed=4)
    with torch.random.fork_rng(devices=[]):  # the caller's random state stays as it was
        first = forward_outputs(prepared.model, x, prepared.name)
        second = forward_outputs(prepared.model, x, prepared.name)
    for index, (a, b) in enumerate(zip(first, second)):
        if a.shape != b.shape or not torch.allclose(a, b, rtol=0, atol=0, equal_nan=True):
            gap = f" (by up to {(a - b).abs().max().item():.3g})" if a.shape == b.shape else ""
            output = "output" if index == 0 else f"output_{index}"  # the graph's names (trace.output_names)
            return (
                f"forward() is not deterministic: two PyTorch runs on the same input differ at output '{output}'{gap}, "
                "so no graph can match it; remove random ops from forward() (torch.rand, dropout called with "
                "training=True) or the state it keeps between calls"
            )
    return None
