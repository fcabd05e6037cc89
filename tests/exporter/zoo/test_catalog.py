"""The zoo's catalog: its figures are what building each model gives, and it names every builder.

The catalog keeps parameter counts and FLOPs as data so that ``--list`` needs no torch; these
tests rebuild each model (on the meta device) and hold every figure to the build.
"""

from __future__ import annotations

import importlib
import inspect

import pytest

from exporter.zoo import get_spec, list_models, model_stats

#: The deepest builds take longest on a 2-core CPU; the rest stay in the fast suite.
SLOW = {"resnet101", "resnet152"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in list_models()])
def test_catalog_figures_are_what_building_the_model_gives(name: str) -> None:
    spec = get_spec(name)
    built = model_stats(spec)
    recorded = {
        "num_params": spec.num_params,
        "num_params_total": spec.num_params_total or spec.num_params,
        "flops": spec.flops,
        "gflops": spec.gflops,
    }
    assert recorded == built, f"update {name} in exporter/zoo/catalog.py to {built}"


def test_catalog_names_every_builder_of_the_family_modules() -> None:
    """A builder written in a family module but missing from the catalog (or the reverse) is a bug."""
    refs = {get_spec(n).builder_ref for n in list_models()}
    written = set()
    for family in ("lenet", "alexnet", "vgg", "googlenet", "resnet"):
        module = importlib.import_module(f"exporter.zoo.{family}")
        for attr, fn in vars(module).items():
            if (
                inspect.isfunction(fn)
                and fn.__module__ == module.__name__
                and not attr.startswith("_")
                and "num_classes" in inspect.signature(fn).parameters
            ):
                written.add(f"{module.__name__}:{attr}")
    assert refs == written


def test_a_spec_builds_its_own_architecture() -> None:
    spec = get_spec("lenet5")
    assert spec.builder.__name__ == "lenet5"
    assert type(spec.build()).__name__ == "LeNet5"
