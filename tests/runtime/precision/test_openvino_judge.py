"""``--precision auto --engine openvino``: every candidate judged in OpenVINO too, with the precision hint it
is timed with, so that the verdict is that of the graph deployed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from exporter import artifact as art
from exporter.data import check_batch
from exporter.reference import rebuild
from runtime import openvino_model
from runtime.compare import default_tolerance
from runtime.precision import SearchConfig, search_precision
from runtime.precision import search as search_module
from runtime.precision.budget import Budget
from runtime.precision.candidates import Judge
from tests.helpers import strict_load

from .test_search import _fake_timing

pytest.importorskip("openvino")


def _judge(lenet_dir: Path, engine: str) -> tuple[Judge, bytes]:
    artifact = art.open_artifact(lenet_dir)
    reference = rebuild(artifact.manifest)
    probe = check_batch(reference.input_shape, 2, 0, seed=1)
    tolerance = default_tolerance("cpu", "int8")
    return Judge(reference, tolerance, (), 1, probe, engine=engine), artifact.path().read_bytes()


def test_a_graph_openvino_runs_wrong_fails_naming_openvino(lenet_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """onnxruntime's verdict alone passed it: OpenVINO's outputs (here corrupted) are judged too."""
    judge, graph = _judge(lenet_dir, "openvino")
    good = judge(graph, lambda _m: None)
    assert good.passed and [c.engine for c in good.checks] == ["onnxruntime", "openvino"]
    assert good.checks[1].inference_precision == "f32" and good.checks[1].passed

    real = openvino_model.OpenvinoInfer.__call__

    def corrupted(self, x: np.ndarray) -> list[np.ndarray]:  # type: ignore[no-untyped-def]
        return [o + np.float32(0.5) * np.abs(o).max() for o in real(self, x)]

    monkeypatch.setattr(openvino_model.OpenvinoInfer, "__call__", corrupted)
    bad = judge(graph, lambda _m: None)
    assert bad.parity.passed and bad.checks[0].passed, "onnxruntime's own check still passes"
    assert not bad.passed and not bad.checks[1].passed
    assert bad.failure is not None and bad.failure.startswith("in OpenVINO (f32 hint): ")
    sqnr, _cosine, _ = bad.figures()
    assert sqnr == bad.checks[1].sqnr_db and sqnr is not None and sqnr < (bad.checks[0].sqnr_db or 1e9)
    # onnxruntime alone judges nothing in OpenVINO
    ort_only, _ = _judge(lenet_dir, "onnxruntime")
    assert ort_only(graph, lambda _m: None).checks == []


def test_the_manifest_records_the_openvino_verification(lenet_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Judged for real in both engines on lenet5 (timing faked: the all-int8 graph passes and pays)."""
    monkeypatch.setattr(search_module, "time_candidates", _fake_timing([2.0]))
    outcome = search_precision(lenet_dir, SearchConfig(budget=Budget("sqnr", 20.0), engine="openvino", threads=1))
    assert outcome.written
    s = art.open_artifact(lenet_dir).manifest.variants["auto"].precision_search
    assert s is not None and s.engine == "openvino"
    assert s.judged_in == ["onnxruntime", "openvino"] and s.inference_precision == "f32"
    c = s.candidates[0]
    assert c.passed and [k.engine for k in c.checks] == ["onnxruntime", "openvino"] and all(k.passed for k in c.checks)
    ov = c.checks[1]
    assert ov.sqnr_db is not None and ov.sqnr_db > 20.0
    assert c.sqnr_db == min(k.sqnr_db for k in c.checks if k.sqnr_db is not None)
    strict_load(lenet_dir / "manifest.json")


def test_an_old_search_record_reads_as_judged_in_onnxruntime_alone() -> None:
    record = art.SearchCandidate(label="x", float_layers=[], float_nodes=[], sqnr_db=30.0, cosine_min=0.99, passed=True)
    assert record.checks == []
    fields = art.PrecisionSearchRecord.model_fields
    assert fields["judged_in"].default_factory() == ["onnxruntime"] and fields["inference_precision"].default is None  # type: ignore[misc]
