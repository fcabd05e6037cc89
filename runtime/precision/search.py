"""The precision search: the fastest int8/float graph within a budget, by measured loss and measured time.

``--target cpu`` (below) searches int8 QDQ graphs on the CPU; ``--target cuda`` the same way fp16 graphs
on onnxruntime's CUDA provider: no calibration, all-fp16 first (LRN and reductions float32 in every
candidate), then the same per-layer measurements and candidates (not the int8 rule's), each verified on
CUDA with the same budget and timed there against fp32.

1. Calibrate once (over every verified size for a dynamic-size graph) and build the all-int8 graph.
2. Measure each quantizable layer (with the pools, ReLUs and Concats feeding it): the output SQNR with
   only it int8 and the SQNR recovered with only it float (on a fixed probe batch), and its cost, its
   profiled fp32 time minus its int8 time (``runtime.profile``'s collectors, in the deployment engine).
3. Candidates: all-int8 (where it passes it is the answer); the old rule's graphs (the first 1-3
   compute layers float, and for several sizes the tensors whose ranges differ most between them);
   then greedy from all-float, layers made int8 by time saved per unit of noise they add alone (noise
   powers add): the largest set predicted to meet the budget, then smaller ones until one passes.
4. Every candidate verified end to end (the parity check with the budget's tolerance, and top-1/top-5
   over the labelled set where there is one; with ``--engine openvino`` in onnxruntime and again in
   OpenVINO, with the precision hint it is timed with: it passes only where both pass), then all timed
   interleaved against fp32 in one group.
5. The fastest passing candidate is written as the ``auto`` variant, with every candidate in the
   manifest and a Pareto PNG beside it, only where its speed-up's interval lies above 1.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx
import torch

from exporter import artifact as art
from exporter.data import Split, check_batch, digits
from exporter.errors import ExportFailed, UserError
from exporter.files import remove_stale_partials, scratch_dir
from exporter.layers import LayerIndex
from exporter.reference import Prepared, rebuild
from exporter.variants import (
    VariantOptions,
    _fallbacks,
    _quiet_library_output,
    _sizes,
    calibration_images,
    input_grid,
    input_rounding_floor,
    int8_tolerance,
    prepare_for_int8,
    quantize_int8,
    strip_identity_ops,
)

from ..bench.defaults import DEFAULT_MAX_CI_WIDTH as MAX_CI_WIDTH
from ..bench.stats import Interval
from ..compare import default_tolerance
from ..parity import DEFAULT_BATCH_SIZES, DEFAULT_SEED, DIGITS
from ..sessions import cuda_missing
from .budget import Budget, check_eval_size, default_budget, needs_labels
from .candidates import FP16_REDUCTIONS, HalfBuilder, Judge, Quantizer, Work, describe
from .layers import (
    ISLAND_SHARE,
    alone_int8,
    below_budget,
    int8_order,
    layer_costs,
    layer_times,
    noisiest_first,
    predicted_int8_sqnr,
    quantizable_layers,
    sensitivities,
)
from .timing import time_candidates

ENGINES = ("onnxruntime", "openvino")
TARGETS = ("cpu", "cuda")
#: How many fewer int8 layers than the predicted set the later greedy candidates have.
GREEDY_STEPS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
#: After a greedy candidate passes, sets with this many more int8 layers are tried in turn while they pass.
UPWARD_STEPS = (2, 4, 8)
#: The noise-first candidates: the layers alone below the budget float, then this many more of the noisiest.
NOISE_FIRST_STEPS = (0, 2, 4, 8, 16)
#: Probe images the sensitivities are measured on (the parity check's distribution, other samples).
PROBE_IMAGES = 8
PROBE_SEED = 777


@dataclass
class SearchConfig:
    #: None: the default (:func:`~runtime.precision.budget.default_budget`): accuracy where labels exist
    budget: Budget | None = None
    target: str = "cpu"
    engine: str = "onnxruntime"
    threads: int | None = None
    batch_size: int = 1
    calibration: VariantOptions = field(default_factory=VariantOptions)
    #: a labelled set (``--eval-dir``) and how it is named; None: the digits where the weights are digits-trained
    eval_set: Split | None = None
    eval_name: str | None = None

    def validate(self) -> None:
        check_target(self.target, self.engine)
        check_batch_size(self.batch_size)
        if self.eval_set is not None:  # before any work: a set too small for the budget is known now
            check_eval_size(self.budget or default_budget(True), len(self.eval_set.y))


def check_batch_size(batch_size: int) -> None:
    """Refuse, in one line and before any work, a batch the candidates cannot be timed at."""
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1 (got {batch_size})")


def check_target(target: str, engine: str) -> None:
    """Refuse, in one line and before any work, a target this machine cannot search for."""
    if target not in TARGETS:
        raise UserError(f"unknown target {target!r}: choose {', '.join(TARGETS)}")
    if engine not in ENGINES:
        raise UserError(f"unknown engine {engine!r}: choose {', '.join(ENGINES)}")
    if target == "cuda" and engine != "onnxruntime":
        raise UserError(f"--target cuda times onnxruntime's CUDA provider: --engine {engine} runs on the CPU")
    if engine == "openvino":  # else the export runs, then the first candidate's judge fails on the import
        from ..bench.engines import openvino_missing

        why = openvino_missing("cpu")
        if why:
            raise UserError(f"--precision auto --engine openvino: openvino is {why}")
    if target != "cuda":
        return
    why = cuda_missing()
    if why:
        raise UserError(
            f"--precision auto --target cuda needs a CUDA GPU: onnxruntime's CUDA provider could not be created "
            f"here: {why}; use --target cpu"
        )


@dataclass
class SearchOutcome:
    """What the search did: the record (always), and the written variant where one paid off."""

    name: str
    search: art.PrecisionSearchRecord
    record: art.VariantRecord | None
    path: Path | None
    plot: Path | None
    message: str
    seconds: float

    @property
    def written(self) -> bool:
        return self.record is not None


def _labelled(reference: Prepared, config: SearchConfig) -> tuple[Split | None, str]:
    if config.eval_set is not None:
        return config.eval_set, config.eval_name or "--eval-dir"
    if reference.trained_on == DIGITS:
        return digits(reference.input_shape)[1], f"{DIGITS} held-out"
    return None, ""


def _tolerance(work_graph: bytes, reference: Prepared, budget: Budget, step: Callable[[str], None]) -> art.Tolerance:
    """int8's default tolerance (or, for random weights, its input-rounding floor) with the budget's demand."""
    base = default_tolerance("cpu", "int8")
    grid = input_grid(onnx.load_from_string(work_graph))
    if reference.weights.kind == "random" and reference.trained_on is None and grid is not None:
        step("measuring how far rounding the input to 8 bits moves the PyTorch model")
        floor = input_rounding_floor(reference, grid, DEFAULT_BATCH_SIZES, DEFAULT_SEED)
        base, _ = int8_tolerance(base, *floor)
    return budget.tolerance(base)


def _first_candidates(work: Work, model: onnx.ModelProto, prepared: Path, images: list[torch.Tensor]) -> None:
    """The old rule's graphs: a float stem; for several sizes, the tensors whose ranges move with the size."""
    for label, nodes, _why in _fallbacks(model, prepared, images, work.quantize.work):
        layers = sorted({work.index.module_of(n) or n for n in nodes})
        work.try_graph(label, nodes, layers)


