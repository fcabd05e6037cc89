"""Load test results on disk: ``results.json``, ``results.csv`` and ``throughput.png`` under ``artifacts/loadtest/``.

Conventions of the benchmark's output: strict JSON (no NaN/Infinity), every file written
to a temporary name and renamed into place together, and results are never replaced by
fewer rows. A run's rows replace the rows of the same measurement (artifact, graph, mode,
protocol, batch, concurrency) and leave every other row alone, so the files accumulate the
models measured over time. The command writes after every finished level, so an interrupted run,
or one whose server died, adds the levels it finished and removes nothing; its entry under
``runs`` says how it ended (``status``: running, complete, interrupted, ended early) and why
(``ended_early``). Writers take turns (a lock file beside the results).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, fields
from pathlib import Path

from filelock import FileLock

from exporter.artifact import now
from exporter.errors import UserError
from exporter.files import (
    atomic_outputs,
    ensure_writable_dir,
    read_regular_text,
    remove_stale_partials,
    require_free_space,
    strict_json,
)

from .run import LoadTestResult, Row

SCHEMA = "cnn-onnx-toolkit/loadtest/1"
RESULTS_JSON = "results.json"
RESULTS_CSV = "results.csv"
PLOT = "throughput.png"
KEY = ("artifact", "variant", "model_name", "mode", "protocol", "batch_size", "concurrency")
CSV_FIELDS = [f.name for f in fields(Row)]


@dataclass
class Written:
    paths: dict[str, Path]
    rows: int
    replaced: int
    added: int


def _key(row: dict[str, object]) -> tuple[object, ...]:
    return tuple(row.get(k) for k in KEY)


def read_existing(output_dir: Path) -> dict[str, object] | None:
    """The results file already there (None if none); one that is not ours is refused, not overwritten."""
    path = output_dir / RESULTS_JSON
    try:
        text = read_regular_text(path)  # a FIFO there would block the load test before it starts
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from exc
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA or not isinstance(doc.get("results"), list):
        raise UserError(
            f"{path} is not a load test results file this toolkit wrote: move it away or pass another --output"
        )
    return doc


def check_output(output_dir: Path) -> None:
    """Before measuring: the folder can be written, has room, and holds no foreign results file."""
    ensure_writable_dir(output_dir)
    require_free_space(output_dir, 4 << 20, "the load test's results")
    read_existing(output_dir)


def merge(existing: dict[str, object] | None, result: LoadTestResult) -> tuple[dict[str, object], int, int]:
    """The new document: existing rows with this run's replacing the same measurements."""
    old_rows = [r for r in (existing or {}).get("results", []) if isinstance(r, dict)]  # type: ignore[union-attr]
    new_rows = [r.to_dict() for r in result.rows]
    new_keys = {_key(r) for r in new_rows}
    kept = [r for r in old_rows if _key(r) not in new_keys]
    # rows this run wrote itself after an earlier level are not "replaced" measurements
    replaced = sum(1 for r in old_rows if _key(r) in new_keys and r.get("run_id") != result.run_id)
    rows = kept + new_rows
    rows.sort(
        key=lambda r: (
            tuple(str(r.get(k)) for k in ("artifact", "variant", "protocol", "batch_size", "mode"))
            + (int(r.get("concurrency") or 0),)
        )
    )  # type: ignore[arg-type]
    runs = dict((existing or {}).get("runs", {}))  # type: ignore[arg-type]
    runs[result.run_id] = {
        "artifact": result.artifact,
        "variant": result.variant,
        "graph_sha256": result.graph_sha256,
        "model_name": result.model_name,
        "url": result.url,
        "protocol": result.protocol,
        "server": result.server,
        "parity": result.parity.to_dict() if result.parity else None,
        "environment": result.environment,
        "config": result.config,
        "interrupted": result.interrupted,
        "status": result.status,
        "ended_early": result.ended_early,
        "metrics_note": result.metrics_note,
        "finished": now(),
    }
    referenced = {r.get("run_id") for r in rows}
    runs = {k: v for k, v in runs.items() if k in referenced or k == result.run_id}
    doc = {"schema": SCHEMA, "updated": now(), "runs": runs, "results": rows}
    assert len(rows) >= len(old_rows)  # the contract: never fewer rows than before
    return doc, replaced, len(new_rows) - replaced


