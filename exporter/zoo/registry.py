"""Registry of the model zoo: what each registered model is, looked up by a stable name, without torch.

Modelled on torchvision's ``list_models``/``get_model`` and its weights' ``_metrics``: every model
is a :class:`~exporter.zoo.spec.ModelSpec` in :mod:`exporter.zoo.catalog`, stating its input shape,
class count, where the architecture comes from, and its parameter count and FLOPs as building it
gives them (``tests/exporter/test_zoo.py`` checks each figure against a build). The builder itself,
written out torchvision-style in ``exporter/zoo/<family>.py``, is named by module path and imported
only when a model is built, so listing the zoo (``python -m exporter --list``) needs no torch.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING

from ..errors import UserError
from .catalog import MODELS
from .spec import ModelSpec

if TYPE_CHECKING:
    from torch import nn


_REGISTRY: dict[str, ModelSpec] = {spec.name: spec for spec in MODELS}
if len(_REGISTRY) != len(MODELS):
    raise ValueError("a model name is registered twice in exporter/zoo/catalog.py")

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
    """Parameter count and FLOPs (batch 1) of the inference graph, computed by building it on the meta device.

    FLOPs follow torch's FlopCounterMode: 2 per multiply-accumulate, convolutions and
    matrix products only (the usual convention; torchvision's tables quote MACs). The
    registry's figures (:attr:`ModelSpec.num_params`, :attr:`ModelSpec.flops`) are these.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = spec.build().eval()
        x = torch.empty(1, *spec.input_shape)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    flops = int(counter.get_total_flops())
    return {
        "num_params": count_params(model, spec.training_only),
        "num_params_total": count_params(model),
        "flops": flops,
        "gflops": flops / 1e9,
    }
