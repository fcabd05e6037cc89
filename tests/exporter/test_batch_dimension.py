"""A model whose output has no batch dimension is refused naming the output, with or without onnxsim.

Defect: the error blamed the simplifier ("simplification lost the symbolic batch on output"), and with
--no-simplify the graph was written: it declared [batch] and gave [10] at every batch.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from exporter.errors import ExportFailed
from exporter.export import export_model
from tests.helpers import run_cli, write_user_model


class Summed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x).sum(0)


class FixedFirst(nn.Module):
    """A first dimension of 2 whatever the batch: equal to the trace batch by coincidence."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.fc(x)
        return y, y.sum(0).reshape(2, 5)


@pytest.mark.parametrize("simplify", [True, False])
def test_an_output_without_batch_dimension_is_named(tmp_path: Path, simplify: bool) -> None:
    with pytest.raises(ExportFailed, match=r"output 'output' has shape \[10\] at batch 2: no batch dimension"):
        export_model(Summed(), input_shape=(4,), name="summed", output_dir=tmp_path, simplify=simplify)
    assert not (tmp_path / "summed" / "manifest.json").exists()


def test_a_first_dimension_equal_to_the_trace_batch_by_chance_is_found(tmp_path: Path) -> None:
    with pytest.raises(ExportFailed, match=r"output 'output_1' has shape \[2, 5\] at batch 1"):
        export_model(FixedFirst(), input_shape=(4,), name="fixed", output_dir=tmp_path, simplify=False)


def test_the_command_says_it_in_one_line(tmp_path: Path) -> None:
    src = write_user_model(
        tmp_path,
        "import torch\nclass Summed(torch.nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.fc = torch.nn.Linear(4, 10)\n"
        "    def forward(self, x):\n        return self.fc(x).sum(0)\n",
        "summed.py",
    )
    proc = run_cli("exporter", f"{src}:Summed", "--input-shape", "4", "--no-simplify", "--output-dir", str(tmp_path))
    assert proc.returncode == 3
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "output 'output' has shape [10]" in errors[0] and "simplif" not in errors[0]
