"""Helpers the tests share: running a command as a user would, and small models of a user's own."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

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
    env = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="200", **(env or {}))
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
