"""Registry of the model zoo: one builder per variant, looked up by a stable name.

Modelled on torchvision's ``list_models``/``get_model``: each family module decorates
its builders with :func:`register_model`, stating the input shape, class count and
where the architecture comes from.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from ..errors import UserError

Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelSpec:
    """Everything the toolkit needs to know about one registered architecture."""

    name: str
    builder: Builder
    family: str
    input_shape: tuple[int, int, int]
    num_classes: int
    description: str
    source: str
    torchvision_name: str | None = None
    stated_params: int | None = None
    #: parameter prefixes that exist only in training (GoogLeNet's auxiliary heads)
    training_only: tuple[str, ...] = field(default=())

    def build(self, **kwargs: object) -> nn.Module:
        """Instantiate the architecture with its registered class count."""
        kwargs.setdefault("num_classes", self.num_classes)
        return self.builder(**kwargs)


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    *,
    family: str,
    input_shape: tuple[int, int, int],
    num_classes: int,
    description: str,
    source: str,
    torchvision_name: str | None = None,
    stated_params: int | None = None,
    training_only: tuple[str, ...] = (),
    name: str | None = None,
) -> Callable[[Builder], Builder]:
    """Decorator registering a builder under its function name (or ``name``)."""

    def wrap(fn: Builder) -> Builder:
        key = name or fn.__name__
        if key in _REGISTRY:
            raise ValueError(f"model {key!r} registered twice")
        _REGISTRY[key] = ModelSpec(
            name=key,
            builder=fn,
            family=family,
            input_shape=input_shape,
            num_classes=num_classes,
            description=description,
            source=source,
            torchvision_name=torchvision_name,
            stated_params=stated_params,
            training_only=training_only,
        )
        return fn

    return wrap


#: Families in historical order, which is how listings present them.
FAMILY_ORDER = ("lenet", "alexnet", "vgg", "googlenet", "resnet")


def list_models() -> list[str]:
    """Names of all registered models: families in historical order, each in registration order."""
    rank = {family: i for i, family in enumerate(FAMILY_ORDER)}
    return sorted(_REGISTRY, key=lambda n: rank.get(_REGISTRY[n].family, len(rank)))


def get_spec(name: str) -> ModelSpec:
    """Look up a model by name; an unknown name raises a UserError naming close matches."""
    try:
        return _REGISTRY[name]
    except KeyError:
        pass
    close = difflib.get_close_matches(name.lower(), list(_REGISTRY), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise UserError(
        f"unknown model {name!r}.{hint} Run 'python -m exporter --list' to see all {len(_REGISTRY)} models."
    )


def get_model(name: str, **kwargs: object) -> nn.Module:
    """Build a registered model (random initialisation, train mode like torchvision)."""
    return get_spec(name).build(**kwargs)


def count_params(model: nn.Module, exclude_prefixes: tuple[str, ...] = ()) -> int:
    """Number of parameters, leaving out those under ``exclude_prefixes``."""
    return sum(
        p.numel()
        for n, p in model.named_parameters()
        if not any(n == pre or n.startswith(pre + ".") for pre in exclude_prefixes)
    )


def model_stats(spec: ModelSpec) -> dict[str, float | int]:
    """Parameter count and GFLOPs (batch 1) of the inference graph, computed on the meta device.

    FLOPs follow torch's FlopCounterMode: 2 per multiply-accumulate, convolutions and
    matrix products only (the usual convention; torchvision's tables quote MACs).
    """
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = spec.build().eval()
        x = torch.empty(1, *spec.input_shape)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return {
        "num_params": count_params(model, spec.training_only),
        "num_params_total": count_params(model),
        "gflops": counter.get_total_flops() / 1e9,
    }
