"""The toolkit's one vocabulary of command-line options: one name per concept, in every command.

Every command builds its parser (:class:`CommandParser`) with these helpers, so ``--artifacts-dir``
means the same folder in the exporter, the trainer, parity, bench, serve and loadtest, and a test
can check that no command spells a shared concept its own way (``tests/exporter/test_options.py``).

Older spellings keep working for a while where a command had them: a helper's ``old=`` names them
(each must be listed in :data:`DEPRECATED`); they are hidden from ``--help`` and, when used, print
one line naming the new one. A new command passes no ``old=``: it never had other spellings.

This module imports nothing heavy (argparse only): parsers are built, and ``--help`` and mistakes
answered, before torch, onnxruntime or OpenVINO are imported.
"""

from __future__ import annotations

import argparse
import sys
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: Default folder of artifacts, and the graph precisions and optimization targets an artifact can
#: hold: :mod:`exporter.artifact` takes them from here (``DEFAULT_ARTIFACTS_DIR``, ``PRECISIONS``,
#: ``TARGETS``), since parsers must not import it (it pulls in pydantic and filelock).
ARTIFACTS_DIR = Path("artifacts")
PRECISIONS = ("fp32", "fp16", "int8")
TARGETS = ("cpu", "cuda")
DEVICES = ("auto", "cuda", "cpu")

#: Canonical option -> spellings that some command used to have for it; they still work there, with a note.
DEPRECATED: dict[str, tuple[str, ...]] = {
    "--artifacts-dir": ("--output-dir",),
    "--precision": ("--precisions",),
    "--batch-size": ("--batch-sizes", "--batch"),
    "--max-batch-size": ("--max-batch",),
    "--cuda-graph": ("--cuda-graphs",),
    "--http-port": ("--port",),
}

Parser = argparse.ArgumentParser | argparse._ArgumentGroup


class CommandParser(argparse.ArgumentParser):
    """argparse with the toolkit's rules for mistakes and old spellings.

    * A mistake is one line on stderr and exit 2: argparse's own error() prints the whole usage
      block (eight lines for the bigger commands) before the message; here the message comes
      alone, with a pointer to ``--help``.
    * An abbreviation that fits both a canonical option and a deprecated spelling of it
      (``--batch-si``: ``--batch-size``, ``--batch-sizes``) means the canonical one, not "ambiguous".
    """

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")

    def _get_option_tuples(self, option_string: str) -> list[tuple[Any, ...]]:
        found = super()._get_option_tuples(option_string)
        current = [t for t in found if deprecated_for(t[0]) is None]
        return current or found


def deprecated_for(action: argparse.Action) -> str | None:
    """The canonical option a hidden deprecated spelling stands for, or None for any other action."""
    return getattr(action, "canonical", None)


def _warning_action(base: type[argparse.Action], new: str) -> type[argparse.Action]:
    class Deprecated(base):  # type: ignore[misc,valid-type]
        canonical = new

        def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                     option_string: str | None = None) -> None:  # fmt: skip
            print(f"note: {option_string} is deprecated and will be removed: use {new}", file=sys.stderr)
            super().__call__(parser, namespace, values, option_string)

    return Deprecated


def add(parser: Parser, name: str, *, old: Sequence[str] = (), **kwargs: Any) -> argparse.Action:
    """Add the canonical option ``name`` and, hidden, the deprecated spellings ``old`` (same ``dest``)."""
    unknown = [o for o in old if o not in DEPRECATED.get(name, ())]
    if unknown:
        raise ValueError(f"{', '.join(unknown)}: not a deprecated spelling of {name} (see options.DEPRECATED)")
    action = parser.add_argument(name, **kwargs)
    kwargs = {k: v for k, v in kwargs.items() if k not in ("help", "default", "required", "metavar", "action")}
    base = type(action)  # the class argparse chose for the canonical option (store, store_true, ...)
    for spelling in old:
        parser.add_argument(spelling, action=_warning_action(base, name), dest=action.dest, help=argparse.SUPPRESS,
                            default=argparse.SUPPRESS, **kwargs)  # fmt: skip
    return action


# --- the shared concepts --------------------------------------------------------------------


def artifacts_dir(parser: Parser, *, writes: bool = False, old: Sequence[str] = ()) -> None:
    """``--artifacts-dir DIR``: where artifacts are read (and written) by name."""
    what = "where artifacts are written and looked up by name" if writes else "where artifacts are looked up by name"
    add(parser, "--artifacts-dir", old=old, type=Path, default=ARTIFACTS_DIR, metavar="DIR",
        help=f"{what} (default artifacts/)")  # fmt: skip


