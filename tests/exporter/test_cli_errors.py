"""What a user can get wrong at the exporter's command line, and what the machine can do to a run: one line
each, a non-zero exit, no traceback, nothing written.

Each test reproduces a defect reported against the exporter; the docstring names it.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import ROOT, assert_one_line, assert_one_line_err, run_cli


@pytest.mark.parametrize("name", ["../../escaped", "/tmp/escaped_abs", "a/b", ".."])
def test_name_cannot_escape_the_output_folder(name: str, tmp_path: Path) -> None:
    out = tmp_path / "deep" / "out"
    proc = run_cli("exporter", "lenet5", "--name", name, "--artifacts-dir", str(out), cwd=tmp_path)
    assert_one_line(proc, "bad artifact name")
    assert not list(tmp_path.rglob("*.onnx")) and not Path("/tmp/escaped_abs").exists()


USER_MODELS = textwrap.dedent(
    """
    import torch
    from torch import nn

    class Broken(nn.Module):
        def forward(self, x):
            raise ValueError("this model cannot run")

    class Functional(nn.Module):
        def forward(self, x):
            return torch.nn.functional.adaptive_avg_pool2d(x, 3).flatten(1)

    class Dict(nn.Module):
        def forward(self, x):
            return {"logits": x.flatten(1)}

    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 4)
        def forward(self, x):
            return self.emb(x)

    class Huge(nn.Module):
        def forward(self, x):
            return x + torch.empty(2**42, device=x.device).sum()
    """
)


def test_a_failing_torch_export_prints_one_error_line_and_no_graph(tmp_path: Path) -> None:
    """Defect: torch's C++ side printed its whole TorchScript graph (dozens of lines) to stdout."""
    (tmp_path / "m.py").write_text(USER_MODELS)
    proc = run_cli("exporter", "m.py:Functional", "--input-shape", "3x20x20", "--artifacts-dir", "out", cwd=tmp_path)
    assert proc.returncode == 3 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: torch.onnx.export failed at opset 17: Unsupported")
    assert proc.stdout == ""
    assert not list(tmp_path.rglob("*.onnx"))


@pytest.mark.parametrize(
    "args, message",
    [
        (["lenet5", "--input-shape", "3x40x40"], "forward pass at input 2x3x40x40 failed: RuntimeError: mat1"),
        (["lenet5", "--input-shape", "3x32"], "lenet5 takes a 3-dimensional input per sample like 3x32x32"),
        (["m.py:Broken", "--input-shape", "3x8x8"], "forward pass at input 2x3x8x8 failed: ValueError: this model"),
        (["m.py:Dict", "--input-shape", "3x8x8"], "returns a dict: export needs a tensor"),
        (["m.py:Tokens", "--input-shape", "5"], "forward pass at input 2x5 failed: RuntimeError"),
        (["m.py:Huge", "--input-shape", "3x8x8"], "forward pass at input 2x3x8x8 failed: RuntimeError"),
        (["lenet5", "--weights", "empty.pth"], "weights file empty.pth is empty"),
        (["lenet5", "--weights", "folder"], "weights file folder is a folder"),
        (["lenet5", "--seed", str(2**70)], "--seed must be between 0 and"),
        (["lenet5", "--seed", "-1"], "--seed must be between 0 and"),
        (["lenet5", "--artifacts-dir", "afile"], "afile exists and is not a folder"),
    ],
)
def test_mistakes_and_faults_are_one_line(args: list[str], message: str, tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text(USER_MODELS)
    (tmp_path / "empty.pth").write_bytes(b"")
    (tmp_path / "folder").mkdir()
    (tmp_path / "afile").write_text("x")
    proc = run_cli("exporter", *args, "--no-simplify", cwd=tmp_path)
    assert_one_line(proc, message)
    assert not list(tmp_path.rglob("*.onnx"))
    assert not (tmp_path / "artifacts").exists(), "a failed export leaves no empty folder behind"


def test_a_folder_in_the_way_of_the_graph_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "lenet5" / "lenet5.onnx").mkdir(parents=True)
    proc = run_cli("exporter", "lenet5", "--artifacts-dir", str(tmp_path))
    assert_one_line(proc, "a folder of that name is in the way", code=2, after_progress=True)


def test_nan_calibration_data_is_one_line(lenet_dir: Path, tmp_path: Path) -> None:
    calib = tmp_path / "calib"
    calib.mkdir()
    bad = np.zeros((4, 3, 32, 32), np.float32)
    bad[0, 0, 0, 0] = np.nan
    np.save(calib / "bad.npy", bad)
    args = ["lenet5", "--precision", "int8", "--calibration-dir", str(calib), "--artifacts-dir", str(lenet_dir.parent)]
    proc = run_cli("exporter", *args)
    assert_one_line(proc, "NaN", code=2, after_progress=True)
    assert not (lenet_dir / "lenet5.int8.onnx").exists()


def test_a_fifo_among_the_calibration_files_is_one_line_not_a_hang(lenet_dir: Path, tmp_path: Path) -> None:
    """Defect: np.load opened a FIFO named like a calibration file and waited for a writer forever."""
    import os

    calib = tmp_path / "calib"
    calib.mkdir()
    np.save(calib / "good.npy", np.zeros((4, 3, 32, 32), np.float32))
    os.mkfifo(calib / "pipe.npy")
    args = ["lenet5", "--precision", "int8", "--calibration-dir", str(calib), "--artifacts-dir", str(lenet_dir.parent)]
    proc = run_cli("exporter", *args, timeout=180)
    assert_one_line(proc, f"calibration file {calib / 'pipe.npy'} is a FIFO (named pipe)", code=2, after_progress=True)
    assert not (lenet_dir / "lenet5.int8.onnx").exists()


