"""One registered model: what it is, where its builder lives, its size; importable without torch."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from torch import nn

    Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelSpec:
    """Everything the toolkit needs to know about one registered architecture."""

    name: str
    #: ``package.module:function`` of the builder, imported on first use
    builder_ref: str
    family: str
    input_shape: tuple[int, int, int]
    num_classes: int
    description: str
    source: str
    #: parameters of the inference graph (without ``training_only`` ones), as building the model gives
    num_params: int
    #: FLOPs at batch 1, as torch's FlopCounterMode counts them (2 per multiply-accumulate)
    flops: int
    #: all parameters, ``training_only`` ones included (None: the same as ``num_params``)
    num_params_total: int | None = None
    torchvision_name: str | None = None
    #: the parameter count the source publishes (the paper's or torchvision's tables)
    stated_params: int | None = None
    #: parameter prefixes that exist only in training (GoogLeNet's auxiliary heads)
    training_only: tuple[str, ...] = field(default=())

    @property
    def gflops(self) -> float:
        return self.flops / 1e9

    @property
    def builder(self) -> Builder:
        """The builder function (importing its module, and torch, on first use)."""
        module, _, attr = self.builder_ref.partition(":")
        return getattr(importlib.import_module(module), attr)

    def build(self, **kwargs: object) -> nn.Module:
        """Instantiate the architecture with its registered class count."""
        kwargs.setdefault("num_classes", self.num_classes)
        return self.builder(**kwargs)
