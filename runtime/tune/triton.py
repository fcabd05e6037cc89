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

import os
from dataclasses import dataclass

from exporter.errors import UserError, first_line

from ..resolve import Resolved
from ..serve import ConfigError, ModelOptions, build_config, graph_io
from .config import TuneConfig
from .deploy import BenchSetting, Candidate, ServedConfig, ServeSearch, ServingOverhead
from .deployment import candidate_setting, served_setting, with_batching
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
    hooks.step(
        "final check: the bench (the chosen candidate and the served configuration), the winning "
        "configuration through Triton, the bench again"
    )
    final_check(config, resolved, chosen, best_options, best, out)
    summarize(out, chosen, options, best)
    return out, best_options


def summarize(out: ServeSearch, chosen: Candidate, options: ModelOptions, best: ServedConfig) -> None:
    """The search's figures beside the bench's, the serving path and the 15% check, into ``out`` and its note.

    ``options``: the search's starting configuration (the chosen candidate as the bench measured it)."""
    predicted = chosen.best.throughput_ips if chosen.best else None
    out.predicted_ips, out.served_ips = predicted, best.throughput_ips
    failed = out.note  # a "final check failed: ..." from final_check: kept, after the figures that were measured
    out.note = None
    if predicted and best.throughput_ips:
        out.served_over_predicted = best.throughput_ips / predicted
        out.note = (
            f"served through Triton: {best.throughput_ips:.0f} img/s ({best.concurrency} clients sending batches of "
            f"{chosen.batch_size}), {out.served_over_predicted:.2f}x the {predicted:.0f} img/s the bench predicted"
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
    setting = out.served_config_setting
    if out.served_final_over_served_config_bench is not None and setting is not None:
        out.note = (out.note or "") + (
            f"; the bench of the served configuration ({setting.label}): {out.served_config_bench_before_ips:.0f} "
            f"img/s before and {out.served_config_bench_after_ips:.0f} after, Triton {out.served_final_ips:.0f} "
            f"between: {out.served_final_over_served_config_bench:.2f}x"
        )
    elif out.served_config_note:
        out.note = (out.note or "") + f"; {out.served_config_note}"
    charge_serving_path(out, chosen)
    path = describe(out)
    if path:
        out.note = (out.note or "") + f"\n{path}"
    if out.check:
        out.note = (out.note or "") + f"\n{out.check}"
    if failed:
        out.note = f"{out.note}\n{failed}" if out.note else failed


def final_check(config: TuneConfig, resolved: Resolved, chosen: Candidate, options: ModelOptions,
                best: ServedConfig, out: ServeSearch) -> None:  # fmt: skip
    """The bench, the winning configuration through Triton, the bench again; the serving path around them.

    The sweep, the confirmation and the search happen minutes apart on a machine others may share;
    this puts the measurements side by side. Each bench times two settings in interleaved rounds: the
    chosen candidate as it was measured (the like-for-like figure) and the served configuration
    (:func:`runtime.tune.deployment.served_setting`: the winner's instances, threads, requests in flight
    and the batch the server formed), the prediction the 15% check compares with. A figure is the mean
    of before and after.
    """
    level = best.concurrency or 1
    path = out.serving_overhead = ServingOverhead(
        protocol="grpc", concurrency=level, request_batch=chosen.batch_size, instances=options.instances,
        max_batch_size=options.max_batch,
    )  # fmt: skip
    as_chosen = candidate_setting(chosen, _threads(chosen))
    served = out.served_config_setting = served_setting(chosen, options, best, _threads(chosen),
                                                        _graph_batch(resolved.graph))  # fmt: skip
    settings = [as_chosen] if _same(served, as_chosen) else [as_chosen, served]
    try:
        serving_path(config, resolved, options, chosen.batch_size, level, path)
        before = bench_settings(config, resolved, chosen, settings)
        result, _info = load_test(config, resolved, options, chosen.batch_size, (level,))
        after = bench_settings(config, resolved, chosen, settings)
        serving_path(config, resolved, options, chosen.batch_size, level, path)
    except UserError as exc:
        out.note = f"final check failed: {first_line(exc)}"
        return
    rows = [r for r in result.triton_rows() if r.throughput_ips]
    if not rows or result.parity is None or not result.parity.passed:
        return
    out.served_final_ips, out.served_final_p99_ms = rows[0].throughput_ips, rows[0].p99_ms
    served_now = rows[0].throughput_ips or 0.0
    (b0, a0), (b1, a1) = (before[0], after[0]), (before[-1], after[-1])
    if b0.ips is not None and a0.ips is not None:
        out.bench_before_ips, out.bench_after_ips = b0.ips, a0.ips
        out.served_over_bench_now = served_now / ((b0.ips + a0.ips) / 2)
    if b1.ips is not None and a1.ips is not None:
        out.served_config_bench_before_ips, out.served_config_bench_after_ips = b1.ips, a1.ips
        out.served_config_bench_ips = (b1.ips + a1.ips) / 2
        out.served_final_over_served_config_bench = served_now / out.served_config_bench_ips
    else:
        out.served_config_note = f"the served configuration was not benched: {b1.error or a1.error}"


@dataclass(frozen=True)
class Benched:
    """One setting's figure in one bench: images per second (the median window), or why none."""

    ips: float | None
    error: str | None = None


def _same(a: BenchSetting, b: BenchSetting) -> bool:
    """Whether two settings time the same thing (the formed batch they came from aside)."""
    return a.model_dump(exclude={"formed_batch"}) == b.model_dump(exclude={"formed_batch"})


def _graph_batch(graph: bytes) -> int | None:
    """The graph's fixed batch dimension (its first input's first), None where it is symbolic."""
    try:
        first = graph_io(graph).inputs[0]
    except (ConfigError, IndexError):
        return None
    return None if not first.shape or first.batch_symbolic else int(first.shape[0])  # type: ignore[arg-type]


def bench_settings(config: TuneConfig, resolved: Resolved, chosen: Candidate,
                   settings: list[BenchSetting]) -> list[Benched]:  # fmt: skip
    """Time ``settings`` of ``chosen``'s engine and graph together, in interleaved rounds (one figure each).

    A setting that cannot be prepared or timed gives its reason, not a figure; the others still run.
    """
    import numpy as np

    from exporter.data import random_input

    from ..bench.engines import ModelContext
    from ..bench.throughput import Setting, measure_throughput_interleaved, prepare_streams
    from ..bench.timing import TimingPolicy
    from ..sessions import SessionConfig

    device = chosen_device(chosen)
    shape = tuple(resolved.artifact.manifest.input_shape)
    got: list[Benched | None] = [None] * len(settings)
    contexts, workers, which = [], [], []
    for i, s in enumerate(settings):
        ctx = ModelContext(
            name=resolved.artifact.name, artifact=resolved.artifact, graphs={str(resolved.key): resolved.graph},
            graph_paths={str(resolved.key): str(resolved.path)}, reference=None, device=device,
            session=SessionConfig(device=device, allow_spinning=False), threads=s.threads,
        )  # fmt: skip
        contexts.append(ctx)
        x = random_input(shape, s.batch, seed=config.seed).numpy()
        try:
            workers.append(prepare_streams(s.engine, ctx, s.precision, x, Setting(s.streams, s.in_flight)))
            which.append(i)
        # any engine's failure at a batch size never timed before (OpenVINO's reshape, a session's
        # allocation): that setting's figure is missing, the final check's others stand
        except Exception as exc:
            got[i] = Benched(None, f"{type(exc).__name__}: {first_line(exc)[:200]}")
    seconds = max(2.0, config.serve_seconds)
    policy = TimingPolicy(min_samples=5, min_seconds=seconds, max_seconds=4 * seconds * max(1, len(workers)),
                          warmup=2)  # fmt: skip
    try:
        timed = measure_throughput_interleaved(workers, policy) if workers else []
    finally:
        for ctx in contexts:
            ctx.release()
    for i, t in zip(which, timed, strict=True):
        got[i] = Benched(float(1.0 / np.median(t.windows))) if t.windows else Benched(None, t.error or "no window")
    return [g if g is not None else Benched(None, "not timed") for g in got]


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
    if rows[0].cpu_busy_cores is not None:
        record.busy_cores.append(float(rows[0].cpu_busy_cores))
        record.cores = os.cpu_count() or 1  # the /proc/stat CPUs the busy share is counted over
    if rows[0].median_ms is not None:
        record.p50_ms.append(float(rows[0].median_ms))