def _greedy(
    work: Work, order: list[art.LayerCost], target_db: float | None, floor: float, precision: str = "int8"
) -> None:
    """From all-float, the most time-saving layers per unit of noise made int8 (``precision``: or fp16), the
    rest float: the largest such set predicted to meet an SQNR budget first, then smaller ones until one passes."""
    n = len(order)
    if n < 2:
        return
    if target_db is not None:
        first = max((k for k in range(1, n) if predicted_int8_sqnr(order, k, floor) >= target_db), default=1)
    else:
        first = n - 1
    steps = [first, *sorted({first - s for s in GREEDY_STEPS if 0 < first - s}, reverse=True)]
    for k in steps:
        if _greedy_try(work, order, k, floor, precision):
            break
    else:
        return
    # the prediction is conservative (noise of layers int8 together partly cancels): more int8 while it passes
    for step in UPWARD_STEPS:
        if k + step >= n or not _greedy_try(work, order, k + step, floor, precision):
            return


def _greedy_try(work: Work, order: list[art.LayerCost], k: int, floor: float, precision: str) -> bool:
    """Build and judge the graph with the first ``k`` layers of ``order`` int8 (or fp16), the rest float."""
    float_layers = order[k:]
    nodes = list(dict.fromkeys(node for c in float_layers for node in c.nodes))
    predicted = predicted_int8_sqnr(order, k, floor)
    label = f"greedy: {k} of {len(order)} layers {precision} by time saved per noise (predicted {predicted:.1f} dB)"
    return work.try_graph(label, nodes, [c.layer for c in float_layers]).passed


