"""On a GPU: ``--precision auto --target cuda`` on resnet18 end to end: fp16 candidates verified on onnxruntime's
CUDA provider with the budget, timed there against fp32, the fastest passing one written with its speed-up.
Skips without CUDA (the only skips CI allows); no GPU has run it yet."""

from __future__ import annotations

import shutil
from pathlib import Path

import onnx
import pytest

from exporter import artifact as art
from runtime.precision import NOT_WORTH_IT, SearchConfig, search_precision
from tests.helpers import cuda_ready, run_cli, strict_load

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not cuda_ready(), reason="no CUDA GPU with onnxruntime-gpu")]


@pytest.fixture()
def resnet18(exported, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    directory = tmp_path / "artifacts" / "resnet18"
    shutil.copytree(exported("resnet18").directory, directory)
    return directory


def _written_on_cuda(directory: Path) -> art.VariantRecord:
    """The auto variant as recorded: fp16, judged on the CUDA provider, its speed-up over fp32 measured there."""
    record = art.open_artifact(directory).manifest.variants["auto"]
    s = record.precision_search
    assert s is not None and (s.target, s.device, s.precision) == ("cuda", "cuda", "fp16")
    assert record.parity.device == "cuda" and record.parity.providers[0] == "CUDAExecutionProvider"
    assert record.parity.precision == "fp16" and record.parity.passed and record.quantization is None
    chosen = next(c for c in s.candidates if c.chosen)
    assert chosen.speedup is not None and chosen.speedup_low is not None and chosen.speedup_low > 1.0
    graph = onnx.load(str(directory / "resnet18.auto.onnx"))
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in graph.graph.initializer)
    assert art.open_artifact(directory).stale_reason(art.VariantKey("auto")) is None
    strict_load(directory / "manifest.json")
    return record


def test_cli_target_cuda_searches_fp16_on_the_cuda_provider(resnet18: Path) -> None:
    proc = run_cli("exporter", "resnet18", "--precision", "auto", "--target", "cuda",
                   "--artifacts-dir", str(resnet18.parent))  # fmt: skip
    assert proc.returncode in (0, NOT_WORTH_IT), proc.stderr[-3000:]
    text = " ".join(proc.stdout.split())
    assert "all layers fp16" in text and "onnxruntime on CUDA" in text, text[-2000:]
    if proc.returncode == 0:  # batch 1 on a large GPU may be launch-bound: fp16 need not pay there
        _written_on_cuda(resnet18)
    else:
        assert "fp16 does not pay here" in text and not (resnet18 / "resnet18.auto.onnx").exists()


def test_fp16_at_batch_32_pays_on_cuda_and_is_written(resnet18: Path) -> None:
    outcome = search_precision(resnet18, SearchConfig(target="cuda", batch_size=32))
    assert outcome.written, outcome.message
    record = _written_on_cuda(resnet18)
    assert record.precision_search is not None and record.precision_search.batch_size == 32
