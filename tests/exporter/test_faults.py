"""What a user can get wrong, and what the machine can do to a run: one line each, nothing partial, nothing lost.

Each test reproduces a defect reported against the exporter; the docstring names it.
"""

from __future__ import annotations

import errno
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

import exporter.files as files
from exporter import artifact as art
from exporter.__main__ import main as exporter_main
from exporter.data import random_input
from exporter.export import export_model
from exporter.user_model import build_user_model
from tests.helpers import ROOT, run_cli, write_user_model


def _ort(path: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def _one_line(proc: subprocess.CompletedProcess[str], message: str) -> None:
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    assert message in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


# --- defect 1: a user's model is exported as given --------------------------------------------------


def test_user_builder_model_is_exported_unchanged(tmp_path: Path) -> None:
    """Defect: without --weights the exporter reseeded torch and recalibrated the user's BatchNorm."""
    src = write_user_model(tmp_path)
    proc = run_cli("exporter", f"{src}:make_tiny", "--input-shape", "3x16x16", "--artifacts-dir", str(tmp_path / "a"))
    assert proc.returncode == 0, proc.stderr
    _, model = build_user_model(f"{src}:make_tiny")  # the builder seeds itself: the same model again
    model.eval()
    x = random_input((3, 16, 16), 4, seed=11)
    with torch.inference_mode():
        expected = model(x).numpy()
    np.testing.assert_allclose(_ort(tmp_path / "a" / "make_tiny" / "make_tiny.onnx", x.numpy()), expected, atol=1e-5)
    m = art.open_artifact(tmp_path / "a" / "make_tiny").manifest
    assert m.weights.kind == "as_given" and not m.weights.batchnorm_calibrated and m.weights.seed is None


def test_module_passed_to_the_api_is_not_touched(tmp_path: Path) -> None:
    torch.manual_seed(5)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten())
    with torch.no_grad():
        module[1].running_mean.uniform_(-1, 1)
        module[1].running_var.uniform_(0.5, 2)
    module.eval()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    x = random_input((3, 6, 6), 3, seed=2)
    with torch.inference_mode():
        expected = module(x).numpy()
    result = export_model(module, input_shape=(3, 6, 6), name="given", output_dir=tmp_path)
    after = module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "the user's module was modified"
    np.testing.assert_allclose(_ort(result.onnx_path, x.numpy()), expected, atol=1e-5)


def test_user_builder_sees_the_callers_random_state(tmp_path: Path) -> None:
    """The exporter must not reseed torch before calling a user's builder."""
    src = write_user_model(tmp_path, "import torch\nNet = lambda: torch.nn.Linear(4, 3)\n", "rng_net.py")
    torch.manual_seed(123)
    expected = torch.nn.Linear(4, 3).eval()
    torch.manual_seed(123)
    result = export_model(f"{src}:Net", input_shape=(4,), output_dir=tmp_path / "out")
    x = random_input((4,), 2, seed=1)
    with torch.inference_mode():
        np.testing.assert_allclose(_ort(result.onnx_path, x.numpy()), expected(x).numpy(), atol=1e-6)


# --- defect 6: --name stays inside the output folder -----------------------------------------------


@pytest.mark.parametrize("name", ["../../escaped", "/tmp/escaped_abs", "a/b", ".."])
def test_name_cannot_escape_the_output_folder(name: str, tmp_path: Path) -> None:
    out = tmp_path / "deep" / "out"
    proc = run_cli("exporter", "lenet5", "--name", name, "--artifacts-dir", str(out), cwd=tmp_path)
    _one_line(proc, "bad artifact name")
    assert not list(tmp_path.rglob("*.onnx")) and not Path("/tmp/escaped_abs").exists()


# --- defect 10: one line where a traceback was ------------------------------------------------------

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
    _one_line(proc, message)
    assert not list(tmp_path.rglob("*.onnx"))


def test_a_folder_in_the_way_of_the_graph_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "lenet5" / "lenet5.onnx").mkdir(parents=True)
    proc = run_cli("exporter", "lenet5", "--artifacts-dir", str(tmp_path))
    assert proc.returncode == 2 and "a folder of that name is in the way" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_nan_calibration_data_is_one_line(exported, tmp_path: Path) -> None:
    import shutil

    shutil.copytree(exported("lenet5").directory, tmp_path / "arts" / "lenet5")
    calib = tmp_path / "calib"
    calib.mkdir()
    bad = np.zeros((4, 3, 32, 32), np.float32)
    bad[0, 0, 0, 0] = np.nan
    np.save(calib / "bad.npy", bad)
    args = ["lenet5", "--precision", "int8", "--calibration-dir", str(calib), "--artifacts-dir", str(tmp_path / "arts")]
    proc = run_cli("exporter", *args)
    assert proc.returncode == 2 and "NaN" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "arts" / "lenet5" / "lenet5.int8.onnx").exists()


