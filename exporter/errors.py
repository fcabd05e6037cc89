"""Errors a user can cause or meet, and the one guard every command runs its body under.

A user mistake (a bad name, file or option) or a fault of the machine (a full disk, memory
exhausted, a killed run) is one line on stderr and a non-zero exit, never a traceback.
Bugs in the toolkit still show their traceback.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
from collections.abc import Callable

#: errno values that mean "the disk cannot take this write", whatever the file.
DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG}


class UserError(Exception):
    """A problem with the user's input (name, file, option) or machine, not a bug in the toolkit."""

    exit_code = 2


class ExportFailed(UserError):
    """The model could not be exported or the written graph failed verification."""

    exit_code = 3


class Terminated(BaseException):
    """SIGTERM, handled like Ctrl-C so a stopped run keeps what it finished."""


#: Stops asked for by the user (Ctrl-C) or the system (SIGTERM): never blamed on the user's code.
#: Code that runs a user's builder or forward catches these first, then every other BaseException
#: (a ``sys.exit()`` in forward, an exception class of their own).
INTERRUPTS = (KeyboardInterrupt, Terminated)


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message, or its type name when it has none."""
    for line in str(exc).strip().splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__


def describe_exception(exc: BaseException, *, placed: bool = True) -> str:
    """How code failed, in a few words: ``ValueError: bad value``, or ``it called sys.exit(7) (at m.py:9, in
    forward)``: code that ends the run (``sys.exit``, a ``BaseException`` of its own) is placed at the user's line,
    since its message rarely says where it came from. ``placed=False`` leaves that place out, for a caller
    that names the line itself."""
    where = _where_outside(exc) if placed else ""
    if isinstance(exc, SystemExit):
        return f"it called sys.exit({exc.code!r}){where}"
    if not isinstance(exc, Exception):
        return f"{type(exc).__name__}: {first_line(exc)}{where}"
    return f"{type(exc).__name__}: {first_line(exc)}"


def _where_outside(exc: BaseException) -> str:
    """The innermost frame of ``exc`` outside the toolkit and the installed libraries: the user's line."""
    import sysconfig
    import traceback
    from pathlib import Path

    toolkit = Path(__file__).resolve().parent.parent
    inside = (str(toolkit / "exporter"), str(toolkit / "runtime"), *sysconfig.get_paths().values())
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if not frame.filename.startswith(("<", *inside)):
            return f" (at {frame.filename}:{frame.lineno}, in {frame.name})"
    return ""


def describe_os_error(exc: OSError, what: str) -> str:
    """One line for a failed file operation: a full disk says so, others give the system's reason."""
    if exc.errno in DISK_FULL:
        return f"{what}: the disk is full ({exc.strerror or 'no space left'})"
    return f"{what}: {exc.strerror or first_line(exc)}"


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


def run_guarded(body: Callable[[], int], *, interrupted: str) -> int:
    """Run a command's body and turn everything a user can meet into one line and an exit code.

    ``UserError`` -> ``error: ...`` and its exit code; Ctrl-C (130) and SIGTERM (143) ->
    ``interrupted: <interrupted>``; a full disk, exhausted memory or a closed pipe
    (``| head``) -> one line (or none, for the pipe). A ``sys.exit()`` or a ``BaseException``
    of its own from the user's code, wherever it ran, -> one line naming the user's line, exit 1
    (a run their code ended is never a success, whatever code it exits with). Other exceptions
    are bugs and keep their traceback.
    """
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return body()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except (KeyboardInterrupt, Terminated) as exc:
        print(f"interrupted: {interrupted}", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    except BrokenPipeError:
        # The reader went away (``| head``): stop quietly, and keep Python from complaining
        # again when it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except MemoryError:
        print("error: out of memory: use a smaller batch or model, or free memory", file=sys.stderr)
        return 1
    except OSError as exc:
        if exc.errno in DISK_FULL:
            print(f"error: {describe_os_error(exc, exc.filename or 'writing')}", file=sys.stderr)
            return 1
        raise
    except BaseException as exc:
        if isinstance(exc, (Exception, GeneratorExit)):
            raise
        # No command body raises SystemExit (arguments are parsed before it runs): this one came
        # from code the user gave (a builder, a forward), run somewhere no other guard caught it.
        print(f"error: the model's code ended the run: {describe_exception(exc)}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