@pytest.mark.parametrize("command", ["exporter --list --json", "exporter --list"])
def test_closed_pipe_is_quiet(command: str) -> None:
    """Defect: ``| head`` on --json output ended in a BrokenPipeError traceback."""
    proc = subprocess.run(
        f"{sys.executable} -m {command} | head -n 1",
        shell=True,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.stdout.strip() and proc.stderr == "", proc.stderr


BUILDERS = textwrap.dedent(
    """
    import sys

    def two_lines():
        raise RuntimeError("boom\\nsecond line")

    def leaves():
        sys.exit(3)
    """
)


@pytest.mark.parametrize(
    "args, message",
    [
        (["b.py:two_lines", "--input-shape", "4"], "building b.py:two_lines failed at b.py:5 (in two_lines): Runt"),
        (["b.py:leaves", "--input-shape", "4"], "building b.py:leaves failed at b.py:8 (in leaves): it called sys.ex"),
        (["exits.py:Net", "--input-shape", "4"], "importing exits.py failed at exits.py:2 (in <module>): it called"),
        (["lenet5", "--weights", "sparse.pth"], "sparse or other non-dense tensors"),
        (["lenet5", "--input-shape", "3x99999x99999"], "GB of memory"),
        (["lenet5", "--calibration-dir", "somewhere"], "--calibration-dir go(es) with --precision int8"),
        (["lenet5", "--precision", "int8", "--calibration-dir", "nowhere"], "calibration directory not found"),
        (["lenet5", "--fp16-io"], "--fp16-io goes with --precision fp16"),
        (["lenet5", "--view", "--http-port", "99999"], "--http-port 99999 is not a valid port"),
        (["lenet5", "--name", "x.onnx"], "bad artifact name"),
    ],
)
def test_more_mistakes_are_one_line_before_anything_is_written(args: list[str], message: str, tmp_path: Path) -> None:
    (tmp_path / "b.py").write_text(BUILDERS)
    (tmp_path / "exits.py").write_text("import sys\nsys.exit('bye')\n")
    torch.save({"conv_layer.0.weight": torch.zeros(6, 3, 5, 5).to_sparse()}, tmp_path / "sparse.pth")
    (tmp_path / "somewhere").mkdir()
    proc = run_cli("exporter", *args, "--artifacts-dir", "out", cwd=tmp_path)
    assert_one_line(proc, message)
    assert not (tmp_path / "out").exists(), "a failed export leaves no empty folder behind"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--name", "loop"], "out/loop is a symbolic link loop: remove the link or name another folder"),
        (["--output", "out/loop"], "out/loop is a symbolic link loop"),
        (["--artifacts-dir", "out/loop"], "out/loop is a symbolic link loop"),
        (["--name", "gone"], "out/gone is a symbolic link to /nonexistent/folder, which does not exist"),
    ],
)
def test_a_folder_that_is_a_symlink_loop_is_one_line_before_any_work(
    args: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """Defect: --name naming a symlink loop ended, after the whole export, in RuntimeError: Symlink loop."""
    from exporter.__main__ import main as exporter_main

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "loop").symlink_to("loop")
    (tmp_path / "out" / "gone").symlink_to("/nonexistent/folder")
    monkeypatch.chdir(tmp_path)
    if "--output" not in args and "--artifacts-dir" not in args:
        args = [*args, "--artifacts-dir", "out"]
    code = exporter_main(["lenet5", *args])
    assert_one_line_err(code, capsys.readouterr().err, message, code=2)
    assert not list(tmp_path.rglob("*.onnx"))


@pytest.mark.parametrize(
    "args, message",
    [
        (["lenet5", "--weights", "w.fifo"], "weights file w.fifo is a FIFO (named pipe), not a regular file: give the"),
        (["lenet5", "--weights", "/dev/zero"], "weights file /dev/zero is a device, not a regular file"),
        (["lenet5", "--weights", "loop.pth"], "weights file loop.pth is a symbolic link loop"),
        (["m.fifo.py:Net", "--input-shape", "4"], "model file m.fifo.py is a FIFO (named pipe), not a regular file"),
        (["folder.py:Net", "--input-shape", "4"], "model file folder.py is a folder, not a regular file: name the .py"),
        (["pipe.onnx", "--view", "--no-browser"], "pipe.onnx is a FIFO (named pipe), not a regular file: name the"),
    ],
)
def test_a_weights_or_model_file_that_is_not_a_file_says_what_it_is(
    args: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """Defect: each was "weights file not found", "model file not found" or "ONNX file not found", though it was
    there."""
    import os

    from exporter.__main__ import main as exporter_main

    os.mkfifo(tmp_path / "w.fifo")
    os.mkfifo(tmp_path / "m.fifo.py")
    os.mkfifo(tmp_path / "pipe.onnx")
    (tmp_path / "loop.pth").symlink_to("loop.pth")
    (tmp_path / "folder.py").mkdir()
    monkeypatch.chdir(tmp_path)
    code = exporter_main([*args, "--artifacts-dir", "out"])
    assert_one_line_err(code, capsys.readouterr().err, message, code=2)
    assert not (tmp_path / "out").exists()
