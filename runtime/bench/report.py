"""The benchmark's results as table cells and summary lines (formatting only; the command prints them)."""

from __future__ import annotations

from exporter.console import Cell, Column

from ..machine import peak_lines
from .baseline import BaselineComparison
from .rows import ColdStart, RunDocument
from .store import SaveOutcome


def ms(value: float | None) -> str:
    if value is None:
        return ""
    if value < 1:
        return f"{value:.3f}"
    if value < 10:
        return f"{value:.2f}"
    if value < 100:
        return f"{value:.1f}"
    return f"{value:.0f}"


def ips(value: float | None) -> str:
    """Images per second: whole numbers from 100 on, three significant digits below."""
    if value is None:
        return ""
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def ratio(value: float | None, low: float | None = None, high: float | None = None) -> str:
    if value is None:
        return ""
    text = f"{value:.2f}x"
    if low is not None and high is not None and (low, high) != (value, value):
        text += f" ({low:.2f}-{high:.2f})"
    return text


def _cold(cold: ColdStart | None) -> str:
    total = cold.to_first_result_s if cold is not None else None
    if cold is None or total is None:
        return ""
    return f"{total:.3g}" + (" (shared)" if cold.shared else "")


def table(doc: RunDocument) -> tuple[list[Column], list[list[Cell]]]:
    """Columns and cells of the results table: every latency row, nothing abbreviated away."""
    rows = [r for r in doc.rows if r.mode == "latency"]
    has_fp32_ratio = any(r.vs_fp32 is not None for r in rows)
    has_roof = any(r.achieved_gflops is not None for r in rows)
    has_cold = any(r.cold_start is not None and r.cold_start.to_first_result_s is not None for r in rows)
    # priority: 0 always shown (a failed row's status and reason sit in "median ms" and "note"),
    # then what a reader needs first (1) to what --wide is for (3)
    cols = [Column("model"), Column("input", priority=2), Column("batch", True), Column("engine"), Column("prec")]
    cols += [Column("median ms", True), Column("95% CI ms", True, 2), Column("p90 ms", True, 3)]
    cols += [Column("p99 ms", True, 3), Column("n", True, 3), Column("img/s", True, 2)]
    if has_roof:
        cols += [Column("GFLOP/s", True, 3), Column("% peak", True, 2), Column("floor ms", True, 3)]
        cols += [Column("x floor", True, 3)]
    cols += [Column("vs pytorch", True, 1), Column("vs best", True, 2)]
    if has_fp32_ratio:
        cols.append(Column("vs fp32", True, 1))
    if has_cold:
        cols.append(Column("cold start s", True, 3))
    cols.append(Column("note"))
    cells: list[list[Cell]] = []
    for r in rows:
        head: list[Cell] = [r.model, "x".join(map(str, r.input_shape)), str(r.batch_size), r.engine, r.precision]
        if not r.ok:
            blank = len(cols) - len(head) - 1
            cells.append([*head, (r.status, "red"), *[""] * (blank - 1), r.reason or ""])
            continue
        line: list[Cell] = [
            *head,
            ms(r.median_ms),
            f"{ms(r.median_ci_low_ms)}-{ms(r.median_ci_high_ms)}",
            ms(r.p90_ms),
            ms(r.p99_ms),
            str(r.samples),
            f"{r.throughput_ips:.1f}" if r.throughput_ips is not None else "",
        ]
        if has_roof:
            line += [
                f"{r.achieved_gflops:.1f}" if r.achieved_gflops is not None else "",
                f"{r.fraction_of_peak:.0%} {r.peak_precision or ''}".strip() if r.fraction_of_peak is not None else "",
                ms(r.floor_ms),
                f"{r.time_over_floor:.2f}" if r.time_over_floor is not None else "",
            ]
        line += [
            ratio(r.vs_pytorch, r.vs_pytorch_ci_low, r.vs_pytorch_ci_high),
            ratio(r.vs_best, r.vs_best_ci_low, r.vs_best_ci_high),
        ]
        if has_fp32_ratio:
            line.append(ratio(r.vs_fp32, r.vs_fp32_ci_low, r.vs_fp32_ci_high))
        if has_cold:
            line.append(_cold(r.cold_start))
        line.append(("unstable", "yellow") if r.unstable else "")
        cells.append(line)
    return cols, cells


