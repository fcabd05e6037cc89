"""``layers.png``: a bar per layer (slowest first, the top ones), its median time, coloured by the
precision it ran in, each variant layer's SQNR marked beside its bar."""

from __future__ import annotations

import io

from .records import Profile

#: At most this many bars: the plot is for looking at, the JSON holds every layer.
MAX_BARS = 40
COLOURS = {"fp32": "#4c72b0", "fp16": "#dd8452", "bf16": "#8172b3", "int8": "#55a868", None: "#999999"}


def layers_png(profile: Profile, top: int | None = None) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    rows = profile.layers[: min(top or MAX_BARS, MAX_BARS)]
    height = 1.2 + 0.26 * max(1, len(rows))
    fig, ax = plt.subplots(figsize=(10.0, height))
    ys = list(range(len(rows)))[::-1]
    ax.barh(ys, [r.median_ms for r in rows], color=[COLOURS.get(r.precision, "#999999") for r in rows])
    ax.set_yticks(ys, [r.layer for r in rows], fontsize=7)
    ax.set_xlabel("median time per run (ms)")
    longest = max((r.median_ms for r in rows), default=1.0)
    for y, r in zip(ys, rows):
        label = f"{r.share:.1%}"
        if r.fraction_of_peak is not None:
            label += f", {r.fraction_of_peak:.0%} of {r.peak_precision} peak"
        if r.sqnr_db is not None:
            label += f", SQNR {r.sqnr_db:.1f} dB"
        ax.text(r.median_ms + longest * 0.01, y, label, va="center", fontsize=6)
    ax.set_xlim(0, longest * 1.45)
    present = list(dict.fromkeys(r.precision for r in rows))
    ax.legend(
        handles=[Patch(color=COLOURS.get(p, "#999999"), label=p or "unknown") for p in present],
        fontsize=7,
        loc="lower right",
    )
    shape = "x".join(map(str, profile.input_shape))
    cover = profile.coverage
    ax.set_title(
        f"{profile.artifact} {profile.graph}, {profile.engine} {profile.device.upper()} {profile.threads} threads, "
        f"batch {profile.batch_size} at {shape}\nlayers cover {cover.fraction:.0%} of the {cover.end_to_end_ms:.2f} ms "
        f"end-to-end median ({profile.runs} runs)",
        fontsize=9,
    )
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
