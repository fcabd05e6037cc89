"""A user's model is exported as given: their builder's model, their nn.Module (its mode included), their
random state; nothing reseeded, recalibrated or modified."""

from __future__ import annotations

import gc
import re
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from exporter import artifact as art
from exporter.__main__ import main as exporter_main
from exporter.data import random_input
from exporter.errors import ExportFailed
from exporter.export import export_model
from exporter.user_model import build_user_model
from tests.helpers import assert_one_line_err, ort_run, run_cli, write_user_model


def test_user_builder_model_is_exported_unchanged(tmp_path: Path) -> None:
    """Defect: without --weights the exporter reseeded torch and recalibrated the user's BatchNorm."""
    src = write_user_model(tmp_path)
    proc = run_cli("exporter", f"{src}:make_tiny", "--input-shape", "3x16x16", "--artifacts-dir", str(tmp_path / "a"))
    assert proc.returncode == 0, proc.stderr
    _, model = build_user_model(f"{src}:make_tiny")  # the builder seeds itself: the same model again
    model.eval()
    x = random_input((3, 16, 16), 4, seed=11)
    with torch.inference_mode():
        expected = model(x).numpy()
    np.testing.assert_allclose(ort_run(tmp_path / "a" / "make_tiny" / "make_tiny.onnx", x.numpy()), expected, atol=1e-5)
    m = art.open_artifact(tmp_path / "a" / "make_tiny").manifest
    assert m.weights.kind == "as_given" and not m.weights.batchnorm_calibrated and m.weights.seed is None


def test_module_passed_to_the_api_is_not_touched(tmp_path: Path) -> None:
    torch.manual_seed(5)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten())
    with torch.no_grad():
        module[1].running_mean.uniform_(-1, 1)
        module[1].running_var.uniform_(0.5, 2)
    module.eval()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    x = random_input((3, 6, 6), 3, seed=2)
    with torch.inference_mode():
        expected = module(x).numpy()
    result = export_model(module, input_shape=(3, 6, 6), name="given", output_dir=tmp_path)
    after = module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "the user's module was modified"
    np.testing.assert_allclose(ort_run(result.onnx_path, x.numpy()), expected, atol=1e-5)


def test_user_builder_sees_the_callers_random_state(tmp_path: Path) -> None:
    """The exporter must not reseed torch before calling a user's builder."""
    src = write_user_model(tmp_path, "import torch\nNet = lambda: torch.nn.Linear(4, 3)\n", "rng_net.py")
    torch.manual_seed(123)
    expected = torch.nn.Linear(4, 3).eval()
    torch.manual_seed(123)
    result = export_model(f"{src}:Net", input_shape=(4,), output_dir=tmp_path / "out")
    x = random_input((4,), 2, seed=1)
    with torch.inference_mode():
        np.testing.assert_allclose(ort_run(result.onnx_path, x.numpy()), expected(x).numpy(), atol=1e-6)


HOSTILE = textwrap.dedent(
    """
    import sys
    import torch
    from torch import nn

    class Exits(nn.Module):
        def forward(self, x):
            sys.exit(7)

    class ExitsAtOne(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)
        def forward(self, x):
            if x.shape[0] == 1:  # the second trace's batch: past every guard of a forward pass
                sys.exit(0)
            return self.fc(x)

    class Mine(BaseException):
        pass

    def raises_mine():
        raise Mine("their own stop")

    class ForwardRaisesMine(nn.Module):
        def forward(self, x):
            raise Mine("in forward")

    instance = nn.Linear(4, 2)

    async def built_async():
        return nn.Linear(4, 2)

    def returns_coroutine():
        return built_async()

    def needs(width, depth=2):
        return nn.Linear(width, 2)

    class EditsItself(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)
        def forward(self, x):
            with torch.no_grad():
                self.fc.weight.add_(1.0)
            return self.fc(x)

    class Random(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)
        def forward(self, x):
            return self.fc(x) + torch.rand(x.shape[0], 2)

    def in_float64():
        return nn.Linear(4, 2).double()

    def on_meta():
        return nn.Linear(4, 2, device="meta")

    def scripted():
        return torch.jit.script(nn.Linear(4, 2))

    def compiled():
        return torch.compile(nn.Linear(4, 2))
    """
)


