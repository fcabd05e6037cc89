"""The model zoo: every architecture of the seed articles, registered under a stable name.

The catalog (:mod:`exporter.zoo.catalog`) says what each model is and how big; the builders are
written out torchvision-style in the family modules (``lenet``, ``alexnet``, ``vgg``, ``googlenet``,
``resnet``), imported, with torch, only when a model is built. ``list_models()`` reports them in
historical order (LeNet, AlexNet, VGG, GoogLeNet, ResNet).
"""

from .registry import count_params, get_model, get_spec, list_models, model_stats
from .spec import ModelSpec

__all__ = ["ModelSpec", "count_params", "get_model", "get_spec", "list_models", "model_stats"]
