"""Confirming the finalists: each prepared again, parity-checked again, then all timed together in
interleaved windows (whatever their batch sizes) until each has a p99 (100 requests) or the time is up.

The screen timed each (model, batch) group apart, with few windows; a choice between candidates of
different batch sizes made from those figures would compare measurements taken at different
moments of a shared machine. Here they share the rounds.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from exporter import artifact as art
from exporter.data import random_input
from exporter.errors import UserError, first_line

from ..bench.engines import ModelContext, graph_key
from ..bench.gate import check_runner, passed_at
from ..bench.runner import SPREAD_LIMIT
from ..bench.stats import Interval, ratio_interval
from ..bench.throughput import Setting, ThroughputTimed, Workers, figures, measure_throughput_interleaved
from ..bench.throughput import prepare_streams as prepare
from ..bench.timing import TimingPolicy
from ..parity import DEFAULT_SEED
from ..resolve import resolve
from ..sessions import SessionConfig
from .config import P99_REQUESTS
from .deploy import Candidate, Figures


@dataclass
class Confirmed:
    """The finalists' new figures (by candidate key), their windows, and the ones that could not be timed."""

    figures: dict[tuple[str, str, int, int, int], Figures] = field(default_factory=dict)
    windows: dict[tuple[str, str, int, int, int], list[float]] = field(default_factory=dict)
    failed: dict[tuple[str, str, int, int, int], str] = field(default_factory=dict)

    def ratio(self, a: Candidate, b: Candidate, seed: int = 0) -> Interval | None:
        """b's time per image over a's (above 1: a is faster), with its bootstrap interval."""
        wa, wb = self.windows.get(a.key), self.windows.get(b.key)
        if not wa or not wb:
            return None
        return ratio_interval(wb, wa, np.random.default_rng([seed, 31]))


def model_context(
    artifact_ref: str,
    keys: Sequence[str],
    *,
    device: str,
    session: SessionConfig,
    threads: int,
    artifacts_dir: Path,
    rebuild: bool,
    reference_code: str | None,
    reference: object | None,
    say: Callable[[str], None],
) -> ModelContext:
    """What the engines share for one artifact: its verified graphs for ``keys`` and its PyTorch reference."""
    graphs, paths = {}, {}
    artifact = None
    for key in dict.fromkeys(keys):
        got = resolve(
            artifact_ref, key=art.VariantKey.parse(key), artifacts_dir=artifacts_dir, rebuild=rebuild,
            reference=reference_code, say=say,
        )  # fmt: skip
        artifact = got.artifact
        graphs[key], paths[key] = got.graph, str(got.path)
    assert artifact is not None
    return ModelContext(
        name=artifact.name, artifact=artifact, graphs=graphs, graph_paths=paths, reference=reference,  # type: ignore[arg-type]
        device=device, session=session, threads=threads,
    )  # fmt: skip


def confirm(
    ctx: ModelContext,
    finalists: Sequence[Candidate],
    policy: TimingPolicy,
    *,
    seed: int = 0,
    max_ci_width: float = 0.2,
    on_step: Callable[[str], None] = lambda _m: None,
) -> Confirmed:
    """Prepare, check and time ``finalists`` together (see the module docstring)."""
    out = Confirmed()
    ready: list[tuple[Candidate, Workers]] = []
    cache: dict = {}
    try:
        for c in finalists:
            shape = tuple(ctx.artifact.manifest.input_shape)
            x = random_input(shape, c.batch_size, seed=seed + c.batch_size).numpy()
            on_step(f"confirming {c.label}: preparing")
            try:
                workers = prepare(c.engine, ctx, c.precision, x, Setting(c.streams, c.concurrency))
            except Exception as exc:
                out.failed[c.key] = first_line(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
                continue
            if ctx.reference is not None:
                record = check_runner(ctx, workers.probe, x.shape, None, seed=DEFAULT_SEED + c.batch_size, cache=cache)
                ok, why = passed_at(record, c.batch_size, None)
                if not ok:
                    workers.close()
                    out.failed[c.key] = f"parity: {why}"
                    continue
            ready.append((c, workers))
        if not ready:
            return out
        on_step(f"confirming {len(ready)} finalists together until each has {P99_REQUESTS} requests")
        timed: list[ThroughputTimed] = measure_throughput_interleaved(
            [w for _, w in ready],
            policy,
            on_round=lambda n: on_step(f"confirming: round {n}"),
            min_requests=P99_REQUESTS,
        )
        rng = np.random.default_rng([seed, 17])
        load = os.getloadavg()[0]
        for (c, workers), t in zip(ready, timed):
            if t.error is not None or not t.windows:
                out.failed[c.key] = t.error or "no windows"
                continue
            figs = figures(t, workers.batch, rng, max_ci_width, SPREAD_LIMIT, load)
            f = figs.fields
            out.windows[c.key] = list(t.windows)
            out.figures[c.key] = Figures(
                throughput_ips=float(f["throughput_ips"]),  # type: ignore[arg-type]
                throughput_ci_low_ips=f["throughput_ci_low_ips"],  # type: ignore[arg-type]
                throughput_ci_high_ips=f["throughput_ci_high_ips"],  # type: ignore[arg-type]
                p50_ms=f["median_ms"],  # type: ignore[arg-type]
                p90_ms=f["p90_ms"],  # type: ignore[arg-type]
                p99_ms=f["p99_ms"],  # type: ignore[arg-type]
                max_ms=f["max_ms"],  # type: ignore[arg-type]
                requests=int(f["samples"]),  # type: ignore[call-overload]
                windows=len(t.windows),
                unstable=bool(figs.own_reasons),
                unstable_reasons=figs.own_reasons,
                load_average=round(load, 2),
            )
    finally:
        for _, workers in ready:
            try:
                workers.close()
            except Exception:
                pass
    return out


def graph_keys(finalists: Sequence[Candidate]) -> list[str]:
    keys = []
    for c in finalists:
        key = graph_key(c.engine, c.precision)
        if key is not None:
            keys.append(key)
    return list(dict.fromkeys(keys))
