"""``python -m runtime.loadtest``: load-test a Triton server on this machine against the artifact it serves.

A command: it parses arguments, calls :mod:`runtime.loadtest` and :mod:`runtime.resolve`, prints.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from exporter import options
from exporter.console import Column, CommandParser, Console, fmt
from exporter.errors import UserError, run_guarded

from . import DEFAULT_CONCURRENCY, PROTOCOLS

if TYPE_CHECKING:  # imported where used: the parser and --help need no numpy, tritonclient or pydantic
    from .run import LoadTestResult

DEFAULT_OUTPUT = options.ARTIFACTS_DIR / "loadtest"


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(
        prog="python -m runtime.loadtest",
        description="Drive a Triton server on this machine with concurrent clients: parity through the server first, "
        "then throughput and latency per concurrency level, the batches Triton formed, "
        "and local onnxruntime beside it.",
        epilog="examples:\n"
        "  python -m runtime.serve resnet_cifar &            # in another terminal\n"
        "  python -m runtime.loadtest resnet_cifar --url 127.0.0.1:8001\n"
        "  python -m runtime.loadtest resnet18 --url 127.0.0.1:8000 --protocol http --concurrency 1 8 --seconds 5\n"
        "only loopback addresses are accepted; needs the serve extra: pip install -e '.[serve]'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("artifact", help="the artifact the server serves (outputs are checked against it)")
    p.add_argument("--url", default="127.0.0.1:8001", help="the server's gRPC or HTTP address (default 127.0.0.1:8001)")
    p.add_argument("--protocol", choices=PROTOCOLS, default="grpc", help="how to talk to --url (default grpc)")
    p.add_argument(
        "--metrics-port",
        type=int,
        default=8002,
        help="Triton's Prometheus port on the same host (default 8002; 0: none)",
    )
    p.add_argument("--model-name", help="the model's name in Triton (default: the artifact's, plus the variant)")
    options.precision(p, help="the graph served: fp32 (default), fp16, int8, or e.g. int8.opt-cpu")
    p.add_argument(
        "--concurrency", type=int, nargs="+", default=list(DEFAULT_CONCURRENCY), help="client counts (default 1 4 16)"
    )
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per level (default 10)")
    p.add_argument("--warmup-seconds", type=float, default=1.0, help="unmeasured seconds before each level (default 1)")
    options.batch_size(p, many=False, default=1, help="images per request (default 1)", old=("--batch",))
    p.add_argument("--max-requests", type=int, default=200_000, help="at most this many requests per level")
    p.add_argument("--no-local", action="store_true", help="skip local onnxruntime at the same batch size")
    options.device(p, help="local onnxruntime's device: auto (default, CUDA where it really works), cuda, cpu")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds one request may take (default 30)")
    p.add_argument("--atol", type=float, help="override the parity check's absolute tolerance")
    p.add_argument("--rtol", type=float, help="override the parity check's relative tolerance")
    options.output_under_artifacts(p, folder=DEFAULT_OUTPUT.name, what="results folder")
    options.artifacts_dir(p)
    options.wide(p)
    return p


def print_report(out: Console, result: LoadTestResult, *, wide: bool = False) -> None:
    from .run import MIN_SAMPLES_P99

    s = result.server
    out.print(
        f"{result.artifact} [{result.variant}] as '{result.model_name}' on Triton {s.get('triton_version') or '?'} at "
        f"{result.url} ({result.protocol}); max batch {s.get('max_batch_size')}, "
        f"preferred {s.get('preferred_batch_sizes')}, "
        f"max queue delay {s.get('max_queue_delay_us')} us, {s.get('instances')} instance(s)"
    )
    cols = [Column("mode"), Column("clients", True), Column("batch", True), Column("requests", True, 3)]
    cols += [Column("img/s", True), Column("median ms", True), Column("p90 ms", True, 3), Column("p99 ms", True)]
    cols += [Column("formed batch", True, 1), Column("queue ms", True, 2), Column("compute ms", True, 2)]
    cols += [Column("errors", True), Column("load 1m", True, 2)]
    rows = []
    for r in result.rows:
        rows.append(
            [
                "onnxruntime (local)" if r.mode == "local" else f"Triton {r.protocol}",
                str(r.concurrency),
                str(r.batch_size),
                str(r.requests),
                fmt(r.throughput_ips, ".1f"),
                fmt(r.median_ms, ".2f"),
                fmt(r.p90_ms, ".2f"),
                fmt(r.p99_ms, ".2f"),
                fmt(r.mean_formed_batch, ".2f"),
                fmt(r.queue_ms, ".2f"),
                fmt(r.compute_ms, ".2f"),
                (str(r.errors), "red") if r.errors else "0",
                fmt(r.load_1m, ".2f"),
            ]
        )
    out.table(cols, rows, wide=wide)
    gain = result.batching_gain()
    if gain:
        ratio, one, best = gain
        out.print(
            f"dynamic batching: {best.concurrency} clients give {ratio:.2f}x the throughput of 1 "
            f"({fmt(best.throughput_ips, '.0f')} vs {fmt(one.throughput_ips, '.0f')} img/s), "
            f"mean formed batch {fmt(best.mean_formed_batch, '.2f')} (1 client: {fmt(one.mean_formed_batch, '.2f')})"
        )
    local = result.local_row()
    best_any = max(
        (r for r in result.triton_rows() if r.throughput_ips), key=lambda r: r.throughput_ips or 0, default=None
    )
    if local and local.throughput_ips and best_any:
        clients = f"{best_any.concurrency} client{'s' if best_any.concurrency != 1 else ''}"
        out.print(
            f"local onnxruntime at batch {local.batch_size} in a loop: {local.throughput_ips:.0f} img/s; "
            f"Triton's best ({clients}): {best_any.throughput_ips:.0f} img/s "
            f"({(best_any.throughput_ips or 0) / local.throughput_ips:.2f}x)"
        )
    p99_missing = [r for r in result.rows if r.p99_ms is None and r.requests]
    if p99_missing:
        out.print(f"p99 is given only for levels with at least {MIN_SAMPLES_P99} requests")


def _run(args: argparse.Namespace) -> int:
    from exporter import artifact as art

    from ..resolve import resolve
    from .report import check_output, write_results
    from .run import LoadTestConfig, run_load_test

    out, err = Console(sys.stdout), Console(sys.stderr)
    if args.metrics_port == 0:
        args.metrics_port = None
    config = LoadTestConfig(
        url=args.url,
        protocol=args.protocol,
        metrics_port=args.metrics_port,
        model_name=args.model_name,
        concurrency=tuple(args.concurrency),
        seconds=args.seconds,
        warmup_seconds=args.warmup_seconds,
        batch=args.batch_size,
        max_requests=args.max_requests,
        local_baseline=not args.no_local,
        local_device=args.device,
        timeout_s=args.timeout,
        atol=args.atol,
        rtol=args.rtol,
    )
    config.check()
    # results follow --artifacts-dir, as runtime.bench's and runtime.profile's do
    args.output = options.output_dir(args.output, args.artifacts_dir, DEFAULT_OUTPUT.name)
    check_output(args.output)
    key = art.VariantKey.parse(args.precision) if args.precision else None
    resolved = resolve(args.artifact, key=key, artifacts_dir=args.artifacts_dir, rebuild=False, say=err.print)
    result = run_load_test(
        resolved, config, on_progress=err.print, on_level=lambda so_far: write_results(so_far, args.output)
    )
    parity = result.parity
    assert parity is not None
    worst = max((c.max_abs_err or 0.0 for c in parity.comparisons), default=0.0)
    if not parity.passed:
        for line in parity.failures()[:5]:
            err.print(f"FAIL {line}", style="red")
        written = write_results(result, args.output)
        raise UserError(
            f"the server's outputs differ from local onnxruntime's for {result.artifact} [{result.variant}] "
            f"(worst abs err {worst:.2e}): not load-tested; details in {written.paths['json']}"
        )
    err.print(
        f"parity through the server: pass at batch sizes {', '.join(map(str, parity.batch_sizes))} "
        f"(max abs err {worst:.1e}, local onnxruntime on {parity.device})"
    )
    if result.metrics_note:
        err.print(f"note: {result.metrics_note}; formed batch sizes are not given")
    if not result.rows:  # it ended before the first level finished: nothing measured, nothing written
        raise UserError(f"nothing measured: {result.ended_early or 'the run ended before its first level'}")
    print_report(out, result, wide=args.wide)
    written = write_results(result, args.output)
    out.print(
        "wrote "
        + ", ".join(str(p) for p in written.paths.values())
        + f" ({written.rows} rows: {written.added} new, {written.replaced} replaced)"
    )
    if result.ended_early and not result.interrupted:
        kept = ", ".join(
            "local onnxruntime" if r.mode == "local" else f"concurrency {r.concurrency}" for r in result.rows
        )
        raise UserError(f"load test ended early: {result.ended_early}; kept {kept} in {written.paths['json']}")
    if result.interrupted:
        err.print("interrupted: kept the levels measured so far")
        return 130
    failed = [r for r in result.rows if r.errors]
    if failed:
        first = next((r.first_error for r in failed if r.first_error), "")
        raise UserError(f"{sum(r.errors for r in failed)} requests failed: {first}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_guarded(lambda: _run(args), interrupted="nothing written for the level in progress")


if __name__ == "__main__":
    sys.exit(main())
