"""Writing files so that nothing is ever half-written, and reading them back with one clear error.

Every file the toolkit writes goes first to a hidden temporary name in its final folder
(``.NAME.<random>.partial``) and is renamed into place only when the whole set is
complete; a failure (a full disk, Ctrl-C, SIGTERM) removes the temporary files. A process
killed outright (SIGKILL, power loss) can leave ``.partial`` files behind: the next write
into that folder removes them (:func:`remove_stale_partials`), under the folder's lock.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import UserError, describe_os_error

PARTIAL_SUFFIX = ".partial"


#: The most a manifest (or another small JSON or text file the toolkit reads) may hold: the largest
#: zoo manifest is well under 1 MiB; a file far larger is not one, and is refused before it is read.
SMALL_FILE_LIMIT = 16 << 20


class NotRegularFile(OSError):
    """A path the toolkit would read is not a plain file (a FIFO, a device, a socket), or is far too
    large for what it should hold. Its message says which, in words; callers add the path and what to do."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file"


@contextlib.contextmanager
def open_regular(path: str | Path, *, limit: int | None = None) -> Iterator[BinaryIO]:
    """``path`` opened for reading, refusing anything but a regular file (a FIFO would block forever,
    ``/dev/zero`` never ends) and, with ``limit``, one larger than ``limit`` bytes.

    The file is opened without blocking and its type read from the open file itself, so nothing
    swapped in between a check and the open can make the read hang. FileNotFoundError passes through.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO opens at once, no writer needed
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(f"{_kind(st.st_mode)}, not a regular file")
        if limit is not None and st.st_size > limit:
            raise NotRegularFile(_too_large(st.st_size, limit))
        os.set_blocking(fd, True)
        fh = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with fh:
        yield fh


def _too_large(size: int | None, limit: int) -> str:
    cap = f"{limit >> 20} MiB" if limit >= 1 << 20 else f"{limit} bytes"
    found = f"{size / 1e6:,.1f} MB" if size is not None else "it grew while read"
    return f"larger than the {cap} such a file can hold ({found}): it is not one"


def file_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be read as a file, in words after its name (``does not exist``, ``is a
    folder``, ``is a FIFO (named pipe), not a regular file``, ``is a symbolic link loop``), or None."""
    p = Path(path)
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        if p.is_symlink():
            return f"is a symbolic link to {os.readlink(p)}, which does not exist"
        return "does not exist"
    except (RuntimeError, OSError) as exc:
        if getattr(exc, "errno", None) == errno.ELOOP or isinstance(exc, RuntimeError):
            return "is a symbolic link loop"
        return f"cannot be read: {exc.strerror or exc}"
    return None if stat.S_ISREG(mode) else f"is {_kind(mode)}, not a regular file"


def read_regular(path: str | Path, *, limit: int | None = SMALL_FILE_LIMIT) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes (None: any size); see :func:`open_regular`."""
    with open_regular(path, limit=limit) as fh:
        data = fh.read() if limit is None else fh.read(limit + 1)
    if limit is not None and len(data) > limit:  # it grew, or its size was not told (a /proc file)
        raise NotRegularFile(_too_large(None, limit))
    return data


def read_regular_text(path: str | Path, *, limit: int | None = SMALL_FILE_LIMIT) -> str:
    """:func:`read_regular` decoded as UTF-8 (UnicodeDecodeError where it is not)."""
    return read_regular(path, limit=limit).decode()


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open_regular(path) as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def strict_json(obj: object) -> str:
    """JSON that every parser accepts: NaN and Infinity are refused, not written."""
    try:
        return json.dumps(obj, indent=2, allow_nan=False) + "\n"
    except ValueError as exc:
        raise ValueError(f"refusing to write non-finite numbers as JSON: {exc}") from exc


def finite_or_none(value: float | None) -> float | None:
    """``value`` where it is a finite number, else None (strict JSON has no NaN/Infinity)."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def check_folder(path: Path) -> None:
    """Refuse a folder path that can never be used, before any work: a symlink loop, a link to nothing,
    something that is not a folder. One line saying what to do."""
    try:
        path.resolve()
    except (RuntimeError, OSError) as exc:  # a loop: RuntimeError up to Python 3.12, OSError (ELOOP) after
        raise UserError(f"{path} is a symbolic link loop: remove the link or name another folder") from exc
    if path.is_symlink() and not path.exists():
        raise UserError(
            f"{path} is a symbolic link to {os.readlink(path)}, which does not exist: "
            "create that folder or remove the link"
        )
    if path.exists() and not path.is_dir():
        raise UserError(f"{path} exists and is not a folder")


