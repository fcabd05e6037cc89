"""``latency.png``: median latency against batch size, one panel per model (and input size),
one line per engine and precision, the 95% confidence interval of every median as an error bar,
and a title naming the device and the thread count."""

from __future__ import annotations

import io

from .rows import RunDocument


def latency_png(doc: RunDocument) -> bytes | None:
    """The plot as PNG bytes; None when no latency row was measured (throughput rows have their table)."""
    rows = [r for r in doc.rows if r.ok and r.median_ms is not None and r.mode == "latency"]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    panels = list(dict.fromkeys((r.model, tuple(r.input_shape)) for r in rows))
    sized = len({shape for _, shape in panels}) > 1
    cols = min(3, len(panels))
    nrows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(max(6.0, 4.6 * cols), 3.6 * nrows + 0.6), squeeze=False)
    for ax, (model, shape) in zip(axes.flat, panels):
        mine = [r for r in rows if r.model == model and tuple(r.input_shape) == shape]
        for label in dict.fromkeys(r.label for r in mine):
            pts = sorted((r.batch_size, r) for r in mine if r.label == label)
            xs = [b for b, _ in pts]
            ys = [r.median_ms for _, r in pts]
            low = [max(0.0, r.median_ms - (r.median_ci_low_ms or r.median_ms)) for _, r in pts]  # type: ignore[operator]
            high = [max(0.0, (r.median_ci_high_ms or r.median_ms) - r.median_ms) for _, r in pts]  # type: ignore[operator]
            line = ax.errorbar(xs, ys, yerr=[low, high], marker="o", capsize=3, label=label)
            shaky = [(b, r.median_ms) for b, r in pts if r.unstable]
            if shaky:  # unstable medians drawn hollow: not to be trusted
                ax.plot(*zip(*shaky), "o", markersize=9, markerfacecolor="white", color=line[0].get_color())
        title = model + (f" ({'x'.join(map(str, shape))})" if sized else "")
        ax.set_title(title)
        ax.set_xlabel("batch size")
        ax.set_ylabel("median latency (ms), 95% CI")
        batches = sorted({r.batch_size for r in mine})
        if len(batches) > 1:
            ax.set_xscale("log", base=2)
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    env = doc.environment
    where = env.get("gpu_name") or f"{env.get('cpu_model')} ({env.get('cpu_cores')} cores)"
    unstable = " (hollow: unstable, not to be trusted)" if any(r.unstable for r in rows) else ""
    fig.suptitle(
        f"Median latency vs batch size, 95% CI{unstable}\n{doc.device.upper()}: {where}, {env.get('threads')} threads",
        fontsize=10,
    )
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
