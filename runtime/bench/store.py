"""Where results go, so that a run never loses or destroys measurements.

* The output folder is proved writable (a probe file is written) before anything is measured.
* Each run has its own folder, ``OUTPUT/runs/<run-id>/``. Its ``results.json`` and
  ``results.csv`` are rewritten atomically after every (model, size, batch) group, so a
  Ctrl-C, a SIGTERM or a crash keeps every group finished before it; ``latency.png`` is added
  when the run ends.
* The top-level ``OUTPUT/results.json``, ``results.csv`` and ``latency.png`` are replaced
  together, and only by a run with at least as many measured rows as the results they would
  replace: a short or interrupted run never overwrites a fuller one (its rows stay in its
  run folder). The comparison and replacement happen under a lock, so concurrent runs
  into one folder cannot interleave.
* A run that measured nothing writes nothing.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock

from exporter.errors import UserError
from exporter.files import AtomicWriter, ensure_writable_dir, remove_stale_partials, require_free_space

from .rows import RunDocument, csv_text, measured_rows

RESULTS_JSON = "results.json"
RESULTS_CSV = "results.csv"
LATENCY_PNG = "latency.png"
RUNS = "runs"


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


@dataclass
class SaveOutcome:
    """What ``finish`` wrote: the run's folder, and whether the top-level results were replaced."""

    run_dir: Path | None
    rows: int
    measured: int
    promoted: bool
    previous_measured: int = 0
    files: list[Path] = field(default_factory=list)


class ResultStore:
    """The results of one run under ``output_dir`` (see the module docstring)."""

    def __init__(self, output_dir: Path, run_id: str) -> None:
        self.output_dir = Path(output_dir)
        self.run_id = run_id
        self.run_dir = self.output_dir / RUNS / run_id
        self._existed = self.output_dir.exists()
        self.saved_rows = 0

    def prove_writable(self) -> None:
        """Fail now, with one line, if results could not be written later; a refused run leaves no folder
        it made on the way (a full disk left an empty ``bench/``)."""
        missing = [p for p in (self.output_dir, *self.output_dir.parents) if not p.exists()]
        try:
            ensure_writable_dir(self.output_dir)
            require_free_space(self.output_dir, 8 << 20, "the benchmark's results")
            runs = self.output_dir / RUNS
            if runs.exists():
                ensure_writable_dir(runs)
        except BaseException:
            for folder in missing:  # deepest first; rmdir leaves anything that is not empty
                with contextlib.suppress(OSError):
                    folder.rmdir()
            raise

    def _write(self, directory: Path, files: dict[str, bytes]) -> None:
        writer = AtomicWriter(directory)
        try:
            for name, data in files.items():
                writer.write_bytes(directory / name, data)
            writer.commit()
        except BaseException:
            writer.abort()
            raise

    def save(self, doc: RunDocument) -> None:
        """Rewrite this run's JSON and CSV (atomically); a document without rows writes nothing."""
        if not doc.rows:
            return
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._write(
                self.run_dir,
                {RESULTS_JSON: doc.json_text().encode(), RESULTS_CSV: csv_text(doc.rows).encode()},
            )
        except OSError as exc:
            raise UserError(self._lost(f"cannot write in {self.run_dir}: {exc.strerror or exc}")) from exc
        except UserError as exc:
            raise UserError(self._lost(str(exc))) from exc
        self.saved_rows = len(doc.rows)

    def _lost(self, why: str) -> str:
        kept = f"; the {self.saved_rows} rows saved before are in {self.run_dir}" if self.saved_rows else ""
        return f"{why}{kept}"

    def finish(self, doc: RunDocument, plot: Callable[[RunDocument], bytes | None]) -> SaveOutcome:
        """Write the run's final files and, if it measured at least as much, make them the top-level results."""
        if not doc.rows:
            self.remove_if_empty()
            return SaveOutcome(None, 0, 0, False)
        png = plot(doc) if doc.measured else None
        files = {RESULTS_JSON: doc.json_text().encode(), RESULTS_CSV: csv_text(doc.rows).encode()}
        if png:
            files[LATENCY_PNG] = png
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._write(self.run_dir, files)
        except UserError as exc:
            raise UserError(self._lost(str(exc))) from exc
        outcome = SaveOutcome(self.run_dir, len(doc.rows), doc.measured, False, files=[self.run_dir / n for n in files])
        with FileLock(str(self.output_dir / ".results.lock")):
            remove_stale_partials(self.output_dir)
            top = self.output_dir / RESULTS_JSON
            try:
                outcome.previous_measured = measured_rows(top.read_text()) if top.is_file() else 0
            except (OSError, UnicodeDecodeError):
                outcome.previous_measured = 0
            if doc.measured >= outcome.previous_measured:
                self._write(self.output_dir, files)
                if LATENCY_PNG not in files:  # never leave an earlier plot beside other results
                    with contextlib.suppress(OSError):
                        (self.output_dir / LATENCY_PNG).unlink()
                outcome.promoted = True
                outcome.files = [self.output_dir / n for n in files]
        return outcome

    def remove_if_empty(self) -> None:
        """Remove the output folder if this run created it and it is still empty."""
        if not self._existed:
            with contextlib.suppress(OSError):
                self.output_dir.rmdir()
