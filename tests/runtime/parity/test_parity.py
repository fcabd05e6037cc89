"""Parity: every output compared, tolerances validated, one implementation, artifacts as users name them."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper

from exporter import artifact as art
from exporter.export import export_model
from exporter.files import atomic_outputs, sha256_bytes
from exporter.reference import prepare, rebuild
from runtime.compare import default_tolerance
from runtime.parity import check
from tests.helpers import assert_one_line, run_cli, strict_loads, write_user_model


def _replace_graph(directory: Path, model: onnx.ModelProto) -> None:
    """Swap an artifact's graph for ``model`` and record it in the manifest, as a wrong export would."""
    artifact = art.open_artifact(directory)
    data = model.SerializeToString()
    manifest = artifact.manifest.model_copy(update={"sha256": sha256_bytes(data), "size_bytes": len(data)})
    with atomic_outputs(directory) as writer:
        writer.write_bytes(artifact.path(), data)
        art.write_manifest(writer, directory, manifest)


def _tamper(model: onnx.ModelProto, scale: float = 1.05) -> onnx.ModelProto:
    """Scale the largest weight tensor: a graph that no longer computes the model."""
    init = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * scale, init.name))
    return model


@pytest.fixture()
def resnet_cifar_dir(exported, tmp_path: Path) -> Path:
    dst = tmp_path / "artifacts" / "resnet_cifar"
    shutil.copytree(exported("resnet_cifar").directory, dst)
    return dst


def test_untouched_graph_passes_at_several_batches(resnet_cifar_dir: Path) -> None:
    m = art.open_artifact(resnet_cifar_dir).manifest
    record = check(resnet_cifar_dir / "resnet_cifar.onnx", rebuild(m), batch_sizes=(1, 4, 9))
    assert record.passed
    assert [r.batch_size for r in record.results] == [1, 4, 9]
    assert all(r.cosine_min > 0.99999 and r.top1_agreement == 1.0 for r in record.results)
    assert record.tolerance == default_tolerance("cpu", "fp32")


def test_tampered_weights_fail_parity(resnet_cifar_dir: Path) -> None:
    m = art.open_artifact(resnet_cifar_dir).manifest
    bad = _tamper(onnx.load(str(resnet_cifar_dir / "resnet_cifar.onnx"))).SerializeToString()
    record = check(bad, rebuild(m), batch_sizes=(1, 4))
    assert not record.passed and all(not r.passed for r in record.results)
    assert any("batch 1" in f and "max abs err" in f for f in record.failures())


def test_cli_wrong_graph_exits_nonzero_naming_batch_and_metric(resnet_cifar_dir: Path) -> None:
    _replace_graph(resnet_cifar_dir, _tamper(onnx.load(str(resnet_cifar_dir / "resnet_cifar.onnx"))))
    proc = run_cli("runtime.parity", str(resnet_cifar_dir), "--device", "cpu", "--batch-size", "2", "5")
    assert proc.returncode == 1, proc.stderr
    assert "FAIL batch 2, output 'output':" in proc.stdout and "max abs err" in proc.stdout


