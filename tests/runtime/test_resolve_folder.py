"""A folder the user names is the artifact: a renamed or copied artifact is rebuilt where it is.

The manifest's ``name`` only names the files inside the folder; no command ever writes into a
folder other than the one it was pointed at.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from exporter import artifact as art
from exporter.errors import UserError
from exporter.export import export_model
from runtime.resolve import resolve
from tests.helpers import run_cli


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


@pytest.fixture()
def renamed(tmp_path: Path) -> tuple[Path, Path, str]:
    """``arts/mine`` (lenet5, seed 1, renamed from arts/lenet5) beside a fresh ``arts/lenet5`` (seed 0)."""
    arts = tmp_path / "arts"
    first = export_model("lenet5", seed=1, output_dir=arts)
    mine = arts / "mine"
    first.directory.rename(mine)
    export_model("lenet5", output_dir=arts)
    return arts, mine, first.manifest.sha256


def test_a_renamed_folder_is_rebuilt_in_place_and_the_namesake_is_untouched(renamed) -> None:  # type: ignore[no-untyped-def]
    """Defect: the rebuild went into arts/lenet5 (the manifest's name), replacing that artifact,
    and parity then failed with 'keeps changing while being read'."""
    arts, mine, seed1_sha = renamed
    other = _snapshot(arts / "lenet5")
    (mine / "lenet5.onnx").write_bytes(b"stale")
    said: list[str] = []
    got = resolve(str(mine), artifacts_dir=arts, say=said.append)
    assert _snapshot(arts / "lenet5") == other, "the artifact the manifest's name points at was rewritten"
    assert got.artifact.directory == mine and got.path == mine / "lenet5.onnx"
    assert got.artifact.stale_reason() is None
    assert got.artifact.manifest.sha256 == seed1_sha, "rebuilt with other settings than recorded (seed 1)"
    assert got.artifact.manifest.settings.seed == 1
    assert any("re-exporting" in line for line in said)


def test_parity_on_a_renamed_folder_rebuilds_there(renamed) -> None:  # type: ignore[no-untyped-def]
    arts, mine, _ = renamed
    other = _snapshot(arts / "lenet5")
    (mine / "lenet5.onnx").write_bytes(b"stale")
    proc = run_cli("runtime.parity", str(mine), "--artifacts-dir", str(arts))
    assert proc.returncode == 0, proc.stderr
    assert "keeps changing" not in proc.stderr
    assert _snapshot(arts / "lenet5") == other
    assert art.open_artifact(mine).stale_reason() is None


def test_refusal_prints_a_command_that_writes_into_the_folder_itself(renamed) -> None:  # type: ignore[no-untyped-def]
    arts, mine, _ = renamed
    (mine / "lenet5.onnx").write_bytes(b"stale")
    proc = run_cli("runtime.parity", str(mine), "--artifacts-dir", str(arts), "--no-rebuild")
    assert proc.returncode == 2
    assert f"--output {mine}" in proc.stderr and "--seed 1" in proc.stderr, proc.stderr
    command = proc.stderr.split("rebuild it: ", 1)[1].strip().split()
    assert command[:3] == ["python", "-m", "exporter"]
    other = _snapshot(arts / "lenet5")
    again = run_cli(*command[2:])
    assert again.returncode == 0, again.stderr
    assert _snapshot(arts / "lenet5") == other
    assert art.open_artifact(mine).stale_reason() is None and art.read_manifest(mine).settings.seed == 1  # type: ignore[union-attr]


def test_a_copied_folder_rebuilds_its_variant_in_the_copy(exported, tmp_path: Path) -> None:
    arts = tmp_path / "arts"
    arts.mkdir()
    original = arts / "lenet5"
    shutil.copytree(exported("lenet5").directory, original)
    copy = arts / "copy"
    shutil.copytree(original, copy)
    before = _snapshot(original)
    got = resolve(str(copy), key=art.VariantKey("fp16"), artifacts_dir=arts, say=lambda _line: None)
    assert got.path == copy / "lenet5.fp16.onnx" and got.path.is_file()
    assert _snapshot(original) == before
    (copy / "lenet5.onnx").write_bytes(b"stale")  # base stale too: both rebuilt in the copy
    got = resolve(str(copy), key=art.VariantKey("fp16"), artifacts_dir=arts, say=lambda _line: None)
    assert got.artifact.stale_reason() is None and got.artifact.stale_reason(art.VariantKey("fp16")) is None
    assert _snapshot(original) == before


def test_export_model_writes_into_an_exact_folder(tmp_path: Path) -> None:
    folder = tmp_path / "somewhere" / "my lenet"
    result = export_model("lenet5", directory=folder)
    assert result.directory == folder and result.onnx_path == folder / "lenet5.onnx"
    assert sorted(p.name for p in folder.iterdir()) == ["lenet5.onnx", "manifest.json"]
    assert sorted(p.name for p in folder.parent.iterdir() if not p.name.startswith(".")) == ["my lenet"]
    with pytest.raises(UserError, match="holds the artifact lenet5"):
        export_model("lenet5", directory=folder, name="other")
    with pytest.raises(UserError, match="not both"):
        export_model("lenet5", directory=folder, output_dir=tmp_path)


def test_exporter_output_flag(tmp_path: Path) -> None:
    folder = tmp_path / "exact"
    proc = run_cli("exporter", "lenet5", "--output", str(folder))
    assert proc.returncode == 0, proc.stderr
    assert (folder / "lenet5.onnx").is_file() and art.open_artifact(folder).stale_reason() is None
    both = run_cli("exporter", "--all", "--output", str(folder))
    assert both.returncode == 2 and len(both.stderr.strip().splitlines()) == 1


def test_tune_and_profile_results_are_named_after_the_folder(renamed) -> None:  # type: ignore[no-untyped-def]
    """Results kept per artifact must not collide (and replace each other) for two folders with one manifest name."""
    from runtime.profile.records import Profile
    from runtime.profile.store import profile_dir
    from runtime.tune.config import TuneConfig

    arts, mine, _ = renamed
    assert TuneConfig(artifact=str(mine), artifacts_dir=arts).output == arts / "tune" / "mine"
    assert TuneConfig(artifact="lenet5", artifacts_dir=arts).output == arts / "tune" / "lenet5"
    fields = dict(artifact="lenet5", graph="fp32", engine="onnxruntime", device="cpu", batch_size=1)
    ours = Profile.model_construct(file=str(mine / "lenet5.onnx"), input_shape=[1, 3, 32, 32], **fields)
    theirs = Profile.model_construct(file=str(arts / "lenet5" / "lenet5.onnx"), input_shape=[1, 3, 32, 32], **fields)
    assert profile_dir(arts / "profile", ours, arts) != profile_dir(arts / "profile", theirs, arts)
    assert profile_dir(arts / "profile", ours, arts).parent.name == "mine"


def test_two_folders_of_one_name_never_share_results(exported, tmp_path: Path) -> None:
    """Defect: ``runtime.profile /tmp/x/lenet5`` and ``runtime.profile lenet5`` (artifacts/lenet5) both
    wrote artifacts/profile/lenet5/..., each replacing the other's profile (tune the same)."""
    from runtime.profile.records import Profile
    from runtime.profile.store import profile_dir
    from runtime.tune.config import TuneConfig

    arts, elsewhere = tmp_path / "arts", tmp_path / "x" / "lenet5"
    shutil.copytree(exported("lenet5").directory, arts / "lenet5")
    shutil.copytree(exported("lenet5").directory, elsewhere)
    ours, theirs = TuneConfig(artifact=str(elsewhere), artifacts_dir=arts).output, arts / "tune" / "lenet5"
    assert TuneConfig(artifact="lenet5", artifacts_dir=arts).output == theirs
    assert ours != theirs and ours.parent == theirs.parent and ours.name.startswith("lenet5-")
    assert ours == TuneConfig(artifact=str(elsewhere / "lenet5.onnx"), artifacts_dir=arts).output  # stable
    fields = dict(artifact="lenet5", graph="fp32", engine="onnxruntime", device="cpu", batch_size=1)
    mine = Profile.model_construct(file=str(elsewhere / "lenet5.onnx"), input_shape=[1, 3, 32, 32], **fields)
    home = Profile.model_construct(file=str(arts / "lenet5" / "lenet5.onnx"), input_shape=[1, 3, 32, 32], **fields)
    assert profile_dir(arts / "profile", home, arts).parent.name == "lenet5"
    assert profile_dir(arts / "profile", mine, arts).parent.name == ours.name


def test_a_copied_artifact_uses_the_weights_file_in_its_own_folder(tmp_path: Path) -> None:
    """Defect (new-user trial): the manifest records the weights' absolute path, so a copy of a trained
    artifact whose original was moved away failed ("the weights it was exported with are gone") although
    the same checkpoint sat in the copy. The folder's own file is used; its sha256 is still checked."""
    import torch

    from exporter.zoo import get_model

    original = tmp_path / "a" / "lenet5"
    original.mkdir(parents=True)
    torch.manual_seed(3)
    torch.save(get_model("lenet5").state_dict(), original / "lenet5.pth")
    export_model("lenet5", weights=original / "lenet5.pth", directory=original)
    copy = tmp_path / "b" / "lenet5"
    shutil.copytree(original, copy)
    shutil.rmtree(tmp_path / "a")  # the recorded path is gone
    opened = art.open_artifact(copy)
    assert opened.manifest.weights.path == str(copy / "lenet5.pth")
    proc = run_cli("runtime.parity", str(copy))
    assert proc.returncode == 0, proc.stderr
    torch.manual_seed(4)  # another checkpoint of the same name: refused, never used
    torch.save(get_model("lenet5").state_dict(), copy / "lenet5.pth")
    proc = run_cli("runtime.parity", str(copy), "--no-rebuild")
    assert proc.returncode != 0 and "changed since lenet5 was exported" in proc.stderr, proc.stderr
