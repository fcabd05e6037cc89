"""``--serve``: a search over Triton configurations on the local server, driven by the load test.

Starting from the deployment the bench chose, one setting at a time is varied while the others
stay at the best found so far (a coordinate search; every configuration costs a server start):

1. the instance count (onnxruntime: the threads are shared out between instances; OpenVINO:
   requests in flight on the model's streams);
2. the maximum batch and the preferred batch sizes (requests of the chosen batch may then be
   merged by Triton's dynamic batcher);
3. the maximum queue delay.

Each configuration is first built and checked by the repository validator
(:func:`runtime.serve.build_config`); one it refuses is listed with the reason and never started.
Each accepted one is served by the local Triton (:class:`runtime.serve.LocalServer`) and measured
by the load test (:func:`runtime.loadtest.run_load_test`: parity through the server first, then
requests of the chosen batch size at two client counts, one and two per instance). A
configuration's figure is its best client count's throughput (for a latency target, among the
levels whose p99 meets it). The best configuration wins; the load test's figures are kept beside
the bench's prediction.
"""

from __future__ import annotations

from exporter.errors import UserError, first_line

from ..resolve import Resolved
from ..serve import ConfigError, ModelOptions, build_config, graph_io
from .config import TuneConfig
from .deploy import Candidate, ServedConfig, ServeSearch, ServingOverhead
from .deployment import with_batching
from .overhead import charge_serving_path, describe

Move = tuple[int, int, tuple[int, ...], int]


