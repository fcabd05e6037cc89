"""One vocabulary of options: every command's parser spells each shared concept the canonical way.

Commands are found on disk (every ``__main__.py`` under exporter/ and runtime/), so a new command
is held to the same names without being listed here.
"""

from __future__ import annotations

import argparse
import importlib
import re
from pathlib import Path

import pytest

from exporter import options
from tests.helpers import command_modules, run_cli

COMMANDS = command_modules()

#: The spellings each command had before the vocabulary; they must keep working there (and nowhere else).
OLD_SPELLINGS = {
    "exporter": {"--output-dir": "--artifacts-dir", "--port": "--http-port"},
    "exporter.train": {"--output-dir": "--artifacts-dir"},
    "runtime.parity": {"--batch-sizes": "--batch-size"},
    "runtime.bench": {"--batch-sizes": "--batch-size", "--precisions": "--precision"},
    "runtime.serve": {"--max-batch": "--max-batch-size", "--cuda-graphs": "--cuda-graph"},
    "runtime.loadtest": {"--batch": "--batch-size"},
}

#: Positional arguments a command needs before its options parse.
POSITIONALS = {"runtime.parity": ["lenet5"], "runtime.loadtest": ["lenet5"]}

#: A value of each canonical option that every command accepts.
SAMPLE_VALUES = {
    "--artifacts-dir": ["somewhere"],
    "--precision": ["int8"],
    "--batch-size": ["4"],
    "--max-batch-size": ["4"],
    "--cuda-graph": [],
    "--http-port": ["8123"],
}

CANONICAL = [*options.DEPRECATED, "--device", "--threads", "--output", "--json", "--no-rebuild", "--wide"]
ALL_OLD = {old for olds in options.DEPRECATED.values() for old in olds}
#: Other ways people spell these concepts: none of them may appear in any command.
OTHER_SPELLINGS = {"--out", "--outdir", "--output-directory", "--artifact-dir", "--artifacts", "--batchsize"}
OTHER_SPELLINGS |= {"--bs", "--num-threads", "--jobs", "--max-batch", "--gpu", "--cuda-graphs", "--port"}


def _norm(option: str) -> str:
    return re.sub(r"[-_]", "", option).removesuffix("s")


def _parser(command: str) -> argparse.ArgumentParser:
    return importlib.import_module(f"{command}.__main__").build_parser()


def _visible(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {s: a for a in parser._actions if a.help != argparse.SUPPRESS for s in a.option_strings}


def _hidden(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {s: a for a in parser._actions if a.help == argparse.SUPPRESS for s in a.option_strings}


def test_every_command_is_found() -> None:
    assert set(OLD_SPELLINGS) <= set(COMMANDS), COMMANDS


@pytest.mark.parametrize("command", COMMANDS)
def test_shared_concepts_are_spelled_the_canonical_way(command: str) -> None:
    visible = _visible(_parser(command))
    for option in visible:
        assert option not in ALL_OLD | OTHER_SPELLINGS, f"{command}: {option} is not the shared name"
        for canonical in CANONICAL:
            if _norm(option) == _norm(canonical):
                assert option == canonical, f"{command}: {option} should be spelled {canonical}"


@pytest.mark.parametrize("command", COMMANDS)
def test_canonical_options_mean_the_same_everywhere(command: str) -> None:
    """Each shared option takes the same kind of value (and default where there is one) in every command."""
    visible = _visible(_parser(command))
    checks = {
        "--artifacts-dir": lambda a: a.type is Path and a.default == options.ARTIFACTS_DIR,
        "--device": lambda a: tuple(a.choices) == options.DEVICES and a.default == "auto",
        "--batch-size": lambda a: a.type is int,
        "--max-batch-size": lambda a: a.type is int,
        "--threads": lambda a: a.type is int and a.default is None,
        "--http-port": lambda a: a.type is int,
        "--output": lambda a: a.type is Path,
        "--precision": lambda a: a.type is None,
        **{flag: lambda a: a.nargs == 0 and a.const is True for flag in ("--json", "--no-rebuild", "--cuda-graph")},
        "--wide": lambda a: a.nargs == 0 and a.const is True,
    }
    for option, check in checks.items():
        if option in visible:
            assert check(visible[option]), f"{command}: {option} differs from the shared option"


@pytest.mark.parametrize("command", COMMANDS)
def test_help_names_no_deprecated_spelling(command: str) -> None:
    text = _parser(command).format_help()
    for old in ALL_OLD:
        assert not re.search(rf"(?<![\w-]){re.escape(old)}(?![\w-])", text), f"{command} --help shows {old}"


@pytest.mark.parametrize("command", COMMANDS)
def test_deprecated_spellings_are_those_the_command_had(command: str) -> None:
    hidden = _hidden(_parser(command))
    assert {s: options.deprecated_for(a) for s, a in hidden.items()} == OLD_SPELLINGS.get(command, {})


@pytest.mark.parametrize(
    ("command", "old", "new"),
    [(c, old, new) for c, spellings in OLD_SPELLINGS.items() for old, new in spellings.items()],
)
def test_deprecated_spelling_parses_to_the_same_value_with_a_note(
    command: str, old: str, new: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = POSITIONALS.get(command, [])
    expected = _parser(command).parse_args([*before, new, *SAMPLE_VALUES[new]])
    assert capsys.readouterr().err == ""
    got = _parser(command).parse_args([*before, old, *SAMPLE_VALUES[new]])
    assert vars(got) == vars(expected)
    assert capsys.readouterr().err == f"note: {old} is deprecated and will be removed: use {new}\n"


def test_abbreviation_means_the_canonical_option_not_ambiguous(capsys: pytest.CaptureFixture[str]) -> None:
    args = _parser("runtime.bench").parse_args(["--batch-si", "3", "--precis", "int8"])
    assert (args.batch_size, args.precision) == ([3], ["int8"])
    assert capsys.readouterr().err == ""


def test_a_spelling_not_in_the_table_is_refused() -> None:
    with pytest.raises(ValueError, match="--outdir: not a deprecated spelling of --artifacts-dir"):
        options.artifacts_dir(options.CommandParser(), old=("--outdir",))


def test_old_spelling_works_from_the_command_line() -> None:
    """As a user sees it: the note, then the command doing what the new spelling does."""
    proc = run_cli("runtime.bench", "--models", "lenet5", "--precisions", "fp8")
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "note: --precisions is deprecated and will be removed: use --precision",
        "error: unknown precision 'fp8': use fp32, fp16, int8 (optionally .opt-cpu or .opt-cuda) or bf16",
    ]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_says_what_it_does(command: str) -> None:
    """Defect: ``exporter.train --help`` listed --epochs, --lr and --seed with no description."""
    parser = _parser(command)
    bare = [a.option_strings[0] if a.option_strings else a.dest for a in parser._actions if not a.help]
    assert bare == [], f"python -m {command} --help: no description for {', '.join(bare)}"
