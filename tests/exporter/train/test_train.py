"""exporter.train: the checkpoint it writes is what the export records; its command's refusals are one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter import artifact as art
from exporter.train import checkpoint_path
from tests.helpers import assert_one_line, run_cli


def test_nan_learning_rate_is_one_line(tmp_path: Path) -> None:
    proc = run_cli("exporter.train", "lenet5", "--lr", "nan", "--artifacts-dir", str(tmp_path))
    assert_one_line(proc, "learning rate")


@pytest.mark.parametrize("flag", ["--epochs", "--lr"])
def test_train_refuses_zero_instead_of_using_the_recipe(flag: str, tmp_path: Path) -> None:
    proc = run_cli("exporter.train", "lenet5", flag, "0", "--artifacts-dir", str(tmp_path))
    assert_one_line(proc, "epochs and batch size must be at least 1 and the learning rate a positive number")


def test_checkpoint_round_trips_through_weights(trained: Path) -> None:
    manifest = art.open_artifact(trained).manifest
    assert manifest.weights.kind == "file"
    assert manifest.weights.path == str(checkpoint_path("lenet5", trained.parent).resolve())
