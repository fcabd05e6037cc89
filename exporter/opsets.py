"""The ONNX opsets the exporter writes exactly; importable without torch or onnx (the parser needs them)."""

from __future__ import annotations

from .errors import UserError

SUPPORTED_OPSETS = range(13, 21)
DEFAULT_OPSET = 17


def validate_opset(opset: int) -> None:
    """Reject an opset this exporter cannot write exactly, or one that is not a number (``"17"``)."""
    if isinstance(opset, bool) or not isinstance(opset, int):
        raise UserError(f"opset must be an int such as {DEFAULT_OPSET}, not the {type(opset).__name__} {opset!r}")
    if opset not in SUPPORTED_OPSETS:
        raise UserError(
            f"opset {opset} is not supported: choose {SUPPORTED_OPSETS.start}-{SUPPORTED_OPSETS.stop - 1} "
            f"(default {DEFAULT_OPSET})"
        )