#: How many layers more than the passing graph with the most float layers the bf16 stage keeps float (in bf16)
#: where none of the passing graphs stays within the budget with its float layers in bf16.
BF16_EXTRA_FLOAT = (1, 2, 4)


def _bf16_islands(work: Work, order: list[art.LayerCost]) -> list[str]:
    """``--engine openvino``: the passing candidates again with their float layers in OpenVINO's bf16 (on a CPU
    with bf16 arithmetic about twice f32's speed there; onnxruntime still runs them in fp32), and where none
    stays within the budget so, the greedy's sets with more layers float, in bf16, until one does. A note
    says where the CPU has no bf16."""
    from ..bench.engines import openvino_bf16_missing

    missing = openvino_bf16_missing()
    if missing:
        return [f"float layers stay f32 in OpenVINO: {missing}"]
    passing = [i for i, c in enumerate(work.candidates) if c.passed and c.float_nodes]
    if not passing:
        return []
    twins = [work.try_twin(i, "bf16") for i in passing]
    if any(t.passed for t in twins):
        return []
    most = max(len(work.candidates[i].float_layers) for i in passing)
    k_int8 = len(order) - most  # the greedy's order: the first k int8, the rest float
    for extra in BF16_EXTRA_FLOAT:
        k = k_int8 - extra
        if k < 1:
            break
        float_layers = order[k:]
        nodes = list(dict.fromkeys(node for c in float_layers for node in c.nodes))
        label = f"greedy: {k} of {len(order)} layers int8, float layers in bf16 (OpenVINO)"
        if work.try_graph(label, nodes, [c.layer for c in float_layers], "bf16").passed:
            break
    return []


@dataclass
class Measured:
    """What the search measured per layer: each one's sensitivities and cost, fp32's and all-int8's (or
    all-fp16's) summed layer times (ms) and the noise left with every layer float (relative to the signal)."""

    costs: list[art.LayerCost]
    fp32_total_ms: float
    int8_total_ms: float
    floor: float


def _measure_layers(
    work: Work, model: onnx.ModelProto, fp32: bytes, all_low: bytes, x: np.ndarray, config: SearchConfig
) -> Measured:
    """Each layer's sensitivities and cost, profiled in the deployment engine on the judge's device; ``all_low``
    is the graph with every layer int8 (or fp16)."""
    layers = quantizable_layers(model, work.index)
    engine, judge, step, low, device = config.engine, work.judge, work.step, work.precision, work.judge.device
    where = f"{engine} {device}, batch {config.batch_size}, {work.threads} threads"
    step(f"profiling fp32 and all-{low} per layer ({where})")
    fp32_ms = layer_times(fp32, x, work.index, engine, "fp32", work.threads, device)
    int8_ms = layer_times(all_low, x, work.index, engine, low, work.threads, device)
    recovered = sensitivities(layers, work.quantize, judge.probe_sqnr, judge.probe_sqnr(all_low), step)
    alone = alone_int8(layers, work.quantize, judge.probe_sqnr, step, precision=low)
    all_float = judge.probe_sqnr(work.quantize(list(dict.fromkeys(n for la in layers for n in la.nodes)), "float"))
    floor = 0.0 if all_float is None else 10 ** (-all_float / 10)
    costs = layer_costs(layers, recovered, alone, fp32_ms, int8_ms)
    return Measured(costs, sum(fp32_ms.values()), sum(int8_ms.values()), floor)


