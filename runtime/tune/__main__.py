"""``python -m runtime.tune``: parse arguments, run :func:`runtime.tune.run_tune`, print the table and the choice.

The parser imports nothing heavy: the library (torch, onnxruntime, OpenVINO, the serving stack)
is imported once the arguments are known to be sound.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from exporter import options as opt
from exporter.console import CommandParser, Console, stdout_kept_for_output
from exporter.errors import run_guarded

from .config import DEFAULT_BATCH_SIZES, DEFAULT_ENGINES, DEFAULT_FINALISTS, TARGETS, TuneConfig, parse_loss


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(
        prog="python -m runtime.tune",
        description="Choose how to serve an artifact: sweep engines, precisions, threads x streams and batch sizes "
        "(each candidate parity-checked, then timed), confirm the best together, and write the winner as a validated "
        "Triton model repository with deploy.json.",
        epilog="examples:\n"
        "  python -m runtime.tune resnet_cifar --target throughput\n"
        "  python -m runtime.tune resnet18 --target latency --p99-ms 30 --max-loss 20db\n"
        "  python -m runtime.tune resnet18 --target throughput --serve   # and search Triton's configuration\n"
        "then: python -m runtime.serve --repository artifacts/tune/resnet18/repository",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("artifact", help="zoo or artifact name, artifact folder, or NAME.onnx beside its manifest")
    w = p.add_argument_group("what to optimise")
    w.add_argument("--target", choices=TARGETS, required=True,
                   help="latency: the most img/s whose p99 meets --p99-ms; throughput: the most img/s")  # fmt: skip
    w.add_argument("--p99-ms", type=float, metavar="X", help="the p99 request latency to meet (--target latency)")
    w.add_argument(
        "--max-loss",
        metavar="BUDGET",
        help="accuracy budget for reduced precisions against PyTorch fp32: an SQNR floor (25db) or a top-1 drop "
        "on labelled data (1pp); default: each precision's parity tolerance",
    )
    s = p.add_argument_group("the space swept")
    engines = " ".join(DEFAULT_ENGINES)
    s.add_argument("--engines", nargs="+", default=list(DEFAULT_ENGINES), metavar="ENGINE",
                   help=f"default: {engines} (those that cannot run here are named and skipped)")  # fmt: skip
    opt.precision(s, many=True, help="default: fp32 int8 bf16 (and fp16 on CUDA, and every variant the artifact has)")
    opt.batch_size(s, default=DEFAULT_BATCH_SIZES, help="batch sizes to sweep (default 1 8 32)")
    opt.threads(s, help="threads to split between the streams (default: one per core)")
    opt.device(s)
    s.add_argument("--finalists", type=int, default=DEFAULT_FINALISTS,
                   help=f"candidates confirmed together, each up to a p99 (default {DEFAULT_FINALISTS})")  # fmt: skip
    t = p.add_argument_group("how long")
    t.add_argument("--screen-windows", type=int, default=5, help="throughput windows per candidate (default 5)")
    t.add_argument("--screen-seconds", type=float, default=1.0, help="timed seconds per candidate (default 1)")
    t.add_argument("--confirm-seconds", type=float, default=120.0,
                   help="the finalists' confirmation at most this long (default 120)")  # fmt: skip
    v = p.add_argument_group("Triton")
    v.add_argument("--serve", action="store_true",
                   help="search Triton configurations (instances, max batch, preferred sizes, queue delay) on the "
                   "local server with the load test, and deploy the best that meets the target")  # fmt: skip
    v.add_argument("--serve-seconds", type=float, default=5.0, help="seconds per load-test level (default 5)")
    v.add_argument("--serve-configs", type=int, default=8, help="configurations to try at most (default 8)")
    o = p.add_argument_group("files")
    opt.output(o, default=Path("artifacts/tune/NAME"), what="tune.json, pareto.png, bench/, repository/, deploy.json")
    opt.artifacts_dir(o)
    opt.no_rebuild(o)
    o.add_argument("--reference", metavar="FILE.py:Builder", help="your own model's code, for the parity checks")
    opt.json_flag(o, help="print deploy.json (or tune.json) instead of tables")
    opt.wide(o)
    return p


def config_from(args: argparse.Namespace) -> TuneConfig:
    output = None if str(args.output) == str(Path("artifacts/tune/NAME")) else args.output
    return TuneConfig(
        artifact=args.artifact,
        target=args.target,
        p99_ms=args.p99_ms,
        loss=parse_loss(args.max_loss),
        device=args.device,
        engines=tuple(args.engines),
        precisions=tuple(args.precision or ()),
        batch_sizes=tuple(args.batch_size),
        threads=args.threads,
        finalists=args.finalists,
        screen_windows=args.screen_windows,
        screen_seconds=args.screen_seconds,
        confirm_max_seconds=args.confirm_seconds,
        serve=args.serve,
        serve_seconds=args.serve_seconds,
        serve_configs=args.serve_configs,
        output_dir=output,
        artifacts_dir=args.artifacts_dir,
        rebuild=not args.no_rebuild,
        reference=args.reference,
    )


def _run(args: argparse.Namespace) -> int:
    if not args.json:
        return _tune(args, Console(sys.stdout))
    # The JSON is the only thing on stdout: what the user's code or a library prints goes to stderr.
    with stdout_kept_for_output() as stdout:
        return _tune(args, Console(stdout))


def _tune(args: argparse.Namespace, out: Console) -> int:
    config = config_from(args)
    config.validate()
    err = Console(sys.stderr)
    from . import run_tune
    from .report import serve_table, table
    from .search import TuneHooks

    def note(line: str) -> None:
        err.print(f"note: {line}")

    result = run_tune(config, TuneHooks(note=note, step=err.print, tick=lambda _m: None))
    if args.json:
        from exporter.files import strict_json

        record = result.deploy or result.report
        out.print(strict_json(record.model_dump(mode="json")))
        return result.exit_code
    report = result.report
    cols, cells = table(report.candidates)
    m = report.machine
    where = m.gpu_name or f"{m.cpu_model} ({m.cpu_cores} cores)"
    target = f"p99 <= {report.target.p99_ms:g} ms" if report.target.kind == "latency" else "the most img/s"
    out.table(cols, cells, title=f"Candidates for {report.artifact.name} on {m.device.upper()}: {where}, "
              f"{m.threads} threads; target: {target}; accuracy budget: {report.target.loss}",
              wide=args.wide)  # fmt: skip
    for what, why in report.skipped.items():
        out.print(f"skipped {what}: {why}")
    deploy = result.deploy
    if deploy is not None and deploy.served is not None:
        cols, cells = serve_table(deploy.served)
        out.table(cols, cells, title="Triton configurations on the local server (load test, parity through the server)",
                  wide=args.wide)  # fmt: skip
        if deploy.served.note:
            out.print(deploy.served.note)
    out.paragraph(("chosen: " if deploy is not None else "nothing deployed: ") + report.why)  # ~320 characters
    for path in result.files:
        out.print(f"wrote {path}")
    if deploy is not None:
        out.print(f"serve it: python -m runtime.serve --repository {deploy.triton.repository}")
    return result.exit_code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_guarded(
        lambda: _run(args), interrupted="stopped; the screening's rows are kept under OUTPUT/bench/runs/"
    )


if __name__ == "__main__":
    sys.exit(main())
