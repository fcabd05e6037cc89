"""Numerical comparison of a graph's outputs with PyTorch's, in the spirit of Polygraphy's comparator.

One place defines what "the ONNX graph computes what PyTorch computes" means (every output,
not the first), which tolerances apply to which provider and precision, and which figures
are reported. Results are the typed records of :mod:`exporter.artifact`, so what the
exporter stores in a manifest and what ``runtime.parity`` prints are the same thing.
"""

from __future__ import annotations

import math

import numpy as np

from exporter.artifact import OutputComparison, Tolerance
from exporter.errors import UserError
from exporter.files import finite_or_none

#: Named defaults per (provider, precision). CUDA fp32 convolutions run in TF32 by default
#: (10-bit mantissa): measured on an H200, GoogLeNet's logits differ from fp32 by up to
#: 7.0e-3 and their cosine drops to 0.99990 at batch 32 (SQNR ~38 dB, what a 10-bit mantissa
#: gives), hence the looser CUDA row (the CPU row applies with TF32 off). int8 graphs of
#: untrained networks are judged by signal-to-quantization-noise ratio and cosine: their
#: near-constant logits make top-1 agreement meaningless (it is reported, not enforced).
DEFAULT_TOLERANCES: dict[tuple[str, str], Tolerance] = {
    ("cpu", "fp32"): Tolerance(atol=2e-3, rtol=1e-3, min_cosine=0.99999),
    ("cuda", "fp32"): Tolerance(atol=1e-2, rtol=1e-2, min_cosine=0.9995),
    ("cpu", "fp16"): Tolerance(atol=5e-2, rtol=5e-2, min_cosine=0.999, max_accuracy_drop=0.01),
    ("cuda", "fp16"): Tolerance(atol=5e-2, rtol=5e-2, min_cosine=0.999, max_accuracy_drop=0.01),
    ("cpu", "int8"): Tolerance(atol=None, rtol=0.0, min_cosine=0.98, min_sqnr_db=12.0, max_accuracy_drop=0.02),
    ("cuda", "int8"): Tolerance(atol=None, rtol=0.0, min_cosine=0.98, min_sqnr_db=12.0, max_accuracy_drop=0.02),
    # auto: the precision search's int8 graph with float layers; its own budget is recorded with it
    # (runtime.parity re-checks it with that one), these are int8's floors for a later check elsewhere
    ("cpu", "auto"): Tolerance(atol=None, rtol=0.0, min_cosine=0.98, min_sqnr_db=12.0, max_accuracy_drop=0.02),
    ("cuda", "auto"): Tolerance(atol=None, rtol=0.0, min_cosine=0.98, min_sqnr_db=12.0, max_accuracy_drop=0.02),
    # bf16 is an engine's compute precision (OpenVINO on CPUs with AVX512_BF16/AMX), not a graph:
    # an 8-bit mantissa, so judged like fp16 but looser.
    ("cpu", "bf16"): Tolerance(atol=None, rtol=0.0, min_cosine=0.99, min_sqnr_db=20.0, max_accuracy_drop=0.02),
}


def default_tolerance(device: str, precision: str, tf32: bool = True) -> Tolerance:
    """The named default for a provider (``cpu``/``cuda``) and precision (``fp32``/``fp16``/``int8``)."""
    if device == "cuda" and precision == "fp32" and not tf32:
        device = "cpu"
    try:
        return DEFAULT_TOLERANCES[(device, precision)]
    except KeyError:
        raise UserError(f"no default tolerance for {device}/{precision}") from None


def override(tol: Tolerance, atol: float | None = None, rtol: float | None = None) -> Tolerance:
    """``tol`` with a user's atol/rtol; they must be finite and non-negative."""
    for flag, value in (("--atol", atol), ("--rtol", rtol)):
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise UserError(f"{flag} must be a finite number >= 0, got {value}")
    return tol.model_copy(update={k: v for k, v in (("atol", atol), ("rtol", rtol)) if v is not None})


def _topk(x: np.ndarray, k: int) -> np.ndarray:
    k = min(k, x.shape[1])
    return np.argsort(-x, axis=1, kind="stable")[:, :k]


def sqnr_db(ref: np.ndarray, got: np.ndarray) -> float | None:
    """Signal-to-noise ratio of ``got`` against ``ref`` in dB; None when they are identical."""
    ref64 = ref.astype(np.float64)
    noise = float(np.sum((got.astype(np.float64) - ref64) ** 2))
    if noise == 0.0:
        return None
    if not math.isfinite(noise):
        return -math.inf
    return 10.0 * math.log10(max(float(np.sum(ref64**2)), 1e-30) / noise)


