"""Terminal output for the commands: readable on a terminal, in a pipe, in CI and in a log.

* Text is never parsed as markup: ``[fp32, random inputs]`` prints as written.
* Tables never cut a number: on a terminal they are rich tables as wide as their content;
  without one (piped, CI) they are plain Markdown tables, which also paste into docs.
* Tables fit the width (the terminal's, ``COLUMNS``, or 100 without a terminal), measured as printed
  (every cell, border and padding): free text (``Column.wrap``) wraps within its cell, columns a reader
  can do without (``Column.priority`` > 0) are left out, least needed first, and a line names them
  and says that ``--wide`` shows every column. JSON and CSV outputs always hold everything.
* Progress is a live bar on a terminal and plain ``[i/n] message`` lines otherwise, so a
  long run without a terminal still says what it is doing.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from rich.console import Console as RichConsole

from .options import CommandParser  # noqa: F401  (commands import it from here too)

#: A table cell: plain text, or (text, rich style) for a coloured verdict such as ("FAIL", "red").
Cell = str | tuple[str, str]


#: The width a table fits without a terminal (piped, CI, a log), unless ``COLUMNS`` says otherwise.
PIPE_WIDTH = 100


@dataclass(frozen=True)
class Column:
    """A table column. ``priority`` 0: always shown; 1, 2, 3...: left out to fit the width, highest first."""

    name: str
    right: bool = False
    priority: int = 0
    #: Free text (a reason, a verdict, a label): wraps within its cell to fit the width; figures never do.
    wrap: bool = False


class Console:
    """One output stream (stdout or stderr) with the toolkit's conventions."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        # A "dumb" terminal cannot draw tables (rich assumes 80 columns there): plain output.
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)()) and os.environ.get("TERM") != "dumb"

    @functools.cached_property
    def _rich(self) -> RichConsole:
        """rich, imported on first use: plain lines without a terminal never need it."""
        from rich.console import Console as RichConsole

        return RichConsole(
            file=self.stream,
            highlight=False,
            markup=False,
            emoji=False,
            soft_wrap=True,
            width=None if self.tty else 100_000,
            no_color=not self.tty,
            force_terminal=self.tty,
        )

    def print(self, text: str = "", style: str | None = None) -> None:
        """One line of plain text (styled on a terminal only); never interpreted as markup."""
        if self.tty:
            from rich.text import Text

            self._rich.print(Text(text, style=style or ""))
        else:
            print(text, file=self.stream, flush=True)

    def width(self) -> int:
        """The width tables fit: the terminal's (rich reads ``COLUMNS`` too), else ``COLUMNS`` or 100."""
        if self.tty:
            return self._rich.width
        try:
            return max(20, int(os.environ.get("COLUMNS", "")))
        except ValueError:
            return PIPE_WIDTH

    def table(
        self,
        columns: Sequence[Column],
        rows: Sequence[Sequence[Cell]],
        title: str | None = None,
        *,
        wide: bool = False,
    ) -> list[str]:
        """A table that fits :meth:`width` as printed (cells, borders and padding measured). Unless ``wide``,
        free-text columns (``Column.wrap``) wrap and columns of priority > 0 are left out, the least needed
        first, until it fits; a line then names them. Returns the names left out."""
        shown = list(range(len(columns)))
        hidden: list[int] = []
        limit = self.width()
        caps: dict[int, int] = {}
        if not wide:
            # Free text wraps to a readable width before a column of figures is given up; then to the least.
            def fits(keep: list[int]) -> bool:
                return self._width_of(columns, rows, keep, self._caps(columns, rows, keep, limit, 30)) <= limit

            while not fits(shown):
                optional = [i for i in shown if columns[i].priority > 0]
                if not optional:
                    break
                drop = max(optional, key=lambda i: (columns[i].priority, i))
                shown.remove(drop)
                hidden.append(drop)
            for i in reversed(hidden[:-1]):  # a narrower column dropped before the last may fit again
                if fits(sorted([*shown, i])):
                    shown = sorted([*shown, i])
                    hidden.remove(i)
            caps = self._caps(columns, rows, shown, limit, 10)
        table = self._rich_table(columns, rows, shown, title, caps)
        self._print_table(table, title, None if wide else limit)
        names = [columns[i].name for i in sorted(hidden)]
        if names:
            self._print_wrapped(
                f"columns left out to fit {limit} characters: {', '.join(names)} (--wide shows them)", limit
            )
        needed = 0 if wide else self._width_of(columns, rows, shown, caps)  # rendered again only where it matters
        if needed > limit:  # only cells that must not be cut are left: say so, never silently wider
            self._print_wrapped(f"this table is {needed} characters wide: its columns do not fit {limit}", limit)
        if not self.tty:
            print(file=self.stream, flush=True)
        return names

    def paragraph(self, text: str, style: str | None = None) -> None:
        """``text`` wrapped to :meth:`width`, as lines of :meth:`print` (a note under a table that fits)."""
        self._print_wrapped(text, self.width(), style)

    def _print_wrapped(self, text: str, limit: int, style: str | None = None) -> None:
        import textwrap

        for line in textwrap.wrap(text, width=limit, break_on_hyphens=False) or [""]:
            self.print(line, style)

    def _width_of(
        self, columns: Sequence[Column], rows: Sequence[Sequence[Cell]], shown: Sequence[int], caps: dict[int, int]
    ) -> int:
        """The width the table has once printed: every line measured, not rich's estimate."""
        return _rendered_width(self._rich_table(columns, rows, shown, None, caps))

    def _caps(
        self, columns: Sequence[Column], rows: Sequence[Sequence[Cell]], shown: Sequence[int], limit: int, floor: int
    ) -> dict[int, int]:
        """Widths for the free-text columns, the widest narrowed first, so that the table fits ``limit``
        (never below ``floor`` or the column's header): {} where it fits as it is."""
        natural = {i: _column_width(columns[i], [row[i] for row in rows]) for i in shown if columns[i].wrap}
        caps: dict[int, int] = {}
        while natural:
            excess = self._width_of(columns, rows, shown, caps) - limit
            if excess <= 0:
                break
            lowest = {i: max(floor, len(columns[i].name)) for i in natural}
            narrowable = [i for i in natural if caps.get(i, natural[i]) > lowest[i]]
            if not narrowable:
                break
            i = max(narrowable, key=lambda j: caps.get(j, natural[j]))
            caps[i] = max(lowest[i], caps.get(i, natural[i]) - excess)
        return caps

    def _rich_table(
        self,
        columns: Sequence[Column],
        rows: Sequence[Sequence[Cell]],
        shown: Sequence[int],
        title: str | None,
        caps: dict[int, int] | None = None,
    ):  # type: ignore[no-untyped-def]
        from rich import box
        from rich.table import Table
        from rich.text import Text

        caps = caps or {}
        table = Table(
            title=Text(title) if title and self.tty else None,
            box=box.HEAVY_HEAD if self.tty else box.MARKDOWN,
        )
        for i in shown:
            col = columns[i]
            justify = "right" if col.right else "left"
            if i in caps:  # free text wraps within its cell, a long word folded: nothing is cut
                table.add_column(Text(col.name), justify=justify, max_width=caps[i], overflow="fold")
            else:
                table.add_column(Text(col.name), justify=justify, no_wrap=True)
        for row in rows:
            cells = [row[i] for i in shown]
            table.add_row(
                *[Text(c[0], style=c[1] if self.tty else "") if isinstance(c, tuple) else Text(c) for c in cells]
            )
        return table

    def _print_table(self, table, title: str | None, limit: int | None) -> None:  # type: ignore[no-untyped-def]
        if not self.tty:
            if title and limit:
                self._print_wrapped(title, limit)
            elif title:
                print(title, file=self.stream)
            with self._rich.capture() as cap:
                self._rich.print(table)
            print("\n".join(line.rstrip() for line in cap.get().splitlines() if line.strip()), file=self.stream)
            return
        # Wider than the terminal: print at the table's own width (the terminal wraps the lines)
        # rather than let rich shorten cells to "…".
        needed = _rendered_width(table)
        if needed <= self._rich.width:
            self._rich.print(table)
            return
        from rich.console import Console as RichConsole

        wide = RichConsole(
            file=self.stream,
            width=needed,
            force_terminal=True,
            color_system=self._rich.color_system,  # type: ignore[arg-type]
            highlight=False,
            markup=False,
            emoji=False,
        )
        wide.print(table)

    @contextlib.contextmanager
    def progress(self, total: int, label: str) -> Iterator[Progress]:
        """Progress over ``total`` steps: a bar on a terminal, plain lines otherwise."""
        p = Progress(self, total, label)
        try:
            yield p
        finally:
            p.close()


