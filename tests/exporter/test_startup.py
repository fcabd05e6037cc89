"""Start-up: ``--help``, a mistake and ``--list`` answer without importing torch or the other heavy stacks.

Each case runs in a fresh interpreter (a test process has long imported everything) and reads
``sys.modules`` after the command has finished. Times are never asserted here: the machine is
shared; the README's "Start-up" note gives measured figures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT, command_modules

COMMANDS = command_modules()

#: What a parser, ``--help`` or a mistake must never pay for.
HEAVY = ("torch", "onnxruntime", "onnx", "openvino", "tritonclient", "pytriton", "onnxsim")

_PROBE = """
import json, runpy, sys
command, args, out = sys.argv[1], sys.argv[2:-1], sys.argv[-1]
sys.argv = [command, *args]
code = 0
try:
    runpy.run_module(command, run_name="__main__", alter_sys=True)
except SystemExit as exc:
    code = exc.code
with open(out, "w") as f:
    json.dump({"code": code, "modules": sorted(m.split(".")[0] for m in sys.modules)}, f)
"""


def _run(tmp_path, command: str, *args: str) -> tuple[int, set[str], subprocess.CompletedProcess[str]]:
    out = tmp_path / "probe.json"
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, command, *args, str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert out.is_file(), proc.stderr
    found = json.loads(out.read_text())
    return found["code"], set(found["modules"]), proc


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(("case", "args"), [("help", ["--help"]), ("bad flag", ["--no-such-flag"])])
def test_help_and_a_bad_flag_import_nothing_heavy(tmp_path, command: str, case: str, args: list[str]) -> None:
    code, modules, proc = _run(tmp_path, command, *args)
    assert code == (0 if case == "help" else 2), proc.stderr
    assert sorted(modules & set(HEAVY)) == [], f"python -m {command} {' '.join(args)}"
    if case == "help":
        assert "usage:" in proc.stdout
    else:
        assert proc.stderr.startswith("error: ") and len(proc.stderr.splitlines()) == 1


@pytest.mark.parametrize("args", [["--list", "--json"], ["--list"], ["lenet"]], ids=["list-json", "list", "typo"])
def test_listing_the_zoo_and_a_mistyped_name_import_no_torch(tmp_path, args: list[str]) -> None:
    code, modules, proc = _run(tmp_path, "exporter", *args)
    assert code == (2 if args == ["lenet"] else 0), proc.stderr
    assert sorted(modules & set(HEAVY)) == []
    if args == ["--list", "--json"]:
        rows = json.loads(proc.stdout)
        assert {r["name"]: r["num_params"] for r in rows}["resnet152"] == 60_192_808
        assert "rich" not in modules and "pydantic" not in modules
    if args == ["lenet"]:
        assert proc.stderr.startswith("error: unknown model 'lenet'. Did you mean lenet5")


def test_a_mistyped_artifact_imports_no_torch(tmp_path) -> None:
    code, modules, proc = _run(tmp_path, "runtime.parity", "nosuchthing", "--artifacts-dir", str(tmp_path))
    assert code == 2 and "no artifact named nosuchthing" in proc.stderr
    assert sorted(modules & set(HEAVY)) == []


LIGHT_MODULES = [
    "exporter.errors",
    "exporter.console",
    "exporter.options",
    "exporter.artifact",
    "exporter.opsets",
    "exporter.user_model",
    "exporter.zoo",
    "exporter.train",
    "runtime.session_config",
    "runtime.resolve",
    "runtime.parity",
    "runtime.bench",
    "runtime.bench.defaults",
    "runtime.serve",
    "runtime.loadtest",
    *(f"{c}.__main__" for c in COMMANDS),
]


def test_shared_modules_and_command_modules_import_nothing_heavy() -> None:
    code = (
        "import importlib, json, sys\n"
        f"for m in {LIGHT_MODULES!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=True
    )
    assert sorted(set(json.loads(proc.stdout)) & set(HEAVY)) == []