def _moves(options: ModelOptions, batch: int, threads: int, dimension: int) -> list[Move]:
    """(instances, max batch, preferred, delay) values to try along one dimension from ``options``."""
    inst, mb, pref, delay = options.instances, options.max_batch, tuple(options.preferred), options.max_queue_delay_us
    if dimension == 0:
        values = dict.fromkeys([inst, inst * 2, max(1, inst // 2)])
        top = max(threads, inst) * (2 if options.backend == "openvino" else 1)
        return [(v, mb, pref, delay) for v in values if v <= top]
    if dimension == 1:
        return [(inst, b, p, delay) for b, p in dict.fromkeys([(mb, pref), (2 * batch, (2 * batch,)),
                                                                (2 * batch, (batch, 2 * batch))])]  # fmt: skip
    return [(inst, mb, pref, d) for d in dict.fromkeys([delay, 0, 2000])]


def load_test(config: TuneConfig, resolved: Resolved, options: ModelOptions, batch: int,
              levels: tuple[int, ...], served=None):  # type: ignore[no-untyped-def]  # fmt: skip
    """Serve ``options`` on the local Triton and load-test it at ``levels`` clients; (result, server info).

    ``served`` (a :class:`runtime.serve.ServedGraph`) serves another graph than ``resolved``'s under
    the same model name (the serving path's trivial model; ``resolved.graph`` is then that graph too).
    A server that fails to start is started once more: pytriton's start-up handshake with its Python
    stubs can lose a race on a busy machine (``Connection refused``), which a second start does not.
    """
    from ..loadtest import LoadTestConfig, run_load_test
    from ..serve import LocalServer, ServeOptions, ServerFailed, default_model_name

    name = default_model_name(resolved.artifact.name, str(resolved.key))
    for attempt in (1, 2):
        server = LocalServer(served or resolved, ServeOptions(http_port=0, grpc_port=0, metrics_port=0, model=options,
                                                    startup_timeout_s=240.0))  # fmt: skip
        try:
            info = server.start()
            result = run_load_test(
                resolved,
                LoadTestConfig(
                    url=info.endpoints.grpc, metrics_port=info.endpoints.metrics_port, model_name=name,
                    concurrency=levels, seconds=config.serve_seconds, warmup_seconds=1.0, batch=batch,
                    local_baseline=False, seed=config.seed,
                ),
            )  # fmt: skip
            return result, info
        except ServerFailed:
            if attempt == 2:
                raise
        finally:
            server.stop()
    raise AssertionError("unreachable")


def _record(options: ModelOptions, status: str, reason: str | None = None, **figures: object) -> ServedConfig:
    return ServedConfig(
        instances=options.instances, max_batch_size=options.max_batch, preferred_batch_sizes=list(options.preferred),
        max_queue_delay_us=options.max_queue_delay_us, status=status, reason=reason, **figures,  # type: ignore[arg-type]
    )  # fmt: skip


def evaluate(config: TuneConfig, resolved: Resolved, options: ModelOptions, batch: int) -> ServedConfig:
    """Validate, serve and load-test one configuration."""
    io = graph_io(resolved.graph)
    try:
        build_config("candidate", io, options, warmup_shape=resolved.artifact.manifest.input_shape)
    except ConfigError as exc:
        return _record(options, "refused", str(exc))
    levels = tuple(dict.fromkeys([options.instances, 2 * options.instances]))
    try:
        result, info = load_test(config, resolved, options, batch, levels)
    except UserError as exc:
        return _record(options, "failed", first_line(exc)[:300])
    if result.parity is None or not result.parity.passed:
        why = "; ".join(result.parity.failures()[:1]) if result.parity else "no parity check"
        return _record(options, "parity-failed", why)
    rows = [r for r in result.triton_rows() if r.throughput_ips]
    level_dicts = [
        {"concurrency": r.concurrency, "throughput_ips": r.throughput_ips, "p50_ms": r.median_ms, "p99_ms": r.p99_ms,
         "requests": r.requests, "mean_formed_batch": r.mean_formed_batch, "load_1m": r.load_1m}
        for r in rows
    ]  # fmt: skip
    fitting = rows
    if config.target == "latency":
        fitting = [r for r in rows if r.p99_ms is not None and r.p99_ms <= (config.p99_ms or 0.0)]
    if not fitting:
        why = "no client count met the p99 target" if rows else "no request completed"
        return _record(options, "misses target", why, levels=level_dicts, start_seconds=info.start_seconds)
    best = max(fitting, key=lambda r: r.throughput_ips or 0.0)
    return _record(
        options, "ok", concurrency=best.concurrency, request_batch=batch, throughput_ips=best.throughput_ips,
        p50_ms=best.median_ms, p99_ms=best.p99_ms, requests=best.requests, mean_formed_batch=best.mean_formed_batch,
        start_seconds=info.start_seconds, levels=level_dicts,
    )  # fmt: skip


def search(
    config: TuneConfig, resolved: Resolved, chosen: Candidate, options: ModelOptions, hooks
) -> tuple[ServeSearch, ModelOptions]:  # type: ignore[no-untyped-def]
    """The coordinate search (see the module docstring); the best configuration's options."""
    batch = chosen.batch_size
    threads = (options.threads or 1) * (options.instances if options.backend != "openvino" else 1)
    tried: dict[Move, ServedConfig] = {}
    best_options, best = options, None
    out = ServeSearch()
    for dimension in range(3):
        current = best_options
        for inst, mb, pref, delay in _moves(current, batch, threads, dimension):
            key = (inst, mb, pref, delay)
            if key in tried or len(tried) >= config.serve_configs:
                continue
            candidate = with_batching(current, inst, mb, pref, delay)
            hooks.step(f"Triton: {inst} instances, max batch {mb}, preferred {list(pref)}, delay {delay} us")
            got = evaluate(config, resolved, candidate, batch)
            tried[key] = got
            out.configs.append(got)
            if got.status == "ok" and (best is None or (got.throughput_ips or 0) > (best.throughput_ips or 0)):
                best, best_options = got, candidate
    out.chosen = best
    start = tried.get((options.instances, options.max_batch, tuple(options.preferred), options.max_queue_delay_us))
    if start is not None and start.status == "ok":
        out.as_measured_ips = start.throughput_ips
    if best is None:
        out.note = "no Triton configuration met the target: the deployment keeps the bench's settings"
        return out, options
    out.parity_through_server = True
    hooks.step("final check: the bench, the winning configuration through Triton, the bench again")
    final_check(config, resolved, chosen, best_options, best, out)
    predicted = chosen.best.throughput_ips if chosen.best else None
    out.predicted_ips, out.served_ips = predicted, best.throughput_ips
    if predicted and best.throughput_ips:
        out.served_over_predicted = best.throughput_ips / predicted
        out.note = (
            f"served through Triton: {best.throughput_ips:.0f} img/s ({best.concurrency} clients sending batches of "
            f"{batch}), {out.served_over_predicted:.2f}x the {predicted:.0f} img/s the bench predicted"
        )
        if out.as_measured_ips:
            out.as_measured_over_predicted = out.as_measured_ips / predicted
            out.note += (
                f"; the bench's own setting through Triton ({options.instances} instances, max batch "
                f"{options.max_batch}): {out.as_measured_ips:.0f} img/s, {out.as_measured_over_predicted:.2f}x"
            )
    if out.served_over_bench_now is not None:
        out.note = (out.note or "") + (
            f"; final check: the bench {out.bench_before_ips:.0f} img/s before and {out.bench_after_ips:.0f} after, "
            f"Triton {out.served_final_ips:.0f} between: {out.served_over_bench_now:.2f}x"
        )
    charge_serving_path(out, chosen)
    path = describe(out)
    if path:
        out.note = (out.note or "") + f"\n{path}"
    if out.check:
        out.note = (out.note or "") + f"\n{out.check}"
    return out, best_options


def final_check(config: TuneConfig, resolved: Resolved, chosen: Candidate, options: ModelOptions,
                best: ServedConfig, out: ServeSearch) -> None:  # fmt: skip
    """The chosen candidate in the bench, the winning configuration through Triton, the bench again.

    The sweep, the confirmation and the search happen minutes apart on a machine others may share;
    this puts the two measurements side by side (the bench's figure is the mean of before and after).
    """
    from ..bench.engines import ModelContext
    from ..bench.throughput import Setting, measure_throughput_interleaved, prepare_streams
    from ..bench.timing import TimingPolicy
    from ..sessions import SessionConfig

    def bench() -> float | None:
        import numpy as np

        from exporter.data import random_input

        ctx = ModelContext(
            name=resolved.artifact.name, artifact=resolved.artifact, graphs={str(resolved.key): resolved.graph},
            graph_paths={str(resolved.key): str(resolved.path)}, reference=None, device=chosen_device(chosen),
            session=SessionConfig(device=chosen_device(chosen), allow_spinning=False), threads=_threads(chosen),
        )  # fmt: skip
        x = random_input(tuple(resolved.artifact.manifest.input_shape), chosen.batch_size, seed=config.seed).numpy()
        workers = prepare_streams(chosen.engine, ctx, chosen.precision, x, Setting(chosen.streams, chosen.concurrency))
        seconds = max(2.0, config.serve_seconds)
        policy = TimingPolicy(min_samples=5, min_seconds=seconds, max_seconds=4 * seconds, warmup=2)
        timed = measure_throughput_interleaved([workers], policy)[0]
        ctx.release()
        return float(1.0 / np.median(timed.windows)) if timed.windows else None

    level = best.concurrency or 1
    path = out.serving_overhead = ServingOverhead(
        protocol="grpc", concurrency=level, request_batch=chosen.batch_size, instances=options.instances,
        max_batch_size=options.max_batch,
    )  # fmt: skip
    try:
        serving_path(config, resolved, options, chosen.batch_size, level, path)
        before = bench()
        result, _info = load_test(config, resolved, options, chosen.batch_size, (level,))
        after = bench()
        serving_path(config, resolved, options, chosen.batch_size, level, path)
    except UserError as exc:
        out.note = f"final check failed: {first_line(exc)}"
        return
    rows = [r for r in result.triton_rows() if r.throughput_ips]
    if before is None or after is None or not rows or result.parity is None or not result.parity.passed:
        return
    out.bench_before_ips, out.bench_after_ips = before, after
    out.served_final_ips, out.served_final_p99_ms = rows[0].throughput_ips, rows[0].p99_ms
    out.served_over_bench_now = (rows[0].throughput_ips or 0.0) / ((before + after) / 2)


def chosen_device(c: Candidate) -> str:
    return "cuda" if c.engine == "tensorrt" or "CUDA" in str(c.settings.get("providers", "")) else "cpu"


def _threads(c: Candidate) -> int:
    return (
        (c.threads_per_stream or 1) * c.streams
        if c.engine != "openvino"
        else (int(str(c.settings.get("inference_num_threads", "0"))) or (c.threads_per_stream or 1) * c.streams)
    )


def serving_path(config: TuneConfig, resolved: Resolved, options: ModelOptions, batch: int, level: int,
                 record: ServingOverhead) -> None:  # fmt: skip
    """Load-test the trivial model (:func:`runtime.tune.overhead.identity_graph`) as the winner is served
    (``options``, ``batch``, ``level`` clients) and add its requests per second to ``record``.

    Its graph lives in a scratch folder inside the tune output while it is served (hidden, ``.partial``,
    removed after). The server's own workspace stays where every load test's goes: it holds pytriton's
    Unix sockets, whose paths must stay short. A failure is noted in ``record``, never raised: the
    search's figures stand without it.
    """
    from dataclasses import replace

    from exporter.files import scratch_dir

    from ..serve import ServedGraph
    from .overhead import identity_graph

    config.output.mkdir(parents=True, exist_ok=True)
    try:
        graph = identity_graph(resolved.graph)
        with scratch_dir(config.output, "serving-path", tempfiles=False) as folder:
            path = folder / "identity.onnx"
            path.write_bytes(graph)
            manifest = resolved.artifact.manifest
            served = ServedGraph(
                name=resolved.artifact.name, variant=str(resolved.key), path=path, graph=graph,
                input_shape=tuple(manifest.input_shape),
                min_size=tuple(manifest.min_size) if manifest.min_size else None,  # type: ignore[arg-type]
            )  # fmt: skip
            result, _info = load_test(config, replace(resolved, graph=graph), options, batch, (level,), served=served)
    except UserError as exc:
        record.note = f"the serving path was not measured: {first_line(exc)[:300]}"
        return
    rows = [r for r in result.triton_rows() if r.throughput_rps]
    if result.parity is None or not result.parity.passed or not rows:
        record.note = "the serving path's trivial model " + ("gave no figure" if rows or not result.parity
                                                             else "failed parity through the server")  # fmt: skip
        return
    record.requests_per_s.append(float(rows[0].throughput_rps or 0.0))
    if rows[0].median_ms is not None:
        record.p50_ms.append(float(rows[0].median_ms))