@dataclass
class NoiseFirst:
    """What the noise-first candidates found: a note, and the index of the candidate with only the layers
    that must stay float float (None where none was built)."""

    note: str
    base: int | None

    def explain(self, timed: list[art.SearchCandidate]) -> str:
        """The note with the measured speed-up of the graph with only those layers float: more float layers
        only add time, so it is about the most any graph within the budget reaches."""
        c = timed[self.base] if self.base is not None else None
        if c is None or c.speedup is None:
            return self.note
        return (
            f"{self.note}; with only them float the graph runs {c.speedup:.2f}x fp32 (95% interval "
            f"{c.speedup_low:.2f}-{c.speedup_high:.2f}), about the most any graph within the budget reaches"
        )


def _noise_first(work: Work, measured: Measured, target_db: float, precision: str = "int8") -> NoiseFirst | None:
    """Candidates from the other end: the layers that alone int8 (``precision``: or fp16) already miss the
    budget float (every graph within it keeps them float), then the next noisiest ones too, until one passes.
    None where no layer alone misses the budget."""
    necessary = below_budget(measured.costs, target_db)
    if not necessary:
        return None
    worst = ", ".join(f"{c.layer} {c.alone_int8_sqnr_db:.1f} dB" for c in necessary[:3])
    more = f" and {len(necessary) - 3} more" if len(necessary) > 3 else ""
    if len(necessary) == len(measured.costs):
        return NoiseFirst(f"every one of the {len(necessary)} layers alone {precision} already misses the budget "
                          f"({worst}{more}): no {precision} graph meets it", None)  # fmt: skip
    base = len(work.candidates)
    rest = [c for c in noisiest_first(measured.costs) if c not in necessary]
    for extra in NOISE_FIRST_STEPS:
        if extra >= len(rest):  # every layer float is the fp32 graph with conversions, not a candidate
            break
        float_layers = [*necessary, *rest[:extra]]
        nodes = list(dict.fromkeys(node for c in float_layers for node in c.nodes))
        more_float = f" and the {extra} next noisiest" if extra else ""
        label = f"noise-first: the {len(necessary)} layers alone below the budget float{more_float}"
        if work.try_graph(label, nodes, [c.layer for c in float_layers]).passed:
            break
    return NoiseFirst(f"{len(necessary)} layer(s) alone {precision} already miss the budget ({worst}{more}), so "
                      "every graph within it keeps them float", base)  # fmt: skip


def _probe(reference: Prepared, labelled: Split | None) -> torch.Tensor:
    if labelled is not None:
        return labelled.x[:64]
    return check_batch(reference.input_shape, PROBE_IMAGES, 0, seed=PROBE_SEED)


def search_precision(
    directory: Path,
    config: SearchConfig,
    *,
    reference: Prepared | None = None,
    on_step: Callable[[str], None] | None = None,
) -> SearchOutcome:
    """Run the search on the artifact in ``directory``; write the ``auto`` variant where it pays off."""
    from .store import write_auto

    config.validate()
    step = on_step or (lambda _msg: None)
    started = time.perf_counter()
    threads = config.threads or os.cpu_count() or 1
    with art.artifact_lock(directory, on_wait=step):
        artifact = art.open_artifact(directory)
        stale = artifact.stale_reason()
        if stale:
            raise art.ArtifactError(f"cannot search {artifact.name}'s precision: {stale}; export it again first")
        if reference is None:
            step("rebuilding the PyTorch reference")
            reference = rebuild(artifact.manifest)
        remove_stale_partials(directory)
        with scratch_dir(directory, f"{artifact.name}.auto") as tmp, _quiet_library_output():
            search, work = _run(artifact, reference, config, threads, tmp, step)
            chosen = next((i for i, c in enumerate(search.candidates) if c.chosen), None)
            if chosen is None:
                return SearchOutcome(artifact.name, search, None, None, None, _not_worth_it(search),
                                     time.perf_counter() - started)  # fmt: skip
            record, path, plot = write_auto(work, search, chosen)
    final = record.precision_search or search  # as written: with its plot
    return SearchOutcome(artifact.name, final, record, path, plot, "", time.perf_counter() - started)


