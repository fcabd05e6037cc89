"""``runtime.parity ARTIFACT --graph FILE.onnx``: any ONNX file against the artifact's PyTorch reference.

A graph rewritten by another tool gets the same checks and tolerances as the recorded graphs; the
report's first line (and --json) says whether the file is one of the recorded graphs; the artifact
is only read, never rebuilt or written.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from exporter import artifact as art
from exporter.variants import build_variant
from tests.helpers import run_cli, strict_loads


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def lenet(exported, tmp_path_factory: pytest.TempPathFactory) -> Path:
    arts = tmp_path_factory.mktemp("graph") / "arts"
    directory = arts / "lenet5"
    shutil.copytree(exported("lenet5").directory, directory)
    build_variant(directory, art.VariantKey("fp16"))
    return directory


def _rewritten(src: Path, out: Path, bias_shift: float = 0.0) -> Path:
    model = onnx.load(str(src))
    model.producer_name = "someone's surgery"
    if bias_shift:
        inits = {t.name: t for t in model.graph.initializer}
        gemm = [n for n in model.graph.node if n.op_type == "Gemm"][-1]
        bias = inits[gemm.input[2]]
        bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + np.float32(bias_shift), bias.name))
    onnx.save(model, str(out))
    return out


def test_a_rewritten_graph_is_checked_and_said_not_to_be_the_recorded_one(lenet: Path, tmp_path: Path) -> None:
    """Defect: runtime.parity refused any graph its manifest did not record; rewritten graphs could not be checked."""
    before = _snapshot(lenet.parent)
    good = _rewritten(lenet / "lenet5.onnx", tmp_path / "slim.onnx")
    proc = run_cli("runtime.parity", str(lenet), "--graph", str(good))
    assert proc.returncode == 0, proc.stderr
    first = proc.stdout.splitlines()[0]
    assert "is NOT a graph recorded for lenet5" in first and str(good) in first
    assert art.read_manifest(lenet).sha256[:12] in first  # type: ignore[union-attr]
    assert "| pass" in proc.stdout
    bad = _rewritten(lenet / "lenet5.onnx", tmp_path / "bad.onnx", bias_shift=0.5)
    failed = run_cli("runtime.parity", str(lenet), "--graph", str(bad), "--json")
    assert failed.returncode == 1
    doc = strict_loads(failed.stdout)
    assert doc["recorded"] is False and doc["matches"] is None and doc["passed"] is False
    assert doc["recorded_graphs"]["fp32"] == art.read_manifest(lenet).sha256  # type: ignore[union-attr]
    assert doc["graph"] == str(bad) and doc["tolerance"]["atol"] == 2e-3
    assert _snapshot(lenet.parent) == before, "--graph wrote into the artifact"


def test_a_recorded_graph_is_named_and_its_precision_applies(lenet: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.onnx"
    shutil.copyfile(lenet / "lenet5.fp16.onnx", copy)
    proc = run_cli("runtime.parity", str(lenet), "--graph", str(copy), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = strict_loads(proc.stdout)
    assert doc["recorded"] is True and doc["matches"] == "fp16" and doc["precision"] == "fp16"
    recorded = art.read_manifest(lenet).variants["fp16"].parity.tolerance  # type: ignore[union-attr]
    assert doc["tolerance"] == recorded.model_dump(mode="json")
    fp32_rules = run_cli("runtime.parity", str(lenet), "--graph", str(copy), "--precision", "fp32", "--json")
    assert strict_loads(fp32_rules.stdout)["tolerance"]["atol"] == 2e-3
    clash = run_cli("runtime.parity", str(lenet / "lenet5.fp16.onnx"), "--graph", str(copy), "--precision", "int8")
    assert clash.returncode == 2 and len(clash.stderr.strip().splitlines()) == 1


def test_a_stale_artifact_is_neither_rebuilt_nor_written(lenet: Path, tmp_path: Path) -> None:
    arts = tmp_path / "arts"
    shutil.copytree(lenet, arts / "lenet5")
    good = _rewritten(lenet / "lenet5.onnx", tmp_path / "slim.onnx")
    (arts / "lenet5" / "lenet5.onnx").write_bytes(b"stale")
    before = _snapshot(arts)
    proc = run_cli("runtime.parity", "lenet5", "--artifacts-dir", str(arts), "--graph", str(good))
    assert proc.returncode == 0, proc.stderr
    assert "re-exporting" not in proc.stderr
    assert _snapshot(arts) == before
    explain = run_cli("runtime.parity", "lenet5", "--artifacts-dir", str(arts), "--graph", str(good), "--explain")
    assert explain.returncode == 2 and "needs the current fp32 graph" in explain.stderr
    assert _snapshot(arts) == before


def test_explain_compares_the_file_layer_by_layer_with_the_recorded_fp32_graph(lenet: Path, tmp_path: Path) -> None:
    bad = _rewritten(lenet / "lenet5.onnx", tmp_path / "bad.onnx", bias_shift=0.5)
    proc = run_cli("runtime.parity", str(lenet), "--graph", str(bad), "--explain", "--json")
    assert proc.returncode == 1
    layers = strict_loads(proc.stdout)["explain"]["layers"]
    assert layers[-1]["tensor"] == "output" and layers[-1]["max_abs_err"] == pytest.approx(0.5, abs=1e-4)
    assert all(r["sqnr_db"] is None for r in layers[:-1]), "only the last layer was changed"


@pytest.mark.parametrize(
    ("graph", "message"),
    [("missing.onnx", "does not exist"), ("folder", "not a regular file"), ("empty.onnx", "is empty"),
     ("junk.onnx", "onnxruntime cannot load")],
)  # fmt: skip
def test_a_bad_graph_file_is_one_line(lenet: Path, tmp_path: Path, graph: str, message: str) -> None:
    (tmp_path / "folder").mkdir()
    (tmp_path / "empty.onnx").write_bytes(b"")
    (tmp_path / "junk.onnx").write_bytes(b"not a graph")
    proc = run_cli("runtime.parity", str(lenet), "--graph", str(tmp_path / graph))
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and message in proc.stderr, proc.stderr


def test_graph_needs_an_existing_artifact(tmp_path: Path) -> None:
    good = tmp_path / "g.onnx"
    good.write_bytes(b"x")
    proc = run_cli("runtime.parity", "lenet5", "--artifacts-dir", str(tmp_path / "none"), "--graph", str(good))
    assert proc.returncode == 2 and "no artifact named lenet5" in proc.stderr
    assert not (tmp_path / "none").exists(), "a missing artifact was exported"
