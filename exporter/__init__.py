"""ONNX export of the classic CNNs: a model zoo, a checked and simplified export, and its CLI.

Library API::

    from exporter import export_model, list_models, get_model
    result = export_model("alexnet", opset=17)   # artifacts/alexnet/alexnet.onnx
"""

from .errors import ExportFailed, UserError
from .zoo import get_model, get_spec, list_models


def export_model(*args, **kwargs):  # type: ignore[no-untyped-def]
    """Export a zoo model, a ``file.py:Builder`` or an ``nn.Module``; see :func:`exporter.export.export_model`."""
    from .export import export_model as _export

    return _export(*args, **kwargs)


__all__ = ["ExportFailed", "UserError", "export_model", "get_model", "get_spec", "list_models"]
