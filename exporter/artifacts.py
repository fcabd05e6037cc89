"""Where exported files live, and how they are written: atomically, or not at all.

Layout: ``<output_dir>/NAME/NAME.onnx`` and ``<output_dir>/NAME/manifest.json``. Every
file is first written to a hidden temporary name in the same folder and renamed into
place; the manifest is written last and records the graph's sha256, so a reader can
tell a complete pair from a stale one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import UserError

DEFAULT_OUTPUT_DIR = Path("artifacts")
MANIFEST = "manifest.json"


def model_dir(name: str, output_dir: str | Path = DEFAULT_OUTPUT_DIR) -> Path:
    return Path(output_dir) / name


def onnx_path(name: str, output_dir: str | Path = DEFAULT_OUTPUT_DIR, suffix: str = "") -> Path:
    """Path of a model's graph; ``suffix`` names a variant (``.fp16``, ``.int8``...)."""
    return model_dir(name, output_dir) / f"{name}{suffix}.onnx"


def manifest_path(name: str, output_dir: str | Path = DEFAULT_OUTPUT_DIR) -> Path:
    return model_dir(name, output_dir) / MANIFEST


def ensure_writable_dir(path: Path) -> None:
    """Create ``path`` (and parents) or fail with one clear message."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output directory {path}: {exc.strerror or exc}") from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"output directory {path} is not writable")


class AtomicWriter:
    """Collects files written to temporary names and renames them into place on commit."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._pending: list[tuple[Path, Path]] = []

    def path_for(self, final: Path) -> Path:
        """A temporary path beside ``final``; write there, it is renamed on commit."""
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".partial", dir=self.directory)
        os.close(fd)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; published files get normal permissions
        self._pending.append((Path(tmp), final))
        return Path(tmp)

    def write_bytes(self, final: Path, data: bytes) -> None:
        self.path_for(final).write_bytes(data)

    def write_json(self, final: Path, obj: object) -> None:
        self.write_bytes(final, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())

    def commit(self) -> None:
        for tmp, final in self._pending:
            os.replace(tmp, final)
        self._pending.clear()

    def abort(self) -> None:
        for tmp, _ in self._pending:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        self._pending.clear()


@contextlib.contextmanager
def atomic_outputs(directory: Path) -> Iterator[AtomicWriter]:
    """Yield a writer whose files appear only if the block finishes without an exception.

    On failure (Ctrl-C included) temporary files are removed, and so is ``directory``
    if this call created it and it is left empty.
    """
    existed = directory.exists()
    ensure_writable_dir(directory)
    writer = AtomicWriter(directory)
    try:
        yield writer
        writer.commit()
    except BaseException:
        writer.abort()
        if not existed:
            with contextlib.suppress(OSError):
                directory.rmdir()
        raise


def read_manifest(name: str, output_dir: str | Path = DEFAULT_OUTPUT_DIR) -> dict | None:
    """The manifest of an exported model, or None where there is none (or it is unreadable)."""
    path = manifest_path(name, output_dir)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def current_graph(name: str, output_dir: str | Path = DEFAULT_OUTPUT_DIR) -> tuple[Path, dict] | None:
    """The fp32 graph and its manifest when both exist and the graph's sha256 is the recorded one."""
    path = onnx_path(name, output_dir)
    manifest = read_manifest(name, output_dir)
    if manifest is None or not path.is_file() or sha256_file(path) != manifest.get("sha256"):
        return None
    return path, manifest