class Progress:
    """Reports steps of a long run; see :meth:`Console.progress`."""

    def __init__(self, console: Console, total: int, label: str) -> None:
        self.console, self.total, self.done = console, total, 0
        self._started = time.monotonic()
        self._bar = None
        if console.tty:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("{task.description}", markup=False),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console._rich,
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(label, total=total)
        else:
            console.print(f"{label}: {total} steps")

    def update(self, message: str) -> None:
        """Say what is being done now."""
        if self._bar is not None:
            self._bar.update(self._task, description=message)
        else:
            elapsed = time.monotonic() - self._started
            self.console.print(f"[{self.done}/{self.total} {elapsed:5.0f}s] {message}")

    def advance(self) -> None:
        self.done += 1
        if self._bar is not None:
            self._bar.advance(self._task)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


@contextlib.contextmanager
def stdout_kept_for_output() -> Iterator[TextIO]:
    """The real stdout, for machine-readable output alone, while everything else that writes to it
    goes to stderr: ``print`` and also a write to file descriptor 1 itself (``os.write(1, ...)`` in a
    user's forward, a C library's printf). Yields a stream on the real stdout; all is restored on exit.
    """
    real = sys.stdout
    real.flush()
    try:
        fd, err_fd = real.fileno(), sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no descriptors (stdout or stderr captured in memory)
        with contextlib.redirect_stdout(sys.stderr):
            yield real
        return
    saved = os.dup(fd)
    out = open(os.dup(saved), "w", encoding=getattr(real, "encoding", None) or "utf-8", closefd=True)  # noqa: SIM115
    os.dup2(err_fd, fd)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield out
    finally:
        with contextlib.suppress(OSError, ValueError):
            out.close()  # flushes: a closed pipe raises here, after stdout is restored below
        real.flush()
        os.dup2(saved, fd)
        os.close(saved)


