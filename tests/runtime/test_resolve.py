"""Runtime commands take any artifact, never run code a manifest names, and never rebuild silently."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exporter import artifact as art
from exporter.export import export_model
from exporter.variants import build_variant
from runtime.resolve import resolve
from tests.helpers import assert_one_line, run_cli, strict_loads, write_user_model

EVIL = """
from pathlib import Path
Path(__file__).with_name("IMPORTED").write_text("a manifest made me run")
import torch
Net = lambda: torch.nn.Linear(2, 2)
"""


def _edit_manifest(directory: Path, **changes: object) -> None:
    path = directory / "manifest.json"
    doc = json.loads(path.read_text())
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            doc[section][field] = value
        else:
            doc[section] = value
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize("kind", ["zoo", "file"])
def test_a_manifest_never_makes_the_toolkit_import_code(lenet_dir: Path, tmp_path: Path, kind: str) -> None:
    """Defect: parity and bench imported whatever file manifest.json named in source.ref."""
    evil = tmp_path / "evil.py"
    evil.write_text(EVIL)
    _edit_manifest(lenet_dir, source__kind=kind, source__ref=f"{evil}:Net")
    for args in (["runtime.parity", "lenet5"], ["runtime.parity", str(lenet_dir)]):
        proc = run_cli(*args, "--artifacts-dir", str(lenet_dir.parent))
        assert not (tmp_path / "IMPORTED").exists(), "code named by a manifest was imported"
        if kind == "file":
            assert_one_line(proc, "never imported", code=2)
            assert "--reference" in proc.stderr
        else:
            assert proc.returncode == 0, proc.stderr


#: Every other command that reads an artifact, each run to where it needs the model's PyTorch code (parity
#: figures, or a variant to build and verify); ``{d}`` is the artifact's folder, ``{o}`` a scratch folder.
COMMANDS = {
    "bench": "runtime.bench --models {d} --engines onnxruntime pytorch --min-samples 3 --min-seconds 0 --warmup 1 "
    "--threads 1 --no-roofline --batch-size 1 --output {o}/bench",
    "profile": "runtime.profile {d} --precision fp16 --runs 2 --warmup 0 --no-peaks --output {o}/profile",
    "serve": "runtime.serve {d} --precision fp16 --write-repository {o}/repo",
    "loadtest": "runtime.loadtest {d} --precision fp16 --url 127.0.0.1:9 --seconds 0.1 --output {o}/lt",
    "tune": "runtime.tune {d} --target throughput --precision fp16 --output {o}/tune",
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_no_command_imports_the_code_a_manifest_names(lenet_dir: Path, tmp_path: Path, command: str) -> None:
    """bench, profile, serve, loadtest and tune, like parity: the manifest's source.ref is never imported; the
    user is told to name the code (or, for loadtest, which never rebuilds, how to build what is missing)."""
    evil = tmp_path / "evil.py"
    evil.write_text(EVIL)
    _edit_manifest(lenet_dir, source__kind="file", source__ref=f"{evil}:Net")
    args = COMMANDS[command].format(d=lenet_dir, o=tmp_path).split()
    proc = run_cli(*args, "--artifacts-dir", str(lenet_dir.parent))
    assert not (tmp_path / "IMPORTED").exists(), "code named by a manifest was imported"
    hint = f"python -m exporter {evil}:Net" if command == "loadtest" else f"--reference {evil}:Net"
    assert_one_line(proc, hint, code=2, after_progress=True)


def test_user_model_is_checked_only_against_code_named_on_the_command_line(tmp_path: Path) -> None:
    src = write_user_model(tmp_path)
    out = tmp_path / "arts"
    proc = run_cli("exporter", f"{src}:make_tiny", "--input-shape", "3x16x16", "--artifacts-dir", str(out))
    assert proc.returncode == 0, proc.stderr
    without = run_cli("runtime.parity", "make_tiny", "--artifacts-dir", str(out))
    assert without.returncode == 2 and f"--reference {src}:make_tiny" in without.stderr
    with_ref = run_cli("runtime.parity", "make_tiny", "--artifacts-dir", str(out), "--reference", f"{src}:make_tiny")
    assert with_ref.returncode == 0, with_ref.stderr
    assert "| pass" in with_ref.stdout


def test_stale_graph_is_rebuilt_with_its_recorded_settings_and_said(tmp_path: Path) -> None:
    """Defect: opset 13 / seed 5 export, corrupted graph: parity silently re-exported at opset 17, seed 0."""
    out = tmp_path / "arts"
    first = export_model("lenet5", opset=13, seed=5, output_dir=out)
    first.onnx_path.write_bytes(b"corrupted")
    refused = run_cli("runtime.parity", "lenet5", "--artifacts-dir", str(out), "--no-rebuild")
    assert refused.returncode == 2
    assert "does not match its manifest" in refused.stderr and "--opset 13 --seed 5" in refused.stderr
    proc = run_cli("runtime.parity", "lenet5", "--artifacts-dir", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "re-exporting lenet5 with its recorded settings (opset 13, seed 5)" in proc.stderr
    manifest = art.open_artifact(out / "lenet5").manifest
    assert (manifest.settings.opset, manifest.settings.seed) == (13, 5)
    assert manifest.sha256 == first.manifest.sha256, "the rebuilt graph is byte-identical to the recorded one"


def test_stale_variant_is_rebuilt_from_its_record(lenet_dir: Path) -> None:
    build_variant(lenet_dir, art.VariantKey("fp16"))
    (lenet_dir / "lenet5.fp16.onnx").unlink()
    said: list[str] = []
    resolved = resolve(str(lenet_dir), key=art.VariantKey("fp16"), say=said.append)
    assert resolved.path.is_file() and any("rebuilding the fp16 variant" in s for s in said)


def test_missing_zoo_artifact_is_exported_saying_so(tmp_path: Path) -> None:
    said: list[str] = []
    resolved = resolve("lenet5", artifacts_dir=tmp_path, say=said.append)
    assert resolved.artifact.manifest.name == "lenet5"
    assert said == [f"no artifact for lenet5 in {tmp_path}: exporting it with the defaults first"]


def test_unknown_name_and_contradicting_variant_are_clear(lenet_dir: Path) -> None:
    proc = run_cli("runtime.parity", "nosuchnet", "--artifacts-dir", str(lenet_dir.parent))
    assert_one_line(proc, "no artifact named nosuchnet", code=2)
    proc = run_cli("runtime.parity", str(lenet_dir / "lenet5.onnx"), "--precision", "int8")
    assert_one_line(proc, "is the fp32 graph of lenet5, not int8", code=2)


def test_zoo_model_exported_at_another_size_is_checked_at_that_size(tmp_path: Path) -> None:
    out = tmp_path / "arts"
    export_model("resnet_cifar", input_shape=(3, 40, 40), name="rc40", output_dir=out)
    proc = run_cli("runtime.parity", "rc40", "--artifacts-dir", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    assert strict_loads(proc.stdout)["passed"] is True


PRINTER = """
import torch
print("HELLO FROM IMPORT")

