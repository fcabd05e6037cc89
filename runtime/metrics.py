"""Numerical comparison of two model outputs, in the spirit of Polygraphy's comparison reports.

Used by the exporter's self-check and by ``runtime.parity``: one place defines what
"the ONNX graph computes what PyTorch computes" means and which tolerances apply.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    """Pass criteria: elementwise ``|got - ref| <= atol + rtol * |ref|`` plus summary floors."""

    atol: float
    rtol: float
    min_cosine: float = 0.0
    min_top1: float = 0.0

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


#: Named defaults per (provider, precision). fp32 on CPU is tight; CUDA convolutions run
#: in TF32 by default in both onnxruntime and PyTorch (10-bit mantissa), hence looser.
DEFAULT_TOLERANCES: dict[tuple[str, str], Tolerance] = {
    ("cpu", "fp32"): Tolerance(atol=2e-3, rtol=1e-3, min_cosine=0.99999),
    ("cuda", "fp32"): Tolerance(atol=5e-3, rtol=1e-2, min_cosine=0.9999),
    ("cpu", "fp16"): Tolerance(atol=5e-2, rtol=5e-2, min_cosine=0.999, min_top1=0.99),
    ("cuda", "fp16"): Tolerance(atol=5e-2, rtol=5e-2, min_cosine=0.999, min_top1=0.99),
    ("cpu", "int8"): Tolerance(atol=float("inf"), rtol=0.0, min_cosine=0.98, min_top1=0.90),
    ("cuda", "int8"): Tolerance(atol=float("inf"), rtol=0.0, min_cosine=0.98, min_top1=0.90),
}


def default_tolerance(device: str, precision: str = "fp32") -> Tolerance:
    """The named default for a provider ('cpu'/'cuda') and precision ('fp32'/'fp16'/'int8').

    Variant keys such as ``int8.opt-cpu`` use their precision's tolerance.
    """
    base = precision.split(".")[0]
    if (device, base) not in DEFAULT_TOLERANCES:
        from exporter.errors import UserError

        raise UserError(f"no default tolerance for {device}/{precision}: precision must be fp32, fp16 or int8")
    return DEFAULT_TOLERANCES[(device, base)]


@dataclass
class Comparison:
    """Figures comparing one output tensor against its reference, and the verdict."""

    batch_size: int
    max_abs_err: float
    max_rel_err: float
    mean_abs_err: float
    ref_max_abs: float
    cosine_min: float
    top1_agreement: float
    top5_agreement: float
    needed_atol: float
    needed_rtol: float
    tolerance: Tolerance
    passed: bool
    failures: list[str]

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["tolerance"] = self.tolerance.to_dict()
        return d


def _topk(x: np.ndarray, k: int) -> np.ndarray:
    k = min(k, x.shape[1])
    return np.argsort(-x, axis=1, kind="stable")[:, :k]


def compare(ref: np.ndarray, got: np.ndarray, tolerance: Tolerance) -> Comparison:
    """Compare ``got`` (the engine under test) with ``ref`` (PyTorch) for one output.

    Relative error is guarded near zero: the denominator is at least 1e-3 of the
    output's largest magnitude, so tiny logits do not blow the figure up.
    Top-k figures apply to 2-D (batch, classes) outputs: top-1 is the fraction of
    samples whose argmax agrees, top-5 the mean overlap of the two top-5 sets.
    """
    if ref.shape != got.shape:
        raise ValueError(f"shape mismatch: reference {ref.shape} vs output {got.shape}")
    ref64 = ref.astype(np.float64)
    got64 = got.astype(np.float64)
    batch = ref.shape[0] if ref.ndim else 1
    diff = np.abs(got64 - ref64)
    mag = np.abs(ref64)
    scale = float(mag.max()) if mag.size else 0.0
    guard = max(scale * 1e-3, np.finfo(np.float32).tiny)
    rel = diff / np.maximum(mag, guard)

    flat_ref = ref64.reshape(batch, -1)
    flat_got = got64.reshape(batch, -1)
    norms = np.linalg.norm(flat_ref, axis=1) * np.linalg.norm(flat_got, axis=1)
    dots = np.sum(flat_ref * flat_got, axis=1)
    cos = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), 1.0)

    if ref.ndim == 2 and ref.shape[1] > 1:
        top1 = float(np.mean(_topk(ref64, 1)[:, 0] == _topk(got64, 1)[:, 0]))
        r5, g5 = _topk(ref64, 5), _topk(got64, 5)
        top5 = float(np.mean([len(set(a) & set(b)) / r5.shape[1] for a, b in zip(r5, g5)]))
    else:
        top1 = top5 = 1.0

    max_abs = float(diff.max()) if diff.size else 0.0
    needed_atol = float(np.max(diff - tolerance.rtol * mag, initial=0.0))
    finite_atol = tolerance.atol if np.isfinite(tolerance.atol) else 0.0
    needed_rtol = float(np.max((diff - finite_atol) / np.maximum(mag, guard), initial=0.0))

    failures: list[str] = []
    if not np.all(np.isfinite(got64)):
        failures.append("output contains NaN or Inf")
    if np.isfinite(tolerance.atol) and needed_atol > tolerance.atol:
        failures.append(
            f"max_abs_err {max_abs:.3g} exceeds atol {tolerance.atol:g} + rtol {tolerance.rtol:g}*|ref| "
            f"(needs atol >= {needed_atol:.3g})"
        )
    if float(cos.min()) < tolerance.min_cosine:
        failures.append(f"cosine {float(cos.min()):.6f} below {tolerance.min_cosine}")
    if top1 < tolerance.min_top1:
        failures.append(f"top-1 agreement {top1:.3f} below {tolerance.min_top1}")

    return Comparison(
        batch_size=int(batch),
        max_abs_err=max_abs,
        max_rel_err=float(rel.max()) if rel.size else 0.0,
        mean_abs_err=float(diff.mean()) if diff.size else 0.0,
        ref_max_abs=scale,
        cosine_min=float(cos.min()),
        top1_agreement=top1,
        top5_agreement=top5,
        needed_atol=needed_atol,
        needed_rtol=needed_rtol,
        tolerance=tolerance,
        passed=not failures,
        failures=failures,
    )