class TwoHeads(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.a = torch.nn.Linear(4, 5)
        self.b = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.flatten(torch.nn.functional.adaptive_avg_pool2d(self.conv(x), 1), 1)
        return self.a(h), self.b(h)


def test_every_output_is_compared_not_only_the_first(tmp_path: Path) -> None:
    """Defect: a two-output graph whose second output is off by ~1.0 passed."""
    torch.manual_seed(0)
    module = TwoHeads().eval()
    result = export_model(module, input_shape=(3, 8, 8), name="two_heads", output_dir=tmp_path)
    assert [o.name for o in result.manifest.outputs] == ["output", "output_1"]
    assert {r.output for r in result.manifest.parity.results} == {"output", "output_1"}
    model = onnx.load(str(result.onnx_path))
    # Add 1.0 to the second output only.
    second = model.graph.output[1].name
    for node in model.graph.node:
        node.output[:] = [f"{o}_raw" if o == second else o for o in node.output]
    model.graph.initializer.append(numpy_helper.from_array(np.ones((1,), np.float32), "one"))
    model.graph.node.append(helper.make_node("Add", [f"{second}_raw", "one"], [second]))
    prepared = prepare(module, input_shape=(3, 8, 8), name="two_heads")
    record = check(model.SerializeToString(), prepared)
    assert not record.passed
    failing = {r.output for r in record.results if not r.passed}
    assert failing == {"output_1"}, failing


@pytest.mark.parametrize("value", ["nan", "-1", "inf"])
def test_cli_refuses_bad_atol(value: str, resnet_cifar_dir: Path) -> None:
    proc = run_cli("runtime.parity", str(resnet_cifar_dir), "--atol", value)
    assert_one_line(proc, "finite number >= 0", code=2)


def test_tolerance_override_changes_the_verdict(resnet_cifar_dir: Path) -> None:
    """The override is applied, not only echoed: the graph that passes the defaults fails an atol below its error."""
    # the defaults' verdict, as the exporter recorded it (the CLI gives the same: the test below)
    recorded = art.open_artifact(resnet_cifar_dir).manifest.parity
    assert recorded.passed and recorded.tolerance.atol == 2e-3
    worst = max(r.max_abs_err or 0.0 for r in recorded.results)
    assert 0 < worst < 2e-3, worst  # fp32 on another engine: small, never exactly zero here
    proc = run_cli("runtime.parity", str(resnet_cifar_dir), "--atol", f"{worst / 10:g}", "--rtol", "0", "--json")
    assert proc.returncode == 1, proc.stderr
    doc = strict_loads(proc.stdout)
    assert doc["tolerance"]["atol"] == float(f"{worst / 10:g}") and doc["tolerance"]["rtol"] == 0.0  # type: ignore[index]
    assert doc["passed"] is False and any(not r["passed"] for r in doc["results"])  # type: ignore[index]
    assert any(f"exceeds atol {worst / 10:g} + rtol 0" in f for r in doc["results"] for f in r["failures"])  # type: ignore[index]


def test_the_parity_cli_gives_the_exporters_verdict_and_figures(resnet_cifar_dir: Path) -> None:
    """The same check as the exporter's: same inputs, seeds, batches and tolerance, so the same figures."""
    recorded = art.open_artifact(resnet_cifar_dir).manifest.parity
    proc = run_cli("runtime.parity", str(resnet_cifar_dir), "--device", "cpu", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = strict_loads(proc.stdout)
    assert doc["passed"] is recorded.passed is True  # type: ignore[index]
    assert doc["seed"] == recorded.seed and doc["inputs"] == recorded.inputs  # type: ignore[index]
    assert doc["batch_sizes"] == recorded.batch_sizes == [1, 3, 5]  # type: ignore[index]
    assert doc["tolerance"] == recorded.tolerance.model_dump(mode="json")  # type: ignore[index]
    got = [(r["output"], r["batch_size"], r["max_abs_err"], r["cosine_min"]) for r in doc["results"]]  # type: ignore[index]
    want = [(r.output, r.batch_size, r.max_abs_err, r.cosine_min) for r in recorded.results]
    assert [g[:2] for g in got] == [w[:2] for w in want]
    for g, w in zip(got, want):  # the same inputs: the same errors (other threads may round the last bits)
        assert g[2] == pytest.approx(w[2], rel=1e-3, abs=1e-9) and g[3] == pytest.approx(w[3], abs=1e-9), (g, w)


def test_a_corrupted_fp16_graph_fails_parity(resnet_cifar_dir: Path, tmp_path: Path) -> None:
    """An fp16 graph whose largest weight tensor is off by half fails the fp16 check, in the API and the CLI."""
    from exporter.variants import build_variant

    variant = build_variant(resnet_cifar_dir, art.VariantKey("fp16"))
    assert variant.record.parity.passed
    good = onnx.load(str(resnet_cifar_dir / "resnet_cifar.fp16.onnx"))
    init = max(good.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    assert init.data_type == onnx.TensorProto.FLOAT16
    bad = _tamper(good, scale=1.5)
    record = check(bad.SerializeToString(), rebuild(art.open_artifact(resnet_cifar_dir).manifest), precision="fp16")
    assert not record.passed and record.tolerance == default_tolerance("cpu", "fp16")
    assert all(not r.passed for r in record.results), record.failures()
    path = tmp_path / "bad.fp16.onnx"
    onnx.save(bad, str(path))
    proc = run_cli("runtime.parity", str(resnet_cifar_dir), "--graph", str(path), "--precision", "fp16", "--json")
    assert proc.returncode == 1, proc.stderr
    doc = strict_loads(proc.stdout)
    assert doc["passed"] is False and doc["precision"] == "fp16"  # type: ignore[index]


@pytest.mark.parametrize("batches", [["0"], ["1", "-2"]])
def test_bad_batch_sizes_are_rejected(batches: list[str], resnet_cifar_dir: Path) -> None:
    proc = run_cli("runtime.parity", str(resnet_cifar_dir), "--batch-size", *batches)
    assert_one_line(proc, "at least 1", code=2)


def test_cli_json_is_strict_and_names_the_graph(resnet_cifar_dir: Path) -> None:
    proc = run_cli("runtime.parity", str(resnet_cifar_dir / "resnet_cifar.onnx"), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = strict_loads(proc.stdout)
    assert doc["graph"].endswith("resnet_cifar.onnx") and doc["passed"] is True  # type: ignore[index]
    assert [r["batch_size"] for r in doc["results"]] == [1, 3, 5]  # type: ignore[index]


def test_piped_table_keeps_markup_and_every_digit(resnet_cifar_dir: Path) -> None:
    """Defect: rich swallowed "[fp32, random inputs]" and cut every figure to "2.98…" when piped."""
    proc = run_cli("runtime.parity", str(resnet_cifar_dir))
    assert proc.returncode == 0, proc.stderr
    header = proc.stdout.splitlines()[0]
    assert "[fp32, random uniform [-1, 1) inputs]" in header
    assert "…" not in proc.stdout
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| output |")][1:]  # after the header
    assert len(rows) == 3 and all("e-0" in row and "| pass " in row for row in rows)
    # "needed atol 0.0e+00" beside a non-zero error is explained, not left as a contradiction
    assert "needed atol: the smallest atol that passes with rtol 0.001" in proc.stdout


def test_memory_guard_refuses_a_batch_that_cannot_fit(resnet_cifar_dir: Path) -> None:
    """Defect: parity at a huge batch grew past 18 GB before anything stopped it."""
    proc = run_cli("runtime.parity", str(resnet_cifar_dir), "--batch-size", "4000000", timeout=120)
    assert_one_line(proc, "GB of memory", code=2)
    assert "needs about" in proc.stderr


NOISY = textwrap.dedent(
    """
    import os
    import sys
    import torch
    from torch import nn

    class Noisy(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.fc = nn.Linear(4, 3)
        def forward(self, x):
            os.write(1, b"written to descriptor 1\\n")  # what a C library's printf does too
            print("printed", flush=False)
            sys.__stdout__.write("to sys.__stdout__\\n")
            return self.fc(x)
    """
)


def test_json_stays_json_when_user_code_writes_to_descriptor_1(tmp_path: Path) -> None:
    """Defect: --json redirected sys.stdout only, so os.write(1, ...) in forward went into the JSON."""
    src = write_user_model(tmp_path, NOISY, "noisy.py")
    export_model(f"{src}:Noisy", input_shape=(4,), output_dir=tmp_path / "a")
    proc = run_cli("runtime.parity", str(tmp_path / "a" / "noisy"), "--reference", f"{src}:Noisy", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = strict_loads(proc.stdout)
    assert doc["artifact"] == "noisy" and doc["passed"] is True
    assert "written to descriptor 1" in proc.stderr and "printed" in proc.stderr and "to sys.__stdout__" in proc.stderr


STEADY = """
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(4, 3)
    def forward(self, x):
        return self.fc(x)
"""


def test_parity_against_a_random_forward_says_the_model_is_not_deterministic(tmp_path: Path) -> None:
    """Defect: a --reference whose forward adds noise read as "onnxruntime disagrees", blaming the graph."""
    steady = write_user_model(tmp_path, STEADY, "steady.py")
    noisy = write_user_model(tmp_path, STEADY.replace("return self.fc(x)", "return self.fc(x) + torch.rand(3)"), "n.py")
    export_model(f"{steady}:Net", input_shape=(4,), output_dir=tmp_path / "a")
    proc = run_cli("runtime.parity", str(tmp_path / "a" / "net"), "--reference", f"{noisy}:Net")
    assert proc.returncode == 1, proc.stderr
    said = "note: net: forward() is not deterministic: two PyTorch runs on the same input differ at output 'output'"
    assert said in proc.stderr, proc.stderr


def test_a_failing_reference_builder_names_the_line_in_the_users_file(tmp_path: Path) -> None:
    """Defect: a --reference FILE.py:Builder that raised printed only "KeyError: 'width'", nowhere in the file."""
    steady = write_user_model(tmp_path, STEADY, "steady.py")
    broken = STEADY.replace("torch.manual_seed(0)", "raise KeyError('width')")
    write_user_model(tmp_path, broken, "broken.py")
    export_model(f"{steady}:Net", input_shape=(4,), output_dir=tmp_path / "a")
    proc = run_cli("runtime.parity", "a/net", "--reference", "broken.py:Net", cwd=tmp_path)
    line = 1 + broken.splitlines().index("        raise KeyError('width')")
    assert_one_line(proc, f"error: building broken.py:Net failed at broken.py:{line} (in __init__): KeyError: 'width'")
