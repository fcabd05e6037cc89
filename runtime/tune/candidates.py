"""The sweep's candidates: what to sweep, the bench's rows turned into candidates, the budget, the ranking."""

from __future__ import annotations

from collections.abc import Sequence

from exporter.artifact import Manifest, ParityRecord

from ..bench.rows import BenchRow, ParityEntry, RunDocument
from .config import LossBudget, TuneConfig
from .deploy import Candidate, ColdStartFigures, Figures

#: precisions that are not graph variants (OpenVINO's hint)
HINT_PRECISIONS = ("bf16",)


def stream_counts(threads: int) -> list[int]:
    """The splits of ``threads`` into streams of equal threads: 1, 2, 4, ... that divide it."""
    out, n = [], 1
    while n <= threads:
        if threads % n == 0:
            out.append(n)
        n *= 2
    return out


def precisions_to_sweep(config: TuneConfig, manifest: Manifest, cuda: bool) -> tuple[list[str], dict[str, str]]:
    """fp32, int8, bf16 (OpenVINO's hint; the bench names a CPU without bf16), fp16 on CUDA, and every
    other variant the artifact records (offline-optimized graphs, a mixed-precision graph); the
    precisions left out, with why."""
    if config.precisions:
        return list(dict.fromkeys(config.precisions)), {}
    skipped: dict[str, str] = {}
    wanted = ["fp32", "int8", "bf16"]
    if cuda:
        wanted.append("fp16")
    else:
        skipped["fp16"] = "fp16 runs on CUDA; on this CPU it would be emulated"
    for key in manifest.variants:
        if key in wanted:
            continue
        if key.startswith("fp16") and not cuda:
            skipped[key] = "fp16 runs on CUDA"
            continue
        search = manifest.variants[key].precision_search
        if search is not None and search.precision == "fp16" and not cuda:  # --precision auto --target cuda
            skipped[key] = "fp16 (the precision search's graph for CUDA) runs on CUDA"
            continue
        if key.endswith(".opt-cuda") and not cuda:
            skipped[key] = "optimized for CUDA"
            continue
        if key.endswith(".opt-cpu") and cuda:
            skipped[key] = "optimized for the CPU"
            continue
        wanted.append(key)
    return wanted, skipped


def figures_of(row: BenchRow) -> Figures:
    return Figures(
        throughput_ips=row.throughput_ips or 0.0,
        throughput_ci_low_ips=row.throughput_ci_low_ips,
        throughput_ci_high_ips=row.throughput_ci_high_ips,
        p50_ms=row.median_ms,
        p90_ms=row.p90_ms,
        p99_ms=row.p99_ms,
        max_ms=row.max_ms,
        requests=row.samples or 0,
        windows=row.windows,
        unstable=row.unstable,
        unstable_reasons=list(row.unstable_reasons),
        load_average=row.load_average,
    )


def cold_of(row: BenchRow) -> ColdStartFigures | None:
    c = row.cold_start
    if c is None:
        return None
    return ColdStartFigures(
        create_s=c.create_s, compile_s=c.compile_s, build_s=c.build_s, engine_cached=c.engine_cached,
        first_inference_s=c.first_inference_s, total_s=c.to_first_result_s,
    )  # fmt: skip


def _accuracy(records: Sequence[ParityRecord], batch: int) -> dict[str, float | None]:
    """The worst of every comparison at ``batch`` over the records that checked it."""
    results = [r for rec in records for r in rec.results if r.batch_size == batch]
    sqnr = [r.sqnr_db for r in results if r.sqnr_db is not None]
    cos = [r.cosine_min for r in results if r.cosine_min is not None]
    err = [r.max_abs_err for r in results if r.max_abs_err is not None]
    drops = [(rec.accuracy.pytorch_fp32 - rec.accuracy.onnx) * 100 for rec in records if rec.accuracy is not None]
    return {
        "sqnr_db": min(sqnr) if sqnr else None,
        "cosine_min": min(cos) if cos else None,
        "max_abs_err": max(err) if err else None,
        "accuracy_drop_pp": max(drops) if drops else None,
    }


