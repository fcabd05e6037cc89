"""The weights-fingerprint guard (exporter/reference.py rebuild): a parity figure never compares against other
weights. A weights file gone or changed, zoo code that changed, are refused in one line; another CPU's last-bit
rounding of calibrated BatchNorm statistics is accepted with a note, and only that."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import exporter.reference as reference
import exporter.zoo.lenet as zoo_lenet
from exporter import artifact as art
from exporter.errors import UserError
from exporter.export import export_model
from exporter.reference import rebuild
from runtime.parity import check_artifact
from runtime.parity.__main__ import main as parity_main
from tests.helpers import assert_one_line, assert_one_line_err, run_cli


def _lenet_weights(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return zoo_lenet.lenet5().state_dict()


@pytest.fixture()
def from_file(tmp_path: Path) -> tuple[Path, Path]:
    """lenet5 exported with ``--weights`` from a file: (the artifact folder, the weights file)."""
    weights = tmp_path / "lenet5.pth"
    torch.save(_lenet_weights(7), weights)
    result = export_model("lenet5", weights=weights, output_dir=tmp_path / "arts")
    assert result.manifest.weights.kind == "file" and result.manifest.weights.sha256
    return result.directory, weights


def test_the_recorded_weights_file_is_checked_again(from_file: tuple[Path, Path]) -> None:
    directory, weights = from_file
    proc = run_cli("runtime.parity", str(directory))
    assert proc.returncode == 0, proc.stderr  # the file as it was: the same verdict as the export
    weights.unlink()
    proc = run_cli("runtime.parity", str(directory))
    assert_one_line(proc, f"the weights lenet5 was exported with are gone: {weights.resolve()}", code=2)


@pytest.mark.parametrize("change", ["other weights", "same weights, other bytes"])
def test_a_changed_weights_file_is_refused(from_file: tuple[Path, Path], change: str) -> None:
    """Even a file whose tensors are the same but whose bytes differ: the file is not the one exported."""
    directory, weights = from_file
    if change == "other weights":
        torch.save(_lenet_weights(8), weights)
    else:
        torch.save(_lenet_weights(7), weights, _use_new_zipfile_serialization=False)
    with pytest.raises(UserError, match=r"lenet5\.pth changed since lenet5 was exported \(its sha256 differs\)"):
        rebuild(art.open_artifact(directory).manifest)
    proc = run_cli("runtime.parity", str(directory))
    assert_one_line(proc, "changed since lenet5 was exported (its sha256 differs)", code=2)


def test_changed_zoo_code_is_refused(lenet_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """The zoo's builder now initialises one layer differently: lenet5's random weights are no longer the
    exported ones, and parity must not compare the graph against them."""
    real = zoo_lenet.lenet5

    def changed(num_classes: int = 10) -> torch.nn.Module:
        model = real(num_classes)
        torch.nn.init.zeros_(model.fullconn_layer[0].bias)
        return model

    monkeypatch.setattr(zoo_lenet, "lenet5", changed)
    manifest = art.open_artifact(lenet_dir).manifest
    with pytest.raises(UserError, match="the zoo's code for it does not give the weights lenet5 was exported with"):
        rebuild(manifest)
    code = parity_main([str(lenet_dir)])
    assert_one_line_err(code, capsys.readouterr().err, "the zoo's code for it does not give the weights", code=2)
    monkeypatch.setattr(zoo_lenet, "lenet5", real)
    assert rebuild(manifest).weights.state_sha256 == manifest.weights.state_sha256  # the guard, not the artifact


def test_zoo_models_with_batchnorm_are_calibrated_and_say_so(exported) -> None:
    m = exported("resnet_cifar").manifest
    assert m.weights.kind == "random" and m.weights.batchnorm_calibrated is True and m.weights.seed == 0
    assert exported("lenet5").manifest.weights.batchnorm_calibrated is False  # no BatchNorm to calibrate
    # the statistics are not the fresh ones (mean 0, var 1): calibration ran
    prepared = rebuild(m)
    bn = next(mod for mod in prepared.model.modules() if isinstance(mod, torch.nn.BatchNorm2d))
    assert not torch.equal(bn.running_var, torch.ones_like(bn.running_var))


def _last_bit_rounding(monkeypatch: pytest.MonkeyPatch, *, also_a_weight: bool = False) -> None:
    """Calibration as another CPU would round it: one running variance one ulp away."""
    real = reference.calibrate_batchnorm

    def calibrate(model: torch.nn.Module, *args, **kwargs) -> bool:  # type: ignore[no-untyped-def]
        calibrated = real(model, *args, **kwargs)
        bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
        with torch.no_grad():
            v = bn.running_var[0].item()
            bn.running_var[0] = float(np.nextafter(np.float32(v), np.float32(np.inf)))
            if also_a_weight:
                conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
                conv.weight[0, 0, 0, 0] += 1e-3
        return calibrated

    monkeypatch.setattr(reference, "calibrate_batchnorm", calibrate)


def test_another_cpus_batchnorm_rounding_is_accepted_with_a_note(
    exported, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    directory = tmp_path / "resnet_cifar"
    shutil.copytree(exported("resnet_cifar").directory, directory)
    manifest = art.open_artifact(directory).manifest
    _last_bit_rounding(monkeypatch)
    prepared = rebuild(manifest)
    assert prepared.weights.state_sha256 != manifest.weights.state_sha256
    assert prepared.weights.params_sha256 == manifest.weights.params_sha256
    assert prepared.notes == [
        "BatchNorm statistics recalibrated here differ in their last bits from the export's "
        "(another CPU's rounding); every other weight is identical"
    ]
    artifact = art.open_artifact(directory)
    assert check_artifact(artifact, art.BASE, prepared, artifact.path(art.BASE).read_bytes()).passed
    assert parity_main([str(directory), "--batch-size", "1"]) == 0
    assert "note: BatchNorm statistics recalibrated here differ in their last bits" in capsys.readouterr().err


def test_batchnorm_rounding_excuses_nothing_else(exported, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = exported("resnet_cifar").manifest
    _last_bit_rounding(monkeypatch, also_a_weight=True)
    with pytest.raises(UserError, match="does not give the weights resnet_cifar was exported with"):
        rebuild(manifest)