def test_nan_learning_rate_is_one_line(tmp_path: Path) -> None:
    proc = run_cli("exporter.train", "lenet5", "--lr", "nan", "--artifacts-dir", str(tmp_path))
    _one_line(proc, "learning rate")


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


def _disk_full(monkeypatch: pytest.MonkeyPatch, when=lambda path: True) -> None:
    real = files.os.fsync

    def fsync(fd: int) -> None:
        if when(Path(f"/proc/self/fd/{fd}").resolve()):
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    monkeypatch.setattr(files.os, "fsync", fsync)


def test_full_disk_during_export_is_one_line_and_keeps_the_old_artifact(
    exported, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import shutil

    shutil.copytree(exported("lenet5").directory, tmp_path / "lenet5")
    before = (tmp_path / "lenet5" / "lenet5.onnx").read_bytes()
    _disk_full(monkeypatch)
    code = exporter_main(["lenet5", "--seed", "3", "--artifacts-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: ") and "the disk is full" in err[-1]
    assert (tmp_path / "lenet5" / "lenet5.onnx").read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "lenet5").iterdir()) == ["lenet5.onnx", "manifest.json"]


def test_full_disk_during_a_variant_is_one_line(
    exported, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import shutil

    shutil.copytree(exported("lenet5").directory, tmp_path / "lenet5")
    _disk_full(monkeypatch)
    code = exporter_main(["lenet5", "--precision", "fp16", "--artifacts-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "the disk is full" in err[-1]
    assert not (tmp_path / "lenet5" / "lenet5.fp16.onnx").exists()
    assert "fp16" not in art.open_artifact(tmp_path / "lenet5").manifest.variants


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


# --- defect 12: partial files of a killed write are removed by the next one -------------------------


def test_partial_files_left_by_a_killed_write_are_removed(exported, tmp_path: Path) -> None:
    import shutil

    shutil.copytree(exported("lenet5").directory, tmp_path / "lenet5")
    left = [tmp_path / "lenet5" / ".lenet5.onnx.k1ll3d.partial", tmp_path / "lenet5" / ".manifest.json.x.partial"]
    for p in left:
        p.write_bytes(b"half a graph")
    result = export_model("lenet5", output_dir=tmp_path)
    assert not any(p.exists() for p in left)
    assert any("partial file" in m for m in result.messages)


# --- found by a hostile pass over the commands --------------------------------------------------------

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
        (["b.py:two_lines", "--input-shape", "4"], "calling b.py:two_lines() failed: RuntimeError: boom"),
        (["b.py:leaves", "--input-shape", "4"], "calling b.py:leaves() failed: it called sys.exit(3)"),
        (["exits.py:Net", "--input-shape", "4"], "importing exits.py failed: it called sys.exit('bye')"),
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
    _one_line(proc, message)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*.onnx"))


@pytest.mark.parametrize("flag", ["--epochs", "--lr"])
def test_train_refuses_zero_instead_of_using_the_recipe(flag: str, tmp_path: Path) -> None:
    proc = run_cli("exporter.train", "lenet5", flag, "0", "--artifacts-dir", str(tmp_path))
    _one_line(proc, "epochs and batch size must be at least 1 and the learning rate a positive number")


def test_dumb_terminal_gets_plain_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from exporter.console import Console

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setenv("TERM", "dumb")
    stream = Tty()
    console = Console(stream)
    assert not console.tty
    console.table([], [])


def test_scratch_of_a_killed_variant_build_stays_in_the_artifact_and_is_removed(exported, tmp_path: Path) -> None:
    """SIGKILL during an int8 build left hundreds of MB in /tmp that no later run removed."""
    import shutil
    import tempfile

    from exporter.files import scratch_dir

    directory = tmp_path / "lenet5"
    shutil.copytree(exported("lenet5").directory, directory)
    with scratch_dir(directory, "lenet5.int8") as scratch:
        assert scratch.parent == directory and scratch.name.endswith(".partial")
        assert tempfile.gettempdir() == str(scratch), "libraries' own temporary files go there too"
        (scratch / "stage.onnx").write_bytes(b"x")
        killed = directory / ".lenet5.int8.k1ll3d.partial"
        shutil.copytree(scratch, killed)  # what a killed run leaves
    assert not scratch.exists() and tempfile.gettempdir() != str(scratch)
    proc = run_cli("exporter", "lenet5", "--precision", "fp16", "--artifacts-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert not killed.exists()
