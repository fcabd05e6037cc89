"""ONNX export of the classic CNNs: a model zoo, a checked and simplified export, and its CLI.

Library API::

    from exporter import export_model, list_models, get_model
    result = export_model("alexnet", opset=17)   # artifacts/alexnet/alexnet.onnx

Names are imported on first use: ``import exporter.errors`` (which every runtime module
does) must not pay for torch and the zoo (a Triton worker process saves ~190 MiB).
"""

from __future__ import annotations

import importlib

from .errors import ExportFailed, UserError

_LAZY = {
    "export_model": ".export",
    "build_variant": ".variants",
    "get_model": ".zoo",
    "get_spec": ".zoo",
    "list_models": ".zoo",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'exporter' has no attribute {name!r}")


__all__ = ["ExportFailed", "UserError", "build_variant", "export_model", "get_model", "get_spec", "list_models"]
