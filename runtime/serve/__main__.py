"""``python -m runtime.serve``: serve an artifact with Triton on 127.0.0.1, or write a Triton model repository.

A command: it parses arguments, calls :mod:`runtime.serve` and :mod:`runtime.resolve`, prints.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from exporter import options
from exporter.console import Column, CommandParser, Console, size_text
from exporter.errors import Terminated, UserError, run_guarded

from .config import TENSORRT_PRECISIONS, ModelOptions

DEFAULT_PORTS = {"http_port": 8000, "grpc_port": 8001, "metrics_port": 8002}


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(
        prog="python -m runtime.serve",
        description="Serve an exported graph with NVIDIA Triton Inference Server on 127.0.0.1 (dynamic batching), "
        "or write it into a Triton model repository for the onnxruntime backend.",
        epilog="examples:\n"
        "  python -m runtime.serve resnet_cifar                       # serve until Ctrl-C\n"
        "  python -m runtime.serve resnet18 --max-batch-size 16 --grpc-port 9001\n"
        "  python -m runtime.serve resnet18 --write-repository models --device cuda --tensorrt fp16\n"
        "  python -m runtime.serve lenet5 --write-repository models --precision int8\n"
        "  python -m runtime.serve --check-repository models\n"
        "  python -m runtime.serve --repository artifacts/tune/resnet18/repository   # a tune deployment\n"
        "needs the serve extra: pip install -e '.[serve]'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "artifact", nargs="?", help="zoo or artifact name, artifact folder, or NAME[.variant].onnx beside its manifest"
    )
    options.precision(p, help="graph to serve: fp32 (default), fp16, int8, or e.g. int8.opt-cpu")
    options.artifacts_dir(p, writes=True)
    options.no_rebuild(p)
    p.add_argument("--model-name", help="the model's name in Triton (default: the artifact's, plus the variant)")

    b = p.add_argument_group("batching and instances (server and repository)")
    options.max_batch_size(b, default=32, old=("--max-batch",))
    b.add_argument(
        "--preferred-batch-sizes",
        type=int,
        nargs="+",
        metavar="N",
        help="dynamic batching's preferred sizes (default: the max batch)",
    )
    b.add_argument(
        "--max-queue-delay-us",
        type=int,
        default=500,
        help="how long a request may wait for others to batch with (default 500)",
    )
    b.add_argument(
        "--instances", type=int, default=1, help="model instances (sessions) serving in parallel (default 1)"
    )
    options.device(b, help="where instances run (auto, the default: CUDA where there is one)")
    options.threads(b, help="onnxruntime intra-op threads per instance (default: all cores / instances)")

    s = p.add_argument_group("local server")
    options.http_port(s, help=f"on 127.0.0.1 (default {DEFAULT_PORTS['http_port']}; 0 picks a free one)")
    for flag, dest in (("--grpc-port", "grpc_port"), ("--metrics-port", "metrics_port")):
        s.add_argument(
            flag, type=int, dest=dest, metavar="PORT",
            help=f"on 127.0.0.1 (default {DEFAULT_PORTS[dest]}; 0 picks a free one)",
        )  # fmt: skip
    s.add_argument(
        "--startup-timeout", type=float, default=120.0, help="seconds to wait for the model to answer (default 120)"
    )
    s.add_argument("--log", type=Path, help="keep the server's log in this file (default: removed after a clean stop)")
    options.add(
        s,
        "--max-restarts",
        type=int,
        default=5,
        metavar="N",
        help="restart a crashed Triton, giving up after N crashes in a row (default 5; 0: never restart)",
    )

    r = p.add_argument_group("model repository")
    r.add_argument(
        "--write-repository", type=Path, metavar="DIR", help="write DIR/NAME/config.pbtxt and DIR/NAME/1/model.onnx"
    )
    r.add_argument(
        "--check-repository", type=Path, metavar="DIR", help="validate every model of a repository (or the one named)"
    )
    r.add_argument(
        "--repository",
        type=Path,
        metavar="DIR",
        help="serve a model repository's model (one, or --model-name) on the local Triton with the engine and "
        "settings its config.pbtxt names: onnxruntime or OpenVINO, instances, threads, streams, batching",
    )
    r.add_argument(
        "--tensorrt",
        nargs="?",
        const="fp16",
        choices=TENSORRT_PRECISIONS,
        help="add the TensorRT accelerator (default fp16)",
    )
    options.cuda_graph(r, help="ask onnxruntime (or TensorRT) to capture CUDA graphs", old=("--cuda-graphs",))
    r.add_argument("--no-warmup", action="store_true", help="no model_warmup section (and no warm-up run when serving)")
    r.add_argument("--print-config", action="store_true", help="print the config.pbtxt written")
    return p


def _model_options(args: argparse.Namespace) -> ModelOptions:
    options = ModelOptions(
        max_batch=args.max_batch_size,
        preferred_batch_sizes=tuple(args.preferred_batch_sizes) if args.preferred_batch_sizes else None,
        max_queue_delay_us=args.max_queue_delay_us,
        instances=args.instances,
        device=args.device,
        warmup=not args.no_warmup,
        tensorrt=args.tensorrt,
        cuda_graphs=args.cuda_graph,
        threads=args.threads,
    )
    options.check()
    return options


def _check_repository(args: argparse.Namespace, out: Console) -> int:
    from .repository import check_repository

    names = [args.artifact] if args.artifact else []
    results = check_repository(args.check_repository, names)
    rows = [
        [r.name, ", ".join(r.versions) or "-", ("ok", "green") if r.ok else ("FAIL", "red"), r.problem or ""]
        for r in results
    ]
    out.table(
        [Column("model"), Column("versions"), Column("result"), Column("problem", wrap=True)],
        rows,
        title=f"{args.check_repository}",
    )
    failed = [r for r in results if not r.ok]
    for r in failed:
        print(
            f"error: {r.problem}" if r.problem and r.problem.startswith(r.name) else f"error: {r.name}: {r.problem}",
            file=sys.stderr,
        )
    return 1 if failed else 0


def _write_repository(args: argparse.Namespace, options: ModelOptions, out: Console, err: Console) -> int:
    from . import repository_model
    from .repository import write_model

    resolved = _resolve(args, err)
    model = repository_model(resolved, options, args.model_name)
    written = write_model(
        args.write_repository, model.name, model.config_text, model.graph, expected_sha256=model.sha256
    )
    if args.print_config:
        out.print(model.config_text.rstrip("\n"))
    s = model.summary
    batching = (
        f"max batch {s.max_batch_size}, preferred {s.preferred_batch_sizes}, max queue delay {s.max_queue_delay_us} us"
        if s.max_batch_size
        else "no batching (max_batch_size 0)"
    )
    out.print(
        f"wrote {written.config_path} and {written.model_path} "
        f"({size_text(written.size_bytes)}, sha256 {written.sha256[:12]})"
        + (", replacing the previous one" if written.replaced else "")
    )
    extras = [", ".join(s.instances)] + ([f"accelerators {', '.join(s.accelerators)}"] if s.accelerators else [])
    extras += [f"warm-up {', '.join(s.warmup)}"] if s.warmup else ["no warm-up"]
    out.print(f"{model.name}: {batching}; {'; '.join(extras)}")
    out.print(f"repository {written.repository} holds: {', '.join(written.models)}")
    out.print(f"serve it with Triton's onnxruntime backend: tritonserver --model-repository {written.repository}")
    return 0


#: flags the repository's config.pbtxt decides when serving --repository (dest -> its default)
_REPOSITORY_DECIDES = {
    "artifact": None, "precision": None, "max_batch_size": 32, "preferred_batch_sizes": None, "max_queue_delay_us": 500,
    "instances": 1, "device": "auto", "threads": None, "tensorrt": None, "cuda_graph": False, "no_warmup": False,
    "write_repository": None, "print_config": False,
}  # fmt: skip


def _serve_repository(args: argparse.Namespace, out: Console, err: Console) -> int:
    from .repository import read_repository_model
    from .server import ServedGraph, check_serve_dependencies

    given = [k for k, default in _REPOSITORY_DECIDES.items() if getattr(args, k) != default]
    if given:
        what = given[0].replace("_", "-")
        raise UserError(
            f"{'the artifact' if what == 'artifact' else '--' + what} goes with serving an artifact: "
            "with --repository the repository's config.pbtxt says what is served and how (choose one with --model-name)"
        )
    check_serve_dependencies()
    model = read_repository_model(args.repository, args.model_name)
    artifact, variant = _origin(model.config_text, model.name)
    served = ServedGraph(artifact, variant, model.graph_path, model.graph, model.warmup_shape)
    out.print(f"serving {model.name} from {model.graph_path.parent.parent} ({model.options.backend} backend)")
    return _serve(args, model.options, out, err, served=served, model_name=model.name)


def _origin(config_text: str, fallback: str) -> tuple[str, str]:
    """The artifact and graph a toolkit-written config.pbtxt names in its header (else the model's name)."""
    import re

    m = re.search(r"^# artifact (\S+), graph (\S+)", config_text, flags=re.M)
    return (m.group(1).rstrip(","), m.group(2)) if m else (fallback, "fp32")


def _serve(
    args: argparse.Namespace,
    options: ModelOptions,
    out: Console,
    err: Console,
    served=None,  # type: ignore[no-untyped-def]
    model_name: str | None = None,
) -> int:
    from .server import LocalServer, ServeOptions, ServerFailed, check_serve_dependencies
    from .supervise import RestartPolicy, Supervisor

    policy = RestartPolicy(max_restarts=args.max_restarts)
    policy.check()
    check_serve_dependencies()
    source = served if served is not None else _resolve(args, err)
    ports = {k: (getattr(args, k) if getattr(args, k) is not None else v) for k, v in DEFAULT_PORTS.items()}
    server = LocalServer(
        source,
        ServeOptions(
            model=options,
            model_name=model_name or args.model_name,
            startup_timeout_s=args.startup_timeout,
            log_path=args.log,
            **ports,
        ),
    )
    supervisor = Supervisor(
        server, policy, on_crash=lambda r: _crashed(err, r, policy), on_restart=lambda r: _restarted(err, r)
    )
    out.print(f"starting Triton for {server.served.name} [{server.served.variant}] from {server.served.path} ...")
    try:
        try:
            server.start()
        except ServerFailed as exc:
            for line in exc.log_tail:
                err.print(f"  | {line}")
            raise
        _announce(out, server)
        try:
            supervisor.run()
        except (KeyboardInterrupt, Terminated):
            out.print("stopping Triton ...")
    finally:
        # a second Ctrl-C or a SIGTERM must not cut the clean-up short
        previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            report = server.stop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    if report.remaining:
        raise UserError(f"server processes still running after the stop: {', '.join(map(str, report.remaining))}")
    killed = f" ({len(report.killed)} killed after the grace period)" if report.killed else ""
    restarts = supervisor.restarts
    crashes = (
        f"; Triton crashed and was restarted {len(restarts)} time{'s' if len(restarts) != 1 else ''}"
        f" (last: {restarts[-1].crash.describe()})"
        if restarts
        else ""
    )
    out.print(f"stopped in {report.seconds:.1f} s{killed}; no server process left{crashes}")
    return 0


def _crashed(err: Console, restart, policy) -> None:  # type: ignore[no-untyped-def]
    """A crash, with its cause and the log's last lines, and the restart to come."""
    crash = restart.crash
    after = f" after {crash.uptime_s:.0f} s" if crash.process != "restart" else ""
    err.print(
        f"Triton crashed{after}: {crash.describe()}; restart {restart.number} "
        f"({restart.in_a_row} of at most {policy.max_restarts} in a row) in {restart.delay_s:g} s",
        style="yellow",
    )
    for line in crash.log_tail[-8:]:
        err.print(f"  | {line}")


def _restarted(err: Console, restart) -> None:  # type: ignore[no-untyped-def]
    if restart.info is not None:
        e = restart.info.endpoints
        err.print(
            f"Triton ready again in {restart.info.start_seconds:.1f} s (restart {restart.number}), "
            f"same endpoints: HTTP {e.http}, gRPC {e.grpc}, metrics {e.metrics_port}"
        )
    else:
        err.print(f"restart {restart.number} failed: {restart.error}", style="yellow")


def _announce(out: Console, server) -> None:  # type: ignore[no-untyped-def]
    info = server.info
    e = info.endpoints
    batching = (
        f"dynamic batching: max batch {info.max_batch_size}, preferred {info.preferred_batch_sizes}, "
        f"max queue delay {info.max_queue_delay_us} us"
        if info.max_batch_size
        else "no batching (max batch 0)"
    )
    out.print(
        f"Triton {info.triton_version} ready in {info.start_seconds:.1f} s: model '{info.model_name}' "
        f"on {info.device} ({', '.join(info.providers)}), {info.instances} instance(s), {batching}"
    )
    if info.device_reason and info.device == "cpu":
        out.print(f"  device: {info.device_reason}")
    out.print(f"  HTTP     {e.http}   POST /v2/models/{info.model_name}/infer")
    out.print(f"  gRPC     {e.grpc}")
    out.print(f"  metrics  {e.metrics}")
    rss = server.rss_bytes()
    procs = ", ".join(f"{role} {' '.join(map(str, pids))}" for role, pids in server.pids().items())
    out.print(f"  processes: {procs}; RSS {sum(rss.values()) / 2**20:.0f} MiB")
    out.print(
        f"  load test: python -m runtime.loadtest {info.artifact}"
        + (f" --precision {info.variant}" if info.variant != "fp32" else "")
        + (f" --model-name {info.model_name}" if info.model_name != info.artifact and info.variant == "fp32" else "")
        + f" --url {e.grpc} --metrics-port {e.metrics_port}"
    )
    out.print("serving until Ctrl-C")


def _run(args: argparse.Namespace) -> int:
    out, err = Console(sys.stdout), Console(sys.stderr)
    if args.check_repository is not None:
        if args.write_repository is not None:
            raise UserError("--check-repository and --write-repository go separately")
        return _check_repository(args, out)
    if args.repository is not None:
        return _serve_repository(args, out, err)
    if not args.artifact:
        raise UserError(
            "name an artifact to serve (or --repository DIR, --check-repository DIR): "
            "see python -m runtime.serve --help"
        )
    options = _model_options(args)
    server_flags = [f"--{k.replace('_', '-')}" for k in DEFAULT_PORTS if getattr(args, k) is not None]
    if args.log is not None:
        server_flags.append("--log")
    if args.write_repository is not None:
        if server_flags:
            raise UserError(f"{server_flags[0]} goes with serving, not with --write-repository")
        return _write_repository(args, options, out, err)
    for flag, given in (
        ("--tensorrt", args.tensorrt),
        ("--cuda-graph", args.cuda_graph),
        ("--print-config", args.print_config),
    ):
        if given:
            raise UserError(
                f"{flag} configures Triton's onnxruntime backend in a written repository (--write-repository); "
                "the local server runs the toolkit's own onnxruntime session"
            )
    return _serve(args, options, out, err)


def _resolve(args: argparse.Namespace, err: Console):  # type: ignore[no-untyped-def]
    """The artifact the command names, as runtime.resolve finds (and, unless --no-rebuild, rebuilds) it."""
    from exporter import artifact as art

    from ..resolve import resolve

    return resolve(
        args.artifact,
        key=art.VariantKey.parse(args.precision) if args.precision else None,
        artifacts_dir=args.artifacts_dir,
        rebuild=not args.no_rebuild,
        say=err.print,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Ctrl-C (SIGINT) stops the server even where this command was started with SIGINT ignored
    # (a background job of a script): serving until Ctrl-C is the contract.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    return run_guarded(lambda: _run(args), interrupted="stopped")


if __name__ == "__main__":
    sys.exit(main())
