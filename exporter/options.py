"""The toolkit's one vocabulary of command-line options: one name per concept, in every command.

Every command builds its parser with these helpers, so ``--artifacts-dir`` means the same
folder in the exporter, the trainer, parity, bench, profile, serve, loadtest and tune, and a
test can check that no command spells a shared concept its own way
(``tests/exporter/test_options.py``). Older spellings keep working for a while: they are hidden
from ``--help`` and, when used, print one line naming the new one.

This module imports nothing heavy: parsers are built (and ``--help`` answered) before torch,
onnxruntime or OpenVINO are imported.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: Default folder of artifacts (the same as :data:`exporter.artifact.DEFAULT_ARTIFACTS_DIR`,
#: which this module must not import: it pulls in pydantic and filelock).
ARTIFACTS_DIR = Path("artifacts")
DEVICES = ("auto", "cuda", "cpu")

#: Canonical option -> spellings that used to mean the same and still work, with a note.
DEPRECATED: dict[str, tuple[str, ...]] = {
    "--artifacts-dir": ("--output-dir",),
    "--precision": ("--precisions",),
    "--batch-size": ("--batch-sizes", "--batch"),
    "--max-batch-size": ("--max-batch",),
    "--cuda-graph": ("--cuda-graphs",),
    "--http-port": ("--port",),
}


def _warning_action(base: type[argparse.Action], new: str) -> type[argparse.Action]:
    class Deprecated(base):  # type: ignore[misc,valid-type]
        def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                     option_string: str | None = None) -> None:  # fmt: skip
            print(f"note: {option_string} is deprecated and will be removed: use {new}", file=sys.stderr)
            super().__call__(parser, namespace, values, option_string)

    return Deprecated


def add(parser: argparse.ArgumentParser | argparse._ArgumentGroup, name: str, **kwargs: Any) -> argparse.Action:
    """Add the canonical option ``name`` and, hidden, its deprecated spellings (same ``dest``)."""
    action = parser.add_argument(name, **kwargs)
    kwargs = {k: v for k, v in kwargs.items() if k not in ("help", "default", "required", "metavar")}
    kwargs["dest"] = action.dest
    base = type(action)  # the class argparse chose for the canonical option (store, store_true, ...)
    kwargs.pop("action", None)
    for old in DEPRECATED.get(name, ()):
        parser.add_argument(old, action=_warning_action(base, name), help=argparse.SUPPRESS,
                            default=argparse.SUPPRESS, **kwargs)  # fmt: skip
    return action


# --- the shared concepts --------------------------------------------------------------------


def artifacts_dir(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *, writes: bool = False) -> None:
    """``--artifacts-dir DIR``: where artifacts are read (and written) by name."""
    what = "where artifacts are written and looked up by name" if writes else "where artifacts are looked up by name"
    add(parser, "--artifacts-dir", type=Path, default=ARTIFACTS_DIR, metavar="DIR", help=f"{what} (default artifacts/)")


def precision(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    *,
    many: bool = False,
    choices: Sequence[str] | None = None,
    default: str | list[str] | None = None,
    help: str,
) -> None:
    """``--precision P`` (``many``: one or more)."""
    extra: dict[str, Any] = {"nargs": "+"} if many else {}
    if choices:
        extra["choices"] = list(choices)
    add(parser, "--precision", default=default, metavar="P", help=help, **extra)


def batch_size(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    *,
    many: bool = True,
    default: int | Sequence[int] | None,
    help: str,
) -> None:
    """``--batch-size N [N ...]``: the batch size(s) to run (a request's, a check's, a timed run's)."""
    extra: dict[str, Any] = {"nargs": "+"} if many else {}
    value = list(default) if many and isinstance(default, Sequence) else default
    add(parser, "--batch-size", type=int, default=value, metavar="N", help=help, **extra)


def max_batch_size(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *, default: int = 32) -> None:
    """``--max-batch-size N``: Triton's ``max_batch_size`` (0 turns batching off)."""
    add(parser, "--max-batch-size", type=int, default=default, metavar="N",
        help=f"Triton's max_batch_size; 0 turns batching off (default {default})")  # fmt: skip


def device(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *, help: str | None = None) -> None:
    """``--device auto|cuda|cpu`` (default auto: CUDA where it really works, else CPU, said loudly)."""
    add(parser, "--device", choices=DEVICES, default="auto",
        help=help or "auto (default): CUDA where onnxruntime really gets it, else CPU; cuda: fail without it")  # fmt: skip


def threads(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *, help: str | None = None) -> None:
    add(parser, "--threads", type=int, metavar="N", help=help or "intra-op threads (default: one per core)")


def cuda_graph(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *, help: str) -> None:
    add(parser, "--cuda-graph", action="store_true", help=help)


def http_port(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *, help: str) -> None:
    add(parser, "--http-port", type=int, metavar="PORT", help=help)


def output(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *, default: Path, what: str) -> None:
    """``--output DIR``: the folder a command's results go to (never outside it)."""
    add(parser, "--output", type=Path, default=default, metavar="DIR", help=f"{what} (default {default})")


def json_flag(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *, help: str = "print JSON instead of tables") -> None:
    add(parser, "--json", action="store_true", help=help)


def no_rebuild(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    add(parser, "--no-rebuild", action="store_true",
        help="refuse a missing or stale graph instead of rebuilding it with its recorded settings")  # fmt: skip


def wide(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    add(parser, "--wide", action="store_true", help="tables with every column (default: those that fit the width)")
