"""Tune's table cells and the one line that explains the choice (formatting only; the command prints)."""

from __future__ import annotations

from collections.abc import Sequence

from exporter.console import Cell, Column

from ..bench.report import ips, ms
from ..bench.stats import Interval
from .deploy import Candidate, Figures, ServeSearch


def _p99(f: Figures | None) -> str:
    if f is None:
        return ""
    if f.p99_ms is not None:
        return ms(f.p99_ms)
    return f"n<100 (max {ms(f.max_ms)})" if f.max_ms is not None else ""


def _ci(f: Figures | None) -> str:
    if f is None or f.throughput_ci_low_ips is None or f.throughput_ci_high_ips is None:
        return ""
    return f"{ips(f.throughput_ci_low_ips)}-{ips(f.throughput_ci_high_ips)}"


def table(candidates: Sequence[Candidate]) -> tuple[list[Column], list[list[Cell]]]:
    """Every candidate, ranked: the figures it is judged by (confirmed where it was a finalist)."""
    cols = [Column("#", True), Column("engine"), Column("prec"), Column("streams x threads")]
    cols += [Column("in flight", True), Column("batch", True), Column("img/s", True), Column("95% CI", True, 2)]
    cols += [Column("p50 ms", True, 2), Column("p99 ms", True, 1), Column("requests", True, 3)]
    cols += [Column("SQNR dB", True, 2), Column("cold start s", True, 3), Column("measured", priority=3)]
    cols += [Column("verdict", wrap=True)]
    cells: list[list[Cell]] = []
    for c in candidates:
        f = c.best
        line: list[Cell] = [str(c.rank or ""), c.engine, c.precision, c.setting, str(c.concurrency), str(c.batch_size)]
        if c.status != "ok" or f is None:
            why = c.reason or c.status
            cells.append([*line, "", "", "", "", "", _sqnr(c), "", "", (f"{c.status}: {why}", "red")])
            continue
        verdict: Cell = ""
        if c.meets_target is True:
            verdict = ("meets target", "green")
        elif c.meets_target is False:
            verdict = ("misses p99 target" if f.p99_ms is not None else "p99 not measured", "yellow")
        if f.unstable:
            verdict = (f"{verdict[0] + '; ' if isinstance(verdict, tuple) else ''}unstable", "yellow")
        cold = c.cold_start.total_s if c.cold_start else None
        cells.append([
            *line, ips(f.throughput_ips), _ci(f), ms(f.p50_ms), _p99(f), str(f.requests), _sqnr(c),
            f"{cold:.3g}" if cold is not None else "", "confirmed" if c.confirmed else "screen", verdict,
        ])  # fmt: skip
    return cols, cells


def _sqnr(c: Candidate) -> str:
    if c.precision == "fp32":
        return ""
    return f"{c.sqnr_db:.1f}" if c.sqnr_db is not None else ""


def describe(c: Candidate) -> str:
    f = c.best
    if f is None:
        return c.label
    p99 = f"p99 {f.p99_ms:.3g} ms" if f.p99_ms is not None else f"p99 not measured ({f.requests} requests)"
    # the one line a user reads must not hide what the table flags
    flag = f" (unstable: {'; '.join(f.unstable_reasons) or 'flagged by the bench'})" if f.unstable else ""
    return f"{c.label}: {f.throughput_ips:.0f} img/s, {p99}{flag}"


def why(chosen: Candidate, runner_up: Candidate | None, lead: Interval | None, target: str) -> str:
    """``int8 on OpenVINO, 2 streams x 1 thread, batch 8: 812 img/s, p99 11.3 ms; next best ...``."""
    line = describe(chosen)
    if target != "throughput":
        line += " (meets the p99 target)"
    if runner_up is None:
        return line + "; no other candidate to compare with"
    line += f"; next best {describe(runner_up)}"
    if lead is not None:
        ci = f"95% CI {lead.low:.2f}-{lead.high:.2f}"
        if lead.low > 1.0:
            line += f"; the chosen gives {lead.value:.2f}x its throughput ({ci})"
        else:
            line += f"; the two are within the noise ({lead.value:.2f}x, {ci})"
    return line


def serve_table(search: ServeSearch) -> tuple[list[Column], list[list[Cell]]]:
    cols = [Column("instances", True), Column("max batch", True), Column("preferred", priority=2)]
    cols += [Column("delay us", True, 2), Column("clients", True), Column("img/s", True), Column("p50 ms", True, 2)]
    cols += [Column("p99 ms", True, 1), Column("formed batch", True, 2), Column("result", wrap=True)]
    cells: list[list[Cell]] = []
    for s in search.configs:
        mark: Cell = (s.status, "green" if s.status == "ok" else "red" if s.status != "misses target" else "yellow")
        if search.chosen is s or (search.chosen is not None and s == search.chosen):
            mark = ("chosen", "green")
        cells.append([
            str(s.instances), str(s.max_batch_size), ",".join(map(str, s.preferred_batch_sizes)),
            str(s.max_queue_delay_us), str(s.concurrency or ""), ips(s.throughput_ips), ms(s.p50_ms), ms(s.p99_ms),
            f"{s.mean_formed_batch:.2f}" if s.mean_formed_batch is not None else "",
            mark if s.status == "ok" else (f"{s.status}: {(s.reason or '')[:160]}", mark[1]),  # type: ignore[index]
        ])  # fmt: skip
    return cols, cells
