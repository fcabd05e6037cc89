"""The export's refusals, triggered for real (nothing stubbed): a graph that computes something else than
the model, a graph the ONNX checker refuses, a simplification that loses the batch. Each is one error line
after the progress lines, a non-zero exit, and nothing written."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from exporter.errors import ExportFailed
from exporter.export import export_model
from tests.helpers import assert_one_line, run_cli, write_user_model

MODELS = textwrap.dedent(
    """
    import torch
    from torch import nn


    class Good(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.fc = nn.Linear(6, 3)

        def forward(self, x):
            return self.fc(x)


    class FrozenScale(nn.Module):
        # A Python float taken from the input: the trace freezes it to the trace batch's value, so the
        # graph computes something else than the model for every other input.
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.fc = nn.Linear(6, 3)

        def forward(self, x):
            return self.fc(x) * float(x.abs().max())


    class _BadConcat(torch.autograd.Function):
        # eager: the identity; in ONNX, a Concat of tensors of different ranks (torch's own export
        # check lets it through; the full checker's strict shape inference does not)
        @staticmethod
        def forward(ctx, x):
            return x

        @staticmethod
        def symbolic(g, x):
            return g.op("Concat", x, g.op("Constant", value_t=torch.ones(1)), axis_i=0)


    class CheckerFails(nn.Module):
        def forward(self, x):
            return _BadConcat.apply(x)


    class BatchConst(nn.Module):
        # a tensor sized by int(x.shape[0]): the trace freezes it at the trace batch, the graph adds a
        # constant [2, 1], and onnxsim's shape inference folds the batch into that constant's 2
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.fc = nn.Linear(6, 3)

        def forward(self, x):
            return self.fc(x) + torch.zeros(int(x.shape[0]), 1)
    """
)


@pytest.fixture()
def models(tmp_path: Path) -> Path:
    return write_user_model(tmp_path, MODELS, "models.py")


@pytest.mark.parametrize(
    "builder, shape, message",
    [
        ("FrozenScale", "6", "frozenscale: onnxruntime disagrees with PyTorch: batch 1, output 'output': max abs err"),
        ("CheckerFails", "6", "exported graph failed the ONNX checker: [ShapeInferenceError]"),
        ("BatchConst", "6", "simplification lost the symbolic batch on output"),
    ],
)
def test_a_graph_that_is_not_the_model_is_refused_and_nothing_written(
    models: Path, tmp_path: Path, builder: str, shape: str, message: str
) -> None:
    out = tmp_path / "out"
    proc = run_cli("exporter", f"{models}:{builder}", "--input-shape", shape, "--artifacts-dir", str(out))
    assert_one_line(proc, message, code=3, after_progress=True)
    assert not out.exists() or list(out.rglob("*")) == []


def test_parity_refusal_keeps_the_previous_artifact(models: Path, tmp_path: Path) -> None:
    """A good export, then the same name from a model whose graph disagrees: the good one stays as it was."""
    out = tmp_path / "out"
    good = export_model(f"{models}:Good", input_shape=(6,), name="net", output_dir=out)
    before = {p.name: p.read_bytes() for p in good.directory.iterdir()}
    with pytest.raises(ExportFailed, match="onnxruntime disagrees with PyTorch"):
        export_model(f"{models}:FrozenScale", input_shape=(6,), name="net", output_dir=out)
    assert {p.name: p.read_bytes() for p in good.directory.iterdir()} == before
