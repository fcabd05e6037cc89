"""TensorRT through onnxruntime's TensorRT execution provider: the optimization profile a benchmark row's
engine is built with, the version-keyed engine cache, and the precision its layers compute in (pure: the
sessions themselves come from :func:`runtime.sessions.create_session`).

* **Profile** (``trt_profile_min_shapes`` / ``opt`` / ``max``): from batch 1 at the manifest's smallest
  input size (its ``min_size`` for a ``--dynamic-size`` export, else the export size) to the run's
  largest batch at its largest size, tuned for the row's own shape. One engine serves the whole range;
  the opt shape is what TensorRT tunes its kernels for.
* **Cache**: ``<artifact>/tensorrt-cache/trt<version>-<gpu>-<graph sha>-<precision>-opt<shape>/``: an
  engine built by another TensorRT, for another GPU or from another graph is never loaded.
* **Precision**: fp32 (TensorRT allows TF32 by default: held to the TF32 peak), fp16
  (``trt_fp16_enable`` on the fp32 graph), int8 (``trt_int8_enable`` on the artifact's QDQ graph,
  fp16 allowed for the layers TensorRT keeps in float; held to the int8 peak).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

PRECISIONS = ("fp32", "fp16", "int8")
#: What a TensorRT row computes in: the peak it is held to (runtime.machine's names).
COMPUTE_PRECISION = {"fp32": "tf32", "fp16": "fp16", "int8": "int8"}


def graph_for(precision: str) -> str:
    """The artifact graph (variant key) TensorRT builds from at ``precision``."""
    return "int8" if precision == "int8" else "fp32"


def shape_text(name: str, shape: tuple[int, ...]) -> str:
    return f"{name}:{'x'.join(str(int(d)) for d in shape)}"


def profile_shapes(
    name: str,
    shape: tuple[int, ...],
    bounds: tuple[tuple[int, int, int], tuple[int, int, int]] | None,
) -> dict[str, str]:
    """The optimization profile of a row of input ``shape`` (N, C, H, W): ``bounds`` are (batch, H, W) at
    the smallest and largest the run and the manifest allow; None: the row's own shape only."""
    n, c, h, w = (int(d) for d in shape)
    (lo_n, lo_h, lo_w), (hi_n, hi_h, hi_w) = bounds or ((n, h, w), (n, h, w))
    low = (min(lo_n, n), c, min(lo_h, h), min(lo_w, w))
    high = (max(hi_n, n), c, max(hi_h, h), max(hi_w, w))
    return {
        "trt_profile_min_shapes": shape_text(name, low),
        "trt_profile_opt_shapes": shape_text(name, (n, c, h, w)),
        "trt_profile_max_shapes": shape_text(name, high),
    }


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower() or "unknown"


def cache_dir(
    root: Path, version: str | None, gpu: str | None, graph: bytes, precision: str, shape: tuple[int, ...]
) -> Path:
    """The engine cache of one (TensorRT version, GPU, graph, precision, opt shape) under ``root``."""
    sha = hashlib.sha256(graph).hexdigest()[:16]
    opt = "x".join(str(int(d)) for d in shape)
    return root / f"trt{_slug(version or 'unknown')}-{_slug(gpu or 'gpu')}-{sha}-{precision}-opt{opt}"


def options(precision: str, cache: Path | None = None, profile: dict[str, str] | None = None) -> dict[str, str]:
    """The TensorRT provider's options for an engine of ``precision``; with ``cache``, engines and timing
    caches are kept there; ``profile``: the optimization profile (None: onnxruntime builds one for the
    shapes it meets)."""
    from exporter.errors import UserError

    if precision not in PRECISIONS:
        raise UserError(f"TensorRT runs {', '.join(PRECISIONS)}, not {precision}")
    out = {
        "trt_fp16_enable": "True" if precision in ("fp16", "int8") else "False",
        "trt_int8_enable": "True" if precision == "int8" else "False",
    }
    if cache is not None:
        out.update(
            trt_engine_cache_enable="True",
            trt_engine_cache_path=str(cache),
            trt_timing_cache_enable="True",
            trt_timing_cache_path=str(cache),
        )
    return {**out, **(profile or {})}


def bounds_for(
    min_size: tuple[int, int] | None,
    export_size: tuple[int, int],
    batches: list[int],
    sizes: list[tuple[int, int]],
) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(batch, H, W) at the profile's low and high end: batch 1 at the manifest's smallest size, the run's
    largest batch at the largest size it times."""
    low_h, low_w = min_size or export_size
    all_sizes = [*sizes, export_size] if not sizes else sizes
    high_h = max(h for h, _ in all_sizes)
    high_w = max(w for _, w in all_sizes)
    return (1, low_h, low_w), (max(batches), high_h, high_w)
