"""The model zoo: every architecture of the seed articles, registered under a stable name.

Importing the family modules registers their builders; ``list_models()`` reports them in
historical order (LeNet, AlexNet, VGG, GoogLeNet, ResNet) whatever the import order.
"""

from . import (
    alexnet,  # noqa: F401
    googlenet,  # noqa: F401
    lenet,  # noqa: F401
    resnet,  # noqa: F401
    vgg,  # noqa: F401
)
from .registry import ModelSpec, count_params, get_model, get_spec, list_models, model_stats

__all__ = ["ModelSpec", "count_params", "get_model", "get_spec", "list_models", "model_stats"]
