"""Command output: never truncated, never parsed as markup, readable with and without a terminal."""

from __future__ import annotations

import importlib
import io
import os
import subprocess
import sys

import pytest

from exporter.console import Column, CommandParser, Console, size_text
from tests.helpers import ROOT

COMMANDS = [
    "exporter.__main__",
    "exporter.train.__main__",
    "runtime.parity.__main__",
    "runtime.bench.__main__",
    "runtime.serve.__main__",
    "runtime.loadtest.__main__",
]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


ROWS = [["[bold]resnet18[/bold]" + "x" * 40, "1.23456789e-05"]]


def test_terminal_table_wider_than_the_terminal_keeps_every_digit() -> None:
    stream = _Terminal()
    console = Console(stream)
    console._rich.width = 30
    console.table([Column("model"), Column("max abs err", True)], ROWS)
    text = stream.getvalue()
    assert "1.23456789e-05" in text and "…" not in text
    assert "[bold]resnet18[/bold]" in text, "cell text must not be parsed as markup"


def test_piped_table_is_plain_markdown() -> None:
    stream = io.StringIO()
    Console(stream).table([Column("model"), Column("max abs err", True)], ROWS, title="t [fp32, random]")
    lines = stream.getvalue().splitlines()
    assert lines[0] == "t [fp32, random]"
    assert lines[1].startswith("| model") and set(lines[2]) <= {"|", "-", ":"}
    assert "1.23456789e-05" in lines[3] and "\x1b" not in stream.getvalue()


def test_progress_without_a_terminal_prints_plain_lines() -> None:
    stream = io.StringIO()
    console = Console(stream)
    with console.progress(2, "bench") as p:
        p.update("resnet18 batch 1")
        p.advance()
        p.update("resnet18 batch 8")
    lines = stream.getvalue().splitlines()
    assert lines[0] == "bench: 2 steps"
    assert lines[1].startswith("[0/2") and lines[1].endswith("] resnet18 batch 1")
    assert lines[2].startswith("[1/2") and lines[2].endswith("] resnet18 batch 8")


