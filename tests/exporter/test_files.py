"""Atomic writes under faults: a full disk, a killed write, a killed variant build; the old artifact is kept
and what a killed run left is removed by the next write."""

from __future__ import annotations

import errno
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import exporter.files as files
from exporter import artifact as art
from exporter.__main__ import main as exporter_main
from exporter.export import export_model
from tests.helpers import ROOT, assert_one_line, run_cli


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


def _make(kind: str, path: Path) -> None:
    """A manifest.json that is not one: a FIFO, a link to /dev/zero, a (sparse) file of 100 MB."""
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "zero":
        path.symlink_to("/dev/zero")
    else:
        with open(path, "wb") as fh:
            fh.truncate(100 << 20)


@pytest.mark.parametrize(
    "kind, message",
    [
        ("fifo", "manifest.json is a FIFO (named pipe), not a regular file: remove it and export the model again"),
        ("zero", "manifest.json is a device, not a regular file"),
        ("huge", "manifest.json is larger than the 16 MiB such a file can hold (104.9 MB): it is not one"),
    ],
)
def test_a_manifest_that_is_not_a_regular_file_is_refused_unread(kind: str, message: str, lenet_dir: Path) -> None:
    """Defects: a FIFO manifest.json blocked every command forever; one linked to /dev/zero was read until
    memory ran out. Run apart, with 1 GiB of address space and a minute, so that the old code fails rather
    than hangs or takes the machine's memory."""
    manifest = lenet_dir / "manifest.json"
    manifest.unlink()
    _make(kind, manifest)
    code = "import sys; from pathlib import Path; from exporter import artifact as art\n"
    code += "try:\n    art.read_manifest(Path(sys.argv[1]))\nexcept art.ArtifactError as exc:\n    print(exc)\n"
    limit = lambda: resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))  # noqa: E731
    proc = subprocess.run(
        [sys.executable, "-c", code, str(lenet_dir)],
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=limit,
    )
    assert proc.returncode == 0 and message in proc.stdout, (proc.stdout, proc.stderr[-500:])


def test_an_export_over_a_fifo_manifest_does_not_hang_holding_the_lock(lenet_dir: Path) -> None:
    """Defect: the exporter read the FIFO under the artifact's lock and waited for a writer forever."""
    manifest = lenet_dir / "manifest.json"
    manifest.unlink()
    os.mkfifo(manifest)
    graph = (lenet_dir / "lenet5.onnx").read_bytes()
    proc = run_cli("exporter", "lenet5", "--artifacts-dir", str(lenet_dir.parent), timeout=300)
    assert_one_line(proc, "remove manifest.json", code=2)
    assert "a FIFO (named pipe)" in proc.stderr
    assert (lenet_dir / "lenet5.onnx").read_bytes() == graph