def _parity_for(parity: Sequence[ParityEntry], row: BenchRow) -> list[ParityRecord]:
    return [
        p.record
        for p in parity
        if p.model == row.model and p.engine == row.engine and p.precision == row.precision
        and row.batch_size in p.record.batch_sizes
    ]  # fmt: skip


def over_budget(c: Candidate, budget: LossBudget) -> str | None:
    """Why a candidate is outside the accuracy budget, or None (fp32 always stays in it)."""
    if c.precision == "fp32":
        return None
    if budget.min_sqnr_db is not None and c.sqnr_db is not None and c.sqnr_db < budget.min_sqnr_db:
        return f"SQNR {c.sqnr_db:.1f} dB against PyTorch fp32, below the budget's {budget.min_sqnr_db:g} dB"
    if budget.max_accuracy_drop_pp is not None:
        if c.accuracy_drop_pp is None:
            return "no labelled held-out set to judge a top-1 drop (--max-loss in dB judges by SQNR)"
        if c.accuracy_drop_pp > budget.max_accuracy_drop_pp:
            return f"top-1 drops {c.accuracy_drop_pp:.2f} points, above the budget's {budget.max_accuracy_drop_pp:g}"
    return None


def candidates_from(doc: RunDocument, budget: LossBudget) -> list[Candidate]:
    """One candidate per throughput row of the screening run, with its accuracy and the budget applied."""
    out = []
    for row in doc.rows:
        if row.mode != "throughput":
            continue
        acc = _accuracy(_parity_for(doc.parity, row), row.batch_size)
        c = Candidate(
            engine=row.engine,
            precision=row.precision,
            streams=row.streams or 1,
            threads_per_stream=row.threads_per_stream,
            concurrency=row.concurrency or 1,
            batch_size=row.batch_size,
            status=row.status,
            reason=row.reason,
            screen=figures_of(row) if row.ok else None,
            cold_start=cold_of(row),
            settings=dict(row.settings),
            **acc,
        )
        if c.status == "ok":
            why = over_budget(c, budget)
            if why:
                c = c.model_copy(update={"status": "over budget", "reason": why})
        out.append(c)
    return out


def latency_of(f: Figures) -> float | None:
    """The latency a candidate is judged by: its p99 where 100 requests support one."""
    return f.p99_ms


def pick_finalists(candidates: Sequence[Candidate], config: TuneConfig) -> list[Candidate]:
    """The few to confirm: the best by the screen's throughput (for a latency target, among those whose
    screened latency can still meet it), plus, for a latency target, the lowest-latency one."""
    ok = [c for c in candidates if c.status == "ok" and c.screen is not None]
    by_speed = sorted(ok, key=lambda c: -c.screen.throughput_ips)  # type: ignore[union-attr]
    if config.target == "throughput":
        return by_speed[: config.finalists]
    limit = config.p99_ms or 0.0

    def screened_latency(c: Candidate) -> float:
        f = c.screen
        assert f is not None
        return f.p99_ms if f.p99_ms is not None else (f.p50_ms or 0.0)

    possible = [c for c in by_speed if screened_latency(c) <= limit]
    chosen = possible[: config.finalists]
    if ok:
        fastest = min(ok, key=screened_latency)
        if fastest not in chosen:
            chosen.append(fastest)
    return chosen


def rank(candidates: list[Candidate], config: TuneConfig) -> list[Candidate]:
    """Candidates in ranked order (rank 1 first): confirmed ones meeting the target by throughput, then the
    confirmed ones missing it, then the screened ones, then those without figures."""

    def meets(c: Candidate) -> bool | None:
        if c.status != "ok" or c.confirmed is None:
            return None
        if config.target == "throughput":
            return True
        p99 = latency_of(c.confirmed)
        return p99 is not None and p99 <= (config.p99_ms or 0.0)

    marked = [c.model_copy(update={"meets_target": meets(c)}) for c in candidates]

    def order(c: Candidate) -> tuple[int, float]:
        if c.status != "ok" or c.best is None:
            return (4, 0.0)
        if c.confirmed is not None:
            return (0 if c.meets_target else 1, -c.confirmed.throughput_ips)
        return (2, -(c.screen.throughput_ips if c.screen else 0.0))

    ranked = sorted(marked, key=order)
    return [c.model_copy(update={"rank": i + 1}) for i, c in enumerate(ranked)]