@pytest.mark.parametrize("module", COMMANDS)
@pytest.mark.parametrize("argv", [["--no-such-flag"], ["--seed", "many"]])
def test_every_command_reports_a_bad_flag_in_one_line(
    module: str, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    parser = importlib.import_module(module).build_parser()
    assert isinstance(parser, CommandParser)
    if argv[0] == "--seed" and "--seed" not in parser.format_help():
        argv = ["--no-such-flag"]
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["lenet5", *argv] if "runtime.bench" not in module else argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    # argparse alone would print its whole usage block first
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and "--help" in err, err


def test_sizes_read_at_every_scale() -> None:
    """Defect: a small user model was reported as "(0.0 MB, ...)"."""
    assert [size_text(n) for n in (553_412_641, 28_871, 999, 0)] == ["553.4 MB", "28.9 kB", "999 bytes", "0 bytes"]


def test_dumb_terminal_gets_plain_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from exporter.console import Console

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setenv("TERM", "dumb")
    stream = Tty()
    console = Console(stream)
    assert not console.tty
    console.table([], [])


def test_stdout_kept_for_output_sends_everything_else_to_stderr() -> None:
    """What --json commands (parity, profile, tune) print through: descriptor 1 itself is moved aside."""
    code = (
        "import os, sys\n"
        "from exporter.console import stdout_kept_for_output\n"
        "with stdout_kept_for_output() as out:\n"
        "    os.write(1, b'fd1 ')\n"
        "    print('print', end=' ')\n"
        "    sys.__stdout__.write('dunder ')\n"
        '    out.write(\'{"only": "this"}\')\n'
        "print(' after')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == '{"only": "this"} after\n'
    assert sorted(proc.stderr.split()) == ["dunder", "fd1", "print"]


WIDE_COLUMNS = [Column("model"), Column("ms", True), Column("detail", priority=2), Column("extra", True, priority=1)]
WIDE_ROW = [["resnet18", "1.25", "d" * 60, "e" * 30]]


def test_piped_table_fits_100_columns_and_names_what_it_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    stream = io.StringIO()
    hidden = Console(stream).table(WIDE_COLUMNS, WIDE_ROW)
    lines = stream.getvalue().splitlines()
    assert hidden == ["detail"], "the least needed column (highest priority) goes first, and only as many as needed"
    assert max(len(line) for line in lines if line.startswith("|")) <= 100
    assert " extra |" in lines[0] and "detail" not in lines[0]
    assert "columns left out to fit 100 characters: detail (--wide shows them)" in lines


def test_columns_env_and_wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "40")
    stream = io.StringIO()
    assert Console(stream).table(WIDE_COLUMNS, WIDE_ROW) == ["detail", "extra"]
    assert "1.25" in stream.getvalue(), "columns of priority 0 always stay, even where they do not fit"
    # Defect: the line naming what was left out was itself wider than the width it spoke of
    assert max(len(line) for line in stream.getvalue().splitlines()) <= 40, stream.getvalue()
    stream = io.StringIO()
    assert Console(stream).table(WIDE_COLUMNS, WIDE_ROW, wide=True) == []
    assert "d" * 60 in stream.getvalue() and "left out" not in stream.getvalue()


def test_terminal_table_fits_the_terminal() -> None:
    stream = _Terminal()
    console = Console(stream)
    console._rich.width = 45
    assert console.table(WIDE_COLUMNS, WIDE_ROW) == ["detail", "extra"]
    assert "e" * 30 not in stream.getvalue() and "(--wide shows them)" in stream.getvalue()


def _lines(text: str) -> list[str]:
    return text.splitlines()


def test_piped_table_measures_every_cell_and_wraps_free_text(monkeypatch: pytest.MonkeyPatch) -> None:
    """Defect: tune's table printed 112 characters under its own "left out to fit 100" line: cells wider
    than their headers (``int8.opt-cpu``, ``meets target; unstable``) were not what the fitting measured."""
    monkeypatch.delenv("COLUMNS", raising=False)
    cols = [Column("#", True), Column("engine"), Column("prec"), Column("streams x threads"), Column("img/s", True)]
    cols += [Column("p99 ms", True, 1), Column("measured", priority=3), Column("verdict", wrap=True)]
    reason = "failed: parity check against PyTorch: SQNR 3.2 dB is below the 20 dB the accuracy budget allows"
    rows = [
        ["1", "onnxruntime", "int8.opt-cpu", "2 streams x 1 thread", "12345", "1.23", "confirmed",
         ("meets target; unstable", "yellow")],
        ["2", "openvino", "bf16.opt-cpu", "1 stream x 2 threads", "", "", "", (reason, "red")],
    ]  # fmt: skip
    stream = io.StringIO()
    hidden = Console(stream).table(cols, rows, title="Candidates for lenet5 on CPU: " + "a long machine name " * 5)
    text = stream.getvalue()
    assert max(len(line) for line in _lines(text)) <= 100, text
    assert hidden == ["p99 ms", "measured"], "least needed first, free text wrapped to 30 before more go"
    assert " ".join(text.split()).count("int8.opt-cpu") == 1 and "12345" in text
    words = [w for line in _lines(text) if line.startswith("|") for w in line.split("|")[-2].split()]
    assert " ".join(words).endswith(reason), "the wrapped verdict keeps every word, in order"
    wide = io.StringIO()
    assert Console(wide).table(cols, rows, wide=True) == []
    assert reason in wide.getvalue(), "--wide: every column, every cell on one line"


def test_zoo_list_fits_the_pipe_and_columns(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Defect: ``python -m exporter --list | cat`` was 163 characters wide and ignored ``COLUMNS=40``."""
    from tests.helpers import run_cli

    for width in (100, 40):
        r = run_cli("exporter", "--list", env={"COLUMNS": str(width)})
        assert r.returncode == 0, r.stderr
        assert max(len(line) for line in _lines(r.stdout)) <= width, r.stdout
        assert "| name " in r.stdout and "| resnet18 " in r.stdout and "--wide" in r.stdout
    assert "| GFLOPs |" in run_cli("exporter", "--list", env={"COLUMNS": "100"}).stdout
    wide = run_cli("exporter", "--list", "--wide", env={"COLUMNS": "100"})
    assert wide.returncode == 0 and "| description " in wide.stdout and "left out" not in wide.stdout


def _search_record(label: str, drops: list[float | None]):  # type: ignore[no-untyped-def]
    """A real PrecisionSearchRecord of two candidates (the second chosen) with these top-1 drops: a stand-in
    missed the fields print_search reads since --engine openvino and --target cuda."""
    from exporter import artifact as art

    cand = dict(float_layers=["a"] * 12, float_nodes=[], sqnr_db=31.25, cosine_min=0.99912, passed=True,
                latency_ms=1.234, speedup=2.51, speedup_low=2.01, speedup_high=3.02)  # fmt: skip
    return art.PrecisionSearchRecord(
        candidates=[art.SearchCandidate(label="all layers int8", accuracy_drop_pp=drops[0], **cand),  # type: ignore[arg-type]
                    art.SearchCandidate(label=label, chosen=True, accuracy_drop_pp=drops[1], **cand)],  # type: ignore[arg-type]
        budget="SQNR >= 20 dB against fp32", metric="sqnr", threshold=20.0, target="cpu", engine="onnxruntime",
        device="cpu", threads=2, batch_size=1, fp32_ms=3.1, fp32_low_ms=3.0, fp32_high_ms=3.3, float_layers=[],
    )  # fmt: skip


@pytest.mark.parametrize("drops", [[None, None], [None, 0.25], [1.5, 0.25]])
@pytest.mark.parametrize("tty", [False, True])
def test_precision_auto_table_drops_an_empty_top1_column_and_says_why(drops: list, tty: bool) -> None:
    """Defect: without labelled images (random weights) the --precision auto table showed an empty "top-1 drop"
    column, no figure in any row and no word of why: now the column goes and one line under the table says how
    to have it; one candidate with a figure keeps the column (and the others' cells blank)."""
    from types import SimpleNamespace as NS

    from exporter.__main__ import print_search

    why = "top-1 drop: not measured, no labelled images (give --eval-dir DIR)"
    stream = _Terminal() if tty else io.StringIO()
    print_search(Console(stream), NS(search=_search_record("greedy", drops), name="m", written=False, message="none"))
    lines = _lines(stream.getvalue())
    table = [i for i, line in enumerate(lines) if line.startswith(("|", "┃", "│", "└"))]
    measured = any(d is not None for d in drops)
    assert any("top-1 drop" in lines[i] for i in table) == measured, stream.getvalue()
    assert ("0.25" in stream.getvalue()) == measured
    under = [line for line in lines[table[-1] + 1 :] if line.strip()]
    if measured:
        assert why not in lines and "top-1 drop" not in "".join(under), stream.getvalue()
    else:  # the first line under the table, whole on one line (it fits 80 columns)
        assert under[0] == why and len(why) <= 80, stream.getvalue()


def test_precision_auto_table_fits_the_pipe(monkeypatch: pytest.MonkeyPatch) -> None:
    """Defect: the candidate column, padded for ``greedy: 12 layer(s) float by dB recovered per ms <- chosen``,
    made the --precision auto table 140 characters wide."""
    from types import SimpleNamespace as NS

    from exporter.__main__ import print_search

    monkeypatch.delenv("COLUMNS", raising=False)
    label = "greedy: 12 layer(s) float by dB recovered per ms"

    search = _search_record(label, drops=[None, None])
    stream = io.StringIO()
    print_search(Console(stream), NS(search=search, name="resnet18", written=False, message="nothing written"))
    text = stream.getvalue()
    assert max(len(line) for line in _lines(text)) <= 100, text
    assert "2.51x (2.01-3.02)" in text, "figures are never wrapped"
    words = [w for line in _lines(text) if line.startswith("|") for w in line.split("|")[1].split()]
    assert f"{label} <- chosen" in " ".join(words), "the wrapped label keeps every word, in order"


@pytest.mark.parametrize("hint", [None, "bf16"])
def test_a_written_auto_graph_says_where_openvino_runs_its_float_layers_in_bf16(hint: str | None) -> None:
    """An auto graph verified with its float layers in OpenVINO's bf16 says so where it is written: onnxruntime
    runs the same graph's float layers in fp32."""
    from types import SimpleNamespace as NS

    from exporter import artifact as art
    from exporter.__main__ import print_search
    from runtime.compare import default_tolerance

    parity = art.ParityRecord(device="cpu", providers=["CPUExecutionProvider"], precision="int8", inputs="random",
                              seed=0, batch_sizes=[1], tolerance=default_tolerance("cpu", "int8"), passed=True,
                              results=[art.OutputComparison(
                                  output="output", batch_size=1, max_abs_err=0.01, max_rel_err=0.01,
                                  mean_abs_err=0.001, ref_max_abs=1.0, cosine_min=0.999, sqnr_db=30.0,
                                  top1_agreement=1.0, top5_agreement=1.0, needed_atol=0.01, needed_rtol=0.01,
                                  passed=True, failures=[])])  # fmt: skip
    stream = io.StringIO()
    outcome = NS(search=_search_record("greedy", [None, None]), name="m", written=True, path="m.auto.onnx",
                 seconds=3.0, plot=None, record=NS(openvino_hint=hint, parity=parity))  # fmt: skip
    print_search(Console(stream), outcome)
    said = "its float layers run in bf16 there, as verified and timed (openvino_hint bf16)" in stream.getvalue()
    assert said == (hint == "bf16"), stream.getvalue()


@pytest.mark.parametrize("twin", [False, True])
def test_precision_auto_title_says_bf16_twins_were_judged_with_the_bf16_hint(twin: bool) -> None:
    """Defect: with bf16 twins among the candidates the title still read 'judged in onnxruntime and openvino
    (f32 hint)', as if every candidate ran its float layers in f32 in OpenVINO."""
    from types import SimpleNamespace as NS

    from exporter.__main__ import print_search

    search = _search_record("greedy; float layers in bf16 (OpenVINO)", [None, None])
    cands = [search.candidates[0], search.candidates[1].model_copy(update={"openvino_hint": "bf16" if twin else None})]
    search = search.model_copy(update={"engine": "openvino", "judged_in": ["onnxruntime", "openvino"],
                                       "inference_precision": "f32", "candidates": cands})  # fmt: skip
    stream = io.StringIO()
    print_search(Console(stream), NS(search=search, name="m", written=False, message="none"), wide=True)
    text = " ".join(stream.getvalue().split())
    assert "judged in onnxruntime and openvino (f32 hint" in text, text
    assert ("(f32 hint; bf16 where the candidate says so)" in text) == twin, text
    assert twin or "(f32 hint)" in text
