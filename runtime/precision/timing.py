"""Candidates timed against fp32, interleaved in rounds in the deployment engine, with bootstrap intervals."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from exporter.artifact import Artifact

from ..bench.engines import ModelContext, prepare
from ..bench.stats import Interval, median_interval, ratio_interval
from ..bench.timing import TimingPolicy, measure_interleaved
from ..openvino_model import precision_hint
from ..sessions import SessionConfig

#: Enough for a stable median at batch 1 on a shared 2-core machine, short enough for a dozen graphs.
POLICY = TimingPolicy(min_samples=30, min_seconds=2.0, max_seconds=120.0, warmup=5, warmup_seconds=2.0)
#: Seed of every bootstrap here: one set of samples always gives the same interval.
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class Timing:
    latency_ms: Interval
    #: fp32 median / this graph's median (above 1: faster than fp32)
    speedup: Interval
    samples: int


def time_candidates(
    artifact: Artifact,
    fp32: bytes,
    candidates: Sequence[bytes],
    x: np.ndarray,
    engine: str,
    threads: int,
    policy: TimingPolicy = POLICY,
    *,
    device: str = "cpu",
    precision: str = "int8",
    openvino_hints: Sequence[str | None] = (),
) -> tuple[Interval, list[Timing]]:
    """fp32's latency and each candidate's latency and speed-up, all timed in one interleaved group on
    ``device`` (``cuda``: onnxruntime's CUDA provider, IO bound, which the engine reads back and refuses
    a session that fell back to the CPU); ``precision`` names the candidates' graphs (int8, fp16);
    ``openvino_hints[i]``: the precision hint OpenVINO compiles candidate ``i`` with (None: its default)."""
    session = SessionConfig(device=device, threads=threads, allow_spinning=False)
    hints = [None, *openvino_hints] + [None] * (len(candidates) - len(openvino_hints))  # fp32 first, no hint
    runners = []
    for i, (graph, hint) in enumerate(zip([fp32, *candidates], hints)):
        ctx = ModelContext(
            name=artifact.name, artifact=artifact, graphs={"fp32": fp32, precision: graph},
            graph_paths={"fp32": artifact.manifest.file, precision: f"candidate {i}"}, reference=None,
            device=device, session=session, threads=threads,
            # always given: a candidate is not the artifact's variant of that name, whose recorded hint is not its
            openvino_hints={precision: precision_hint(precision, hint)} if i else {},
        )  # fmt: skip
        runners.append(prepare(engine, ctx, "fp32" if i == 0 else precision, x))
    try:
        timed = measure_interleaved(runners, policy)
    finally:
        for r in runners:
            r.close()
    for t in timed:
        if t.error:
            raise RuntimeError(f"timing {t.runner.graph}: {t.error}")
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    base = np.asarray(timed[0].samples) * 1e3
    out = []
    for t in timed[1:]:
        ms = np.asarray(t.samples) * 1e3
        out.append(Timing(median_interval(ms, rng), ratio_interval(base, ms, rng), len(ms)))
    return median_interval(base, rng), out