def throughput_table(doc: RunDocument) -> tuple[list[Column], list[list[Cell]]]:
    """Columns and cells of throughput mode's rows: throughput with its interval, request latency."""
    rows = [r for r in doc.rows if r.mode == "throughput"]
    cols = [Column("model"), Column("input", priority=2), Column("batch", True), Column("engine"), Column("prec")]
    cols += [Column("streams", True), Column("threads", True), Column("in flight", True)]
    cols += [Column("img/s", True), Column("95% CI img/s", True, 1), Column("windows", True, 3)]
    cols += [Column("p50 ms", True, 2), Column("p90 ms", True, 3), Column("p99 ms", True, 2)]
    cols += [Column("requests", True, 3), Column("vs best", True, 1), Column("cold start s", True, 2)]
    cols.append(Column("note"))
    cells: list[list[Cell]] = []
    for r in rows:
        head: list[Cell] = [r.model, "x".join(map(str, r.input_shape)), str(r.batch_size), r.engine, r.precision]
        head += [str(r.streams or ""), str(r.threads_per_stream or ""), str(r.concurrency or "")]
        if not r.ok:
            cells.append([*head, (r.status, "red"), *[""] * (len(cols) - len(head) - 2), r.reason or ""])
            continue
        ci = (
            f"{ips(r.throughput_ci_low_ips)}-{ips(r.throughput_ci_high_ips)}"
            if r.throughput_ci_low_ips is not None and r.throughput_ci_high_ips is not None
            else ""
        )
        cells.append(
            [
                *head,
                ips(r.throughput_ips),
                ci,
                str(r.windows or ""),
                ms(r.median_ms),
                ms(r.p90_ms),
                ms(r.p99_ms),
                str(r.samples or ""),
                ratio(r.vs_best, r.vs_best_ci_low, r.vs_best_ci_high),
                _cold(r.cold_start),
                ("unstable", "yellow") if r.unstable else "",
            ]
        )
    return cols, cells


def throughput_title(doc: RunDocument) -> str:
    env = doc.environment
    where = env.get("gpu_name") or f"{env.get('cpu_model')} ({env.get('cpu_cores')} cores)"
    return (
        f"Throughput on {doc.device.upper()}: {where}, {env.get('threads')} threads split between the streams "
        "(img/s: median window with its 95% bootstrap CI; p50/p90/p99: latency of each request; "
        "vs best: time per image over the best setting's)"
    )


def title(doc: RunDocument) -> str:
    env = doc.environment
    where = env.get("gpu_name") or f"{env.get('cpu_model')} ({env.get('cpu_cores')} cores)"
    return f"Latency on {doc.device.upper()}: {where}, {env.get('threads')} threads (medians, 95% bootstrap CIs)"


def summary(doc: RunDocument, max_ci_width: float) -> list[str]:
    """Lines after the table: the machine's limits, the fastest engines, the figures not to trust."""
    lines = []
    if doc.machine is not None:
        m = doc.machine
        lines += peak_lines(m)
        cache = (
            f" (weights within the {m.cache_bytes >> 20} MiB last-level cache: FLOPs / peak)" if m.cache_bytes else ""
        )
        lines.append(
            "roofline floor = max(FLOPs / peak of the precision the row computes in, weight bytes / bandwidth)"
            f"{cache}; x floor = median / floor; % peak names that precision"
        )
        unheld = sorted({r.label for r in doc.rows if r.ok and r.gflop is not None and r.peak_precision is None})
        if unheld:
            lines.append(f"no floor for {', '.join(unheld)}: this machine has no measured peak for its precision")
    for line in doc.fastest:
        lines.append(f"fastest: {line}")
    measured = [r for r in doc.rows if r.ok]
    if doc.untrustworthy:
        lines.append(
            f"not to be trusted ({len(doc.untrustworthy)} of {len(measured)} rows: a 95% CI wider than "
            f"{max_ci_width:.0%} of its figure, or too few samples):"
        )
        lines += [f"  {u}" for u in doc.untrustworthy]
    elif measured:
        lines.append(f"every median and ratio has a 95% CI within {max_ci_width:.0%} of its figure")
    failed = [r for r in doc.rows if not r.ok]
    if failed:
        lines.append(f"{len(failed)} rows not measured (see the note column)")
    return lines


