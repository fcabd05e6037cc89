"""Benchmark output: a terminal table, and JSON, CSV and a PNG plot under ``artifacts/bench/``."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from exporter.artifacts import atomic_outputs

from .benchmark import BenchResult

CSV_FIELDS = [
    "model",
    "engine",
    "precision",
    "device",
    "batch_size",
    "status",
    "iterations",
    "median_ms",
    "mean_ms",
    "p90_ms",
    "p99_ms",
    "min_ms",
    "max_ms",
    "std_ms",
    "throughput_ips",
    "speedup_vs_pytorch",
    "speedup_vs_fp32",
    "threads",
    "tf32",
    "io_binding",
    "cudnn_conv_algo_search",
    "cuda_graph",
]
ENV_FIELDS = ["cpu_model", "cpu_cores", "gpu_name", "torch", "onnxruntime", "onnx", "providers", "torch_threads"]


def flat_rows(result: BenchResult) -> list[dict[str, object]]:
    """One flat row per measurement, the environment repeated as ``env_*`` columns."""
    env = {
        f"env_{k}": (";".join(v) if isinstance(v, list) else v)
        for k, v in result.environment.items()
        if k in ENV_FIELDS
    }
    return [{**{k: r.get(k) for k in CSV_FIELDS}, **env} for r in result.rows]


def print_table(result: BenchResult, console: Console | None = None) -> None:
    console = console or Console(highlight=False)
    env = result.environment
    where = env.get("gpu_name") or f"{env.get('cpu_model')} ({env.get('cpu_cores')} cores)"
    table = Table(title=f"Latency on {result.device.upper()}: {where}, {env.get('threads')} threads")
    variants = len({r.get("precision") for r in result.rows}) > 1
    cols = [
        "model",
        "batch",
        "engine",
        *(["prec"] if variants else []),
        "median ms",
        "mean ms",
        "p90 ms",
        "p99 ms",
        "min ms",
        "std ms",
        "img/s",
        "ORT speedup",
        *(["vs ORT fp32"] if variants else []),
        "iters",
    ]
    for col in cols:
        table.add_column(col, justify="left" if col in ("model", "engine", "prec") else "right", no_wrap=True)
    for r in result.rows:
        head = [
            str(r["model"]),
            str(r["batch_size"]),
            str(r["engine"]),
            *([str(r.get("precision"))] if variants else []),
        ]
        if r.get("status") != "ok":
            table.add_row(*head, f"[red]{r.get('status')}[/]", *[""] * (len(cols) - len(head) - 1))
            continue
        speed, vs32 = r.get("speedup_vs_pytorch"), r.get("speedup_vs_fp32")
        table.add_row(
            *head,
            f"{r['median_ms']:.2f}",
            f"{r['mean_ms']:.2f}",
            f"{r['p90_ms']:.2f}",
            f"{r['p99_ms']:.2f}",
            f"{r['min_ms']:.2f}",
            f"{r['std_ms']:.2f}",
            f"{r['throughput_ips']:.1f}",
            f"{speed:.2f}x" if speed else "",
            *([f"{vs32:.2f}x" if vs32 else ""] if variants else []),
            str(r["iterations"]),
        )
    console.print(table)


def _plot_png(result: BenchResult) -> bytes:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(str(r["model"]) for r in result.rows))
    cols = min(3, max(1, len(models)))
    nrows = (len(models) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.4 * nrows), squeeze=False)
    for ax, model in zip(axes.flat, models):
        for engine, prec in dict.fromkeys((str(r["engine"]), str(r.get("precision", "fp32"))) for r in result.rows):
            pts = sorted(
                (int(r["batch_size"]), float(r["median_ms"]))
                for r in result.rows
                if r["model"] == model
                and r["engine"] == engine
                and r.get("precision", "fp32") == prec
                and r.get("status") == "ok"
            )
            if pts:
                label = engine if prec == "fp32" else f"{engine} {prec}"
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
        ax.set_title(model)
        ax.set_xlabel("batch size")
        ax.set_ylabel("median latency (ms)")
        ax.set_xscale("log", base=2)
        batches = sorted({int(r["batch_size"]) for r in result.rows if r["model"] == model})
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    for ax in list(axes.flat)[len(models) :]:
        ax.axis("off")
    fig.suptitle(f"Latency vs batch size ({result.device.upper()})")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def write_outputs(result: BenchResult, output_dir: Path) -> dict[str, Path]:
    """Write ``results.json``, ``results.csv`` and ``latency.png`` atomically; return their paths."""
    paths = {"json": output_dir / "results.json", "csv": output_dir / "results.csv", "png": output_dir / "latency.png"}
    rows = flat_rows(result)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else CSV_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    doc = {
        "environment": result.environment,
        "device": result.device,
        "device_reason": result.device_reason,
        "config": result.config,
        "parity": result.parity,
        "interrupted": result.interrupted,
        "results": result.rows,
    }
    with atomic_outputs(output_dir) as out:
        out.write_bytes(paths["json"], (json.dumps(doc, indent=2) + "\n").encode())
        out.write_bytes(paths["csv"], buf.getvalue().encode())
        if rows:
            out.write_bytes(paths["png"], _plot_png(result))
    if not rows:
        paths.pop("png")
    return paths
