"""``python -m runtime.bench``: parse arguments, run :func:`runtime.bench.run_benchmark`, print.

A command: the measuring, saving and statistics live in the library (:mod:`runtime.bench`);
this module turns a command line into a :class:`~runtime.bench.BenchConfig` and the typed
result into progress lines, a table and a summary.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from exporter import options
from exporter.console import CommandParser, Console, Progress
from exporter.errors import UserError, run_guarded
from exporter.user_model import parse_input_sizes

from ..session_config import CUDNN_SEARCH
from .defaults import (
    DEFAULT_BATCH_SIZES,
    DEFAULT_ENGINES,
    DEFAULT_MAX_CI_WIDTH,
    DEFAULT_MAX_SLOWDOWN,
    DEFAULT_MODELS,
    DEFAULT_OUTPUT,
    ENGINES,
    TORCH_COMPILE_MODES,
)
from .timing import TimingPolicy

if TYPE_CHECKING:  # imported where used: the parser and --help need none of torch, onnxruntime, numpy
    from .config import BenchConfig
    from .runner import BenchResult

#: Without a terminal, the longest silence between progress lines (seconds).
TICK_SECONDS = 10.0


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(
        prog="python -m runtime.bench",
        description="Time onnxruntime, PyTorch and the engines users would pick instead on the same artifact, "
        "interleaved, after a parity check, with confidence intervals and the machine's physical limit.",
        epilog="examples:\n"
        "  python -m runtime.bench\n"
        "  python -m runtime.bench --models resnet18 artifacts/mynet --reference my_net.py:MyNet\n"
        "  python -m runtime.bench --models lenet5 resnet_cifar --precision fp32 int8\n"
        "  python -m runtime.bench --models resnet18 --engines all --batch-size 1 32\n"
        "  python -m runtime.bench --models resnet18_dyn --input-size 224x224 320x320",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    w = p.add_argument_group("what to time")
    w.add_argument(
        "--models",
        nargs="+",
        default=list(DEFAULT_MODELS),
        help="zoo or artifact names, artifact folders, NAME[.variant].onnx files beside their manifest, or 'all' "
        f"(default: {' '.join(DEFAULT_MODELS)})",
    )
    options.batch_size(
        w,
        default=DEFAULT_BATCH_SIZES,
        help=f"batch sizes to time (default {' '.join(map(str, DEFAULT_BATCH_SIZES))})",
        old=("--batch-sizes",),
    )
    w.add_argument(
        "--input-size",
        nargs="+",
        action="extend",
        metavar="HxW",
        help="input sizes for artifacts exported with --dynamic-size (default: the export size)",
    )
    w.add_argument(
        "--engines",
        nargs="+",
        default=list(DEFAULT_ENGINES),
        metavar="ENGINE",
        help=f"any of {', '.join(ENGINES)}, or all (default: {' '.join(DEFAULT_ENGINES)}; "
        "engines that cannot run here are named with the reason and skipped)",
    )
    options.precision(
        w,
        many=True,
        default=["fp32"],
        help="fp32, fp16, int8 (graph variants, built if missing; optionally .opt-cpu/.opt-cuda) and bf16 "
        "(OpenVINO's bf16 hint); PyTorch always runs fp32 (default: fp32)",
        old=("--precisions",),
    )
    w.add_argument(
        "--reference",
        action="append",
        default=[],
        metavar="[ARTIFACT=]FILE.py:Builder",
        help="your own model's code, for the PyTorch engines and the parity check of your artifact",
    )
    m = p.add_argument_group("throughput mode (instead of one call at a time)")
    m.add_argument(
        "--streams",
        type=int,
        nargs="+",
        metavar="N",
        help="run N streams at once, the threads split between them: onnxruntime N sessions, OpenVINO NUM_STREAMS N; "
        "one row per setting with throughput (95%% CI) and request latency percentiles",
    )
    m.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        metavar="C",
        help="requests kept in flight (default: one per stream); with --streams, every pair is a setting",
    )
    t = p.add_argument_group("how long to time")
    t.add_argument(
        "--min-samples", type=int, default=TimingPolicy.min_samples, help="timed calls per engine at least (default 20)"
    )
    t.add_argument(
        "--min-seconds",
        type=float,
        default=TimingPolicy.min_seconds,
        help="timed seconds per engine at least (default 1)",
    )
    t.add_argument(
        "--max-seconds",
        type=float,
        default=TimingPolicy.max_seconds,
        help="stop timing one (model, batch) after this long even if the minimums are not reached (default 60)",
    )
    t.add_argument("--iterations", type=int, help="exactly N timed calls per engine (no time minimum)")
    t.add_argument("--warmup", type=int, default=TimingPolicy.warmup, help="untimed calls per engine first (default 3)")
    t.add_argument(
        "--max-ci-width",
        type=float,
        default=DEFAULT_MAX_CI_WIDTH,
        help="flag a figure unstable when its 95%% CI is wider than this fraction of it (default 0.2)",
    )
    t.add_argument("--seed", type=int, default=0, help="seed of the inputs and of the bootstrap (default 0)")
    d = p.add_argument_group("where and with which settings")
    options.device(d)
    options.threads(d, help="threads for every engine (default: torch's, one per core)")
    d.add_argument("--no-io-binding", action="store_true", help="CUDA: copy inputs/outputs host<->device every run")
    d.add_argument("--cudnn-search", choices=CUDNN_SEARCH, default="EXHAUSTIVE", help="CUDA: cuDNN algorithm search")
    options.cuda_graph(
        d,
        help="CUDA: onnxruntime always replays a captured CUDA graph per batch (IO binding); by default it is "
        "captured and kept only where it measures faster than the plain run (the decision is recorded per row)",
    )
    d.add_argument("--no-cuda-graph", action="store_true", help="CUDA: never capture a CUDA graph")
    d.add_argument("--no-tf32", action="store_true", help="CUDA: disable TF32 in onnxruntime and PyTorch")
    d.add_argument(
        "--nhwc",
        action="store_true",
        help="CUDA: onnxruntime's NHWC convolution kernels (prefer_nhwc) where this build has them (said where not)",
    )
    d.add_argument(
        "--fp16-io",
        action="store_true",
        help="CUDA: fp16 graphs take and give float16 (their boundary Casts removed); inputs are converted on the GPU",
    )
    d.add_argument(
        "--no-cudnn-max-workspace",
        action="store_true",
        help="CUDA: limit cuDNN's algorithm search to its default workspace (cudnn_conv_use_max_workspace=0)",
    )
    d.add_argument(
        "--placement-audit",
        action="store_true",
        help="profile each onnxruntime graph once: every compute node on the expected provider, no Memcpy inside "
        "(recorded per row and in results.json)",
    )
    d.add_argument(
        "--torch-compile-mode",
        choices=TORCH_COMPILE_MODES,
        default="auto",
        help="torch-compile's mode (default auto: max-autotune with CUDA graphs on CUDA, default on CPU)",
    )
    d.add_argument("--no-parity", action="store_true", help="time without checking parity first")
    d.add_argument("--no-roofline", action="store_true", help="skip the machine's peak and bandwidth probe")
    o = p.add_argument_group("files")
    options.output_under_artifacts(
        o, folder=DEFAULT_OUTPUT.name, what="results folder: results.json, results.csv, latency.png, runs/<run-id>/"
    )
    options.artifacts_dir(o, writes=True)
    options.no_rebuild(o)
    options.wide(o)
    g = p.add_argument_group("regression gate")
    g.add_argument(
        "--baseline",
        type=Path,
        metavar="RESULTS",
        help="an earlier run's results.json (or its folder): compare every matching row, exit 1 where this run is "
        "slower beyond --max-slowdown over the whole 95%% CI, or where parity failed",
    )
    g.add_argument(
        "--max-slowdown",
        type=float,
        default=DEFAULT_MAX_SLOWDOWN,
        help=f"the slowdown the gate tolerates, as a fraction (default {DEFAULT_MAX_SLOWDOWN})",
    )
    return p


def cuda_graph_mode(args: argparse.Namespace) -> str:
    if args.cuda_graph and args.no_cuda_graph:
        raise UserError("--cuda-graph and --no-cuda-graph contradict each other: give one")
    return "on" if args.cuda_graph else "off" if args.no_cuda_graph else "auto"


def config_from(args: argparse.Namespace) -> BenchConfig:
    from .config import BenchConfig

    engines = list(ENGINES) if args.engines == ["all"] else args.engines
    return BenchConfig(
        models=tuple(args.models),
        batch_sizes=tuple(args.batch_size),
        input_sizes=tuple(parse_input_sizes(args.input_size or [])),
        engines=tuple(engines),
        precisions=tuple(args.precision),
        device=args.device,
        threads=args.threads,
        timing=TimingPolicy(
            min_samples=args.min_samples,
            min_seconds=0.0 if args.iterations else args.min_seconds,
            max_seconds=args.max_seconds,
            warmup=args.warmup,
            exact=args.iterations,
        ),
        max_ci_width=args.max_ci_width,
        seed=args.seed,
        io_binding=not args.no_io_binding,
        cudnn_conv_algo_search=args.cudnn_search,
        cuda_graph=cuda_graph_mode(args),
        tf32=not args.no_tf32,
        prefer_nhwc=args.nhwc,
        fp16_io=args.fp16_io,
        cudnn_max_workspace=not args.no_cudnn_max_workspace,
        placement_audit=args.placement_audit,
        torch_compile_mode=args.torch_compile_mode,
        parity=not args.no_parity,
        roofline=not args.no_roofline,
        references=tuple(args.reference),
        output_dir=options.output_dir(args.output, args.artifacts_dir, DEFAULT_OUTPUT.name),
        artifacts_dir=args.artifacts_dir,
        rebuild=not args.no_rebuild,
        baseline=args.baseline,
        max_slowdown=args.max_slowdown,
        streams=tuple(args.streams or ()),
        concurrency=tuple(args.concurrency or ()),
    )


def print_result(result: BenchResult, config: BenchConfig, out: Console, err: Console, wide: bool = False) -> None:
    from .report import (
        baseline_lines,
        baseline_table,
        saved_lines,
        summary,
        table,
        throughput_table,
        throughput_title,
        title,
    )

    doc = result.document
    if any(r.mode == "latency" for r in doc.rows):
        cols, cells = table(doc)
        out.table(cols, cells, title=title(doc), wide=wide)
    if any(r.mode == "throughput" for r in doc.rows):
        cols, cells = throughput_table(doc)
        out.table(cols, cells, title=throughput_title(doc), wide=wide)
    for line in summary(doc, config.max_ci_width):
        out.print(line)
    if doc.baseline is not None:
        cols, cells, heading = baseline_table(doc.baseline)
        if cells:
            out.table(cols, cells, title=heading, wide=wide)
        for line in baseline_lines(doc.baseline):
            out.print(line)
    for line in saved_lines(result.saved, str(config.output_dir)):
        out.print(line)
    if result.interrupted_by:
        kept = result.saved.rows if result.saved else 0
        where = f" in {result.saved.run_dir}" if result.saved and result.saved.run_dir else ""
        err.print(
            f"interrupted ({result.interrupted_by}): kept the {kept} rows finished before it{where}"
            if kept
            else f"interrupted ({result.interrupted_by}): nothing was measured; "
            f"earlier results in {config.output_dir} are untouched",
            style="yellow",
        )


def _run(args: argparse.Namespace) -> int:
    from .runner import Hooks, run_benchmark

    out, err = Console(sys.stdout), Console(sys.stderr)
    config = config_from(args)
    with contextlib.ExitStack() as stack:
        progress: list[Progress] = []
        last_line = [time.monotonic()]

        def start(total: int) -> None:
            progress.append(stack.enter_context(err.progress(total, "benchmark")))

        def step(message: str) -> None:
            last_line[0] = time.monotonic()
            if progress:
                progress[0].update(message)
            else:
                err.print(message)

        def tick(message: str) -> None:
            # live detail on a terminal; without one, a line at most every TICK_SECONDS so a long
            # group still shows it is alive
            if progress and (err.tty or time.monotonic() - last_line[0] >= TICK_SECONDS):
                progress[0].update(message)
                last_line[0] = time.monotonic()

        def done(message: str) -> None:
            last_line[0] = time.monotonic()
            if progress:
                progress[0].advance()
                progress[0].update(message)
            else:
                err.print(message)

        def note(line: str) -> None:
            err.print(f"note: {line}")

        hooks = Hooks(note=note, start=start, step=step, tick=tick, done=done)
        result = run_benchmark(config, hooks)
    doc = result.document
    if doc.device == "cuda":
        tf32 = {f"{r.engine} {r.precision}": r.tf32 for r in doc.rows if r.ok}
        if tf32:
            err.print(
                "TF32: " + ", ".join(f"{k} {'on' if v else ('off' if v is False else 'n/a')}" for k, v in tf32.items())
            )
    print_result(result, config, out, err, wide=args.wide)
    return result.exit_code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_guarded(lambda: _run(args), interrupted="stopped; rows finished before it are saved under OUTPUT/runs/")


if __name__ == "__main__":
    sys.exit(main())
