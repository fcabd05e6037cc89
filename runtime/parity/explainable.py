"""Which graphs ``--explain`` can explain: asked before anything runs, so a mistake costs one line, not a
whole parity check first. Imports nothing heavy (the command checks its arguments with it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from exporter.artifact import VariantKey


def explainable(key: VariantKey | None, *, foreign: bool = False) -> str | None:
    """Why ``--explain`` cannot explain the graph ``key`` names (None: the fp32 graph), or None where it
    can. ``foreign``: the graph is a file the artifact does not record (``--graph``), explained at any
    precision."""
    if (key is None or key.precision == "fp32") and not foreign:
        return "--explain compares a variant with the fp32 graph: add --precision int8 or fp16"
    if key is not None and key.optimize_for:
        return (
            f"--explain reads the tensors the quantizer named; onnxruntime's offline-optimized {key} graph has "
            f"fused them away: explain --precision {key.precision} instead"
        )
    return None