def _column_width(column: Column, cells: Sequence[Cell]) -> int:
    """The widest line of a column's header and cells, in terminal cells."""
    from rich.cells import cell_len

    texts = [column.name, *(c[0] if isinstance(c, tuple) else c for c in cells)]
    return max(cell_len(line) for text in texts for line in (text.splitlines() or [""]))


def _rendered_width(table) -> int:  # type: ignore[no-untyped-def]
    """The widest line ``table`` prints as, borders and padding included."""
    import io

    from rich.cells import cell_len
    from rich.console import Console as RichConsole

    buf = io.StringIO()
    console = RichConsole(file=buf, width=100_000, color_system=None, highlight=False, markup=False, emoji=False)
    console.print(table)
    return max((cell_len(line.rstrip()) for line in buf.getvalue().splitlines()), default=0)


def size_text(nbytes: int) -> str:
    """A file size a person can read: ``244.4 MB``, ``28.9 kB``, ``512 bytes`` (never ``0.0 MB``)."""
    if nbytes >= 1_000_000:
        return f"{nbytes / 1e6:.1f} MB"
    if nbytes >= 1_000:
        return f"{nbytes / 1e3:.1f} kB"
    return f"{nbytes} bytes"


def fmt(value: float | None, spec: str, missing: str = "-") -> str:
    """``value`` formatted with ``spec``, or ``missing`` where there is no figure."""
    return missing if value is None else format(value, spec)
