"""Cold start in bench rows: session creation, compiling, engine build and the first inference, per engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.bench.__main__ import main
from runtime.bench.rows import ColdStart
from tests.helpers import strict_load

from .conftest import QUICK


def test_every_row_says_what_its_first_result_took(
    arts: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("openvino")
    quick = [q for q in QUICK if q not in ("onnxruntime", "pytorch", "--engines")]
    code = main(["--models", "lenet5", "--batch-size", "1", "2", "--engines", "onnxruntime", "openvino", "pytorch",
                 *quick, "--artifacts-dir", str(arts), "--output", str(tmp_path / "b")])  # fmt: skip
    assert code == 0
    assert "cold start s" in capsys.readouterr().out
    rows = {(r["engine"], r["batch_size"]): r for r in strict_load(tmp_path / "b" / "results.json")["rows"]}
    cold = {k: ColdStart.model_validate(r["cold_start"]) for k, r in rows.items()}
    assert all(c.first_inference_s is not None and c.first_inference_s > 0 for c in cold.values())
    # onnxruntime makes one session per graph and reuses it for every batch size: said, not hidden
    ort1, ort2 = cold[("onnxruntime", 1)], cold[("onnxruntime", 2)]
    assert ort1.create_s and ort1.create_s > 0 and not ort1.shared
    assert ort2.shared and ort2.create_s == ort1.create_s
    # OpenVINO compiles per batch shape: its compile is part of its creation, every row
    for b in (1, 2):
        ov = cold[("openvino", b)]
        assert ov.compile_s and ov.create_s and 0 < ov.compile_s <= ov.create_s and not ov.shared
        assert ov.to_first_result_s == pytest.approx(ov.create_s + ov.first_inference_s)
    assert cold[("pytorch", 1)].create_s is None  # the reference model exists already: nothing to create