@pytest.mark.parametrize(
    "ref, message, code",
    [
        ("Exits", "exits: the forward pass at input 2x4 failed: it called sys.exit(7) (at ", 3),
        ("ExitsAtOne", "the model's code ended the run: it called sys.exit(0) (at ", 1),
        ("raises_mine", "building hostile.py:raises_mine failed at hostile.py:23 (in raises_mine): Mine: their", 2),
        ("ForwardRaisesMine", "the forward pass at input 2x4 failed: Mine: in forward", 3),
        ("instance", "hostile.py:instance is a Linear instance, not a builder: name its class or a function", 2),
        ("built_async", "hostile.py:built_async is an async function: the builder must be a plain function", 2),
        ("returns_coroutine", "returned a coroutine: the builder must return the model, not be async", 2),
        ("needs", "hostile.py:needs needs arguments (width): the builder is called with none", 2),
        ("EditsItself", "forward() changes the model's own weights (fc.weight): each call computes another", 3),
        ("Random", "forward() is not deterministic: two PyTorch runs on the same input differ at output", 3),
        ("in_float64", "(the model's weights are float64 and the exporter feeds float32: export model.float())", 3),
        ("on_meta", "hostile.py:on_meta holds weights on the meta device (shapes, no values), e.g. weight", 2),
        ("scripted", "hostile.py:scripted is a TorchScript module (torch.jit.script or trace): export the", 2),
        ("compiled", "hostile.py:compiled is a torch.compile'd module: export the module it wraps", 2),
    ],
)
def test_user_code_that_ends_the_run_is_one_line(
    ref: str, message: str, code: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """Defects: sys.exit(7) in forward exited 7 without a word (sys.exit(0) further on: exit 0, nothing written);
    a builder's own BaseException was a traceback; an nn.Module instance said "forward() missing 'input'"; an
    async builder left three RuntimeWarnings; a forward editing its weights, or random, was "onnxruntime disagrees";
    a TorchScript, torch.compile'd or meta-device model ended in a traceback."""
    write_user_model(tmp_path, HOSTILE, "hostile.py")
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        returned = exporter_main([f"hostile.py:{ref}", "--input-shape", "4", "--artifacts-dir", "out"])
        gc.collect()  # a coroutine never awaited warns when it is collected
    err = capsys.readouterr().err
    assert_one_line_err(returned, err, message, code=code, after_progress=ref in ("ExitsAtOne", "Random"))
    if message.endswith("(at "):  # code that ends the run is placed at the user's own line
        assert re.search(r"\(at \S*hostile\.py:\d+, in \w+\)", err), err
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)], [str(w.message) for w in caught]
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*.onnx"))


FAILS_DEEP = textwrap.dedent(
    """
    import torch

    def layer():
        return torch.nn.Linear(-1, 2)

    def build():
        return torch.nn.Sequential(layer())
    """
)


def test_a_failing_builder_names_the_line_in_the_users_file(tmp_path: Path) -> None:
    """Defect: an exception in the user's builder printed only "ValueError: boom", nowhere in their file;
    raised deep inside torch, it is still their innermost line that is named, not torch's."""
    write_user_model(tmp_path, FAILS_DEEP, "deep.py")
    proc = run_cli("exporter", "deep.py:build", "--input-shape", "4", "--artifacts-dir", "out", cwd=tmp_path)
    said = "error: building deep.py:build failed at deep.py:5 (in layer): RuntimeError: Trying to create tensor"
    assert_one_line_err(proc.returncode, proc.stderr, said, code=2)
    assert not (tmp_path / "out").exists()


def test_a_builder_failing_outside_the_users_file_names_the_innermost_line(tmp_path: Path) -> None:
    """A builder the user's file imports from elsewhere has no line in their file: the innermost frame is named."""
    (tmp_path / "their_lib.py").write_text("\ndef build():\n    raise ValueError('boom')\n")
    source = "import sys, pathlib\nsys.path.insert(0, str(pathlib.Path(__file__).parent))\nfrom their_lib import build"
    write_user_model(tmp_path, source, "uses_lib.py")
    proc = run_cli("exporter", "uses_lib.py:build", "--input-shape", "4", "--artifacts-dir", "out", cwd=tmp_path)
    said = f"error: building uses_lib.py:build failed at {tmp_path / 'their_lib.py'}:3 (in build): ValueError: boom"
    assert_one_line_err(proc.returncode, proc.stderr, said, code=2)


COUNTED = """
from pathlib import Path
import torch

CALLS = Path(__file__).with_name("calls")
with CALLS.open("a") as f:
    f.write("import\\n")


def make():
    with CALLS.open("a") as f:
        f.write("build\\n")
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten())
"""


def test_the_builder_is_called_once(tmp_path: Path) -> None:
    """A ``file.py:Builder`` export runs the file once and the builder once: the graph, its parity reference and
    its weights fingerprint all come from that one model (a second call could build other weights)."""
    src = write_user_model(tmp_path, COUNTED, "counted.py")
    proc = run_cli("exporter", f"{src}:make", "--input-shape", "3x8x8", "--artifacts-dir", str(tmp_path / "a"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "calls").read_text().splitlines() == ["import", "build"]


def test_a_module_whose_forward_edits_its_weights_is_refused_and_given_back_as_it_was(tmp_path: Path) -> None:
    class EditsItself(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                self.fc.weight.mul_(2.0)
            return self.fc(x)

    module = EditsItself()
    before = module.fc.weight.detach().clone()
    with pytest.raises(ExportFailed, match="forward\\(\\) changes the model's own weights \\(fc.weight\\)"):
        export_model(module, input_shape=(4,), output_dir=tmp_path / "out")
    assert torch.equal(module.fc.weight, before), "the user's module must come back with its weights"
