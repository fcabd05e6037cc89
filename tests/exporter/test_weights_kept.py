"""An artifact's real weights stay its own: a variant command builds from the artifact as it stands, and
no export replaces trained weights with random ones (issue 20, item 1)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from exporter import artifact as art
from exporter.errors import UserError
from exporter.export import export_model
from tests.helpers import assert_one_line, run_cli


@pytest.fixture()
def trained_copy(trained: Path, tmp_path: Path) -> Path:
    """A private copy of the digits-trained lenet5 artifact, at ``tmp_path/artifacts/lenet5``."""
    directory = tmp_path / "artifacts" / "lenet5"
    shutil.copytree(trained, directory)
    return directory


def test_variant_command_reuses_the_trained_export(trained_copy: Path) -> None:
    before = art.open_artifact(trained_copy).manifest
    proc = run_cli("exporter", "lenet5", "--precision", "fp16", "--artifacts-dir", str(trained_copy.parent))
    assert proc.returncode == 0, proc.stderr
    assert f"reusing {trained_copy} as it stands" in proc.stdout, proc.stdout
    assert "exported lenet5" not in proc.stdout and "random" not in proc.stdout, proc.stdout
    artifact = art.open_artifact(trained_copy)
    after = artifact.manifest
    assert (after.sha256, after.weights) == (before.sha256, before.weights)
    assert artifact.stale_reason(art.VariantKey("fp16")) is None
    assert after.variants["fp16"].parity.accuracy is not None  # checked on the digits, as trained weights are


def test_changed_setting_without_weights_is_refused(trained_copy: Path) -> None:
    before = art.open_artifact(trained_copy).manifest
    weights = before.weights.path
    for extra in (["--opset", "16", "--precision", "fp16"], []):
        proc = run_cli("exporter", "lenet5", *extra, "--artifacts-dir", str(trained_copy.parent))
        assert_one_line(proc, f"pass --weights {weights} to export with them")
    assert art.open_artifact(trained_copy).manifest == before


def test_library_refuses_random_over_real_weights(trained_copy: Path) -> None:
    with pytest.raises(UserError, match="would replace them; pass --weights"):
        export_model("lenet5", output_dir=trained_copy.parent)


def test_stale_trained_export_is_made_again_with_its_weights(trained_copy: Path) -> None:
    before = art.open_artifact(trained_copy).manifest
    (trained_copy / before.file).unlink()
    proc = run_cli("exporter", "lenet5", "--precision", "fp16", "--artifacts-dir", str(trained_copy.parent))
    assert proc.returncode == 0, proc.stderr
    assert "exporting lenet5 again with its recorded settings" in proc.stderr
    after = art.open_artifact(trained_copy).manifest
    assert after.weights.kind == "file" and after.weights.sha256 == before.weights.sha256
    assert after.weights.state_sha256 == before.weights.state_sha256