class Printer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(8, 3)

    def forward(self, x):
        print("HELLO FROM FORWARD")
        return self.fc(x)
"""


def test_json_stays_json_when_the_users_code_prints(tmp_path: Path) -> None:
    src = write_user_model(tmp_path, PRINTER, "printer.py")
    out = tmp_path / "arts"
    assert run_cli("exporter", f"{src}:Printer", "--input-shape", "8", "--artifacts-dir", str(out)).returncode == 0
    proc = run_cli("runtime.parity", "printer", "--artifacts-dir", str(out), "--reference", f"{src}:Printer", "--json")
    assert proc.returncode == 0, proc.stderr
    assert strict_loads(proc.stdout)["passed"] is True
    assert "HELLO FROM FORWARD" in proc.stderr


def test_digits_inputs_on_a_non_image_model_are_one_line(tmp_path: Path) -> None:
    src = write_user_model(tmp_path, PRINTER, "printer.py")
    out = tmp_path / "arts"
    run_cli("exporter", f"{src}:Printer", "--input-shape", "8", "--artifacts-dir", str(out))
    args = ["--artifacts-dir", str(out), "--reference", f"{src}:Printer", "--inputs", "digits"]
    proc = run_cli("runtime.parity", "printer", *args)
    assert_one_line(proc, "digits inputs are images", code=2)


def test_a_user_models_variant_is_rebuilt_with_the_named_reference(tmp_path: Path) -> None:
    src = write_user_model(tmp_path)
    out = tmp_path / "arts"
    assert (
        run_cli("exporter", f"{src}:make_tiny", "--input-shape", "3x16x16", "--artifacts-dir", str(out)).returncode == 0
    )
    refused = run_cli("runtime.parity", "make_tiny", "--artifacts-dir", str(out), "--precision", "fp16", "--no-rebuild")
    assert refused.returncode == 2
    assert f"python -m exporter {src}:make_tiny --opset 17 --name make_tiny --input-shape 3x16x16" in refused.stderr
    assert f"--artifacts-dir {out} --precision fp16" in refused.stderr
    proc = run_cli(
        "runtime.parity",
        "make_tiny",
        "--artifacts-dir",
        str(out),
        "--precision",
        "fp16",
        "--reference",
        f"{src}:make_tiny",
    )
    assert proc.returncode == 0, proc.stderr
    assert "building the fp16 variant" in proc.stderr


def test_artifacts_dir_that_is_a_file_is_refused_before_anything(lenet_dir: Path) -> None:
    proc = run_cli("runtime.parity", "lenet5", "--artifacts-dir", str(lenet_dir / "manifest.json"))
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"error: --artifacts-dir {lenet_dir / 'manifest.json'} is not a folder"
    ]


NAN_MODEL = """
import torch

class NaN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(x) / 0 * 0
"""


def test_non_finite_pytorch_output_is_one_line(tmp_path: Path) -> None:
    src = write_user_model(tmp_path, NAN_MODEL, "nan.py")
    proc = run_cli("exporter", f"{src}:NaN", "--input-shape", "4", "--artifacts-dir", str(tmp_path / "o"))
    assert_one_line(proc, "PyTorch's own output contains NaN or Inf", after_progress=True)