@pytest.mark.parametrize("damage", ["truncated", "bad field", "fifo"])
@pytest.mark.parametrize("command", [[], ["--precision", "fp16"]])
def test_an_unreadable_manifest_never_lets_an_export_replace_the_graphs_beside_it(
    lenet_dir: Path, damage: str, command: list[str]
) -> None:
    """Defect (new-user trial): a damaged manifest beside a trained graph made the exporter, and a variant
    command, export the model again with random weights over it and exit 0."""
    manifest = lenet_dir / "manifest.json"
    before = {p.name: p.read_bytes() for p in lenet_dir.iterdir() if p.is_file() and p.name != "manifest.json"}
    text = manifest.read_text()
    manifest.unlink()
    if damage == "fifo":
        os.mkfifo(manifest)
    else:
        manifest.write_text(
            text[: len(text) // 2] if damage == "truncated" else text.replace('"opset": 17', '"opset": "x"')
        )
    proc = run_cli("exporter", "lenet5", *command, "--artifacts-dir", str(lenet_dir.parent), timeout=300)
    assert_one_line(proc, "remove manifest.json", code=2)
    assert "the files beside it (lenet5.onnx" in proc.stderr and "cannot be checked against it" in proc.stderr
    after = {p.name: p.read_bytes() for p in lenet_dir.iterdir() if p.is_file() and p.name != "manifest.json"}
    assert after == before


def test_an_unreadable_manifest_alone_is_replaced_with_a_note(tmp_path: Path) -> None:
    """Nothing beside it to protect: the export writes a fresh artifact and says what it replaced."""
    directory = tmp_path / "artifacts" / "lenet5"
    directory.mkdir(parents=True)
    (directory / "manifest.json").write_text("{not json")
    proc = run_cli("exporter", "lenet5", "--artifacts-dir", str(directory.parent), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "replaced an unreadable manifest" in proc.stdout
    assert art.open_artifact(directory).manifest.name == "lenet5"


def test_read_regular_refuses_special_files_and_bounds_the_size(tmp_path: Path) -> None:
    from exporter.files import NotRegularFile, read_regular, sha256_file

    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "folder").mkdir()
    (tmp_path / "small").write_bytes(b"12345")
    for name, kind in [("fifo", "a FIFO"), ("folder", "a folder")]:
        with pytest.raises(NotRegularFile, match=f"{kind}.*, not a regular file"):
            read_regular(tmp_path / name)
    with pytest.raises(NotRegularFile, match="a device"):
        sha256_file("/dev/zero")  # hashing never reads what never ends
    with pytest.raises(NotRegularFile, match="larger than the 4 bytes"):
        read_regular(tmp_path / "small", limit=4)
    assert read_regular(tmp_path / "small") == b"12345"
    with pytest.raises(FileNotFoundError):
        read_regular(tmp_path / "missing")


#: ``python -m exporter`` that stops for good between writing the graph (to its hidden temporary name) and
#: the manifest, after leaving a marker: the point of an export where an interruption could leave the most.
HELD_EXPORT = """
import runpy, sys, time
from pathlib import Path
import exporter.artifact as art
marker = Path(sys.argv.pop(1))
real = art.write_manifest
def held(writer, directory, manifest):
    marker.write_text("graph written to its temporary name, manifest next")
    time.sleep(300)
    real(writer, directory, manifest)
art.write_manifest = held
sys.argv[0] = "exporter"
runpy.run_module("exporter", run_name="__main__", alter_sys=True)
"""


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir()} if directory.exists() else {}


@pytest.mark.parametrize("sig, code, existing", [(signal.SIGTERM, 143, True), (signal.SIGINT, 130, False)])
def test_a_signal_mid_export_leaves_nothing_partial(
    lenet_dir: Path, tmp_path: Path, sig: signal.Signals, code: int, existing: bool
) -> None:
    """A real SIGTERM or Ctrl-C to ``python -m exporter`` while it writes (the graph on disk under its temporary
    name, the manifest not yet): one line, the previous artifact byte for byte, no temporary file, no new folder."""
    out = lenet_dir.parent if existing else tmp_path / "fresh"
    directory = out / "lenet5"
    before = _files(directory)
    marker = tmp_path / "writing"
    proc = subprocess.Popen(
        [sys.executable, "-c", HELD_EXPORT, str(marker), "lenet5", "--seed", "4", "--artifacts-dir", str(out)],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # as from a terminal: a test run started in the background inherits SIGINT ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 240
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert marker.exists(), proc.communicate(timeout=10)
        partial = [p.name for p in directory.iterdir() if p.name.endswith(".partial")]
        assert partial and all(n.startswith(".lenet5.onnx.") for n in partial), partial  # really mid-write
        proc.send_signal(sig)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == code, err
    lines = err.strip().splitlines()
    assert "Traceback" not in err and lines[-1] == "interrupted: nothing partial was written", err
    assert _files(directory) == before, "the artifact changed, or a temporary file was left"
    assert existing or not directory.exists(), "a new folder was left behind"