def compare(
    ref: np.ndarray,
    got: np.ndarray,
    tolerance: Tolerance,
    *,
    output: str = "output",
    size: tuple[int, int] | None = None,
) -> OutputComparison:
    """Compare ``got`` (the engine under test) with ``ref`` (PyTorch) for one output.

    Relative error is guarded near zero: the denominator is at least 1e-3 of the output's
    largest magnitude, so tiny values do not blow the figure up. Top-k figures apply to
    2-D (batch, classes) outputs: top-1 is the fraction of samples whose argmax agrees,
    top-5 the mean overlap of the two top-5 sets.
    """
    if ref.shape != got.shape:
        raise UserError(f"output '{output}': the graph gives shape {got.shape}, PyTorch {ref.shape}")
    if not np.all(np.isfinite(ref)):
        raise UserError(
            f"output '{output}': PyTorch's own output contains NaN or Inf, so the graph cannot be checked "
            "against it (look at the model or its weights)"
        )
    ref64 = ref.astype(np.float64)
    got64 = got.astype(np.float64)
    batch = ref.shape[0] if ref.ndim else 1
    finite = bool(np.all(np.isfinite(got64)))
    diff = np.abs(got64 - ref64)
    mag = np.abs(ref64)
    scale = float(mag.max()) if mag.size else 0.0
    guard = max(scale * 1e-3, float(np.finfo(np.float32).tiny))
    rel = diff / np.maximum(mag, guard)

    flat_ref = ref64.reshape(batch, -1)
    flat_got = got64.reshape(batch, -1)
    norms = np.linalg.norm(flat_ref, axis=1) * np.linalg.norm(flat_got, axis=1)
    dots = np.sum(flat_ref * flat_got, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), 1.0)

    top1 = top5 = None
    if ref.ndim == 2 and ref.shape[1] > 1 and finite:
        top1 = float(np.mean(_topk(ref64, 1)[:, 0] == _topk(got64, 1)[:, 0]))
        r5, g5 = _topk(ref64, 5), _topk(got64, 5)
        top5 = float(np.mean([len(set(a) & set(b)) / r5.shape[1] for a, b in zip(r5, g5)]))

    max_abs = float(diff.max()) if diff.size else 0.0
    needed_atol = float(np.max(diff - tolerance.rtol * mag, initial=0.0))
    needed_rtol = float(np.max((diff - (tolerance.atol or 0.0)) / np.maximum(mag, guard), initial=0.0))
    sqnr = sqnr_db(ref64, got64)
    cosine = float(cos.min()) if cos.size else 1.0

    failures: list[str] = []
    if not finite:
        failures.append("output contains NaN or Inf")
    else:
        if tolerance.atol is not None and needed_atol > tolerance.atol:
            failures.append(
                f"max abs err {max_abs:.3g} exceeds atol {tolerance.atol:g} + rtol {tolerance.rtol:g}*|ref| "
                f"(would need atol >= {needed_atol:.3g})"
            )
        if cosine < tolerance.min_cosine:
            failures.append(f"cosine {cosine:.6f} below {tolerance.min_cosine}")
        if tolerance.min_sqnr_db is not None and sqnr is not None and sqnr < tolerance.min_sqnr_db:
            failures.append(f"SQNR {sqnr:.1f} dB below {tolerance.min_sqnr_db:g} dB")
        if tolerance.min_top1 is not None and top1 is not None and top1 < tolerance.min_top1:
            failures.append(f"top-1 agreement {top1:.3f} below {tolerance.min_top1}")

    return OutputComparison(
        output=output,
        batch_size=int(batch),
        height=size[0] if size else None,
        width=size[1] if size else None,
        max_abs_err=finite_or_none(max_abs) if finite else None,
        max_rel_err=finite_or_none(float(rel.max()) if rel.size else 0.0) if finite else None,
        mean_abs_err=finite_or_none(float(diff.mean()) if diff.size else 0.0) if finite else None,
        ref_max_abs=scale,
        cosine_min=finite_or_none(cosine) if finite else None,
        sqnr_db=None if sqnr is None else (finite_or_none(sqnr) if finite else None),
        top1_agreement=top1,
        top5_agreement=top5,
        needed_atol=finite_or_none(needed_atol) if finite else None,
        needed_rtol=finite_or_none(needed_rtol) if finite else None,
        passed=not failures,
        failures=failures,
    )