def _not_worth_it(search: art.PrecisionSearchRecord) -> str:
    passing = [c for c in search.candidates if c.passed and c.speedup is not None]
    if not passing:
        return "no candidate met the budget"
    best = max(passing, key=lambda c: c.speedup or 0.0)
    return (
        f"{search.precision} does not pay here: the fastest candidate within the budget ({best.label}) runs "
        f"{best.latency_ms:.3f} ms against fp32's {search.fp32_ms:.3f} ms, speed-up {best.speedup:.2f}x "
        f"(95% interval {best.speedup_low:.2f}-{best.speedup_high:.2f}, not above 1); nothing written"
    )


@dataclass
class Setup:
    """What a target gives the common search: its graph builder, the tolerance candidates are verified with
    and where (device, precision), the graph its layers are found in, the first candidate's label, and its
    own extra candidates (the int8 rule's) to try after the layers are measured."""

    build: Quantizer | HalfBuilder
    tolerance: art.Tolerance
    device: str
    precision: str
    layer_model: onnx.ModelProto
    first_label: str
    extra_candidates: Callable[[Work], None] = lambda _work: None
    notes: list[str] = field(default_factory=list)


def _int8_setup(
    manifest: art.Manifest, reference: Prepared, config: SearchConfig, budget: Budget, model: onnx.ModelProto,
    removed: int, tmp: Path, step: Callable[[str], None],
) -> Setup:  # fmt: skip
    """``--target cpu``: calibrate once; int8 QDQ graphs judged on the CPU."""
    onnx.save(model, str(tmp / "stage.onnx"))
    prepared = tmp / "pre.onnx"
    pre_model = prepare_for_int8(tmp / "stage.onnx", prepared)
    sizes = _sizes(manifest)
    images, source = calibration_images(reference, config.calibration.calibration_dir, sizes, manifest.min_size)
    options = dict(method=config.calibration.calibration_method, reduce_range=config.calibration.reduce_range,
                   cache=tmp / "ranges.json")  # fmt: skip
    step(f"calibrating on {sum(len(g) for g in images)} images ({source})")
    facts = quantize_int8(prepared, tmp / "int8.onnx", images, **options)  # type: ignore[arg-type]
    tolerance = _tolerance((tmp / "int8.onnx").read_bytes(), reference, budget, step)
    quantizer = Quantizer(prepared, tmp, options)
    quantizer.facts["calibration"] = {
        **facts,
        "calibration_images": sum(len(g) for g in images),
        "calibration_source": source,
        "sizes": [tuple(g.shape[-2:]) for g in images],
        "identity_nodes_removed": removed,
    }
    return Setup(quantizer, tolerance, "cpu", "int8", pre_model, "all layers int8",
                 lambda work: _first_candidates(work, pre_model, prepared, images))  # fmt: skip


