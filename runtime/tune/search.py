"""The tune run: screen every candidate with the bench, confirm the finalists together, choose, deploy.

1. **Screen**: one benchmark run (:func:`runtime.bench.run_benchmark`, throughput mode) of the
   artifact over engines x precisions x stream splits of the threads x batch sizes. Every
   setting is parity-checked before it is timed (a failure is a candidate listed with why);
   its rows are kept under ``OUTPUT/bench/`` like any bench run's.
2. **Budget**: reduced precisions outside ``--max-loss`` are listed as over budget.
3. **Confirm**: the best few (for a latency target, those whose screened latency can meet it,
   and the lowest-latency one) are prepared and checked again, then timed together until each
   has a p99 (:mod:`runtime.tune.confirm`).
4. **Choose**: throughput target: the highest confirmed throughput; latency target: the highest
   confirmed throughput whose p99 meets ``--p99-ms`` (none: nothing is deployed, exit 1).
5. **Deploy**: the Triton repository (:mod:`runtime.tune.deployment`), ``deploy.json``, and
   always ``tune.json`` and ``pareto.png``; with ``--serve`` the Triton configuration search
   (:mod:`runtime.tune.triton`) refines the repository before ``deploy.json`` is written.

Nothing here prints; progress goes through :class:`TuneHooks`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from exporter import artifact as art
from exporter.errors import Terminated, UserError
from exporter.files import AtomicWriter, made_folder, sha256_bytes

from ..bench import BenchConfig, Hooks, run_benchmark
from ..bench.rows import RunDocument
from ..bench.timing import TimingPolicy
from ..openvino_model import hint_for
from ..resolve import Resolved, resolve
from .candidates import candidates_from, pick_finalists, precisions_to_sweep, rank, stream_counts
from .config import TuneConfig
from .deploy import (
    PARETO_PNG,
    ArtifactRef,
    Candidate,
    DeployRecord,
    Machine,
    ServeSearch,
    Target,
    TuneReport,
    write_deploy,
    write_report,
)

if TYPE_CHECKING:  # confirm is imported where a run confirms (as before)
    from .confirm import Confirmed


def _ignore(_line: str) -> None:
    return None


@dataclass
class TuneHooks:
    note: Callable[[str], None] = _ignore
    step: Callable[[str], None] = _ignore
    tick: Callable[[str], None] = _ignore


@dataclass
class TuneResult:
    report: TuneReport
    deploy: DeployRecord | None
    output: Path
    files: list[Path] = field(default_factory=list)
    bench: RunDocument | None = None

    @property
    def exit_code(self) -> int:
        return 0 if self.deploy is not None else 1


def _bench_config(config: TuneConfig, precisions: list[str], threads: int) -> BenchConfig:
    return BenchConfig(
        models=(config.artifact,),
        batch_sizes=tuple(config.batch_sizes),
        engines=tuple(config.engines),
        precisions=tuple(precisions),
        device=config.device,
        threads=threads,
        timing=TimingPolicy(
            min_samples=config.screen_windows,
            min_seconds=config.screen_seconds,
            max_seconds=config.screen_max_seconds,
            warmup=2,
        ),  # fmt: skip
        seed=config.seed,
        streams=tuple(stream_counts(threads)),
        parity=True,
        roofline=False,
        references=(config.reference,) if config.reference else (),
        output_dir=config.output / "bench",
        artifacts_dir=config.artifacts_dir,
        rebuild=config.rebuild,
    )


def _machine(doc: RunDocument, threads: int) -> Machine:
    env = doc.environment
    versions = {k: (str(env[k]) if env.get(k) is not None else None) for k in ("onnxruntime", "openvino", "torch")}
    return Machine(
        device=doc.device,
        cpu_model=env.get("cpu_model"),
        cpu_cores=env.get("cpu_cores"),
        cpu_flags=env.get("cpu_flags") or {},
        gpu_name=env.get("gpu_name"),
        threads=threads,
        versions=versions,
        load_average_at_start=list(env.get("load_average_at_start") or []),
    )


def _target(config: TuneConfig) -> Target:
    return Target(kind=config.target, p99_ms=config.p99_ms, loss=config.loss.describe())  # type: ignore[arg-type]


def run_tune(config: TuneConfig, hooks: TuneHooks | None = None) -> TuneResult:
    """Screen, confirm, choose and deploy (see the module docstring); never prints."""
    hooks = hooks or TuneHooks()
    config.validate()
    with made_folder(config.output):  # a run that fails removes the folders it made (a bad artifact, Ctrl-C)
        return _tune(config, hooks)


def _tune(config: TuneConfig, hooks: TuneHooks) -> TuneResult:
    import torch

    out = config.output
    base = resolve(
        config.artifact, artifacts_dir=config.artifacts_dir, rebuild=config.rebuild, reference=config.reference,
        say=hooks.note,
    )  # fmt: skip
    manifest = base.artifact.manifest
    threads = config.threads or torch.get_num_threads()
    from ..sessions import cuda_usable

    cuda = config.device == "cuda" or (config.device == "auto" and cuda_usable())
    precisions, skipped = precisions_to_sweep(config, manifest, cuda)
    for p, why in skipped.items():
        hooks.note(f"{p}: not swept ({why})")

    bench_hooks = Hooks(note=hooks.note, step=hooks.step, tick=hooks.tick, done=hooks.step)
    hooks.step(
        f"screening {', '.join(config.engines)} x {', '.join(precisions)} x streams "
        f"{', '.join(map(str, stream_counts(threads)))} of {threads} threads x batch "
        f"{', '.join(map(str, config.batch_sizes))}"
    )
    screened = run_benchmark(_bench_config(config, precisions, threads), bench_hooks)
    if screened.interrupted_by == "SIGTERM":
        raise Terminated()
    if screened.interrupted_by:
        raise KeyboardInterrupt()
    doc = screened.document
    skipped.update(doc.skipped_engines)
    candidates = candidates_from(doc, config.loss)
    if not any(c.status == "ok" for c in candidates):
        reasons = "; ".join(dict.fromkeys(f"{c.engine} {c.precision}: {c.reason}" for c in candidates))
        raise UserError(f"no candidate could be timed: {reasons or 'nothing ran'}")

    finalists = pick_finalists(candidates, config)
    lead = None
    candidates, confirmed = _confirm(config, base, doc, candidates, finalists, precisions, threads, hooks)
    ranked = rank(candidates, config)
    chosen = ranked[0] if ranked and ranked[0].meets_target else None
    runner_up = next((c for c in ranked[1:] if c.meets_target), None) if chosen else None
    if chosen is not None and runner_up is not None and confirmed is not None:
        lead = confirmed.ratio(chosen, runner_up, config.seed)

    from .report import why as explain

    if chosen is not None:
        why = explain(chosen, runner_up, lead, config.target)
    else:
        why = _no_choice(ranked, config)
    artifact_ref = ArtifactRef(
        name=manifest.name, directory=str(base.artifact.directory), variant=str(base.key),
        graph=str(base.path), sha256=sha256_bytes(base.graph),
    )  # fmt: skip
    bench_results = str(screened.saved.run_dir) if screened.saved and screened.saved.run_dir else None
    report = TuneReport(
        created=art.now(), artifact=artifact_ref, target=_target(config), machine=_machine(doc, threads),
        bench_results=bench_results, candidates=ranked, skipped=skipped, chosen=chosen, runner_up=runner_up,
        why=why, notes=list(doc.notes),
    )  # fmt: skip
    files = _write_report(out, report, config)
    result = TuneResult(report, None, out, files, doc)
    if chosen is None:
        return result
    result.deploy = _deploy(config, report, chosen, runner_up, threads, hooks, files)
    return result


def _confirm(
    config: TuneConfig, base: Resolved, doc: RunDocument, candidates: list[Candidate], finalists: list[Candidate],
    precisions: list[str], threads: int, hooks: TuneHooks,
) -> tuple[list[Candidate], Confirmed | None]:  # fmt: skip
    """Time the finalists again, together; the candidates with their confirmed figures (or why they failed)
    and the confirmation, None where there are no finalists."""
    import torch

    from .confirm import confirm, graph_keys, model_context

    if not finalists:
        return candidates, None
    from exporter.reference import rebuild as rebuild_reference

    hooks.step("confirming: " + "; ".join(c.label for c in finalists))
    reference = rebuild_reference(base.artifact.manifest, config.reference)
    session = _bench_config(config, precisions, threads).session_config(doc.device, threads)
    ctx = model_context(
        config.artifact, graph_keys(finalists), device=doc.device, session=session, threads=threads,
        artifacts_dir=config.artifacts_dir, rebuild=config.rebuild, reference_code=config.reference,
        reference=reference, say=hooks.note,
    )  # fmt: skip
    policy = TimingPolicy(
        min_samples=config.confirm_windows, min_seconds=0.0, max_seconds=config.confirm_max_seconds, warmup=2
    )
    torch.set_num_threads(threads)
    try:
        confirmed = confirm(ctx, finalists, policy, seed=config.seed, on_step=hooks.tick)
    finally:
        ctx.release()
    updated = []
    for c in candidates:
        if c.key in confirmed.figures:
            c = c.model_copy(update={"confirmed": confirmed.figures[c.key]})
        elif c.key in confirmed.failed:
            c = c.model_copy(update={"status": "failed", "reason": f"confirming: {confirmed.failed[c.key]}"})
        updated.append(c)
    return updated, confirmed


def _no_choice(ranked: list[Candidate], config: TuneConfig) -> str:
    timed = [c for c in ranked if c.confirmed is not None]
    if config.target == "latency" and timed:
        measured = [c for c in timed if c.confirmed and c.confirmed.p99_ms is not None]
        if measured:
            best = min(measured, key=lambda c: c.confirmed.p99_ms)  # type: ignore[union-attr,return-value]
            return (
                f"no candidate meets p99 <= {config.p99_ms:g} ms: the lowest measured p99 is "
                f"{best.confirmed.p99_ms:.3g} ms ({best.label})"  # type: ignore[union-attr]
            )
        return f"no candidate reached the {100} requests a p99 needs within the confirmation's time"
    return "no candidate could be confirmed: " + "; ".join(f"{c.label}: {c.reason}" for c in ranked if c.reason)


def _write_report(out: Path, report: TuneReport, config: TuneConfig) -> list[Path]:
    from .plot import pareto_png

    files = [write_report(out, report)]
    title = (
        f"{report.artifact.name} on {report.machine.cpu_model or report.machine.device} "
        f"({report.machine.threads} threads): throughput against p99 latency"
    )
    png = pareto_png(report.candidates, title, config.p99_ms, report.chosen)
    if png:
        writer = AtomicWriter(out)
        try:
            writer.write_bytes(out / PARETO_PNG, png)
            writer.commit()
        except BaseException:
            writer.abort()
            raise
        files.append(out / PARETO_PNG)
    return files


def _deploy(
    config: TuneConfig,
    report: TuneReport,
    chosen: Candidate,
    runner_up: Candidate | None,
    threads: int,
    hooks: TuneHooks,
    files: list[Path],
) -> DeployRecord:
    from . import deployment

    resolved = deployment.resolved_graph(
        chosen, config.artifact, config.artifacts_dir, config.rebuild, config.reference, hooks.note
    )
    # the precision hint the chosen graph was verified with (an auto graph's float layers in bf16): served so
    hint = hint_for(resolved.artifact, str(resolved.key)) if chosen.engine == "openvino" else None
    options = deployment.model_options(chosen, report.machine.device, threads, hint)
    notes = [f"chosen by python -m runtime.tune ({config.target} target): {report.why}"]
    notes += deployment.caveats(chosen, report.machine, hint)
    served: ServeSearch | None = None
    if config.serve:
        from .triton import search

        hooks.step("searching Triton configurations with the load test")
        served, options = search(config, resolved, chosen, options, hooks)
    triton = deployment.write(resolved, config.output, options, notes)
    hooks.note(f"wrote the Triton repository {triton.repository} ({triton.model_name}, {triton.backend} backend)")
    record = DeployRecord(
        created=art.now(), artifact=report.artifact, target=report.target, machine=report.machine, chosen=chosen,
        runner_up=runner_up, why=report.why, candidates=report.candidates, cold_start=chosen.cold_start,
        triton=triton, served=served, bench_results=report.bench_results,
        notes=[*notes, f"1-minute load average when the deployment was written: {os.getloadavg()[0]:.1f}"],
    )  # fmt: skip
    files.append(Path(triton.repository))
    files.append(write_deploy(config.output, record))
    return record
