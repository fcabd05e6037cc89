"""Errors a user can cause. The CLIs print these as one line and exit non-zero."""

from __future__ import annotations

import sys
from typing import Callable


class UserError(Exception):
    """A problem with the user's input (name, file, option), not a bug in the toolkit."""

    exit_code = 2


class ExportFailed(UserError):
    """The model could not be exported or the written graph failed verification."""

    exit_code = 3


def run_guarded(body: Callable[[], int], *, interrupted: str) -> int:
    """Run a command's body; user errors become one ``error:`` line on stderr and their exit code,
    Ctrl-C becomes one ``interrupted:`` line and exit 130. Bugs still show their traceback."""
    try:
        return body()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"interrupted: {interrupted}", file=sys.stderr)
        return 130
