"""``pareto.png``: every candidate's throughput against its p99 latency, the Pareto front, the choice.

Each candidate is drawn at its best measurement (the confirmation where it was a finalist, with
its throughput interval as an error bar). A p99 needs 100 requests: a candidate with fewer is
drawn hollow at its slowest request instead (its p99 is not known; the slowest of fewer than 100
requests lies below it only by chance). The front joins the candidates no other beats on both
axes; the target's p99 is a dashed line.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from .deploy import Candidate

MARKERS = {"onnxruntime": "o", "openvino": "s", "tensorrt": "^"}


def _x(c: Candidate) -> tuple[float | None, bool]:
    f = c.best
    if f is None:
        return None, False
    if f.p99_ms is not None:
        return f.p99_ms, True
    return f.max_ms, False


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both latency (lower) and throughput (higher), by latency."""
    front: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or y > front[-1][1]:
            front.append((x, y))
    return front


def pareto_png(candidates: Sequence[Candidate], title: str, p99_target: float | None,
               chosen: Candidate | None) -> bytes | None:  # fmt: skip
    drawn = [(c, *_x(c)) for c in candidates if c.status == "ok" and c.best is not None]
    drawn = [(c, x, full) for c, x, full in drawn if x is not None]
    if not drawn:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(10.5, 5.6))
    colors: dict[str, str] = {}
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for c, x, full in drawn:
        f = c.best
        assert f is not None and x is not None
        color = colors.setdefault(c.precision, palette[len(colors) % len(palette)])
        low = f.throughput_ips - (f.throughput_ci_low_ips or f.throughput_ips)
        high = (f.throughput_ci_high_ips or f.throughput_ips) - f.throughput_ips
        ax.errorbar([x], [f.throughput_ips], yerr=[[max(low, 0.0)], [max(high, 0.0)]], fmt="none", ecolor=color,
                    alpha=0.6, capsize=2)  # fmt: skip
        ax.plot([x], [f.throughput_ips], MARKERS.get(c.engine, "o"), color=color,
                markerfacecolor=color if full else "white", markersize=9 if c.confirmed else 6)  # fmt: skip
    front = pareto_front([(x, c.best.throughput_ips) for c, x, _ in drawn])  # type: ignore[union-attr]
    if len(front) > 1:
        ax.plot(*zip(*front), "-", color="grey", alpha=0.5, zorder=0, label="Pareto front")
    if chosen is not None and chosen.best is not None:
        x, _ = _x(chosen)
        if x is not None:
            ax.plot([x], [chosen.best.throughput_ips], "*", color="black", markersize=18, zorder=5,
                    label=f"chosen: {chosen.label}")  # fmt: skip
    if p99_target is not None:
        ax.axvline(p99_target, linestyle="--", color="red", alpha=0.7, label=f"target p99 {p99_target:g} ms")
    for engine, marker in MARKERS.items():
        if any(c.engine == engine for c, _, _ in drawn):
            ax.plot([], [], marker, color="grey", label=engine)
    for precision, color in colors.items():
        ax.plot([], [], "o", color=color, label=precision)
    ax.plot([], [], "o", color="grey", markerfacecolor="white", label="hollow: < 100 requests (slowest shown)")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _p: f"{v:g}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(lambda v, _p: f"{v:g}" if str(v)[0] in "25" else ""))
    ax.set_xlabel("p99 request latency (ms)")
    ax.set_ylabel("throughput (img/s), 95% CI")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()
