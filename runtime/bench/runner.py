"""The benchmark run: plan, check, time interleaved, save every group as it finishes.

:func:`run_benchmark` never prints: it reports through :class:`Hooks` and returns a typed
:class:`BenchResult`. Order of work:

1. validate the configuration, prove the output folder writable, and locate every model
   (a bad name, a user model without ``--reference``, a size the graph cannot take: one
   error before anything runs);
2. decide the device once, find which engines can run (the others are named with why);
3. measure the machine's peaks (every precision's, best of several probes) and memory bandwidth;
4. per model: resolve its graphs (rebuilding stale ones, said in one line), rebuild its
   PyTorch reference, refuse batches that cannot fit in memory, check every engine's
   parity with PyTorch; then per (input size, batch): time the engines interleaved,
   compute statistics, ratios and roofline figures, and save the rows.

A failure of one model or one (batch, engine) becomes a failed row with its one-line reason;
Ctrl-C and SIGTERM stop the run and keep every saved row.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from exporter import artifact as art
from exporter.data import random_input
from exporter.errors import Terminated, UserError, first_line
from exporter.files import finite_or_none as finite
from exporter.memory import check_fits
from exporter.reference import rebuild
from exporter.zoo import get_spec, list_models

from ..machine import (
    DeviceChoice,
    MachinePeak,
    compute_precision,
    describe,
    environment,
    measure_peak,
    merge_peaks,
    resolve_device,
)
from ..parity import DEFAULT_SEED as PARITY_SEED
from ..parity import check_sizes
from ..resolve import resolve
from .baseline import BaselineFile, compare_runs, load_baseline
from .config import BenchConfig, numeric_precision, parse_precision, parse_references
from .engines import (
    TORCH_ENGINES,
    ModelContext,
    Runner,
    graph_key,
    openvino_bf16_missing,
    precisions_for,
    prepare,
    unavailable_reason,
)
from .gate import ReferenceCache, check_onnxruntime, check_runner, passed_at, worst_abs_err
from .plot import latency_png
from .roofline import count_flops, roofline, weight_bytes
from .rows import BenchRow, ColdStart, ParityEntry, PlacementEntry, RunDocument
from .stats import Interval, ratio_interval, summarize, summarize_samples
from .store import ResultStore, SaveOutcome, new_run_id
from .throughput import (
    NOT_IN_THROUGHPUT,
    THROUGHPUT_ENGINES,
    Setting,
    ThroughputTimed,
    Workers,
    measure_throughput_interleaved,
    prepare_streams,
    settings_from,
)
from .throughput import figures as throughput_figures
from .throughput import vs_best as throughput_vs_best
from .timing import Timed, measure_interleaved


def _ignore(*_args: object) -> None:
    return None


@dataclass
class Hooks:
    """How a run reports while it works (the command turns these into lines and a progress bar)."""

    note: Callable[[str], None] = _ignore  # one-line facts: rebuilds, skipped engines, refusals
    start: Callable[[int], None] = _ignore  # the number of (model, size, batch) groups
    step: Callable[[str], None] = _ignore  # what is being done now
    tick: Callable[[str], None] = _ignore  # finer detail (engine preparation, timing rounds): for a live display
    done: Callable[[str], None] = _ignore  # one group finished, with its figures


@dataclass
class BenchResult:
    document: RunDocument
    saved: SaveOutcome | None = None
    interrupted_by: str | None = None  # "SIGINT" or "SIGTERM"

    @property
    def rows(self) -> list[BenchRow]:
        return self.document.rows

    @property
    def exit_code(self) -> int:
        if self.interrupted_by:
            return 143 if self.interrupted_by == "SIGTERM" else 130
        gate = self.document.baseline
        return 0 if all(r.ok for r in self.rows) and (gate is None or gate.passed) else 1


@dataclass
class ModelPlan:
    """One ``--models`` entry, located and checked before anything runs."""

    ref: str
    name: str
    key: art.VariantKey | None
    manifest: art.Manifest | None
    builder: str | None
    sizes: list[tuple[int, int]] = field(default_factory=list)  # empty: the export size

    @property
    def is_user_model(self) -> bool:
        return self.manifest is not None and self.manifest.source.kind != "zoo"


def _user_model_message(manifest: art.Manifest) -> str:
    src = manifest.source
    origin = f" (exported from {src.ref})" if src.ref else ""
    hint = src.ref or "FILE.py:Builder"
    return (
        f"{manifest.name} is your own model{origin}: timing PyTorch and checking parity need its code: "
        f"add --reference {hint} (code named in a manifest is never imported), "
        "or time only the graph with --no-parity --engines onnxruntime openvino"
    )


def plan_models(config: BenchConfig) -> list[ModelPlan]:
    """Locate every ``--models`` entry and check what it needs; every mistake is one error now."""
    named, plain = parse_references(config.references)
    needs_reference = config.parity or any(e in TORCH_ENGINES for e in config.engines)
    refs = list(list_models()) if list(config.models) == ["all"] else list(config.models)
    plans: list[ModelPlan] = []
    for ref in refs:
        loc = art.locate(ref, config.artifacts_dir)
        manifest = None if loc.zoo_default else art.read_manifest(loc.directory)
        if loc.zoo_default and loc.name not in list_models():
            try:
                get_spec(loc.name)
            except UserError as exc:
                raise UserError(f"{exc} (and there is no artifact {loc.name} in {config.artifacts_dir})") from None
        if loc.zoo_default and not config.rebuild:
            out = (
                "" if config.artifacts_dir == art.DEFAULT_ARTIFACTS_DIR else f" --artifacts-dir {config.artifacts_dir}"
            )
            raise UserError(
                f"no artifact for {loc.name} in {config.artifacts_dir}: export it: python -m exporter {loc.name}{out}"
            )
        name = manifest.name if manifest else loc.name
        plan = ModelPlan(ref, name, loc.key, manifest, named.get(name))
        if plan.is_user_model and plan.builder is None:
            plan.builder = plain
        if plan.is_user_model and plan.builder is None and needs_reference:
            assert manifest is not None
            raise UserError(_user_model_message(manifest))
        if config.input_sizes:
            dynamic = manifest is not None and manifest.dynamic_size
            if not dynamic:
                shape = manifest.input_shape if manifest else get_spec(loc.name).input_shape
                raise UserError(
                    f"{name} was exported at a fixed size {'x'.join(map(str, shape))}: "
                    "--input-size applies to artifacts exported with --dynamic-size"
                )
            assert manifest is not None
            _, h, w = manifest.input_shape
            plan.sizes = check_sizes((h, w), manifest.min_size, list(config.input_sizes))
        elif manifest is not None and manifest.dynamic_size:
            _, h, w = manifest.input_shape
            plan.sizes = [(h, w)]
        plans.append(plan)
    if len(plans) != len({p.name for p in plans}):
        raise UserError("the same model is named twice in --models")
    if plain and not any(p.is_user_model for p in plans):
        raise UserError(f"--reference {plain}: none of the models is a user-model artifact")
    return plans


def run_benchmark(config: BenchConfig, hooks: Hooks | None = None) -> BenchResult:
    """Run the benchmark ``config`` describes (see the module docstring); never prints."""
    hooks = hooks or Hooks()
    config.validate()
    plans = plan_models(config)
    baseline = load_baseline(config.baseline) if config.baseline is not None else None
    store = ResultStore(config.output_dir, new_run_id())
    store.prove_writable()
    threads = config.threads or torch.get_num_threads()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _Run(config, hooks, store, plans, threads, previous_threads, baseline).execute()
    except BaseException:
        store.remove_if_empty()  # a run that stopped before measuring leaves no empty folder behind
        raise
    finally:
        torch.set_num_threads(previous_threads)


def _why(exc: BaseException) -> str:
    return first_line(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {first_line(exc)}"


def _fmt_ms(ms: float) -> str:
    return f"{ms:.3g} ms" if ms < 100 else f"{ms:.0f} ms"


#: A median more than this many times the fastest call means the calls were not alike: on a
#: contended CPU an OpenMP engine (PyTorch eager) waits a scheduler time slice at every barrier
#: and its calls turn bimodal (0.2 ms or 70-100 ms for lenet5 on this project's 2-core VM), which
#: a confidence interval alone does not reveal when most calls land in the slow mode.
SPREAD_LIMIT = 2.0


def _load() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


#: The unstable reason of a row measured far faster than its precision's measured peak allows.
BELOW_FLOOR = "faster than the measured peak allows (the peak probe met a busier CPU)"
#: How far below its floor a row may land before the probe, not the row, is suspect. The peak is
#: the best of several libraries' GEMMs; convolution kernels can still run a few percent faster on
#: the same CPU (measured here: onnxruntime's NCHWc kernels on resnet18 and VGG-16 at 305-318
#: GFLOP/s against a 294 GFLOP/s onnxruntime MatMul).
PLAUSIBLE_BELOW_FLOOR = 0.8


def with_roofline(row: BenchRow, machine: MachinePeak | None) -> BenchRow:
    """``row`` with its roofline figures against the peak of the precision it computes in (fp32,
    TF32, fp16, bf16 or int8; see :func:`runtime.machine.compute_precision`), recomputed if it had
    some. A row whose precision has no peak on this machine gets none."""
    if not row.ok or machine is None or row.gflop is None or row.weight_bytes is None or not row.median_ms:
        return row
    engine_says = row.settings.get("compute_precision")  # TensorRT's int8 computes in int8: see runtime.bench.tensorrt
    precision = (
        str(engine_says)
        if isinstance(engine_says, str)
        else compute_precision(row.precision, row.device, row.tf32 if row.tf32 is not None else machine.tf32)
    )
    peak = machine.peak_gflops(precision)
    reasons = [r for r in row.unstable_reasons if r != BELOW_FLOOR]
    if peak is None:
        cleared = dict.fromkeys(("achieved_gflops", "fraction_of_peak", "floor_ms", "time_over_floor", "bound"))
        return row.model_copy(
            update=dict(**cleared, peak_precision=None, unstable_reasons=reasons, unstable=bool(reasons))
        )
    roof = roofline(row.gflop * 1e9, row.weight_bytes, row.median_ms, peak, machine.bandwidth_gbs, machine.cache_bytes)
    if roof.time_over_floor < PLAUSIBLE_BELOW_FLOOR:
        reasons.append(BELOW_FLOOR)
    return row.model_copy(
        update=dict(
            achieved_gflops=finite(roof.achieved_gflops),
            fraction_of_peak=finite(roof.fraction_of_peak),
            floor_ms=finite(roof.floor_ms),
            time_over_floor=finite(roof.time_over_floor),
            bound=roof.bound,
            peak_precision=precision,
            unstable_reasons=reasons,
            unstable=bool(reasons),
        )
    )


def _where(row: BenchRow) -> str:
    return f"{row.model} {'x'.join(map(str, row.input_shape))} batch {row.batch_size}"


class _Run:
    def __init__(
        self,
        config: BenchConfig,
        hooks: Hooks,
        store: ResultStore,
        plans: list[ModelPlan],
        threads: int,
        default_threads: int,
        baseline: BaselineFile | None = None,
    ):
        self.config, self.hooks, self.store, self.plans = config, hooks, store, plans
        self.threads, self.default_threads = threads, default_threads
        self.baseline = baseline
        self.precisions = [parse_precision(p) for p in dict.fromkeys(config.precisions)]
        self.batches = list(dict.fromkeys(config.batch_sizes))
        self.group_index = 0
        #: --placement-audit: (model, precision, input shape) -> where its onnxruntime graph's nodes ran
        self.audits: dict[tuple[str, str, tuple[int, ...]], PlacementEntry] = {}

    # --- setup ------------------------------------------------------------------------------

    def note(self, line: str) -> None:
        if line not in self.doc.notes:
            self.doc.notes.append(line)
        self.hooks.note(line)

    def execute(self) -> BenchResult:
        config = self.config
        needs_torch = any(e in TORCH_ENGINES for e in config.engines)
        choice: DeviceChoice = resolve_device(config.session_config(config.device, self.threads), needs_torch)
        self.choice = choice
        self.machine = describe(choice)  # reads /proc/cpuinfo: once per run, not per row
        self.session = config.session_config(choice.device, self.threads)
        self.doc = RunDocument(
            run_id=self.store.run_id,
            started=art.now(),
            device=choice.device,
            device_reason=choice.reason,
            environment=environment(choice, self.threads),
            config=config.record(),
        )
        where = f"CUDA ({choice.gpu_name})" if choice.device == "cuda" else "CPU"
        self.note(f"running on {where}: {choice.reason}")
        self.engines: list[str] = []
        for engine in dict.fromkeys(config.engines):
            why = unavailable_reason(engine, choice.device)
            if why is None and config.throughput and engine not in THROUGHPUT_ENGINES:
                why = NOT_IN_THROUGHPUT.get(engine, "not in throughput mode")
            if why:
                self.doc.skipped_engines[engine] = why
                self.note(f"{engine}: not available ({why})")
            else:
                self.engines.append(engine)
        self.openvino_precisions_blocked: set[str] = set()
        if "openvino" in self.engines and "bf16" in self.precisions:
            why = openvino_bf16_missing()
            if why:
                self.doc.skipped_engines["openvino bf16"] = why
                self.openvino_precisions_blocked.add("bf16")
                self.note(f"openvino bf16: not available ({why})")
        if not self.engines:
            raise UserError(
                "no engine can run here: " + "; ".join(f"{e}: {why}" for e, why in self.doc.skipped_engines.items())
            )
        if choice.device == "cpu" and any(e in TORCH_ENGINES for e in self.engines):
            policy = self.doc.environment.get("omp_wait_policy")
            self.note(
                "PyTorch eager runs each operator on an OpenMP team whose threads spin-wait "
                f"(OMP_WAIT_POLICY={policy or 'unset'}) and must all run at every barrier: on a busy CPU its "
                "calls can turn 100x slower (such rows are flagged), and its spinning takes CPU from the engine "
                "timed next; onnxruntime runs with session.intra_op.allow_spinning=0. OMP_WAIT_POLICY=PASSIVE "
                "(set before starting) stops the spinning, at some cost to PyTorch's speed."
            )

        interrupted: str | None = None
        try:
            if config.roofline:
                self.hooks.step("measuring the machine: each precision's peak and the memory bandwidth")
                self.doc.machine = measure_peak(choice, self.session, self.threads, precisions=self.peak_precisions())
            total = sum(max(1, len(p.sizes)) * len(self.batches) for p in self.plans)
            self.hooks.start(total)
            for plan in self.plans:
                self.run_model(plan)
            if self.doc.machine is not None and self.doc.measured:
                # the peak is a maximum: probed again at the end, in case the CPU was busier at the start
                self.hooks.step("measuring the machine again: each precision's peak and the memory bandwidth")
                again = measure_peak(choice, self.session, self.threads, precisions=self.peak_precisions())
                self.doc.machine = merge_peaks(self.doc.machine, again)
                self.doc.rows = [with_roofline(r, self.doc.machine) for r in self.doc.rows]
            self.doc.status = "complete"
        except KeyboardInterrupt:
            interrupted = "SIGINT"
        except Terminated:
            interrupted = "SIGTERM"
        if interrupted:
            self.doc.status = "interrupted"
            self.doc.interrupted_by = interrupted
        self.doc.finished = art.now()
        self.summarize()
        if self.baseline is not None and self.doc.rows:
            self.doc.baseline = compare_runs(
                self.doc.rows, self.doc.environment, self.baseline, self.config.max_slowdown, self.config.seed
            )
        saved = self.store.finish(self.doc, latency_png)
        return BenchResult(self.doc, saved, interrupted)

    def peak_precisions(self) -> list[str]:
        """The compute precisions whose peaks this run's rows are held to (PyTorch's fp32 always)."""
        tf32 = self.session.tf32
        wanted = [compute_precision("fp32", self.choice.device, tf32)]
        wanted += [compute_precision(p, self.choice.device, tf32) for p in self.precisions]
        if "tensorrt" in self.engines:
            from ..tensorrt import COMPUTE_PRECISION

            wanted += [COMPUTE_PRECISION[p] for p in precisions_for("tensorrt", self.precisions)]
        return list(dict.fromkeys(wanted))

    # --- one model --------------------------------------------------------------------------

    def contenders(self, plan: ModelPlan) -> list[tuple[str, str]]:
        precisions = self.precisions
        if plan.key is not None and not plan.key.is_base:
            precisions = [str(plan.key)]
        out = []
        for engine in self.engines:
            for p in precisions_for(engine, precisions):
                if engine == "openvino" and p in self.openvino_precisions_blocked:
                    continue
                out.append((engine, p))
        return out

    def run_model(self, plan: ModelPlan) -> None:
        contenders = self.contenders(plan)
        sizes: list[tuple[int, int] | None] = list(plan.sizes) or [None]
        if not contenders:
            self.note(f"{plan.name}: no engine runs any of the precisions {', '.join(self.precisions)}")
            for _ in sizes:
                for _ in self.batches:
                    self.hooks.done(f"{plan.name}: nothing to time")
            return
        self.hooks.step(f"{plan.name}: preparing")
        try:
            ctx, blocked = self.prepare_model(plan, contenders)
        except Exception as exc:
            reason = f"{type(exc).__name__}: {first_line(exc)}" if not isinstance(exc, UserError) else first_line(exc)
            shape = plan.manifest.input_shape if plan.manifest else get_spec(plan.name).input_shape
            for size in sizes:
                rows = [
                    self.failed_row(plan.name, e, p, b, self.shape_at(shape, size), "failed", reason)
                    for b in self.batches
                    for e, p in contenders
                ]
                self.save(rows)
                for b in self.batches:
                    self.hooks.done(f"{plan.name} batch {b}: failed: {reason}")
            self.note(f"{plan.name}: not timed: {reason}")
            return
        try:
            for size in sizes:
                self.run_size(ctx, plan, contenders, blocked, size)
        finally:
            ctx.release()

    def prepare_model(self, plan: ModelPlan, contenders: list[tuple[str, str]]) -> tuple[ModelContext, dict[str, str]]:
        config = self.config
        first = resolve(
            plan.ref,
            key=plan.key,
            artifacts_dir=config.artifacts_dir,
            rebuild=config.rebuild,
            reference=plan.builder,
            say=self.note,
        )
        artifact = first.artifact
        graphs = {str(first.key): first.graph}
        paths = {str(first.key): str(first.path)}
        blocked: dict[str, str] = {}
        needed = dict.fromkeys(k for e, p in contenders if (k := graph_key(e, p)) is not None)
        for key in needed:
            if key in graphs:
                continue
            self.hooks.step(f"{plan.name}: {key} graph")
            try:
                got = resolve(
                    str(artifact.directory),
                    key=art.VariantKey.parse(key),
                    artifacts_dir=config.artifacts_dir,
                    rebuild=config.rebuild,
                    reference=plan.builder,
                    say=self.note,
                )
            except UserError as exc:
                blocked[key] = f"no {key} graph: {first_line(exc)}"
                self.note(f"{plan.name}: {blocked[key]}")
                continue
            graphs[key], paths[key] = got.graph, str(got.path)
        reference = None
        if plan.builder is not None or not plan.is_user_model:
            self.hooks.step(f"{plan.name}: PyTorch reference")
            # Rebuilt at torch's own thread count, as the exporter ran: BatchNorm calibration of a
            # random zoo model sums in a thread-count-dependent order, and the rebuilt weights must
            # match the exported fingerprint bit for bit.
            torch.set_num_threads(self.default_threads)
            try:
                reference = rebuild(artifact.manifest, plan.builder)
            finally:
                torch.set_num_threads(self.threads)
        elif config.roofline:
            self.note(f"{plan.name}: no FLOPs (roofline) without its PyTorch model: give --reference")
        ctx = ModelContext(
            name=artifact.name,
            artifact=artifact,
            graphs=graphs,
            graph_paths=paths,
            reference=reference,
            device=self.choice.device,
            session=self.session,
            threads=self.threads,
            cuda_graph=config.cuda_graph if self.choice.device == "cuda" else "off",
            torch_compile_mode=config.torch_compile_mode,
            trt_bounds=self.trt_bounds(plan, artifact.manifest),
        )
        if config.fp16_io:
            self.half_io_graphs(ctx, contenders)
        return ctx, blocked

    def trt_bounds(
        self, plan: ModelPlan, manifest: art.Manifest
    ) -> tuple[tuple[int, int, int], tuple[int, int, int]] | None:
        """TensorRT's profile range: batch 1 at the manifest's smallest size to this run's largest batch
        and size (:func:`runtime.bench.tensorrt.bounds_for`)."""
        if "tensorrt" not in self.engines:
            return None
        from ..tensorrt import bounds_for

        export = (int(manifest.input_shape[1]), int(manifest.input_shape[2]))
        low = tuple(manifest.min_size) if manifest.dynamic_size and manifest.min_size else None
        return bounds_for(low, export, self.batches, list(plan.sizes))  # type: ignore[arg-type]

    def half_io_graphs(self, ctx: ModelContext, contenders: list[tuple[str, str]]) -> None:
        """``--fp16-io``: onnxruntime's fp16 graphs with the boundary Cast pair removed (float16 inputs and
        outputs; the bench binds fp16 device buffers), derived in memory from the verified variant."""
        from exporter.halfio import half_io

        for engine, precision in contenders:
            if engine != "onnxruntime" or numeric_precision(precision) != "fp16" or precision not in ctx.graphs:
                continue
            if precision in ctx.graph_notes:
                continue
            derived = half_io(ctx.graphs[precision])
            note: dict[str, str | int | float | bool | None] = {"fp16_io": True}
            if derived.changed:
                ctx.graphs[precision] = derived.graph
                note["boundary_casts_removed"] = ", ".join(derived.removed)
            else:
                note["boundary_casts_removed"] = "none (the graph has no boundary Cast pair)"
            if derived.kept:
                note["fp16_io_kept_float"] = "; ".join(f"{k}: {v}" for k, v in derived.kept.items())
            ctx.graph_notes[precision] = note
            self.note(f"{ctx.name} {precision}: --fp16-io: boundary Casts removed: {note['boundary_casts_removed']}")

    @staticmethod
    def shape_at(shape: tuple[int, ...], size: tuple[int, int] | None) -> tuple[int, ...]:
        return (shape[0], *size) if size else tuple(shape)

    def failed_row(
        self, model: str, engine: str, precision: str, batch: int, shape: tuple[int, ...], status: str, reason: str
    ) -> BenchRow:
        return BenchRow(
            run_id=self.doc.run_id,
            model=model,
            engine=engine,
            precision=precision,
            device=self.choice.device,
            machine=self.machine,
            batch_size=batch,
            input_shape=list(shape),
            threads=self.threads,
            status=status,  # type: ignore[arg-type]
            reason=reason,
        )

    def failed_setting(
        self, model: str, c: tuple[str, str, Setting], batch: int, shape: tuple[int, ...], status: str, reason: str
    ) -> BenchRow:
        row = self.failed_row(model, c[0], c[1], batch, shape, status, reason)
        return row.model_copy(update=dict(mode="throughput", streams=c[2].streams, concurrency=c[2].concurrency))

    def save(self, rows: list[BenchRow]) -> None:
        self.doc.rows.extend(rows)
        self.store.save(self.doc)

    # --- one input size ---------------------------------------------------------------------

    def run_size(
        self,
        ctx: ModelContext,
        plan: ModelPlan,
        contenders: list[tuple[str, str]],
        blocked: dict[str, str],
        size: tuple[int, int] | None,
    ) -> None:
        config = self.config
        shape = self.shape_at(ctx.artifact.manifest.input_shape, size)
        refused: dict[int, str] = {}
        if ctx.reference is not None:
            for batch in self.batches:
                try:
                    check_fits(ctx.reference.model, shape, batch, what=ctx.name, engines=max(1, len(contenders)))
                except UserError as exc:
                    refused[batch] = first_line(exc)
                    self.note(f"refused: {refused[batch]}")
        fitting = [b for b in self.batches if b not in refused]

        ort_parity: dict[str, object] = {}  # precision -> ParityRecord, or the reason it could not run
        if config.parity and fitting:
            for engine, precision in contenders:
                if engine != "onnxruntime" or precision in blocked:
                    continue
                self.hooks.step(
                    f"{ctx.name}: parity of onnxruntime {precision} at batch {', '.join(map(str, fitting))}"
                )
                try:
                    record = check_onnxruntime(ctx, precision, fitting, [size] if size else [])
                    self.doc.parity.append(
                        ParityEntry(model=ctx.name, engine=engine, precision=precision, record=record)
                    )
                    ort_parity[precision] = record
                except Exception as exc:
                    ort_parity[precision] = f"parity check failed to run: {type(exc).__name__}: {first_line(exc)}"

        if config.placement_audit and fitting:
            self.audit_placements(ctx, contenders, blocked, ort_parity, fitting[0], shape)

        flops = None
        if config.roofline and ctx.reference is not None and self.doc.machine is not None:
            flops = count_flops(ctx.reference.model, shape)

        for batch in self.batches:
            where = f"{ctx.name} batch {batch}" + (f" at {size[0]}x{size[1]}" if size else "")
            if batch in refused:
                rows = [self.failed_row(ctx.name, e, p, batch, shape, "refused", refused[batch]) for e, p in contenders]
                self.save(rows)
                self.hooks.done(f"{where}: refused ({refused[batch]})")
                continue
            group = self.run_throughput_group if config.throughput else self.run_group
            rows = group(ctx, contenders, blocked, ort_parity, batch, shape, size, flops, where)
            self.save(rows)
            self.hooks.done(f"{where}: " + ", ".join(self.describe_row(r) for r in rows))

    def audit_placements(
        self,
        ctx: ModelContext,
        contenders: list[tuple[str, str]],
        blocked: dict[str, str],
        ort_parity: dict[str, object],
        batch: int,
        shape: tuple[int, ...],
    ) -> None:
        """``--placement-audit``: where every node of each onnxruntime graph runs (runtime.bench.placement)."""
        from .placement import audit_graph

        x = random_input(shape, batch, seed=self.config.seed + batch).numpy()
        for engine, precision in contenders:
            if engine != "onnxruntime" or precision in blocked or isinstance(ort_parity.get(precision), str):
                continue
            self.hooks.step(f"{ctx.name}: placement audit of onnxruntime {precision} at batch {batch}")
            try:
                placement, summary = audit_graph(ctx.graphs[precision], ctx.session, x)
            except Exception as exc:
                self.note(f"{ctx.name} {precision}: placement audit failed to run: {_why(exc)}")
                continue
            settings = dict(ctx.graph_notes.get(precision, {}))
            settings.update(prefer_nhwc=ctx.session.prefer_nhwc, cudnn_search=ctx.session.cudnn_conv_algo_search)
            entry = PlacementEntry(
                model=ctx.name,
                engine=engine,
                precision=precision,
                input_shape=list(shape),
                batch_size=batch,
                clean=summary.clean,
                line=summary.line,
                placement=placement,
                settings=settings,
            )
            self.doc.placements.append(entry)
            self.audits[(ctx.name, precision, tuple(shape))] = entry
            self.note(f"placement {ctx.name} {precision}: {summary.line}")

    @staticmethod
    def describe_row(row: BenchRow) -> str:
        if row.ok and row.mode == "throughput" and row.throughput_ips is not None:
            return f"{row.label} {row.throughput_ips:.4g} img/s" + (" (unstable)" if row.unstable else "")
        if row.ok and row.median_ms is not None:
            return f"{row.label} {_fmt_ms(row.median_ms)}" + (" (unstable)" if row.unstable else "")
        return f"{row.label} {row.status}"

    # --- one (model, size, batch) group -----------------------------------------------------

    def run_group(
        self,
        ctx: ModelContext,
        contenders: list[tuple[str, str]],
        blocked: dict[str, str],
        ort_parity: dict[str, object],
        batch: int,
        shape: tuple[int, ...],
        size: tuple[int, int] | None,
        flops: int | None,
        where: str,
    ) -> list[BenchRow]:
        config = self.config
        self.group_index += 1
        rows: dict[tuple[str, str], BenchRow] = {}
        ready: list[tuple[tuple[str, str], Runner, str | None, float | None]] = []

        def fail(c: tuple[str, str], status: str, reason: str) -> None:
            rows[c] = self.failed_row(ctx.name, c[0], c[1], batch, shape, status, reason)

        x = random_input(shape, batch, seed=config.seed + batch).numpy()
        reference_cache: ReferenceCache = {}
        try:
            for c in contenders:
                engine, precision = c
                key = graph_key(engine, precision)
                if key is not None and key in blocked:
                    fail(c, "failed", blocked[key])
                    continue
                parity: str | None = "skipped" if not config.parity else None
                max_err: float | None = None
                if config.parity and engine == "onnxruntime":
                    record = ort_parity.get(precision)
                    if isinstance(record, str) or record is None:
                        fail(c, "failed", record or "no parity check")
                        continue
                    ok, why = passed_at(record, batch, size)  # type: ignore[arg-type]
                    max_err = worst_abs_err(record, batch)  # type: ignore[arg-type]
                    if not ok:
                        fail(c, "parity-failed", f"parity: {why}")
                        continue
                    parity = "pass"
                self.hooks.tick(f"{where}: preparing {engine} {precision}")
                try:
                    # each engine times its own copy: a forward that changes its input in place
                    # (x.mul_(2)) must not change what the next engine is fed
                    runner = prepare(engine, ctx, precision, x.copy())
                except Exception as exc:
                    fail(
                        c,
                        "failed",
                        f"{type(exc).__name__}: {first_line(exc)}"
                        if not isinstance(exc, UserError)
                        else first_line(exc),
                    )
                    continue
                if config.parity and engine not in ("onnxruntime", "pytorch"):
                    self.hooks.tick(f"{where}: parity of {engine} {precision}")
                    try:
                        record = check_runner(
                            ctx, runner, x.shape, size, seed=PARITY_SEED + batch, cache=reference_cache
                        )
                    except Exception as exc:
                        runner.close()
                        fail(c, "failed", f"parity check failed to run: {type(exc).__name__}: {first_line(exc)}")
                        continue
                    self.doc.parity.append(
                        ParityEntry(model=ctx.name, engine=engine, precision=precision, record=record)
                    )
                    ok, why = passed_at(record, batch, size)
                    if not ok:
                        runner.close()
                        fail(c, "parity-failed", f"parity: {why}")
                        continue
                    parity, max_err = "pass", worst_abs_err(record)
                if engine == "pytorch":
                    parity = None  # the reference itself
                ready.append((c, runner, parity, max_err))

            if ready:
                labels = ", ".join(r.label for _, r, _, _ in ready)
                self.hooks.step(f"{where}: timing {labels} (interleaved)")
                timed = measure_interleaved(
                    [r for _, r, _, _ in ready],
                    config.timing,
                    on_round=lambda n: self.hooks.tick(f"{where}: timing {labels}, round {n}"),
                )
                rows.update(self.measured_rows(ctx, ready, timed, batch, shape, flops))
        finally:
            for _, runner, _, _ in ready:
                try:
                    runner.close()
                except Exception:
                    pass
        return [rows[c] for c in contenders if c in rows]

    def run_throughput_group(
        self,
        ctx: ModelContext,
        contenders: list[tuple[str, str]],
        blocked: dict[str, str],
        ort_parity: dict[str, object],
        batch: int,
        shape: tuple[int, ...],
        size: tuple[int, int] | None,
        flops: int | None,
        where: str,
    ) -> list[BenchRow]:
        """Throughput mode: every (engine, precision) at every setting, parity-checked on its own
        first stream, then timed in interleaved windows (runtime.bench.throughput)."""
        config = self.config
        self.group_index += 1
        settings = settings_from(config.streams, config.concurrency)
        rows: dict[tuple[str, str, Setting], BenchRow] = {}
        ready: list[tuple[tuple[str, str, Setting], Workers, str | None, float | None]] = []

        def fail(c: tuple[str, str, Setting], status: str, reason: str) -> None:
            rows[c] = self.failed_setting(ctx.name, c, batch, shape, status, reason)

        x = random_input(shape, batch, seed=config.seed + batch).numpy()
        cache: ReferenceCache = {}
        try:
            for engine, precision in contenders:
                for setting in settings:
                    c = (engine, precision, setting)
                    key = graph_key(engine, precision)
                    if key is not None and key in blocked:
                        fail(c, "failed", blocked[key])
                        continue
                    if config.parity and engine == "onnxruntime":
                        record = ort_parity.get(precision)
                        if isinstance(record, str) or record is None:
                            fail(c, "failed", record or "no parity check")
                            continue
                        ok, why = passed_at(record, batch, size)  # type: ignore[arg-type]
                        if not ok:
                            fail(c, "parity-failed", f"parity: {why}")
                            continue
                    self.hooks.tick(f"{where}: preparing {engine} {precision} [{setting.describe()}]")
                    try:
                        workers = prepare_streams(engine, ctx, precision, x, setting)
                    except Exception as exc:
                        text = (
                            first_line(exc)
                            if isinstance(exc, UserError)
                            else f"{type(exc).__name__}: {first_line(exc)}"
                        )
                        fail(c, "failed", text)
                        continue
                    parity, max_err = ("skipped", None) if not config.parity else (None, None)
                    if config.parity:
                        try:
                            record = check_runner(
                                ctx, workers.probe, x.shape, size, seed=PARITY_SEED + batch, cache=cache
                            )
                        except Exception as exc:
                            workers.close()
                            fail(c, "failed", f"parity check failed to run: {type(exc).__name__}: {first_line(exc)}")
                            continue
                        self.doc.parity.append(
                            ParityEntry(model=ctx.name, engine=engine, precision=precision, record=record)
                        )
                        ok, why = passed_at(record, batch, size)
                        if not ok:
                            workers.close()
                            fail(c, "parity-failed", f"parity: {why}")
                            continue
                        parity, max_err = "pass", worst_abs_err(record)
                    ready.append((c, workers, parity, max_err))
            if ready:
                self.hooks.step(f"{where}: timing {len(ready)} settings in throughput windows (interleaved)")
                timed = measure_throughput_interleaved(
                    [w for _, w, _, _ in ready],
                    config.timing,
                    on_round=lambda n: self.hooks.tick(f"{where}: throughput windows, round {n}"),
                )
                rows.update(self.throughput_rows(ctx, ready, timed, batch, shape, flops))
        finally:
            for _, workers, _, _ in ready:
                try:
                    workers.close()
                except Exception:
                    pass
        return [rows[(e, p, s)] for e, p in contenders for s in settings if (e, p, s) in rows]

    def throughput_rows(
        self,
        ctx: ModelContext,
        ready: list[tuple[tuple[str, str, Setting], Workers, str | None, float | None]],
        timed: list[ThroughputTimed],
        batch: int,
        shape: tuple[int, ...],
        flops: int | None,
    ) -> dict[tuple[str, str, Setting], BenchRow]:
        config = self.config
        rng = np.random.default_rng([config.seed, self.group_index])
        load = _load()
        out: dict[tuple[str, str, Setting], BenchRow] = {}
        good = {}
        for (c, *_), t in zip(ready, timed):
            if t.error is not None or not t.windows:
                row = self.failed_row(ctx.name, c[0], c[1], batch, shape, "failed", t.error or "no windows")
                out[c] = row.model_copy(
                    update=dict(mode="throughput", streams=c[2].streams, concurrency=c[2].concurrency)
                )
                continue
            good[c] = (t, throughput_figures(t, batch, rng, config.max_ci_width, SPREAD_LIMIT, load))
        if not good:
            return out
        best = min(good, key=lambda c: good[c][1].seconds_per_image.value)
        for (c, workers, parity, max_err), _t in zip(ready, timed):
            if c not in good:
                continue
            t, figs = good[c]
            reasons = list(figs.own_reasons)
            iv = throughput_vs_best(t, good[best][0], rng)
            if c != best:
                if iv.width > config.max_ci_width:
                    reasons.append(f"vs best 95% CI {iv.low:.2f}-{iv.high:.2f}x")
                if good[best][1].own_reasons:
                    reasons.append(
                        f"vs best rests on {workers.label if False else good[best][0].workers.label}, which is unstable"
                    )
            fields = dict(
                run_id=self.doc.run_id,
                model=ctx.name,
                engine=c[0],
                precision=c[1],
                device=workers.device,
                machine=self.machine,
                batch_size=batch,
                input_shape=list(shape),
                threads=self.threads,
                load_average=finite(load),
                status="ok",
                graph=workers.graph,
                rounds=t.rounds,
                timed_seconds=t.spent,
                **figs.fields,
                mode="throughput",
                streams=c[2].streams,
                concurrency=c[2].concurrency,
                threads_per_stream=workers.threads_per_stream,
                vs_best=iv.value,
                vs_best_ci_low=iv.low,
                vs_best_ci_high=iv.high,
                best=good[best][0].workers.label,
                unstable=bool(reasons),
                unstable_reasons=reasons,
                gflop=flops * batch / 1e9 if flops is not None else None,
                weight_bytes=weight_bytes(ctx.artifact.manifest.num_params, c[1]),
                parity=parity,
                parity_max_abs_err=max_err,
                cold_start=ColdStart(**workers.cold_start) if workers.cold_start else None,
                settings=dict(workers.settings),
            )
            out[c] = BenchRow(**{k: finite(v) if isinstance(v, float) else v for k, v in fields.items()})  # type: ignore[arg-type]
        return out

    def measured_rows(
        self,
        ctx: ModelContext,
        ready: list[tuple[tuple[str, str], Runner, str | None, float | None]],
        timed: list[Timed],
        batch: int,
        shape: tuple[int, ...],
        flops: int | None,
    ) -> dict[tuple[str, str], BenchRow]:
        config = self.config
        rng = np.random.default_rng([config.seed, self.group_index])
        load = _load()
        out: dict[tuple[str, str], BenchRow] = {}
        good: dict[tuple[str, str], tuple[Timed, object]] = {}
        for (c, *_), t in zip(ready, timed):
            if t.error is not None or not t.samples:
                out[c] = self.failed_row(ctx.name, c[0], c[1], batch, shape, "failed", t.error or "no samples")
                continue
            good[c] = (t, summarize(t.samples, batch, rng))
        if not good:
            return out
        medians = {c: s.median_ms for c, (_, s) in good.items()}  # type: ignore[attr-defined]
        best = min(medians, key=medians.get)  # type: ignore[arg-type]
        pytorch = ("pytorch", "fp32") if ("pytorch", "fp32") in good else None
        # each median's own soundness first: a ratio is only as sound as both of its medians
        own: dict[tuple[str, str], list[str]] = {}
        for c, (t, stats) in good.items():
            own[c] = []
            width = stats.median.width  # type: ignore[attr-defined]
            if width > config.max_ci_width:
                own[c].append(f"median 95% CI spans {width:.0%} of it")
            if t.capped:
                own[c].append(f"only {len(t.samples)} samples within --max-seconds")
            spread = stats.median_ms / stats.min_ms if stats.min_ms > 0 else float("inf")  # type: ignore[attr-defined]
            if spread > SPREAD_LIMIT:
                own[c].append(f"median is {spread:.1f}x the fastest call (the CPU was contended; load {load:.1f})")
        for (c, runner, parity, max_err), t in zip(ready, timed):
            if c not in good:
                continue
            _, stats = good[c]
            reasons: list[str] = list(own[c])

            def ratio(
                num: tuple[str, str] | None,
                den: tuple[str, str] | None,
                what: str,
                reasons: list[str] = reasons,
                me: tuple[str, str] = c,
            ) -> Interval | None:
                if num is None or den is None or num == den or num not in good or den not in good:
                    return None
                iv = ratio_interval(good[num][0].samples, good[den][0].samples, rng)
                if iv.width > config.max_ci_width:
                    reasons.append(f"{what} 95% CI {iv.low:.2f}-{iv.high:.2f}x")
                other = den if num == me else num
                if own[other]:
                    # a tight ratio interval over a contended median is still not a figure to trust
                    reasons.append(f"{what} rests on {other[0]} {other[1]}, which is unstable")
                return iv

            vs_pt = ratio(pytorch, c, "vs pytorch")
            vs_best = ratio(c, best, "vs best") if c != best else Interval(1.0, 1.0, 1.0)
            fp32 = (c[0], "fp32") if c[1] != "fp32" else None
            vs_fp32 = ratio(fp32, c, "vs fp32")
            gflop = flops * batch / 1e9 if flops is not None else None
            s = dict(runner.settings)
            audited = self.audits.get((ctx.name, c[1], tuple(shape))) if c[0] == "onnxruntime" else None
            if audited is not None:
                s.update(placement=audited.line, placement_clean=audited.clean)
            fields = dict(
                run_id=self.doc.run_id,
                model=ctx.name,
                engine=c[0],
                precision=c[1],
                device=runner.device,
                machine=self.machine,
                batch_size=batch,
                input_shape=list(shape),
                threads=self.threads,
                load_average=finite(load),
                status="ok",
                graph=runner.graph,
                rounds=t.rounds,
                timed_seconds=t.spent,
                **stats.to_dict(),  # type: ignore[attr-defined]
                throughput_ci_low_ips=batch / (stats.median_ci_high_ms / 1e3),  # type: ignore[attr-defined]
                throughput_ci_high_ips=batch / (stats.median_ci_low_ms / 1e3),  # type: ignore[attr-defined]
                sample_summary=summarize_samples(np.asarray(t.samples) * 1e3),
                vs_pytorch=vs_pt.value if vs_pt else None,
                vs_pytorch_ci_low=vs_pt.low if vs_pt else None,
                vs_pytorch_ci_high=vs_pt.high if vs_pt else None,
                vs_best=vs_best.value if vs_best else None,
                vs_best_ci_low=vs_best.low if vs_best else None,
                vs_best_ci_high=vs_best.high if vs_best else None,
                best=f"{best[0]} {best[1]}",
                vs_fp32=vs_fp32.value if vs_fp32 else None,
                vs_fp32_ci_low=vs_fp32.low if vs_fp32 else None,
                vs_fp32_ci_high=vs_fp32.high if vs_fp32 else None,
                unstable=bool(reasons),
                unstable_reasons=reasons,
                gflop=gflop,
                weight_bytes=weight_bytes(ctx.artifact.manifest.num_params, c[1]),
                setup_seconds=runner.setup_seconds,
                cold_start=ColdStart(**runner.cold_start) if runner.cold_start else None,
                parity=parity,  # type: ignore[arg-type]
                parity_max_abs_err=max_err,
                tf32=s.get("tf32") if isinstance(s.get("tf32"), bool) else None,  # type: ignore[arg-type]
                io_binding=s.get("io_binding") if isinstance(s.get("io_binding"), bool) else None,  # type: ignore[arg-type]
                cudnn_conv_algo_search=str(s["cudnn_conv_algo_search"]) if s.get("cudnn_conv_algo_search") else None,
                cuda_graph=s.get("cuda_graph") if isinstance(s.get("cuda_graph"), bool) else None,  # type: ignore[arg-type]
                settings=dict(s),
            )
            # strict JSON: a figure that is not a finite number is absent, never NaN or Infinity
            row = BenchRow(**{k: finite(v) if isinstance(v, float) else v for k, v in fields.items()})  # type: ignore[arg-type]
            out[c] = with_roofline(row, self.doc.machine)
        return out

    # --- the end ----------------------------------------------------------------------------

    def summarize(self) -> None:
        doc = self.doc
        doc.untrustworthy = [
            f"{_where(r)} {r.label}: {'; '.join(r.unstable_reasons)}" for r in doc.rows if r.ok and r.unstable
        ]
        fastest = []
        seen = set()
        for r in doc.rows:
            if r.ok and r.vs_best == 1.0 and r.group not in seen:
                seen.add(r.group)
                figure = (
                    f"{r.throughput_ips or 0.0:.4g} img/s, p50 {_fmt_ms(r.median_ms or 0.0)}"
                    if r.mode == "throughput"
                    else _fmt_ms(r.median_ms or 0.0)
                )
                fastest.append(f"{_where(r)}: {r.label} {figure}")
        doc.fastest = fastest
