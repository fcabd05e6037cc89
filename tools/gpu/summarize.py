"""Issue 19's targets, read off the GPU session's benchmark results (``tools/gpu/session.sh``), as Markdown.

It measures nothing and invents nothing: every figure is a row's median with its 95% interval, or a
ratio bootstrapped from two rows' kept samples (timed interleaved in one run); a target is **met**
only where the whole interval clears it, **not met** where the whole interval misses it, and
**inconclusive** otherwise. A row that is missing (a step that ran out of time, an engine that is
not there) is said, not filled in.

    python tools/gpu/summarize.py --main A/results.json --compile D/results.json \\
        --toggles B/results.json C/results.json > summary.md
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from runtime.bench.rows import BenchRow, RunDocument
from runtime.bench.stats import Interval, ratio_interval

TARGET_MODELS = ("resnet18", "resnet50", "vgg16")
FP16_SPEEDUP = 1.3  # fp16 >= 1.3x fp32 at batch >= 8
FLOOR_TIMES = 8.0  # onnxruntime fp16 at batch 32 within 8x of its tensor-core floor (resnet18, resnet50)


def load(path: Path) -> RunDocument:
    return RunDocument.model_validate_json(Path(path).read_text())


def _rows(doc: RunDocument) -> dict[tuple[str, int, str, str], BenchRow]:
    return {(r.model, r.batch_size, r.engine, r.precision): r for r in doc.rows if r.ok and r.mode == "latency"}


def ms(row: BenchRow | None) -> str:
    if row is None or row.median_ms is None:
        return "—"
    ci = f" ({row.median_ci_low_ms:.3g}–{row.median_ci_high_ms:.3g})" if row.median_ci_low_ms is not None else ""
    return f"{row.median_ms:.3g}{ci}" + (" ⚠" if row.unstable else "")


def ratio(iv: Interval | None) -> str:
    return "—" if iv is None else f"{iv.value:.2f}× ({iv.low:.2f}–{iv.high:.2f})"


def speedup(slow: BenchRow | None, fast: BenchRow | None, rng: np.random.Generator) -> Interval | None:
    """How many times faster ``fast`` is than ``slow`` (median ratio, 95% bootstrap from their samples)."""
    if slow is None or fast is None or slow.sample_summary is None or fast.sample_summary is None:
        return None
    return ratio_interval(slow.sample_summary, fast.sample_summary, rng)


def verdict(iv: Interval | None, at_least: float) -> str:
    if iv is None:
        return "not measured"
    if iv.low >= at_least:
        return "met"
    if iv.high < at_least:
        return "not met"
    return "inconclusive"


def _table(head: list[str], body: Iterable[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    return lines + ["| " + " | ".join(cells) + " |" for cells in body]


def environment(doc: RunDocument) -> list[str]:
    env = doc.environment
    keys = ("gpu_name", "torch", "torch_cuda", "cudnn", "onnxruntime", "onnx", "cuda_nhwc", "threads")
    facts = ", ".join(f"{k} {env[k]}" for k in keys if env.get(k) not in (None, ""))
    lines = [f"Device: {doc.device} ({doc.device_reason}); {facts}"]
    if doc.machine is not None:
        peaks = ", ".join(
            f"{k} {p.gflops / 1e3:.0f} TFLOP/s" if p.gflops >= 1e4 else f"{k} {p.gflops:.0f} GFLOP/s"
            for k, p in doc.machine.peaks.items()
        )
        lines.append(f"Probe: {peaks}; copy {doc.machine.bandwidth_gbs / 1e3:.2f} TB/s (read + write)")
    return lines


def main_table(doc: RunDocument, rng: np.random.Generator) -> list[str]:
    rows = _rows(doc)
    body = []
    for model, batch in sorted({(m, b) for m, b, _, _ in rows}):
        f32, f16 = rows.get((model, batch, "onnxruntime", "fp32")), rows.get((model, batch, "onnxruntime", "fp16"))
        pt = rows.get((model, batch, "pytorch", "fp32"))
        graphs = "/".join(
            ("on" if r.settings.get("cuda_graph") else "off") if r is not None else "—" for r in (f32, f16)
        )
        floor = f"{f16.time_over_floor:.1f}" if f16 is not None and f16.time_over_floor is not None else "—"
        clean = {r.settings.get("placement_clean") for r in (f32, f16) if r is not None}
        body.append(
            [
                model,
                str(batch),
                ms(f32),
                ms(f16),
                ratio(speedup(f32, f16, rng)),
                ms(pt),
                ratio(speedup(pt, f32, rng)),
                floor,
                graphs,
                "yes" if clean == {True} else "no" if False in clean else "not audited",
            ]
        )
    head = ["model", "batch", "ORT fp32 ms", "ORT fp16 ms", "fp16 ÷ fp32 speed", "PyTorch fp32 ms"]
    head += ["ORT fp32 vs PyTorch", "ORT fp16 × floor", "CUDA graph fp32/fp16", "placement clean"]
    return _table(head, body)


def targets(
    main: RunDocument, compiled: RunDocument | None, rng: np.random.Generator, versus_compile: bool = True
) -> list[str]:
    rows = _rows(main)
    body = []
    for model in TARGET_MODELS:
        batches = sorted({b for m, b, _, _ in rows if m == model and b >= 8})
        if not batches:
            body.append([f"fp16 ≥ {FP16_SPEEDUP}× fp32", f"{model} b≥8", "—", "not measured"])
        for batch in batches:
            iv = speedup(
                rows.get((model, batch, "onnxruntime", "fp32")), rows.get((model, batch, "onnxruntime", "fp16")), rng
            )
            body.append([f"fp16 ≥ {FP16_SPEEDUP}× fp32", f"{model} b{batch}", ratio(iv), verdict(iv, FP16_SPEEDUP)])
    for model in ("resnet18", "resnet50"):
        r = rows.get((model, 32, "onnxruntime", "fp16"))
        if r is None or r.time_over_floor is None or r.floor_ms is None:
            body.append([f"fp16 b32 within {FLOOR_TIMES:g}× floor", model, "—", "not measured"])
            continue
        hi = (r.median_ci_high_ms or r.median_ms or 0.0) / r.floor_ms
        lo = (r.median_ci_low_ms or r.median_ms or 0.0) / r.floor_ms
        met = "met" if hi <= FLOOR_TIMES else "not met" if lo > FLOOR_TIMES else "inconclusive"
        body.append(
            [f"fp16 b32 within {FLOOR_TIMES:g}× floor", model, f"{r.time_over_floor:.1f}× ({lo:.1f}–{hi:.1f})", met]
        )
    if compiled is not None:
        crow = _rows(compiled)
        for model, batch in sorted({(m, b) for m, b, e, _ in crow if e == "torch-compile"}):
            tc = crow.get((model, batch, "torch-compile", "fp32"))
            for precision in ("fp32", "fp16"):
                iv = speedup(tc, crow.get((model, batch, "onnxruntime", precision)), rng)
                if iv is not None:
                    body.append(
                        [f"ORT {precision} ahead of torch.compile", f"{model} b{batch}", ratio(iv), verdict(iv, 1.0)]
                    )
    elif versus_compile:
        body.append(["ORT ahead of torch.compile", "all", "—", "not measured"])
    return _table(["target", "where", "measured", "verdict"], body)


def toggles(doc: RunDocument) -> list[str]:
    """One run against the main run (``--baseline``): each row's time ratio, this run ÷ main."""
    c = doc.config
    what = ", ".join(
        f"{k}={c.get(k)}" for k in ("prefer_nhwc", "fp16_io", "io_binding", "cuda_graph", "cudnn_max_workspace")
    )
    lines = [f"Run {doc.run_id} ({what}) against {doc.baseline.path if doc.baseline else 'no baseline'}:", ""]
    if doc.baseline is None or not doc.baseline.rows:
        return lines + ["no rows compared"]

    def figure(value: float | None) -> str:
        return f"{value:.3g}" if value else "—"

    def change(lo: float | None, hi: float | None) -> str:
        if lo is None or hi is None:
            return "—"
        return "faster" if hi < 1 else "slower" if lo > 1 else "no difference shown"

    body = [
        [
            r.label,
            r.model,
            str(r.batch_size),
            figure(r.baseline),
            figure(r.this_run),
            f"{r.ratio:.3f} ({r.ratio_ci_low:.3f}–{r.ratio_ci_high:.3f})" if r.ratio and r.ratio_ci_low else "—",
            change(r.ratio_ci_low, r.ratio_ci_high),
        ]
        for r in doc.baseline.rows
    ]
    note = "(two runs one after the other, not interleaved: the interval is each run's sampling noise only)"
    return (
        lines
        + _table(["row", "model", "batch", "main ms", "this ms", "this ÷ main", "this run is"], body)
        + [
            "",
            note,
        ]
    )


