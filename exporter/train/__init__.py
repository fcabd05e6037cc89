"""Real weights for the small zoo models: a short training run on scikit-learn's digits.

A short CPU run (Adam, cosine schedule) on the training split; the held-out accuracy is
measured and stored with the checkpoint at ``artifacts/NAME/NAME.digits.pth`` (its ``meta``
names the dataset, which is how parity knows to feed held-out digits), and
``python -m exporter NAME --weights ...`` exports it like any other state_dict. The
command is ``python -m exporter.train`` (:mod:`exporter.train.__main__`); the training is in
:mod:`exporter.train.digits`, imported (with torch) on first use of its names.
"""

from __future__ import annotations

import importlib

#: The zoo models that train on the digits in a short CPU run.
DIGITS_MODELS = ("lenet5", "alexnet_cifar", "vgg16_cifar", "googlenet_cifar", "resnet_cifar")

_LAZY = ("RECIPES", "TrainResult", "checkpoint_path", "evaluate", "export_trained", "kaiming_init", "train")


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(importlib.import_module(".digits", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DIGITS_MODELS", *_LAZY]