def saved_lines(outcome: SaveOutcome | None, output_dir: str) -> list[str]:
    if outcome is None or outcome.run_dir is None:
        return [f"nothing measured: nothing written; earlier results in {output_dir} are untouched"]
    if outcome.promoted:
        return [
            "wrote " + ", ".join(str(p) for p in outcome.files),
            f"this run's own copy: {outcome.run_dir}",
        ]
    return [
        f"kept the earlier results in {output_dir} ({outcome.previous_measured} measured rows, more than this "
        f"run's {outcome.measured}); this run's results are in {outcome.run_dir}"
    ]


def _figure(value: float | None, unit: str) -> str:
    if value is None:
        return ""
    return ms(value) if unit == "ms per call" else f"{1 / value:.1f}" if value > 0 else ""


def baseline_table(gate: BaselineComparison) -> tuple[list[Column], list[list[Cell]], str]:
    """Columns, cells and title of the regression gate's table: every matched pair."""
    throughput = any(r.mode == "throughput" for r in gate.rows)
    cols = [Column("model"), Column("input", priority=2), Column("batch", True), Column("engine"), Column("prec")]
    if throughput:
        cols += [Column("streams", True), Column("in flight", True)]
    cols += [Column("figure"), Column("baseline", True, 1), Column("this run", True, 1)]
    cols += [Column("ratio", True), Column("95% CI", True, 1), Column("verdict"), Column("note")]
    cells: list[list[Cell]] = []
    styles = {"slower": "red", "parity failed": "red", "faster": "green", "same": "green"}
    for r in gate.rows:
        line: list[Cell] = [r.model, "x".join(map(str, r.input_shape)), str(r.batch_size), r.engine, r.precision]
        if throughput:
            line += [str(r.streams or ""), str(r.concurrency or "")]
        what = "img/s" if r.unit == "s per image" else "median ms"
        line += [what, _figure(r.baseline, r.unit), _figure(r.this_run, r.unit)]
        line.append(f"{r.ratio:.3f}" if r.ratio is not None else "")
        ci = f"{r.ratio_ci_low:.3f}-{r.ratio_ci_high:.3f}" if r.ratio_ci_low is not None else ""
        line += [ci, (r.verdict, styles.get(r.verdict)) if r.verdict in styles else r.verdict]
        line.append("; ".join(x for x in (r.method if r.method == "confidence bounds" else None, r.note) if x))
        cells.append(line)
    title = (
        f"Against the baseline {gate.path}" + (f" (run {gate.run_id})" if gate.run_id else "")
        + f": ratio = this run / baseline (time per call or per image; above 1 is slower), "
        f"fails where the whole 95% CI is above {1 + gate.max_slowdown:.2f}"
    )  # fmt: skip
    return cols, cells, title


def baseline_lines(gate: BaselineComparison) -> list[str]:
    """Lines after the gate's table: unmatched rows, notes, and the verdict."""
    lines = [f"note: {n}" for n in gate.notes]
    if gate.only_here:
        lines.append(f"not in the baseline ({len(gate.only_here)}): " + "; ".join(gate.only_here))
    if gate.only_baseline:
        lines.append(f"in the baseline only ({len(gate.only_baseline)}): " + "; ".join(gate.only_baseline))
    counts: dict[str, int] = {}
    for r in gate.rows:
        counts[r.verdict] = counts.get(r.verdict, 0) + 1
    tally = ", ".join(f"{n} {v}" for v, n in counts.items())
    if not gate.rows:
        lines.append("regression gate: no row matches the baseline, nothing compared")
    elif gate.passed:
        lines.append(f"regression gate passed ({len(gate.rows)} rows compared: {tally})")
    else:
        worst = ", ".join(
            f"{r.label} {r.verdict}" + (f" {r.ratio:.2f}x ({r.ratio_ci_low:.2f}-{r.ratio_ci_high:.2f})"
                                        if r.ratio is not None and r.ratio_ci_low is not None else "")
            for r in gate.failures
        )  # fmt: skip
        lines.append(f"regression gate FAILED ({len(gate.rows)} rows compared: {tally}): {worst}")
    return lines
