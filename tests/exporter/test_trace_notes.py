"""Python control flow in forward() that the trace freezes into the graph is reported, never silent.

Each place is a note naming the user's file and line: printed by the exporter, returned in
ExportResult.notes and recorded in the manifest (``trace_notes``); ``--strict`` / ``strict=True``
refuses the graph in one line and writes nothing. Zoo models produce no notes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from exporter.data import random_input
from exporter.errors import ExportFailed
from exporter.export import export_model
from exporter.frozen import NoteList, compare_traces, tracer_warnings
from exporter.pooling import dynamic_adaptive_pooling
from exporter.reference import prepare
from exporter.trace import native_lrn
from tests.helpers import run_cli, strict_loads, write_user_model

MODELS = """
import torch
from torch import nn


class ValueBranch(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        if (x > 2).any():
            return self.fc(x) * 2
        return self.fc(x)


class BatchBranch(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        if x.shape[0] > 8:
            return self.fc(x) * 2
        return self.fc(x)


class RangeLoop(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        y = self.fc(x)
        rows = [y[i] * 2 for i in range(x.shape[0])]
        return torch.stack(rows)


class SizeLoop(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        cols = [y[..., j].mean(-1) for j in range(x.shape[-1] // 8)]
        return torch.stack(cols, -1).flatten(1)


class Clean(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x).view(x.shape[0], -1)
"""


def _line(source: str, text: str) -> int:
    return next(i for i, line in enumerate(source.splitlines(), 1) if text in line)


@pytest.fixture()
def models(tmp_path: Path) -> Path:
    return write_user_model(tmp_path, MODELS, "branchy.py")


@pytest.mark.parametrize(
    ("builder", "code"),
    [("ValueBranch", "if (x > 2).any():"), ("BatchBranch", "if x.shape[0] > 8:")],
)
def test_a_branch_in_forward_is_a_note_at_the_users_line(models: Path, tmp_path: Path, builder: str, code: str) -> None:
    """Defect: trace_to_onnx silenced warnings; both exported with 'parity ok' and no word."""
    result = export_model(f"{models}:{builder}", input_shape=(4,), output_dir=tmp_path / "arts")
    assert result.notes, "the frozen branch was not reported"
    note = result.notes[0]
    assert Path(note.file).name == "branchy.py" and note.line == _line(MODELS, code)  # type: ignore[arg-type]
    assert note.code == code and "branch" in note.message
    doc = strict_loads((result.directory / "manifest.json").read_text())
    assert doc["trace_notes"][0]["line"] == note.line and doc["trace_notes"][0]["file"] == note.file


def test_a_silent_shape_loop_is_found_by_two_traces(models: Path, tmp_path: Path) -> None:
    """range(x.shape[0]) emits no TracerWarning: the loop is unrolled for the trace batch in silence."""
    with pytest.raises(ExportFailed) as failed:
        export_model(f"{models}:RangeLoop", input_shape=(4,), output_dir=tmp_path / "arts")
    message = str(failed.value)
    assert f"branchy.py:{_line(MODELS, 'for i in range(x.shape[0])')}" in message
    assert "depends on the batch size" in message
    assert not (tmp_path / "arts" / "rangeloop").exists() or not any((tmp_path / "arts" / "rangeloop").iterdir())


def test_a_loop_over_the_width_is_found_for_dynamic_size(models: Path, tmp_path: Path) -> None:
    """At a fixed size the width never changes; with --dynamic-size the second trace is at another size."""
    fixed = export_model(f"{models}:SizeLoop", input_shape=(3, 16, 16), output_dir=tmp_path / "a")
    assert fixed.notes == []
    with pytest.raises(ExportFailed) as failed:
        export_model(f"{models}:SizeLoop", input_shape=(3, 16, 16), output_dir=tmp_path / "b", dynamic_size=True)
    assert f"branchy.py:{_line(MODELS, 'for j in range(x.shape[-1] // 8)')}" in str(failed.value)
    assert "the batch size or the input size" in str(failed.value)


def test_strict_refuses_in_one_line_and_writes_nothing(models: Path, tmp_path: Path) -> None:
    arts = tmp_path / "arts"
    proc = run_cli("exporter", f"{models}:ValueBranch", "--input-shape", "4", "--output-dir", str(arts), "--strict")
    assert proc.returncode == 3, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr
    assert f"branchy.py:{_line(MODELS, 'if (x > 2).any():')}" in errors[0] and "--strict" in errors[0]
    assert not (arts / "valuebranch" / "manifest.json").exists()
    with pytest.raises(ExportFailed, match="--strict"):
        export_model(f"{models}:BatchBranch", input_shape=(4,), output_dir=arts, strict=True)
    assert not (arts / "batchbranch" / "manifest.json").exists()


def test_the_exporter_prints_the_note(models: Path, tmp_path: Path) -> None:
    proc = run_cli("exporter", f"{models}:BatchBranch", "--input-shape", "4", "--output-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert f"frozen   branchy.py:{_line(MODELS, 'if x.shape[0] > 8:')} (if x.shape[0] > 8:)" in proc.stdout.replace(
        str(models.parent) + "/", ""
    )
    assert "--strict" in proc.stdout


def test_shape_arithmetic_that_is_traced_gives_no_note(models: Path, tmp_path: Path) -> None:
    result = export_model(f"{models}:Clean", input_shape=(4,), output_dir=tmp_path, strict=True)
    assert result.notes == [] and result.manifest.trace_notes == []


@pytest.mark.parametrize("name", ["lenet5", "alexnet_cifar", "resnet_cifar", "googlenet_cifar", "vgg16_cifar"])
def test_cheap_zoo_exports_have_no_notes(exported, name: str) -> None:
    assert exported(name).notes == [] and exported(name).manifest.trace_notes == []


@pytest.mark.parametrize("dynamic", [False, True])
def test_alexnet_original_lrn_and_pools_give_no_notes(dynamic: bool) -> None:
    """The native LRN and the swapped pools are the exporter's own modules: their Python is not the graph's."""
    p = prepare("alexnet_original")
    example = random_input(p.input_shape, 2, seed=0)
    other = random_input((3, 193, 211) if dynamic else p.input_shape, 1, seed=1)
    notes = NoteList()
    with native_lrn(p.model), dynamic_adaptive_pooling(p.model, None if dynamic else example), tracer_warnings(notes):
        compare_traces(p.model, example, other, notes, sized=dynamic, what="alexnet_original")
    assert list(notes) == []


def test_torch_empty_guard_is_not_a_note(tmp_path: Path) -> None:
    """F.local_response_norm's `if input.numel() == 0` (an even size, not swapped) freezes nothing."""
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.LocalResponseNorm(4), torch.nn.Flatten())
    result = export_model(module.eval(), input_shape=(3, 8, 8), name="lrn_even", output_dir=tmp_path)
    assert result.notes == []