def _csv(rows: list[dict[str, object]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)  # None and a missing field are both written as ""
    return buf.getvalue()


def plot_png(rows: list[dict[str, object]]) -> bytes:
    """Throughput against concurrency, one panel per artifact graph; local onnxruntime as a dashed line."""
    import matplotlib.pyplot as plt

    fig = plot_figure(rows)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")  # every label in, none cut at the edge
    plt.close(fig)
    return buf.getvalue()


def plot_figure(rows: list[dict[str, object]]):  # type: ignore[no-untyped-def]
    """The matplotlib figure :func:`plot_png` saves; legends sit below each panel, never over a point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    graphs = list(dict.fromkeys((str(r["artifact"]), str(r["variant"])) for r in rows))
    cols = min(3, max(1, len(graphs)))
    nrows = (len(graphs) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(4.6 * cols, 4.2 * nrows), squeeze=False)
    for ax, (artifact, variant) in zip(axes.flat, graphs):
        mine = [r for r in rows if r["artifact"] == artifact and r["variant"] == variant and r.get("throughput_ips")]
        levels = sorted({int(r["concurrency"]) for r in mine if r["mode"] == "triton"})  # type: ignore[arg-type]
        for protocol, batch in dict.fromkeys((r["protocol"], r["batch_size"]) for r in mine if r["mode"] == "triton"):
            pts = sorted(
                (int(r["concurrency"]), float(r["throughput_ips"]), r.get("mean_formed_batch"))  # type: ignore[arg-type]
                for r in mine
                if r["mode"] == "triton" and r["protocol"] == protocol and r["batch_size"] == batch
            )
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"Triton {protocol}, batch {batch}")
            for c, ips, formed in pts:
                if formed:
                    ax.annotate(
                        f"×{float(formed):.1f}", (c, ips), textcoords="offset points", xytext=(4, 4), fontsize=7
                    )
        for r in (r for r in mine if r["mode"] == "local"):
            ax.axhline(float(r["throughput_ips"]), linestyle="--", color="gray", linewidth=1)  # type: ignore[arg-type]
            ax.annotate(
                f"local onnxruntime, batch {r['batch_size']}",
                (levels[0] if levels else 1, float(r["throughput_ips"])),  # type: ignore[arg-type]
                textcoords="offset points",
                xytext=(2, 3),
                fontsize=7,
                color="gray",
            )
        ax.set_title(f"{artifact} [{variant}]")
        ax.set_xlabel("concurrent clients (×n: mean batch Triton formed)")
        ax.set_ylabel("throughput (images/s)")
        if levels:
            ax.set_xscale("log", base=2)
            ax.set_xticks(levels, [str(c) for c in levels])
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        top = max([float(r["throughput_ips"]) for r in mine] or [1.0])  # type: ignore[arg-type]
        ax.set_ylim(0, top * 1.18)  # headroom: the labels above the highest point stay inside the panel
        ax.margins(x=0.15)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # none yet while only local onnxruntime is measured
            # below the panel, under the axis label: inside it, it covered a point
            ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    for ax in list(axes.flat)[len(graphs) :]:
        ax.axis("off")
    fig.suptitle("Triton dynamic batching: throughput vs concurrency")
    fig.tight_layout()
    return fig


def write_results(result: LoadTestResult, output_dir: Path) -> Written:
    """Merge this run into ``output_dir``'s results and write JSON, CSV and the plot atomically."""
    ensure_writable_dir(output_dir)
    paths = {"json": output_dir / RESULTS_JSON, "csv": output_dir / RESULTS_CSV, "png": output_dir / PLOT}
    with FileLock(str(output_dir / ".results.lock")):
        remove_stale_partials(output_dir)  # what a killed writer left
        doc, replaced, added = merge(read_existing(output_dir), result)
        rows: list[dict[str, object]] = doc["results"]  # type: ignore[assignment]
        text = strict_json(doc)
        with atomic_outputs(output_dir) as out:
            out.write_text(paths["json"], text)
            out.write_text(paths["csv"], _csv(rows))
            if rows:
                out.write_bytes(paths["png"], plot_png(rows))
    if not rows:
        paths.pop("png")
    return Written(paths, len(rows), replaced, added)
