"""``python -m runtime.profile`` as a user runs it: a plain table, strict JSON, files written atomically
under --output, one line per mistake, and a parser that imports nothing heavy."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from exporter import artifact as art
from exporter.export import export_model
from exporter.reference import prepare
from exporter.variants import build_variant
from tests.helpers import ROOT, run_cli, strict_load, strict_loads, write_user_model


def test_help_and_the_parser_import_nothing_heavy() -> None:
    done = run_cli("runtime.profile", "--help")
    assert done.returncode == 0 and "--fail-on-fallback" in done.stdout and "--precision" in done.stdout
    code = (
        "import sys, runtime.profile.__main__ as m; m.build_parser().parse_args(['resnet18']); "
        "print(sorted({k.split('.')[0] for k in sys.modules} & {'torch', 'onnxruntime', 'onnx', 'openvino'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--engine", "openvino", "--precision", "fp16"], "OpenVINO profiles"),
        (["--precision", "bf16"], "add --engine openvino"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--top", "-1"], "--top must be >= 0"),
        (["--input-size", "64x64"], "fixed size"),
        (["--precision", "int9"], "unknown precision"),
    ],
)
def test_mistakes_are_one_line(exported, tmp_path: Path, args: list[str], message: str) -> None:
    arts = tmp_path / "artifacts"
    shutil.copytree(exported("lenet5").directory, arts / "lenet5")
    done = run_cli("runtime.profile", "lenet5", "--artifacts-dir", str(arts), "--output", str(tmp_path / "o"), *args)
    assert done.returncode != 0 and message in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert not (tmp_path / "o" / "lenet5").exists()


def test_table_json_and_files(exported, tmp_path: Path) -> None:
    arts, out = tmp_path / "artifacts", tmp_path / "profiles"
    shutil.copytree(exported("lenet5").directory, arts / "lenet5")
    common = ["lenet5", "--artifacts-dir", str(arts), "--output", str(out), "--threads", "1", "--runs", "12"]
    done = run_cli("runtime.profile", *common, "--no-peaks", "--top", "0", "--wide")
    assert done.returncode == 0, done.stderr
    assert "| layer " in done.stdout and "…" not in done.stdout and "coverage: layers sum to" in done.stdout
    assert "placement: all" in done.stdout and "graph nodes" in done.stdout
    size = "x".join(map(str, art.open_artifact(arts / "lenet5").manifest.input_shape[1:]))
    folder = out / "lenet5" / f"fp32.onnxruntime.cpu.b1.{size}"
    assert {p.name for p in folder.iterdir()} == {"profile.json", "layers.png"}
    as_json = run_cli("runtime.profile", *common, "--no-peaks", "--json", "--batch-size", "4")
    assert as_json.returncode == 0, as_json.stderr
    doc = strict_loads(as_json.stdout)
    assert doc["format"] == "runtime.profile" and doc["batch_size"] == 4 and doc["runs"] == 12
    assert doc["layers"] and all(len(n["times_us"]) == 12 for n in doc["nodes"])
    written = strict_load(out / "lenet5" / f"fp32.onnxruntime.cpu.b4.{size}" / "profile.json")
    assert written == doc
    names = {r["layer"] for r in doc["layers"]}
    assert names & set(art.open_artifact(arts / "lenet5").manifest.layers.nodes.values())


def test_a_user_model_without_its_code_goes_on_without_sqnr(tmp_path: Path) -> None:
    from tests.exporter.test_layers import _NET_SOURCE  # a small residual net whose int8 graph verifies

    source = write_user_model(tmp_path, _NET_SOURCE, "net.py")
    result = export_model(f"{source}:Net", input_shape=(3, 16, 16), output_dir=tmp_path / "a", name="tiny")
    reference = prepare(f"{source}:Net", input_shape=(3, 16, 16))
    build_variant(result.directory, art.VariantKey("int8"), reference=reference)
    args = ["tiny", "--precision", "int8", "--artifacts-dir", str(tmp_path / "a"), "--output", str(tmp_path / "o")]
    args += ["--no-peaks", "--runs", "10", "--threads", "1"]
    done = run_cli("runtime.profile", *args)
    assert done.returncode == 0, done.stderr
    assert "no per-layer SQNR: tiny is your own model; --reference FILE.py:Builder" in done.stderr
    assert "SQNR dB" not in done.stdout
    with_code = run_cli("runtime.profile", *args, "--reference", f"{source}:Net")
    assert with_code.returncode == 0, with_code.stderr
    assert "SQNR dB" in with_code.stdout


def test_profiles_follow_artifacts_dir_and_nothing_lands_in_the_default(exported, tmp_path: Path) -> None:
    """Defect (review): without --output the profile wrote artifacts/profile under the working folder
    whatever --artifacts-dir said (runtime.tune already followed it)."""
    arts, cwd = tmp_path / "artifacts", tmp_path / "cwd"
    shutil.copytree(exported("lenet5").directory, arts / "lenet5")
    cwd.mkdir()
    args = ["lenet5", "--artifacts-dir", str(arts), "--threads", "1", "--runs", "3", "--warmup", "1", "--no-peaks"]
    done = run_cli("runtime.profile", *args, cwd=cwd)
    assert done.returncode == 0, done.stderr[-3000:]
    assert list((arts / "profile" / "lenet5").glob("*/profile.json")) and list(cwd.iterdir()) == []


def test_a_run_that_fails_leaves_no_empty_results_folder(tmp_path: Path) -> None:
    """A damaged manifest is one line, and the results folder the run made before reading it
    (``ARTIFACTS_DIR/profile``, or ``--output``) is removed again: it was left behind, empty."""
    arts = tmp_path / "artifacts"
    (arts / "lenet5").mkdir(parents=True)
    (arts / "lenet5" / "manifest.json").write_text('{"name": "lenet5", "input_sh')  # half-written
    for extra in ([], ["--output", str(tmp_path / "o" / "p")]):
        done = run_cli("runtime.profile", "lenet5", "--artifacts-dir", str(arts), *extra)
        assert done.returncode == 2 and "is not valid JSON" in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    left = sorted(p.name for p in arts.iterdir() if not p.name.startswith("."))  # the artifact's lock file stays
    assert left == ["lenet5"] and not (tmp_path / "o").exists()
