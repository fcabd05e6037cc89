"""The GPU session's summary (tools/gpu/summarize.py) from real benchmark results made here on the CPU:
every figure comes from a row, a target is met only where its whole interval clears it."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from runtime.bench.__main__ import main as bench
from runtime.bench.stats import Interval
from tools.gpu.summarize import load, speedup, summary, verdict

from ..runtime.bench.conftest import QUICK


def test_verdicts_need_the_whole_interval() -> None:
    assert verdict(Interval(1.5, 1.35, 1.6), 1.3) == "met"
    assert verdict(Interval(1.2, 1.1, 1.29), 1.3) == "not met"
    assert verdict(Interval(1.3, 1.2, 1.4), 1.3) == "inconclusive"
    assert verdict(None, 1.3) == "not measured"


def test_a_summary_of_real_results(arts: Path, tmp_path: Path) -> None:
    common = ["--models", "lenet5", "--batch-size", "1", "8", "--artifacts-dir", str(arts), *QUICK]
    assert bench([*common, "--precision", "fp32", "fp16", "--placement-audit", "--output", str(tmp_path / "a")]) == 0
    toggle = ["--precision", "fp32", "fp16", "--fp16-io", "--output", str(tmp_path / "b")]
    assert bench([*common, *toggle, "--baseline", str(tmp_path / "a" / "results.json"), "--max-slowdown", "100"]) == 0
    main = load(tmp_path / "a" / "results.json")
    # the targets name resnet18: the same rows relabelled stand in for it (nothing here is a GPU figure)
    as_resnet = main.model_copy(update={"rows": [r.model_copy(update={"model": "resnet18"}) for r in main.rows]})
    compiled = main.model_copy(
        update={
            "rows": [
                r.model_copy(update={"engine": "torch-compile"}) if r.engine == "pytorch" else r for r in main.rows
            ]
        }
    )
    text = summary(as_resnet, compiled, [load(tmp_path / "b" / "results.json")])
    for heading in ("## Main run", "## Targets", "## CUDA graphs", "## Placement audit", "## Setting on/off"):
        assert heading in text
    assert "fp16 ≥ 1.3× fp32 | resnet18 b8 |" in text and "| resnet50 | — | not measured |" in text
    assert "ORT fp32 ahead of torch.compile | lenet5 b1 |" in text
    assert "fp16_io=True" in text and not re.search(r"\b(nan|inf|infinity)\b", text.lower())
    rows = {(r.engine, r.precision, r.batch_size): r for r in main.rows}
    iv = speedup(rows[("onnxruntime", "fp32", 8)], rows[("onnxruntime", "fp16", 8)], np.random.default_rng(0))
    assert iv is not None and iv.low <= iv.value <= iv.high
    assert f"{iv.value:.2f}×" in summary(main, None, [])
