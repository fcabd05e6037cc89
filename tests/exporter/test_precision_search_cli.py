"""``python -m exporter NAME --precision auto --batch-size N``: the batch the search times its candidates at.

The library's SearchConfig had ``batch_size`` while the command line always searched at batch 1. No test here
runs a search: the refusals come before any work, and the search itself is replaced by one that records the
config it was handed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from exporter import artifact as art
from runtime.precision import NOT_WORTH_IT, SearchConfig
from runtime.precision import search as search_module
from tests.helpers import assert_one_line, run_cli


def test_batch_size_needs_precision_auto(tmp_path: Path) -> None:
    """Refused like --max-loss-db: without the search it would be ignored (the exporter has no other batch)."""
    proc = run_cli("exporter", "lenet5", "--batch-size", "8", "--artifacts-dir", str(tmp_path / "a"))
    assert_one_line(proc, "--batch-size go(es) with --precision auto", code=2)
    assert proc.stdout == "" and not (tmp_path / "a").exists()


@pytest.mark.parametrize("value", ["0", "-3"])
def test_a_batch_below_one_is_one_line_before_any_work(value: str, tmp_path: Path) -> None:
    proc = run_cli("exporter", "lenet5", "--precision", "auto", "--batch-size", value,
                   "--artifacts-dir", str(tmp_path / "a"))  # fmt: skip
    assert_one_line(proc, f"--batch-size must be at least 1 (got {value})", code=2)
    assert proc.stdout == "" and not (tmp_path / "a").exists()


def _record(config: SearchConfig) -> art.PrecisionSearchRecord:
    """What a search that measured nothing would record: the config's batch, as the real one records it."""
    return art.PrecisionSearchRecord(
        budget="output SQNR >= 25 dB", metric="sqnr", threshold=25.0, target=config.target, engine=config.engine,
        device="cpu", threads=2, batch_size=config.batch_size, fp32_ms=1.0, fp32_low_ms=0.9, fp32_high_ms=1.1,
        float_layers=[],
    )  # fmt: skip


@pytest.mark.parametrize(("flags", "batch"), [(["--batch-size", "8"], 8), (["--batch-s", "32"], 32)])
def test_batch_size_reaches_the_search_and_its_title(
    flags: list[str], batch: int, lenet_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CLI's value is the SearchConfig's batch (it was always 1), and the table's title says it."""
    from exporter.__main__ import main as exporter_main

    seen: list[SearchConfig] = []

    def fake_search(directory: Path, config: SearchConfig, **_kwargs: object) -> search_module.SearchOutcome:
        seen.append(config)
        return search_module.SearchOutcome("lenet5", _record(config), None, None, None, "int8 does not pay here", 0.0)

    monkeypatch.setattr(search_module, "search_precision", fake_search)
    monkeypatch.setenv("COLUMNS", "200")
    code = exporter_main(["lenet5", "--precision", "auto", *flags, "--artifacts-dir", str(lenet_dir.parent)])
    out = capsys.readouterr().out
    assert code == NOT_WORTH_IT, out
    assert [c.batch_size for c in seen] == [batch]
    title = next(line for line in out.splitlines() if "--precision auto:" in line)
    assert f", batch {batch}, " in title, title


def test_engine_openvino_without_openvino_is_one_line_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without the openvino extra the export ran, then the first candidate's OpenVINO judge raised
    ModuleNotFoundError: a traceback after a minute of work. Now one line naming the extra, nothing written."""
    from exporter.__main__ import main as exporter_main

    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    searched: list[SearchConfig] = []
    monkeypatch.setattr(search_module, "search_precision", lambda _d, config, **_k: searched.append(config))
    out_dir = tmp_path / "a"
    code = exporter_main(["lenet5", "--precision", "auto", "--engine", "openvino", "--artifacts-dir", str(out_dir)])
    captured = capsys.readouterr()
    assert code == 2, captured
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    assert "--engine openvino: openvino is not installed: pip install -e '.[openvino]'" in lines[0]
    assert captured.out == "" and searched == [] and not out_dir.exists()
