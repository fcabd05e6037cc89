"""``python -m runtime.bench``: argument parsing and progress display over :mod:`runtime.benchmark`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from exporter import artifacts
from exporter.errors import run_guarded
from exporter.zoo import list_models

from .benchmark import DEFAULT_BATCH_SIZES, DEFAULT_MODELS, ENGINES, BenchConfig, BenchResult, plan_size, run_benchmark
from .sessions import CUDNN_SEARCH, DEVICES


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m runtime.bench",
        description="Time onnxruntime (the exported graph) against PyTorch eager, side by side, after a parity check.",
    )
    p.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), help="zoo names, or 'all'")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=list(DEFAULT_BATCH_SIZES))
    p.add_argument("--device", choices=DEVICES, default="auto", help="auto prefers CUDA, falls back to CPU")
    p.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    p.add_argument(
        "--precisions",
        nargs="+",
        default=["fp32"],
        help="onnxruntime graphs to time: fp32, fp16, int8 (built if missing), optionally .opt-cpu/.opt-cuda",
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument("--iterations", type=int, help="timed iterations per measurement")
    g.add_argument(
        "--min-seconds", type=float, default=1.0, help="time each measurement at least this long (default 1)"
    )
    p.add_argument("--warmup", type=int, default=3, help="untimed iterations first (default 3)")
    p.add_argument("--threads", type=int, help="intra-op threads for both engines (default: torch's default)")
    p.add_argument("--no-io-binding", action="store_true", help="CUDA: copy inputs/outputs host<->device every run")
    p.add_argument(
        "--cudnn-search",
        choices=CUDNN_SEARCH,
        default="EXHAUSTIVE",
        help="CUDA: cuDNN convolution algorithm search (default EXHAUSTIVE; warm-up absorbs it)",
    )
    p.add_argument("--cuda-graph", action="store_true", help="CUDA: capture a CUDA graph (fixed shapes, IO binding)")
    p.add_argument("--no-tf32", action="store_true", help="CUDA: disable TF32 in onnxruntime and PyTorch")
    p.add_argument("--no-parity", action="store_true", help="skip the parity check before timing")
    p.add_argument("--onnx", type=Path, help="benchmark this graph (with exactly one --models entry)")
    p.add_argument(
        "--output",
        type=Path,
        default=artifacts.DEFAULT_OUTPUT_DIR / "bench",
        help="folder for results.json, results.csv, latency.png (default artifacts/bench)",
    )
    p.add_argument("--artifacts-dir", type=Path, default=artifacts.DEFAULT_OUTPUT_DIR)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Piped output (logs, CI) gets a table wide enough for every column rather than 80 columns.
    out = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
    err = Console(stderr=True, highlight=False)
    models = tuple(list_models()) if args.models == ["all"] else tuple(args.models)
    config = BenchConfig(
        models=models,
        batch_sizes=tuple(args.batch_sizes),
        engines=tuple(args.engines),
        device=args.device,
        iterations=args.iterations,
        min_seconds=args.min_seconds,
        warmup=args.warmup,
        threads=args.threads,
        io_binding=not args.no_io_binding,
        cudnn_conv_algo_search=args.cudnn_search,
        cuda_graph=args.cuda_graph,
        tf32=not args.no_tf32,
        output_dir=args.output,
        artifacts_dir=args.artifacts_dir,
        onnx=args.onnx,
        parity=not args.no_parity,
        precisions=tuple(args.precisions),
    )

    def measure() -> BenchResult:
        config.validate()
        if args.no_tf32:
            import torch

            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        )
        with progress:
            task = progress.add_task("benchmark", total=plan_size(config))

            def on_progress(msg: str) -> None:
                if msg == "measured":
                    progress.advance(task)
                else:
                    progress.update(task, description=msg)

            return run_benchmark(config, on_progress)

    return run_guarded(lambda: _report(measure(), config, out, err), interrupted="before anything was measured")


def _report(result: BenchResult, config: BenchConfig, out: Console, err: Console) -> int:
    """Say where it ran, print parity and the table, write the files; the exit code."""
    from .report import print_table, write_outputs

    if result.device == "cpu":
        err.print(f"[bold yellow]NOTE: running on CPU[/] — {result.device_reason}", soft_wrap=True)
    else:
        err.print(f"[bold green]running on CUDA[/] — {result.environment.get('gpu_name')}")
        tf32 = {str(r["engine"]): r.get("tf32") for r in result.rows if r.get("status") == "ok"}
        err.print("TF32: " + ", ".join(f"{engine} {'on' if on else 'off'}" for engine, on in tf32.items()))
    for key, p in result.parity.items():
        status = "[green]pass[/]" if p["passed"] else "[red]FAIL (not timed)[/]"
        acc = p.get("accuracy")
        acc_text = f", digits accuracy {acc['onnx']:.2%} (PyTorch fp32 {acc['pytorch_fp32']:.2%})" if acc else ""
        err.print(
            f"parity {key}: {status}, max abs err {p['max_abs_err']:.1e}{acc_text}"
            + ("" if p["passed"] else f" — {'; '.join(p['failures'][:2])}"),
            soft_wrap=True,
        )
    print_table(result, out)
    paths = write_outputs(result, config.output_dir)
    out.print("wrote " + ", ".join(str(p) for p in paths.values()))
    if result.interrupted:
        err.print("[yellow]interrupted[/]: kept the measurements taken so far")
        return 130
    return 1 if any(not p["passed"] for p in result.parity.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
