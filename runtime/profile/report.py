"""A profile as table cells and lines (formatting only; the command prints them)."""

from __future__ import annotations

from exporter.console import Cell, Column

from ..machine import peak_lines
from .records import LayerRow, Profile

#: Rows the table shows without ``--top`` (the JSON always holds every layer).
DEFAULT_TOP = 25


def _ms(value: float) -> str:
    return f"{value:.3f}" if value < 10 else f"{value:.2f}" if value < 100 else f"{value:.1f}"


def _ops(row: LayerRow) -> str:
    return "+".join(row.op_types)


def _rate(row: LayerRow) -> str:
    if row.achieved_gflops is None:
        return ""
    return f"{row.achieved_gflops:.1f}"


def table(profile: Profile, top: int | None, wide: bool) -> tuple[list[Column], list[list[Cell]]]:
    """Columns and cells of the layer table, slowest first; ``wide`` adds every column."""
    has_sqnr = any(r.sqnr_db is not None for r in profile.layers)
    cols = [Column("#", True), Column("layer"), Column("ops", priority=2), Column("kernel", priority=3)]
    cols += [Column("prec"), Column("median ms", True), Column("share", True), Column("cum.", True, 2)]
    cols += [Column("G op/s", True, 1), Column("% peak", True, 1)]
    if wide:
        cols[2:2] = [Column("module type")]
        cols += [Column("GFLOP", True), Column("peak", True), Column("nodes", True)]
    if has_sqnr:
        cols += [Column("SQNR dB", True)] + ([Column("loss dB", True)] if wide else [])
    if wide:
        cols.append(Column("graph nodes"))
    cells: list[list[Cell]] = []
    for r in profile.top(top):
        line: list[Cell] = [str(r.rank), r.layer, _ops(r), ", ".join(r.kernels), r.precision or "?"]
        line += [_ms(r.median_ms), f"{r.share:.1%}", f"{r.cumulative_share:.1%}", _rate(r)]
        line.append(f"{r.fraction_of_peak:.0%} {r.peak_precision}" if r.fraction_of_peak is not None else "")
        if wide:
            line[2:2] = [r.module_type or ""]
            line += [
                f"{r.flops / 1e9:.3f}" if r.flops else "",
                f"{r.peak_gflops:.0f}" if r.peak_gflops else "",
                str(len(r.nodes)),
            ]
        if has_sqnr:
            line.append(f"{r.sqnr_db:.1f}" if r.sqnr_db is not None else "")
            if wide:
                line.append(f"{r.loss_db:.1f}" if r.loss_db is not None else "")
        if wide:
            line.append(", ".join(r.nodes))
        cells.append(line)
    return cols, cells


def title(profile: Profile) -> str:
    shape = "x".join(map(str, profile.input_shape))
    where = profile.environment.get("gpu_name") or profile.environment.get("cpu_model") or profile.device
    return (
        f"{profile.artifact} {profile.graph} on {profile.engine} ({profile.device.upper()}: {where}, "
        f"{profile.threads} threads), batch {profile.batch_size} at {shape}: median of {profile.runs} runs per layer"
    )


def summary(profile: Profile, top: int | None) -> list[str]:
    """Lines after the table: what is not shown, coverage, placement, the peaks, the notes."""
    lines = []
    shown = profile.top(top)
    if len(shown) < len(profile.layers):
        rest = sum(r.share for r in profile.layers[len(shown) :])
        lines.append(
            f"{len(shown)} of {len(profile.layers)} layers shown; the other {len(profile.layers) - len(shown)} "
            f"take {rest:.1%} (--top 0 shows every layer; the JSON holds them all)"
        )
    unmapped = [r.layer for r in profile.layers if r.module is None]
    if unmapped and profile.layer_map:
        lines.append(f"{len(unmapped)} layers map to no module and keep their node names: {', '.join(unmapped)}")
    lines.append(profile.coverage.line())
    if profile.placement is not None:
        lines += profile.placement.lines()
    if profile.sqnr_source:
        lines.append(f"SQNR: each layer's output, {profile.sqnr_source}")
    if profile.machine is not None:
        lines += peak_lines(profile.machine)
        lines.append(
            "% peak: the layer's G op/s over the measured peak of the precision it ran in (FLOPs from the graph)"
        )
    load = profile.environment.get("load_average_at_start")
    if load:
        lines.append(
            f"load average at the start: {', '.join(map(str, load))} ({profile.environment.get('cpu_cores')} cores)"
        )
    lines += [f"note: {n}" for n in profile.notes]
    return lines
