"""CI's skip rule (tests/strict_skips.py), run on a small suite of its own in a subprocess."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import tests.conftest
from tests import strict_skips
from tests.helpers import ROOT
from tests.strict_skips import ENV, gpu_present

SUITE = textwrap.dedent(
    """
    import pytest

    def test_plain_skip():
        pytest.skip("a library failed to import")

    @pytest.mark.skipif(True, reason="no browser")
    def test_skipif():
        pass

    @pytest.fixture
    def server():
        pytest.skip("the server could not start")

    def test_fixture_skip(server):
        pass

    @pytest.mark.gpu
    def test_gpu():
        pytest.skip("no CUDA GPU")

    @pytest.mark.gpu
    @pytest.mark.skipif(True, reason="no CUDA GPU")
    def test_gpu_skipif():
        pass

    @pytest.mark.cpu_only
    def test_cpu_only():
        if __import__("tests.strict_skips").strict_skips.gpu_present():
            pytest.skip("machine has a GPU")

    @pytest.mark.cpu_only
    def test_cpu_only_skipping_without_a_gpu():
        pytest.skip("wrong reason")

    @pytest.mark.xfail(reason="known", strict=True)
    def test_xfail():
        assert False

    def test_runs():
        pass
    """
)

WHOLE_MODULE = 'import pytest\n\npytest.importorskip("no_such_module_for_this_test")\n\n\ndef test_never():\n    pass\n'


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("strict_suite")
    (root / "pytest.ini").write_text("[pytest]\nmarkers =\n    gpu: g\n    cpu_only: c\n")
    (root / "conftest.py").write_text(
        "from tests.strict_skips import pytest_make_collect_report, pytest_runtest_makereport  # noqa: F401\n"
    )
    (root / "test_suite.py").write_text(SUITE)
    (root / "test_whole_module.py").write_text(WHOLE_MODULE)
    return root


def _run(root: Path, target: str, strict: bool) -> tuple[int, dict[str, str], str]:
    env = {k: v for k, v in os.environ.items() if k != ENV}
    env["PYTHONPATH"] = str(ROOT)
    if strict:
        env[ENV] = "1"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-v", target],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    outcomes = {}
    for node, word in re.findall(r"^\S+::(\w+) (PASSED|FAILED|SKIPPED|ERROR|XFAIL)", proc.stdout, re.M):
        outcomes.setdefault(node, word)  # the first word: a later "ERROR" line is the summary's
    return proc.returncode, outcomes, proc.stdout


def test_without_the_variable_skips_are_skips(suite: Path) -> None:
    code, outcomes, out = _run(suite, "test_suite.py", strict=False)
    assert code == 0, out
    assert outcomes["test_plain_skip"] == outcomes["test_fixture_skip"] == "SKIPPED", out
    assert outcomes["test_runs"] == "PASSED" and outcomes["test_xfail"] == "XFAIL", out


def test_strict_mode_turns_unexpected_skips_into_failures(suite: Path) -> None:
    code, outcomes, out = _run(suite, "test_suite.py", strict=True)
    assert code == 1, out
    assert outcomes["test_plain_skip"] == "FAILED", out
    # a skip during setup (a skipif mark, a fixture that skips) fails the setup: an error
    assert outcomes["test_skipif"] == outcomes["test_fixture_skip"] == "ERROR", out
    assert outcomes["test_cpu_only_skipping_without_a_gpu"] == ("SKIPPED" if gpu_present() else "FAILED"), out
    # a gpu test may skip (CI has no GPU); a cpu_only test only where there is one
    assert outcomes["test_gpu"] == outcomes["test_gpu_skipif"] == "SKIPPED", out
    assert outcomes["test_cpu_only"] == ("SKIPPED" if gpu_present() else "PASSED"), out
    assert outcomes["test_runs"] == "PASSED" and outcomes["test_xfail"] == "XFAIL", out
    assert f"skipped where CI must run it ({ENV}=1): a library failed to import" in out, out


def test_strict_mode_refuses_a_module_that_skips_as_a_whole(suite: Path) -> None:
    code, _, out = _run(suite, "test_whole_module.py", strict=False)
    assert code in (0, 5) and "1 skipped" in out, out
    code, _, out = _run(suite, "test_whole_module.py", strict=True)
    assert code != 0 and "error" in out.lower(), out
    assert "no_such_module_for_this_test" in out and "skipped where CI must run it" in out, out


def test_the_suite_itself_runs_under_the_rule() -> None:
    """The hooks are those of tests/conftest.py, so the real suite is judged by them, not only this one."""
    assert tests.conftest.pytest_runtest_makereport is strict_skips.pytest_runtest_makereport
    assert tests.conftest.pytest_make_collect_report is strict_skips.pytest_make_collect_report


def test_ci_sets_the_variable_and_runs_the_readme_command() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    command = 'pip install -e ".[test]" && python -m pytest\n'
    assert script.endswith(command), "CI runs the README's test command, verbatim, last"
    assert f"\nexport {ENV}=1\n" in script.split(command)[0]
    readme = (ROOT / "README.md").read_text()
    assert f"```bash\n{command}```" in readme


def _ci_prologue(tmp_path: Path, tools: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """.ci/run with only ``tools`` (name -> shell script) on PATH: it must stop before making a venv."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "dirname").symlink_to(shutil.which("dirname"))  # type: ignore[arg-type]
    for name, body in tools.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path)}
    return subprocess.run(["/bin/bash", str(ROOT / ".ci" / "run")], env=env, capture_output=True, text=True, timeout=60)


FONT = {"fc-list": "echo 'WenQuanYi Micro Hei'"}  # fontconfig knowing a font with netron's brackets


def test_ci_fails_when_chromium_or_gpp_is_missing_and_cannot_be_installed(tmp_path: Path) -> None:
    proc = _ci_prologue(tmp_path / "a", {"g++": "exit 0", **FONT})
    assert proc.returncode == 1 and proc.stderr.strip() == "error: chromium missing and no apt-get to install them"
    # an apt-get that reports success but installs nothing: the tool is looked for again
    proc = _ci_prologue(tmp_path / "b", {"chromium": "exit 0", "apt-get": "exit 0"})
    assert proc.returncode == 1 and proc.stderr.strip() == "error: g++ could not be installed", proc.stderr
    proc = _ci_prologue(tmp_path / "c", {"apt-get": "exit 100"})
    assert proc.returncode != 0 and "python3" not in proc.stderr, proc.stderr  # apt-get's failure stops it


def test_ci_fails_without_a_font_for_netrons_labels(tmp_path: Path) -> None:
    tools = {"chromium": "exit 0", "g++": "exit 0", "apt-get": "exit 0", "fc-list": "exit 0"}  # fc-list: no font
    proc = _ci_prologue(tmp_path / "a", tools)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip() == "error: fonts-wqy-microhei could not be installed (no font has U+3008/U+3009)"
    proc = _ci_prologue(tmp_path / "b", {"chromium": "exit 0", "g++": "exit 0"})
    assert proc.stderr.strip() == "error: fontconfig fonts-wqy-microhei missing and no apt-get to install them"
