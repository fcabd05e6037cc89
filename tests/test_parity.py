"""Parity: a tampered graph fails, tolerances are overridable, the command reports per batch."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import run_cli
from onnx import numpy_helper

from exporter.errors import UserError
from runtime.metrics import Tolerance, compare, default_tolerance
from runtime.parity import check


def _tamper(src: Path, dst: Path, scale: float = 1.05) -> None:
    """Scale the largest weight tensor: a graph whose weights changed after export."""
    model = onnx.load(str(src))
    init = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * scale, init.name))
    onnx.save(model, str(dst))


@pytest.fixture()
def resnet_cifar_copy(exported, tmp_path: Path) -> Path:
    result = exported("resnet_cifar")
    dst = tmp_path / "resnet_cifar"
    shutil.copytree(result.onnx_path.parent, dst)
    return dst / "resnet_cifar.onnx"


def test_untouched_graph_passes_at_several_batches(resnet_cifar_copy: Path) -> None:
    report = check("resnet_cifar", onnx_path=resnet_cifar_copy, batch_sizes=(1, 4, 9), device="cpu")
    assert report.passed
    assert [r.batch_size for r in report.results] == [1, 4, 9]
    assert all(r.cosine_min > 0.99999 and r.top1_agreement == 1.0 for r in report.results)
    assert report.tolerance == default_tolerance("cpu", "fp32")


def test_tampered_weights_fail_parity(resnet_cifar_copy: Path) -> None:
    _tamper(resnet_cifar_copy, resnet_cifar_copy)
    report = check("resnet_cifar", onnx_path=resnet_cifar_copy, batch_sizes=(1, 4), device="cpu")
    assert not report.passed
    assert all(not r.passed for r in report.results)
    assert any("batch 1" in f and "max_abs_err" in f for f in report.failures())


def test_cli_tampered_graph_exits_nonzero_naming_batch_and_metric(resnet_cifar_copy: Path) -> None:
    _tamper(resnet_cifar_copy, resnet_cifar_copy)
    proc = run_cli(
        "runtime.parity", "resnet_cifar", "--onnx", str(resnet_cifar_copy), "--device", "cpu", "--batch-sizes", "2", "5"
    )
    assert proc.returncode == 1
    assert "FAIL batch 2:" in proc.stdout and "max_abs_err" in proc.stdout


def test_cli_json_report(resnet_cifar_copy: Path) -> None:
    proc = run_cli(
        "runtime.parity",
        "resnet_cifar",
        "--onnx",
        str(resnet_cifar_copy),
        "--device",
        "cpu",
        "--batch-sizes",
        "1",
        "3",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["passed"] is True and doc["device"] == "cpu"
    assert [r["batch_size"] for r in doc["results"]] == [1, 3]
    for key in (
        "max_abs_err",
        "max_rel_err",
        "mean_abs_err",
        "cosine_min",
        "top1_agreement",
        "top5_agreement",
        "needed_atol",
        "needed_rtol",
    ):
        assert key in doc["results"][0]


def test_tolerance_override_is_applied(resnet_cifar_copy: Path) -> None:
    report = check("resnet_cifar", onnx_path=resnet_cifar_copy, batch_sizes=(2,), device="cpu", atol=0.0, rtol=0.0)
    assert report.tolerance.atol == 0.0 and report.tolerance.rtol == 0.0
    r = report.results[0]
    assert (r.max_abs_err > 0) == (not r.passed)


@pytest.mark.parametrize("batches", [(0,), (1, -2), ()])
def test_bad_batch_sizes_are_rejected(batches, resnet_cifar_copy: Path) -> None:
    with pytest.raises(UserError, match="batch sizes"):
        check("resnet_cifar", onnx_path=resnet_cifar_copy, batch_sizes=batches, device="cpu")


def test_compare_metrics_on_known_values() -> None:
    ref = np.array([[1.0, 2.0, 3.0, 0.0], [4.0, 3.0, 2.0, 1.0]], dtype=np.float32)
    got = ref.copy()
    got[0, 0] += 0.01
    got[1] = [1.0, 3.0, 2.0, 4.0]  # top-1 flips for the second sample
    cmp = compare(ref, got, Tolerance(atol=1e-3, rtol=0.0))
    assert cmp.max_abs_err == pytest.approx(3.0)
    assert cmp.top1_agreement == 0.5
    assert cmp.needed_atol == pytest.approx(3.0)
    assert not cmp.passed and "max_abs_err" in cmp.failures[0]
    same = compare(ref, ref.copy(), Tolerance(atol=0.0, rtol=0.0, min_cosine=1.0 - 1e-12, min_top1=1.0))
    assert same.passed and same.cosine_min == pytest.approx(1.0) and same.needed_atol == 0.0
