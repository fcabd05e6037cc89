"""Helpers the tests share: running a command as a user would, small models of a user's own, the
one-line-error check, a strict JSON reader and a CPU onnxruntime run."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

#: A user's model file: a class and a function builder, a trained-looking BatchNorm.
TINY_NET = textwrap.dedent(
    """
    import torch
    from torch import nn

    class TinyNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.bn = nn.BatchNorm2d(8)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(8, 4)

        def forward(self, x):
            return self.fc(torch.flatten(self.pool(torch.relu(self.bn(self.conv(x)))), 1))

    def make_tiny():
        torch.manual_seed(7)
        net = TinyNet()
        with torch.no_grad():  # statistics a trained network could have; the export must keep them
            net.bn.running_mean.uniform_(-0.5, 0.5)
            net.bn.running_var.uniform_(0.5, 2.0)
        return net
    """
)


def write_user_model(folder: Path, source: str = TINY_NET, name: str = "user_net.py") -> Path:
    path = folder / name
    path.write_text(source)
    return path


def run_cli(
    *args: str, cwd: Path | None = None, timeout: int = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m <args>`` as a user would (no terminal), capturing output."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200", **(env or {})}  # env may set COLUMNS too
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=cwd or ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def command_modules() -> list[str]:
    """Every command (``python -m X``): each package under exporter/ and runtime/ with a ``__main__.py``."""
    found = []
    for package in ("exporter", "runtime"):
        for main in sorted((ROOT / package).rglob("__main__.py")):
            found.append(".".join(main.parent.relative_to(ROOT).parts))
    return found


def assert_one_line(
    proc: subprocess.CompletedProcess[str], message: str, *, code: int | None = None, after_progress: bool = False
) -> None:
    """A user mistake or fault: a non-zero exit (``code`` if given), no traceback, and ``message`` on stderr's
    one and only line. ``after_progress``: the command may have printed progress lines first (a failure found
    mid-run); the error is then the last line, and the only one that starts with ``error:``."""
    assert_one_line_err(
        proc.returncode, proc.stderr, message, code=code, after_progress=after_progress, stdout=proc.stdout
    )


def assert_one_line_err(
    returncode: int | None,
    stderr: str,
    message: str,
    *,
    code: int | None = None,
    after_progress: bool = False,
    stdout: str = "",
) -> None:
    """:func:`assert_one_line` for a command run in-process (its exit code and captured stderr)."""
    assert returncode != 0 if code is None else returncode == code, (returncode, stdout, stderr)
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert lines, "nothing on stderr"
    if after_progress:
        assert message in lines[-1], stderr
        assert [line for line in lines if line.startswith("error:")] == lines[-1:], stderr
    else:
        assert message in stderr, stderr
        assert len(lines) == 1, stderr


def strict_loads(text: str) -> Any:
    """Parse JSON the way strict parsers do: NaN, Infinity and -Infinity are errors (json.loads takes them)."""

    def refuse(token: str) -> None:
        raise ValueError(f"non-standard JSON constant {token}")

    return json.loads(text, parse_constant=refuse)


def strict_load(path: Path) -> Any:
    """:func:`strict_loads` of a file."""
    return strict_loads(Path(path).read_text())


def ort_run(graph: Path | bytes, x: np.ndarray, input_name: str = "input") -> np.ndarray:
    """The first output of ``graph`` on ``x``, run by onnxruntime's CPU provider."""
    import onnxruntime as ort

    source = str(graph) if isinstance(graph, Path) else graph
    return ort.InferenceSession(source, providers=["CPUExecutionProvider"]).run(None, {input_name: x})[0]


@contextlib.contextmanager
def fifo(path: Path) -> Iterator[Path]:
    """A FIFO at ``path`` for code that must refuse it unread. Code that opens it instead is fed ``{}`` after a
    moment rather than left waiting for a writer forever, so such a test fails instead of hanging."""
    os.mkfifo(path)
    stop = threading.Event()

    def rescue() -> None:
        while not stop.is_set():
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)  # succeeds only once a reader has it open
            except OSError:
                time.sleep(0.2)
                continue
            os.write(fd, b"{}")
            os.close(fd)
            return

    thread = threading.Thread(target=rescue, daemon=True)
    thread.start()
    try:
        yield path
    finally:
        stop.set()
        thread.join()


def cuda_ready() -> bool:
    """Whether a CUDA GPU is here and onnxruntime's CUDA provider really runs on it (the gpu tests' skip)."""
    try:
        import torch

        from runtime.sessions import cuda_usable

        return torch.cuda.is_available() and cuda_usable()
    except ImportError:
        return False


def relu_graph() -> bytes:
    """A one-node ONNX graph (Relu) with a symbolic batch over 3x8x8 inputs: the smallest real graph to serve,
    bench or wrap where a test needs one and the model does not matter."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 8, 8])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3, 8, 8])
    g = helper.make_graph([helper.make_node("Relu", ["input"], ["logits"])], "g", [x], [y])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m.SerializeToString()