def _fp16_setup(budget: Budget, model: onnx.ModelProto) -> Setup:
    """``--target cuda``: fp16 graphs judged on onnxruntime's CUDA provider, with the budget's demand on the
    floors every auto graph is held to (no calibration, no input rounding: the input stays float32)."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST

    builder = HalfBuilder(model.SerializeToString())
    kept = ", ".join(builder.kept_ops)
    label = f"all layers fp16 ({kept} float32)" if kept else "all layers fp16 (no LRN or reduction to keep float32)"
    note = (
        f"fp16 candidates keep float32 the ops of onnxruntime's default block list ({len(DEFAULT_OP_BLOCK_LIST)} "
        f"op types, none of a classic CNN's compute layers), LRN and the reductions ({', '.join(FP16_REDUCTIONS)})"
    )
    tolerance = budget.tolerance(default_tolerance("cuda", "auto"))
    return Setup(builder, tolerance, "cuda", "fp16", model, label, notes=[note])


def _run(
    artifact: art.Artifact,
    reference: Prepared,
    config: SearchConfig,
    threads: int,
    tmp: Path,
    step: Callable[[str], None],
) -> tuple[art.PrecisionSearchRecord, Work]:
    manifest = artifact.manifest
    labelled, labelled_name = _labelled(reference, config)
    budget = config.budget or default_budget(labelled is not None)
    needs_labels(budget, labelled is not None)
    if labelled is not None:
        check_eval_size(budget, len(labelled.y))
    config = replace(config, budget=budget)
    fp32 = artifact.path().read_bytes()  # read once: staged for int8 or fp16, indexed by layer, timed as the baseline
    model, removed = strip_identity_ops(onnx.load_from_string(fp32))
    if config.target == "cuda":
        setup = _fp16_setup(budget, model)
    else:
        setup = _int8_setup(manifest, reference, config, budget, model, removed, tmp, step)
    judge = Judge(reference, setup.tolerance, _sizes(manifest), threads, _probe(reference, labelled), labelled,
                  budget.threshold if budget.metric == "accuracy" else None, labelled_name,
                  engine=config.engine, device=setup.device, precision=setup.precision)  # fmt: skip
    calib_dir = config.calibration.calibration_dir if config.target == "cpu" else None
    work = Work(artifact, reference, str(calib_dir) if calib_dir else None, threads, setup.build, judge,
                LayerIndex(manifest.layers, onnx.load_from_string(fp32)), step, precision=setup.precision,
                identity_nodes_removed=removed)  # fmt: skip
    x = check_batch(reference.input_shape, config.batch_size, 0, seed=PROBE_SEED).numpy()
    costs: list[art.LayerCost] = []
    noise_first: NoiseFirst | None = None
    notes = list(setup.notes)
    work.try_graph(setup.first_label, [], [])
    order: list[art.LayerCost] = []
    if not work.candidates[0].passed:  # nothing with float layers is faster than an all-int8 graph that passes
        measured = _measure_layers(work, setup.layer_model, fp32, work.graphs[0], x, config)
        costs, target_db = measured.costs, _target_db(budget)
        setup.extra_candidates(work)
        if target_db is not None:
            noise_first = _noise_first(work, measured, target_db, work.precision)
        order = int8_order(costs, ISLAND_SHARE * measured.int8_total_ms)
        _greedy(work, order, target_db, measured.floor, work.precision)
    if config.engine == "openvino" and config.target == "cpu" and order:
        notes += _bf16_islands(work, order)
    if not any(c.passed for c in work.candidates):
        best = max(work.candidates, key=lambda c: c.sqnr_db if c.sqnr_db is not None else -1e9)
        raise ExportFailed(
            f"no graph met the budget ({budget.describe()}) even with every layer the search ranked "
            f"float: best {best.label}: {describe(best)}; {best.failure}"
        )
    fp32_t, timed = _time(work, fp32, x, config, threads)
    passing = [i for i, c in enumerate(timed) if c.passed]
    fastest = max(passing, key=lambda i: timed[i].speedup or 0.0)
    pays = (timed[fastest].speedup_low or 0.0) > 1.0
    if pays:
        timed[fastest] = timed[fastest].model_copy(update={"chosen": True})
    work.candidates = timed
    chosen = timed[fastest]
    search = art.PrecisionSearchRecord(
        budget=budget.describe(), metric=budget.metric, threshold=budget.threshold,  # type: ignore[arg-type]
        target=config.target, engine=config.engine, device=work.judge.device, threads=threads,
        batch_size=config.batch_size, precision=work.precision,  # type: ignore[arg-type]
        fp32_ms=fp32_t.value, fp32_low_ms=fp32_t.low, fp32_high_ms=fp32_t.high,
        float_layers=chosen.float_layers if pays else [],
        float_reasons=_reasons(chosen, costs, timed, work.precision) if pays else [],
        layers=costs, candidates=timed,
        notes=[*_unstable(fp32_t, timed), *notes, *([noise_first.explain(timed)] if noise_first else [])],
        judged_in=["onnxruntime", *(["openvino"] if config.engine == "openvino" else [])],
        inference_precision=_inference_precision(timed) if config.engine == "openvino" else None,
    )  # fmt: skip
    return search, work


def _time(
    work: Work, fp32: bytes, x: np.ndarray, config: SearchConfig, threads: int
) -> tuple[Interval, list[art.SearchCandidate]]:
    """Every candidate timed against fp32 in one interleaved group, on the judge's device; the candidates with
    their latencies and speed-ups."""
    device = work.judge.device
    work.step(f"timing {len(work.graphs)} candidates against fp32, interleaved ({config.engine} {device})")
    hints = {"openvino_hints": [c.openvino_hint for c in work.candidates]} if config.engine == "openvino" else {}
    fp32_t, timings = time_candidates(
        work.artifact, fp32, work.graphs, x, config.engine, threads, device=device, precision=work.precision, **hints
    )
    timed = [
        c.model_copy(
            update={
                "latency_ms": t.latency_ms.value,
                "latency_low_ms": t.latency_ms.low,
                "latency_high_ms": t.latency_ms.high,
                "speedup": t.speedup.value,
                "speedup_low": t.speedup.low,
                "speedup_high": t.speedup.high,
            }
        )  # fmt: skip
        for c, t in zip(work.candidates, timings)
    ]
    return fp32_t, timed


def _inference_precision(candidates: list[art.SearchCandidate]) -> str | None:
    """OpenVINO's inference precision as the judge read it back (the hint the timing compiles with too)."""
    return next((c.inference_precision for x in candidates for c in x.checks if c.engine == "openvino"), None)


