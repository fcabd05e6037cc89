"""export_model(module) gives the module back exactly as it was: the training flag of every submodule too.

Defect: prepare() called module.eval() and nothing restored it, though the README says an nn.Module
passed to the API is not modified.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from exporter.errors import ExportFailed, UserError
from exporter.export import export_model
from exporter.user_model import kept_modes
from exporter.weights import calibrate_batchnorm


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5), nn.Flatten(), nn.Linear(4 * 4 * 4, 2))
    net.train()
    net[1].eval()  # a frozen BatchNorm inside a training model: a mixed state
    return net


def _modes(module: nn.Module) -> list[bool]:
    return [m.training for m in module.modules()]


def test_export_restores_every_submodules_training_flag(tmp_path: Path) -> None:
    net = _net()
    before = _modes(net)
    result = export_model(net, input_shape=(3, 6, 6), name="mixed", output_dir=tmp_path)
    assert result.manifest.parity.passed  # exported in eval mode (Dropout off) nevertheless
    assert _modes(net) == before


class _NoBatch(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum(0)


@pytest.mark.parametrize("failure", ["export", "interrupt"])
def test_flags_are_restored_when_the_export_fails_or_is_interrupted(tmp_path: Path, failure: str) -> None:
    net = nn.Sequential(_net(), _NoBatch()) if failure == "export" else _net()
    net.train()
    before = _modes(net)

    def interrupt(message: str) -> None:
        if failure == "interrupt" and message.startswith("tracing"):
            raise KeyboardInterrupt

    with pytest.raises((ExportFailed, KeyboardInterrupt)):
        export_model(net, input_shape=(3, 6, 6), name="x", output_dir=tmp_path, on_step=interrupt)
    assert _modes(net) == before


def test_flags_are_restored_when_the_input_shape_is_wrong(tmp_path: Path) -> None:
    net = _net()
    before = _modes(net)
    with pytest.raises(UserError):
        export_model(net, input_shape=(5, 6, 6), name="x", output_dir=tmp_path)
    assert _modes(net) == before


def test_batchnorm_calibration_restores_per_submodule_flags() -> None:
    net = _net()
    net[2].eval()
    before = _modes(net)
    calibrate_batchnorm(net, (3, 6, 6), seed=0)
    assert _modes(net) == before


def test_kept_modes_is_a_no_op_for_names() -> None:
    with kept_modes("lenet5"):
        pass
