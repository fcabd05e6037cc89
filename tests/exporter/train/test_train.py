"""exporter.train: the checkpoint it writes is what the export records; its command's refusals are one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter import artifact as art
from exporter.errors import UserError
from exporter.train import checkpoint_path, train
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


def test_a_diverged_run_fails_and_keeps_the_checkpoint(tmp_path: Path) -> None:
    """Defect: --lr 1e30 trained to loss nan and 10% accuracy, wrote the all-NaN checkpoint over the trained one,
    exited 0 and suggested exporting it."""
    checkpoint = checkpoint_path("lenet5", tmp_path)
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"the trained checkpoint")
    proc = run_cli("exporter.train", "lenet5", "--lr", "1e30", "--artifacts-dir", str(tmp_path))
    assert_one_line(proc, "lenet5 diverged in epoch 1/30 (loss nan); nothing written", code=2)
    assert f"{checkpoint} kept as it was; lower --lr (the recipe's is 0.003)" in proc.stderr
    assert "export it" not in proc.stdout
    assert checkpoint.read_bytes() == b"the trained checkpoint"
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == [checkpoint.name]


def test_a_run_at_chance_writes_nothing_and_leaves_no_folder(tmp_path: Path) -> None:
    """A run that stays finite but never learns (held-out accuracy at chance) is refused too; the folder it made
    for the checkpoint is removed again."""
    with pytest.raises(UserError) as info:
        train("lenet5", epochs=1, lr=1e-12, output_dir=tmp_path / "new", log=lambda _m: None)
    assert "lenet5 did not learn: held-out accuracy 7.5% is at chance (10% for 10 classes, n=360)" in str(info.value)
    assert not (tmp_path / "new").exists()


def test_an_interrupted_run_leaves_no_empty_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Defect: Ctrl-C during training left the empty artifact folder made for the checkpoint."""
    import exporter.train.digits as digits

    def interrupted(*_a: object, **_k: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(digits, "digits", interrupted)  # Ctrl-C as the data is loaded, after the folder is made
    with pytest.raises(KeyboardInterrupt):
        train("lenet5", output_dir=tmp_path / "new" / "deeper", log=lambda _m: None)
    assert list(tmp_path.iterdir()) == []