def ensure_writable_dir(path: Path) -> None:
    """Create ``path`` (and parents) and prove a file can be written in it, or fail with one line.

    ``os.access`` says yes to root on a read-only mount; writing a probe file tells the truth.
    """
    check_folder(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe.", suffix=PARTIAL_SUFFIX, dir=path)
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):  # a concurrent cleanup may have taken it already
            os.unlink(probe)
    except OSError as exc:
        raise UserError(describe_os_error(exc, f"cannot write in {path}")) from exc


@contextlib.contextmanager
def made_folder(path: Path) -> Iterator[None]:
    """:func:`ensure_writable_dir` for the block; where the block fails (Ctrl-C included), the folders
    this call created and that are still empty are removed, so a failed run leaves no empty folder."""
    created = [p for p in (path, *path.parents) if not p.exists() and not p.is_symlink()]  # deepest first
    ensure_writable_dir(path)
    try:
        yield
    except BaseException:
        for folder in created:
            try:
                folder.rmdir()  # only an empty folder: another run's files there keep it
            except OSError:
                break
        raise


def require_free_space(path: Path, nbytes: int, what: str) -> None:
    """Refuse up front when the disk holding ``path`` has less than ``nbytes`` (plus a margin) free."""
    try:
        free = shutil.disk_usage(path).free
    except OSError:
        return
    needed = int(nbytes * 1.05) + (16 << 20)
    if free < needed:
        raise UserError(
            f"not enough disk space for {what} in {path}: needs about {needed / 1e6:,.0f} MB, {free / 1e6:,.0f} MB free"
        )


def remove_stale_partials(directory: Path) -> list[Path]:
    """Remove ``.partial`` files and scratch folders a killed writer left in ``directory``;
    call it holding the folder's lock."""
    removed = []
    if directory.is_dir():
        for p in directory.iterdir():
            if not (p.name.startswith(".") and p.name.endswith(PARTIAL_SUFFIX)):
                continue
            with contextlib.suppress(OSError):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
                removed.append(p)
    return removed


@contextlib.contextmanager
def scratch_dir(directory: Path, label: str, *, tempfiles: bool = True) -> Iterator[Path]:
    """A hidden ``.LABEL.<random>.partial`` folder inside ``directory`` for intermediate files,
    removed on exit.

    Libraries that make their own temporary files (onnxruntime's quantizer) are pointed at it
    too, so a run killed outright leaves its scratch where :func:`remove_stale_partials` finds
    it, not hundreds of MB in the system's temporary folder. ``tempfiles=False`` leaves them where
    they were: a local server's workspace holds Unix sockets, whose paths must stay short.
    """
    try:
        path = Path(tempfile.mkdtemp(prefix=f".{label}.", suffix=PARTIAL_SUFFIX, dir=directory))
    except OSError as exc:
        raise UserError(describe_os_error(exc, f"cannot write in {directory}")) from exc
    previous = tempfile.tempdir
    if tempfiles:
        tempfile.tempdir = str(path)
    try:
        yield path
    finally:
        tempfile.tempdir = previous
        shutil.rmtree(path, ignore_errors=True)


class AtomicWriter:
    """Collects files written to temporary names and renames them into place on commit."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._pending: list[tuple[Path, Path]] = []

    def path_for(self, final: Path) -> Path:
        """A temporary path beside ``final``; write there, it is renamed on commit."""
        if final.is_dir():
            raise UserError(f"cannot write {final}: a folder of that name is in the way")
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=PARTIAL_SUFFIX, dir=final.parent)
        except OSError as exc:
            raise UserError(describe_os_error(exc, f"cannot write {final}")) from exc
        os.close(fd)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; published files get normal permissions
        self._pending.append((Path(tmp), final))
        return Path(tmp)

    def write_bytes(self, final: Path, data: bytes) -> None:
        tmp = self.path_for(final)
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise UserError(describe_os_error(exc, f"cannot write {final}")) from exc

    def write_text(self, final: Path, text: str) -> None:
        self.write_bytes(final, text.encode())

    def write_json(self, final: Path, obj: object) -> None:
        self.write_text(final, strict_json(obj))

    def commit(self) -> None:
        try:
            for tmp, final in self._pending:
                os.replace(tmp, final)
        except OSError as exc:
            raise UserError(describe_os_error(exc, f"cannot move {final.name} into place")) from exc
        self._pending.clear()

    def abort(self) -> None:
        for tmp, _ in self._pending:
            with contextlib.suppress(OSError):
                tmp.unlink()
        self._pending.clear()


@contextlib.contextmanager
def atomic_outputs(directory: Path) -> Iterator[AtomicWriter]:
    """Yield a writer whose files appear only if the block finishes without an exception.

    On failure (Ctrl-C and SIGTERM included) temporary files are removed, and so are the
    folders this call created (``directory``, its parents) where they are left empty.
    """
    with made_folder(directory):
        writer = AtomicWriter(directory)
        try:
            yield writer
            writer.commit()
        except BaseException:
            writer.abort()
            raise