def _target_db(budget: Budget) -> float | None:
    """The output SQNR a budget asks for (a cosine C is about SQNR -10 log10(2 (1 - C))); None for accuracy."""
    if budget.metric == "sqnr":
        return budget.threshold
    if budget.metric == "cosine" and budget.threshold < 1:
        return -10 * math.log10(2 * (1 - budget.threshold))
    return None


def _unstable(fp32: Interval, timed: list[art.SearchCandidate]) -> list[str]:
    """A note where the intervals are too wide to trust the figures (a busy machine), as the bench flags them."""
    wide = [
        c.label for c in timed if c.speedup and (c.speedup_high or 0) - (c.speedup_low or 0) > MAX_CI_WIDTH * c.speedup
    ]
    if fp32.width <= MAX_CI_WIDTH and not wide:
        return []
    return [
        f"unstable: fp32 {fp32.value:.3f} ms ({fp32.low:.3f}-{fp32.high:.3f}) and {len(wide)} candidate(s) have 95% "
        f"intervals wider than {MAX_CI_WIDTH:.0%} of their value: the machine was busy; time again before relying "
        "on the speed-ups"
    ]


def _reasons(
    chosen: art.SearchCandidate, costs: list[art.LayerCost], timed: list[art.SearchCandidate], precision: str = "int8"
) -> list[str]:
    """Why the chosen graph's layers stayed float: each one's measured gain and cost, and what failed with fewer."""
    by_name = {c.layer: c for c in costs}
    out = []
    for layer in chosen.float_layers:
        c = by_name.get(layer)
        if c is None or c.recovered_db is None:
            out.append(f"{layer}: part of '{chosen.label}'")
            continue
        alone = f", alone {precision} {c.alone_int8_sqnr_db:.1f} dB" if c.alone_int8_sqnr_db is not None else ""
        # a residual Add fused into its Conv (onnxruntime's Conv+Add+Relu) has no time of its own in the profile
        cost = f"for {c.cost_ms:.3f} ms" if c.cost_ms is not None else "no time of its own in the profile (fused)"
        out.append(f"{layer}: alone float it recovers {c.recovered_db:+.2f} dB{alone}, {cost}")
    cheaper = [c.label for c in timed if not c.passed and len(c.float_layers) < len(chosen.float_layers)]
    if cheaper:
        out.append(f"with fewer layers float the budget failed ({'; '.join(cheaper)})")
    return out
