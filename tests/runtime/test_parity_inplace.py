"""A model that changes its input in place (``x.mul_(2)``) is compared fairly: each side gets its own copy.

Defect: PyTorch ran first and onnxruntime was then fed the mutated tensor, so a correct graph was
refused ("onnxruntime disagrees with PyTorch").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from exporter import artifact as art
from exporter.data import random_input
from exporter.export import export_model
from exporter.reference import forward_outputs
from runtime.bench.engines import ModelContext, Runner, _torch_infer
from runtime.bench.gate import check_runner
from runtime.parity import check
from runtime.sessions import SessionConfig


class InPlace(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x.mul_(2)
        return self.fc(x)


def test_a_correct_graph_of_an_in_place_model_exports_and_passes(tmp_path: Path) -> None:
    result = export_model(InPlace(), input_shape=(4,), name="inplace", output_dir=tmp_path)
    assert result.manifest.parity.passed
    again = check(result.onnx_path, result_reference(result))
    assert again.passed, again.failures()


def result_reference(result):  # type: ignore[no-untyped-def]
    from exporter.reference import rebuild

    return rebuild(result.manifest, InPlace())


def test_forward_outputs_leaves_its_input_as_it_was() -> None:
    x = random_input((4,), 3, seed=1)
    before = x.clone()
    forward_outputs(InPlace().eval(), x, "inplace")
    assert torch.equal(x, before)


class InPlaceConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.conv = nn.Conv2d(3, 4, 5, stride=4)
        self.fc = nn.Linear(4 * 7 * 7, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x.sub_(0.5).mul_(3)
        return self.fc(torch.flatten(torch.relu(self.conv(x)), 1))


def test_digits_windows_and_accuracy_are_fed_to_each_side_unchanged(tmp_path: Path) -> None:
    """Digits batches are windows (views) of one held-out tensor: PyTorch changing one in place changed
    what onnxruntime was fed, and the accuracy of both sides on all 360 images."""
    from exporter.reference import rebuild

    result = export_model(InPlaceConv(), input_shape=(3, 32, 32), name="inplace_conv", output_dir=tmp_path)
    reference = rebuild(result.manifest, InPlaceConv())
    record = check(result.onnx_path, reference, inputs="digits")
    assert record.passed, record.failures()
    assert record.accuracy is not None and record.accuracy.top1_agreement == 1.0


def test_bench_gate_gives_every_engine_its_own_copy(tmp_path: Path) -> None:
    """check_runner caches the seeded batch and PyTorch's outputs for every engine of a group: a PyTorch
    runner (torch.from_numpy shares the array) changed the cached batch for the next engine."""
    result = export_model(InPlace(), input_shape=(4,), name="inplace", output_dir=tmp_path)
    reference = result_reference(result)
    ctx = ModelContext(
        name="inplace",
        artifact=art.open_artifact(result.directory),
        graphs={},
        graph_paths={},
        reference=reference,
        device="cpu",
        session=SessionConfig(device="cpu"),
        threads=1,
    )
    infer = _torch_infer(reference.model, "cpu", torch.inference_mode)
    cache: dict = {}
    for engine in ("torch_compile", "openvino"):  # two engines of one group share the cache
        runner = Runner(engine, "fp32", "cpu", step=lambda: None, infer=infer)
        record = check_runner(ctx, runner, (3, 4), None, seed=11, cache=cache)
        assert record.passed, record.failures()
    x, refs = next(iter(cache.values()))
    np.testing.assert_array_equal(x, random_input((4,), 3, seed=11).numpy())