def precision(
    parser: Parser,
    *,
    many: bool = False,
    choices: Sequence[str] | None = None,
    default: str | list[str] | None = None,
    help: str,
    old: Sequence[str] = (),
) -> None:
    """``--precision P`` (``many``: one or more)."""
    extra: dict[str, Any] = {"nargs": "+"} if many else {}
    if choices:
        extra["choices"] = list(choices)
    add(parser, "--precision", old=old, default=default, metavar="P", help=help, **extra)


def batch_size(
    parser: Parser,
    *,
    many: bool = True,
    default: int | Sequence[int] | None,
    help: str,
    old: Sequence[str] = (),
) -> None:
    """``--batch-size N [N ...]``: the batch size(s) to run (a request's, a check's, a timed run's)."""
    extra: dict[str, Any] = {"nargs": "+"} if many else {}
    value = list(default) if many and isinstance(default, Sequence) else default
    add(parser, "--batch-size", old=old, type=int, default=value, metavar="N", help=help, **extra)


def max_batch_size(parser: Parser, *, default: int = 32, old: Sequence[str] = ()) -> None:
    """``--max-batch-size N``: Triton's ``max_batch_size`` (0 turns batching off)."""
    add(parser, "--max-batch-size", old=old, type=int, default=default, metavar="N",
        help=f"Triton's max_batch_size; 0 turns batching off (default {default})")  # fmt: skip


def device(parser: Parser, *, help: str | None = None) -> None:
    """``--device auto|cuda|cpu`` (default auto: CUDA where it really works, else CPU, said loudly)."""
    default_help = "auto (default): CUDA where onnxruntime really gets it, else CPU; cuda: fail without it"
    add(parser, "--device", choices=DEVICES, default="auto", help=help or default_help)


def threads(parser: Parser, *, help: str | None = None) -> None:
    """``--threads N``: intra-op threads."""
    add(parser, "--threads", type=int, metavar="N", help=help or "intra-op threads (default: one per core)")


def cuda_graph(parser: Parser, *, help: str, old: Sequence[str] = ()) -> None:
    """``--cuda-graph``: capture a CUDA graph."""
    add(parser, "--cuda-graph", old=old, action="store_true", help=help)


def http_port(parser: Parser, *, help: str, old: Sequence[str] = ()) -> None:
    """``--http-port PORT``: the HTTP port a command serves on."""
    add(parser, "--http-port", old=old, type=int, metavar="PORT", help=help)


def output(parser: Parser, *, default: Path, what: str) -> None:
    """``--output DIR``: the folder a command's results go to (never outside it)."""
    add(parser, "--output", type=Path, default=default, metavar="DIR", help=f"{what} (default {default})")


def output_under_artifacts(parser: Parser, *, folder: str, what: str) -> None:
    """``--output DIR`` whose default is ``folder`` inside ``--artifacts-dir`` (:func:`output_dir` resolves it)."""
    add(parser, "--output", type=Path, default=None, metavar="DIR",
        help=f"{what} (default {folder}/ inside --artifacts-dir: {ARTIFACTS_DIR / folder})")  # fmt: skip


def output_dir(output: Path | None, artifacts_dir: Path, folder: str) -> Path:
    """``--output`` where given, else ``folder`` inside ``--artifacts-dir`` (as runtime.tune's output follows it)."""
    return Path(output) if output is not None else Path(artifacts_dir) / folder


def json_flag(parser: Parser, *, help: str = "print JSON instead of tables") -> None:
    """``--json``: strict JSON on stdout instead of tables."""
    add(parser, "--json", action="store_true", help=help)


def no_rebuild(parser: Parser) -> None:
    """``--no-rebuild``: refuse a missing or stale graph."""
    add(parser, "--no-rebuild", action="store_true",
        help="refuse a missing or stale graph instead of rebuilding it with its recorded settings")  # fmt: skip


def engine(parser: Parser, *, choices: Sequence[str], default: str, help: str) -> None:
    """``--engine E``: the one engine a command runs (or measures) in."""
    add(parser, "--engine", choices=list(choices), default=default, help=help)


def precision_budget(parser: Parser) -> None:
    """``--max-loss-db D`` | ``--min-cosine C`` | ``--max-accuracy-drop PP``: what a precision search must keep."""
    add(parser, "--max-loss-db", type=float, metavar="D",
        help="budget: the output's noise at least D dB below its signal (SQNR >= D against PyTorch fp32; "
             "default 25 without labels)")  # fmt: skip
    add(parser, "--min-cosine", type=float, metavar="C", help="budget: every sample's output cosine >= C")
    add(parser, "--max-accuracy-drop", type=float, metavar="PP",
        help="budget: top-1 at most PP points below PyTorch fp32's on the labelled set (--eval-dir, or the "
             "digits for digits-trained weights; default 0.3 there)")  # fmt: skip


def wide(parser: Parser) -> None:
    """``--wide``: tables with every column."""
    add(parser, "--wide", action="store_true", help="tables with every column (default: those that fit the width)")