def graph_decisions(doc: RunDocument) -> list[str]:
    body = []
    for r in doc.rows:
        s = r.settings
        if not r.ok or r.engine != "onnxruntime" or "cuda_graph_decision" not in s:
            continue
        capture = r.cold_start.capture_s if r.cold_start else None
        body.append(
            [
                f"{r.model} b{r.batch_size} {r.precision}",
                str(s.get("cuda_graph_ab_plain_ms", "—")),
                str(s.get("cuda_graph_ab_graph_ms", "—")),
                "on" if s.get("cuda_graph") else "off",
                f"{capture:.3f}" if capture is not None else "—",
                str(s.get("cuda_graph_replay_max_abs_diff", "—")),
            ]
        )
    head = ["row", "plain ms (A/B)", "graph ms (A/B)", "kept", "capture s", "replay max abs diff"]
    return _table(head, body) if body else ["no CUDA-graph decisions recorded"]


def summary(main: RunDocument, compiled: RunDocument | None, others: list[RunDocument], seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    out = ["# GPU session: issue 19's targets", "", *environment(main), "", "## Main run", ""]
    out += main_table(main, rng) + ["", "## Targets", ""] + targets(main, compiled, rng)
    out += ["", "## CUDA graphs (interleaved A/B per row)", ""] + graph_decisions(main)
    out += ["", "## Placement audit", ""] + [f"- {p.model} {p.precision}: {p.line}" for p in main.placements]
    for doc in others:
        out += ["", "## Setting on/off", ""] + toggles(doc)
        if doc.config.get("io_binding"):  # the targets are IO-bound figures
            out += ["", f"Targets in run {doc.run_id} (onnxruntime rows):", ""]
            out += targets(doc, None, rng, versus_compile=False)
    if compiled is not None:
        out += ["", "## torch.compile run", ""] + main_table(compiled, rng)
        tc = [r for r in compiled.rows if r.engine == "torch-compile" and r.ok]
        out += [f"- torch.compile {r.model} b{r.batch_size}: mode {r.settings.get('mode')}, compile "
                f"{(r.cold_start.compile_s if r.cold_start else None) or 0:.0f} s" for r in tc]  # fmt: skip
        skipped = compiled.skipped_engines
        out += [f"- {engine}: not available ({why})" for engine, why in skipped.items()]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--main", type=Path, required=True, help="the main run's results.json")
    p.add_argument("--compile", type=Path, help="the torch.compile (and TensorRT) run's results.json")
    p.add_argument("--toggles", type=Path, nargs="*", default=[], help="runs made with --baseline MAIN")
    args = p.parse_args(argv)
    others = [load(t) for t in args.toggles if t.is_file()]
    compiled = load(args.compile) if args.compile and args.compile.is_file() else None
    sys.stdout.write(summary(load(args.main), compiled, others))
    return 0


if __name__ == "__main__":
    sys.exit(main())
