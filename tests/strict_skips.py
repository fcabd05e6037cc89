"""CI's rule on skips: with ``CNN_TOOLKIT_STRICT_SKIPS=1`` (``.ci/run`` sets it) a skip is a failure, except
for a test marked ``gpu`` (it needs a GPU CI does not have) and a test marked ``cpu_only`` on a machine with a
GPU (it checks what happens without one).

Where the test extra is installed, everything else must run: a serving stack that fails to import, a Chromium
that did not install, a missing C++ compiler would otherwise skip whole parts of the suite and leave CI green.
A test skipping at run time, a ``skipif`` mark or a fixture skipping during setup, and a module skipping as a
whole (``pytest.importorskip`` at its top) are all refused. ``xfail`` is not a skip and is left alone.

The hooks are re-exported by ``tests/conftest.py``; ``tests/test_strict_skips.py`` runs them on a small suite
of its own.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest

ENV = "CNN_TOOLKIT_STRICT_SKIPS"


def strict() -> bool:
    return os.environ.get(ENV, "") not in ("", "0")


@functools.cache
def gpu_present() -> bool:
    """Whether this machine has an NVIDIA GPU (its device node, or torch sees CUDA)."""
    if Path("/dev/nvidiactl").exists():
        return True
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


def allowed(markers: set[str]) -> bool:
    """Whether a test with these markers may skip here."""
    return "gpu" in markers or ("cpu_only" in markers and gpu_present())


def _reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    text = str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return text.removeprefix("Skipped: ")


def _refuse(report: pytest.TestReport | pytest.CollectReport, what: str) -> None:
    report.outcome = "failed"
    report.longrepr = (
        f"{what} skipped where CI must run it ({ENV}=1): {_reason(report)}\n"
        "Only gpu tests may skip (and cpu_only tests on a machine with a GPU): install what this test needs."
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if not (strict() and report.skipped) or hasattr(report, "wasxfail"):
        return
    if not allowed({m.name for m in item.iter_markers()}):
        _refuse(report, item.nodeid)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):  # type: ignore[no-untyped-def]
    """A module that skips as a whole (``pytest.importorskip`` at its top) is refused too."""
    outcome = yield
    report: pytest.CollectReport = outcome.get_result()
    if not (strict() and report.skipped):
        return
    # the module's own marks, where it was imported before it skipped (``obj`` would import it again)
    marks = getattr(collector.__dict__.get("_obj"), "pytestmark", [])
    names = {m.name for m in (marks if isinstance(marks, list) else [marks])}
    if not allowed(names):
        _refuse(report, collector.nodeid)
