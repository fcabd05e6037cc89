"""The Pareto plot of a precision search: each candidate's latency against its output SQNR, with intervals."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from exporter.artifact import PrecisionSearchRecord, SearchCandidate

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: The label of the square marker: a candidate whose float layers OpenVINO ran in bf16 (its precision hint).
BF16_LEGEND = "float layers in bf16 (OpenVINO)"


def point_style(c: SearchCandidate) -> tuple[str, str]:
    """(matplotlib marker, annotation) of a candidate: a bf16 twin is the same graph as its f32 candidate, with
    the same float count, so a square and "bf16" tell the two points apart."""
    if c.openvino_hint == "bf16":
        return "s", f"{len(c.float_layers)} float bf16"
    return "o", f"{len(c.float_layers)} float"


def pareto_png(search: PrecisionSearchRecord, title: str) -> bytes:
    """PNG bytes of :func:`pareto_figure`."""
    fig = pareto_figure(search, title)  # first: it picks the Agg backend before pyplot is imported
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def pareto_figure(search: PrecisionSearchRecord, title: str) -> Figure:
    """The plot: candidates (passing green, failing grey, the chosen one ringed; squares where the float
    layers ran in OpenVINO's bf16), fp32's latency as a line, the budget's SQNR as a line where the budget is SQNR."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.0, 5.0))
    for c in search.candidates:
        if c.latency_ms is None or c.sqnr_db is None:
            continue
        colour = "#55a868" if c.passed else "#999999"
        err = [
            [c.latency_ms - (c.latency_low_ms or c.latency_ms)],
            [(c.latency_high_ms or c.latency_ms) - c.latency_ms],
        ]
        marker, note = point_style(c)
        ax.errorbar(c.sqnr_db, c.latency_ms, yerr=err, fmt=marker, color=colour, capsize=3, ms=5)
        ax.annotate(note, (c.sqnr_db, c.latency_ms), fontsize=6, xytext=(4, 4), textcoords="offset points")
        if c.chosen:
            ax.plot(c.sqnr_db, c.latency_ms, "o", ms=13, mfc="none", mec="#c44e52", mew=2)
    if any(c.openvino_hint == "bf16" for c in search.candidates):  # a legend entry for the squares alone
        ax.plot([], [], "s", color="#999999", ms=5, label=BF16_LEGEND)
    ax.axhline(search.fp32_ms, color="#4c72b0", ls="--", lw=1, label=f"fp32 {search.fp32_ms:.2f} ms")
    if search.metric == "sqnr":
        ax.axvline(search.threshold, color="#c44e52", ls=":", lw=1, label=f"budget {search.threshold:g} dB")
    ax.set_xlabel("output SQNR against PyTorch fp32 (dB, worst comparison; higher is better)")
    ax.set_ylabel(f"median latency (ms, batch {search.batch_size}, 95% interval)")
    ax.set_ylim(bottom=0)
    ax.set_title(f"{title}: {search.engine} on {search.threads} threads; green passes {search.budget}", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig
