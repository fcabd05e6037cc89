"""The model zoo: every architecture of the seed articles, registered under a stable name.

Importing the family modules registers their builders; the order below is the order
``list_models()`` reports (LeNet, AlexNet, VGG, GoogLeNet, ResNet).
"""

from . import lenet  # noqa: F401
from . import alexnet  # noqa: F401
from . import vgg  # noqa: F401
from . import googlenet  # noqa: F401
from . import resnet  # noqa: F401
from .registry import ModelSpec, count_params, get_model, get_spec, list_models, model_stats

__all__ = ["ModelSpec", "count_params", "get_model", "get_spec", "list_models", "model_stats"]
