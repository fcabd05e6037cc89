"""Parity of a graph with its PyTorch model: the one implementation the exporter and ``runtime.parity`` share.

:func:`check` runs a graph (an artifact's, or bytes about to be written) in onnxruntime and
its PyTorch model on the same fresh inputs, batch size by batch size (and input size by
input size for dynamic-size graphs), compares every output, and returns a typed
:class:`~exporter.artifact.ParityRecord`. The inputs are a pure function of the seed, so the
exporter's own verification and a later ``python -m runtime.parity`` of the same file give
the same figures. :func:`check_artifact` does the same for an artifact on disk, rebuilding
its reference from the manifest (zoo models) or from a builder the user names. Both live in
:mod:`runtime.parity.checker`.
"""

from __future__ import annotations

import importlib

DEFAULT_BATCH_SIZES = (1, 3, 5)
DEFAULT_SEED = 1234
DIGITS = "sklearn digits"
#: Sizes a dynamic-size graph is checked at besides its export size and its minimum: square and
#: non-square, and sizes the usual pooling outputs (6, 7) do not divide.
EXTRA_SIZES = ((256, 300), (193, 211), (320, 320))

#: Imported (with torch and onnxruntime) on first use, so that ``python -m runtime.parity --help`` needs neither.
_LAZY = ("check", "check_artifact", "check_sizes")


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(importlib.import_module(".checker", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DEFAULT_BATCH_SIZES", "DEFAULT_SEED", "DIGITS", "EXTRA_SIZES", *_LAZY]
