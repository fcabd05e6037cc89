"""Atomic writes under faults: a full disk, a killed write, a killed variant build; the old artifact is kept
and what a killed run left is removed by the next write."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import pytest

import exporter.files as files
from exporter import artifact as art
from exporter.__main__ import main as exporter_main
from exporter.export import export_model
from tests.helpers import run_cli


def _disk_full(monkeypatch: pytest.MonkeyPatch, when=lambda path: True) -> None:
    real = files.os.fsync

    def fsync(fd: int) -> None:
        if when(Path(f"/proc/self/fd/{fd}").resolve()):
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    monkeypatch.setattr(files.os, "fsync", fsync)


def test_full_disk_during_export_is_one_line_and_keeps_the_old_artifact(
    lenet_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    before = (lenet_dir / "lenet5.onnx").read_bytes()
    _disk_full(monkeypatch)
    code = exporter_main(["lenet5", "--seed", "3", "--artifacts-dir", str(lenet_dir.parent)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: ") and "the disk is full" in err[-1]
    assert (lenet_dir / "lenet5.onnx").read_bytes() == before
    assert sorted(p.name for p in lenet_dir.iterdir()) == ["lenet5.onnx", "manifest.json"]


def test_full_disk_during_a_variant_is_one_line(lenet_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    _disk_full(monkeypatch)
    code = exporter_main(["lenet5", "--precision", "fp16", "--artifacts-dir", str(lenet_dir.parent)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "the disk is full" in err[-1]
    assert not (lenet_dir / "lenet5.fp16.onnx").exists()
    assert "fp16" not in art.open_artifact(lenet_dir).manifest.variants


def test_all_continues_past_a_full_disk_and_summarises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """Defect: --all stopped at the first failure that was not a user error, with no summary."""
    import exporter.__main__ as cli
    import exporter.export as export

    monkeypatch.setattr(cli, "list_models", lambda: ["lenet5", "alexnet_cifar", "resnet_cifar"])
    real = export.atomic_outputs

    def flaky(directory: Path):
        if directory.name == "alexnet_cifar":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(directory)

    monkeypatch.setattr(export, "atomic_outputs", flaky)
    code = exporter_main(["--all", "--artifacts-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 1
    assert "Exported 2/3 models" in out and "FAILED alexnet_cifar: writing alexnet_cifar: the disk is full" in out
    assert (tmp_path / "resnet_cifar" / "resnet_cifar.onnx").is_file()
    assert not (tmp_path / "alexnet_cifar" / "alexnet_cifar.onnx").exists()


def test_partial_files_left_by_a_killed_write_are_removed(lenet_dir: Path) -> None:
    left = [lenet_dir / ".lenet5.onnx.k1ll3d.partial", lenet_dir / ".manifest.json.x.partial"]
    for p in left:
        p.write_bytes(b"half a graph")
    result = export_model("lenet5", output_dir=lenet_dir.parent)
    assert not any(p.exists() for p in left)
    assert any("partial file" in m for m in result.messages)


def test_scratch_of_a_killed_variant_build_stays_in_the_artifact_and_is_removed(lenet_dir: Path) -> None:
    """SIGKILL during an int8 build left hundreds of MB in /tmp that no later run removed."""
    import tempfile

    from exporter.files import scratch_dir

    directory = lenet_dir
    with scratch_dir(directory, "lenet5.int8") as scratch:
        assert scratch.parent == directory and scratch.name.endswith(".partial")
        assert tempfile.gettempdir() == str(scratch), "libraries' own temporary files go there too"
        (scratch / "stage.onnx").write_bytes(b"x")
        killed = directory / ".lenet5.int8.k1ll3d.partial"
        shutil.copytree(scratch, killed)  # what a killed run leaves
    assert not scratch.exists() and tempfile.gettempdir() != str(scratch)
    proc = run_cli("exporter", "lenet5", "--precision", "fp16", "--artifacts-dir", str(lenet_dir.parent))
    assert proc.returncode == 0, proc.stderr
    assert not killed.exists()
