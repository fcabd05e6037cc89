"""Building and judging candidate graphs: quantized with the same calibrated ranges (``--target cpu``) or
made fp16 (``--target cuda``), keeping some layers float, verified end to end against PyTorch with the
budget's tolerance (and, with labels, top-1 and top-5 over the whole labelled set)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch

from exporter import artifact as art
from exporter.data import Split
from exporter.layers import LayerIndex
from exporter.reference import Prepared, forward_outputs
from exporter.variants import FP16_KEEP_FP32, quantize_int8, to_fp16

from ..compare import compare
from ..openvino_model import OpenvinoInfer
from ..parity import check
from ..sessions import SessionConfig, create_session, run

#: Images per batch when running a labelled set through a graph or PyTorch.
CHUNK = 64


@dataclass
class Quantizer:
    """Builds a graph from the pre-processed one, some nodes float, with the ranges calibrated once."""

    prepared: Path
    work: Path
    options: dict[str, object]
    facts: dict[str, dict[str, object]] = field(default_factory=dict)

    def __call__(self, keep_float: list[str], label: str) -> bytes:
        out = self.work / f"{label}.onnx"
        self.facts[label] = quantize_int8(self.prepared, out, None, keep_float=keep_float, **self.options)  # type: ignore[arg-type]
        data = out.read_bytes()
        out.unlink()
        return data


#: Reductions sum many values, which half precision can overflow or round away: float32 in every fp16 candidate.
FP16_REDUCTIONS = ("ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL1", "ReduceL2", "ReduceLogSum",
                   "ReduceLogSumExp", "ReduceProd")  # fmt: skip


@dataclass
class HalfBuilder:
    """Builds an fp16 graph from the fp32 one (``--target cuda``), some nodes float32: the same call as
    :class:`Quantizer`. Besides the nodes asked for, onnxruntime's default block list, LRN
    (:data:`~exporter.variants.FP16_KEEP_FP32`) and the reductions (:data:`FP16_REDUCTIONS`) stay float32."""

    fp32: bytes
    facts: dict[str, dict[str, object]] = field(default_factory=dict)
    #: the op types of this graph kept float32 in every candidate (LRN, reductions)
    kept_ops: list[str] = field(init=False)
    _reductions: list[str] = field(init=False)

    def __post_init__(self) -> None:
        nodes = onnx.load_from_string(self.fp32).graph.node
        ops = {n.op_type for n in nodes}
        self.kept_ops = [op for op in (*FP16_KEEP_FP32, *FP16_REDUCTIONS) if op in ops]
        self._reductions = [n.name for n in nodes if n.op_type in FP16_REDUCTIONS]

    def __call__(self, keep_float: list[str], label: str) -> bytes:
        from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST

        asked = {*keep_float, *self._reductions}
        model = to_fp16(onnx.load_from_string(self.fp32), keep_float=sorted(asked))
        blocked = {*DEFAULT_OP_BLOCK_LIST, *FP16_KEEP_FP32}
        kept = [n.name for n in model.graph.node if n.name in asked or n.op_type in blocked]
        self.facts[label] = {"float_nodes": kept}
        return model.SerializeToString()


def _logits(infer: Callable[[torch.Tensor], np.ndarray], x: torch.Tensor) -> np.ndarray:
    return np.concatenate([infer(x[i : i + CHUNK]) for i in range(0, len(x), CHUNK)])


def topk_accuracy(logits: np.ndarray, labels: torch.Tensor) -> tuple[float, float]:
    """(top-1, top-5) accuracy of ``logits`` (N, classes) against ``labels``."""
    y = labels.numpy()
    order = np.argsort(-logits, axis=1, kind="stable")
    top5 = order[:, : min(5, logits.shape[1])]
    return float((order[:, 0] == y).mean()), float((top5 == y[:, None]).any(axis=1).mean())


@dataclass
class Verdict:
    """A candidate's verdict: onnxruntime's parity record (the variant's), the drops, every engine's check."""

    parity: art.ParityRecord
    drop1: float | None
    drop5: float | None
    #: one per engine judged in where that is more than onnxruntime (empty for onnxruntime alone)
    checks: list[art.EngineCheck]

    @property
    def passed(self) -> bool:
        return self.parity.passed and all(c.passed for c in self.checks)

    @property
    def failure(self) -> str | None:
        """The first failure, onnxruntime's first; OpenVINO's named as such."""
        failures = self.parity.failures()
        if failures:
            return failures[0]
        return next((c.failure for c in self.checks if not c.passed), None)

    def figures(self) -> tuple[float | None, float | None, float | None]:
        """(SQNR, cosine, top-1 drop): the worst over the engines judged in."""
        sqnr, cosine = figures(self.parity)
        drop1 = self.drop1
        for c in self.checks:
            sqnr = _worst(sqnr, c.sqnr_db, min)
            cosine = _worst(cosine, c.cosine_min, min)
            drop1 = _worst(drop1, c.accuracy_drop_pp, max)
        return sqnr, cosine, drop1


def _worst(a: float | None, b: float | None, pick: Callable[[float, float], float]) -> float | None:
    # None is "exact" for SQNR (no noise) and "not measured" for the drops: the other figure is the worse
    return b if a is None else a if b is None else pick(a, b)


def _engine_check(parity: art.ParityRecord, drop1: float | None, where: str) -> art.EngineCheck:
    """One engine's verdict from its parity record, its failure prefixed with ``where``."""
    sqnr, cosine = figures(parity)
    failures = parity.failures()
    return art.EngineCheck(
        engine=parity.engine, inference_precision=parity.inference_precision, sqnr_db=sqnr, cosine_min=cosine,
        accuracy_drop_pp=drop1, passed=parity.passed, failure=where + failures[0] if failures else None,
    )  # fmt: skip


@dataclass
class Judge:
    """Verifies candidates: the parity check with the budget's tolerance, and top-1/top-5 drops with labels.

    With ``engine="openvino"`` every candidate is verified in onnxruntime and again in OpenVINO, compiled as
    it is timed (:mod:`runtime.openvino_model`: the same pinned precision hint): OpenVINO runs a QDQ graph
    with its own int8 kernels, so the graph deployed is the graph judged. The sensitivity probes
    (:meth:`probe_sqnr`) stay in onnxruntime: they only rank layers, dozens of graphs each on one batch,
    and a compile per graph in OpenVINO would cost more than the probe; every ranked candidate is still
    judged in both engines.
    """

    reference: Prepared
    tolerance: art.Tolerance
    sizes: Sequence[tuple[int, int]]
    threads: int
    probe: torch.Tensor
    labelled: Split | None = None
    max_drop_pp: float | None = None
    labelled_name: str = ""
    engine: str = "onnxruntime"
    #: where the candidates are verified and as what precision (``--target cuda``: fp16 on CUDA)
    device: str = "cpu"
    precision: str = "int8"
    _probe_ref: np.ndarray | None = None
    _fp32_logits: np.ndarray | None = None

    def _session(self, graph: bytes):  # type: ignore[no-untyped-def]
        return create_session(graph, SessionConfig(device=self.device, threads=self.threads))[0]

    def probe_sqnr(self, graph: bytes) -> float | None:
        """The output SQNR of ``graph`` on the probe images (in onnxruntime): the quick figure the sensitivities
        rank by."""
        if self._probe_ref is None:
            self._probe_ref = forward_outputs(self.reference.model, self.probe, self.reference.name)[0].float().numpy()
        sess = self._session(graph)
        got = np.asarray(run(sess, self.probe.numpy())[0], dtype=np.float32)
        return compare(self._probe_ref, got, self.tolerance).sqnr_db

    def fp32_accuracy(self) -> tuple[float, float] | None:
        if self.labelled is None:
            return None
        if self._fp32_logits is None:
            model, name = self.reference.model, self.reference.name
            self._fp32_logits = _logits(lambda x: forward_outputs(model, x, name)[0].float().numpy(), self.labelled.x)
        return topk_accuracy(self._fp32_logits, self.labelled.y)

    def __call__(self, graph: bytes, step: Callable[[str], None], openvino_hint: str | None = None) -> Verdict:
        """The verdict on ``graph``: onnxruntime's parity record (its accuracy that of the labelled set), the
        top-1 and top-5 drops in points (None without labels), and OpenVINO's check where it is the engine;
        ``openvino_hint`` ``bf16``: OpenVINO runs the graph's float layers in bf16."""
        parity, drop1, drop5 = self._judge_in("onnxruntime", graph, step)
        checks = []
        if self.engine == "openvino":
            ov, ov_drop1, _ = self._judge_in("openvino", graph, step, openvino_hint)
            where = f"in OpenVINO ({ov.inference_precision} hint): "
            checks = [_engine_check(parity, drop1, ""), _engine_check(ov, ov_drop1, where)]
        return Verdict(parity, drop1, drop5, checks)

    def _infer(self, engine: str, graph: bytes, hint: str | None) -> Callable[[torch.Tensor], np.ndarray]:
        if engine == "openvino":
            ov = OpenvinoInfer(graph, self.precision, self.threads, hint=hint)
            return lambda x: ov(x.numpy())[0]
        sess = self._session(graph)
        return lambda x: np.asarray(run(sess, x.numpy())[0], dtype=np.float32)

    def _judge_in(
        self, engine: str, graph: bytes, step: Callable[[str], None], openvino_hint: str | None = None
    ) -> tuple[art.ParityRecord, float | None, float | None]:
        """The parity record of ``graph`` in ``engine`` (with the labelled set's accuracy), and the drops."""
        session = SessionConfig(device=self.device, threads=self.threads)
        # bf16: OpenVINO runs the float layers of this int8 graph in bf16, its Q/DQ-wrapped layers stay int8
        hint = openvino_hint if engine == "openvino" else None
        parity = check(graph, self.reference, precision=self.precision, sizes=self.sizes, tolerance=self.tolerance,
                       session=session, on_step=step, engine=engine, openvino_hint=hint)  # fmt: skip
        base = self.fp32_accuracy()
        if base is None or self.labelled is None or self._fp32_logits is None:
            return parity, None, None
        logits = _logits(self._infer(engine, graph, hint), self.labelled.x)
        got = topk_accuracy(logits, self.labelled.y)
        drop1, drop5 = round((base[0] - got[0]) * 100, 3), round((base[1] - got[1]) * 100, 3)
        failure = None
        if self.max_drop_pp is not None and drop1 > self.max_drop_pp:
            failure = f"top-1 {got[0]:.2%} trails PyTorch fp32's {base[0]:.2%} by {drop1:g} points"
        accuracy = art.Accuracy(
            dataset=self.labelled_name, n=len(self.labelled.y), pytorch_fp32=base[0], onnx=got[0],
            top1_agreement=float((logits.argmax(1) == self._fp32_logits.argmax(1)).mean()),
            passed=failure is None, failure=failure,
        )  # fmt: skip
        passed = all(r.passed for r in parity.results) and failure is None
        return parity.model_copy(update={"accuracy": accuracy, "passed": passed}), drop1, drop5


def figures(parity: art.ParityRecord) -> tuple[float | None, float | None]:
    """(min SQNR, min cosine) over every comparison of a parity record."""
    sqnr = [r.sqnr_db for r in parity.results if r.sqnr_db is not None]
    cos = [r.cosine_min for r in parity.results if r.cosine_min is not None]
    return (min(sqnr) if sqnr else None), (min(cos) if cos else None)


@dataclass
class Work:
    """What every stage of the search shares: the artifact, its reference, the graph builder and the judge."""

    artifact: art.Artifact
    reference: Prepared
    calibration_dir: str | None
    threads: int
    #: the graph builder: int8 (``--target cpu``) or fp16 (``--target cuda``)
    quantize: Quantizer | HalfBuilder
    judge: Judge
    index: LayerIndex
    step: Callable[[str], None]
    candidates: list[art.SearchCandidate] = field(default_factory=list)
    graphs: list[bytes] = field(default_factory=list)
    parities: list[art.ParityRecord] = field(default_factory=list)
    #: what the layers not kept float are (int8, fp16), as the candidates' labels say it
    precision: str = "int8"
    identity_nodes_removed: int = 0

    def try_graph(
        self, label: str, nodes: list[str], layers: list[str], openvino_hint: str | None = None
    ) -> art.SearchCandidate:
        """Build the graph with ``nodes`` float, judge it, and add it to the candidates."""
        self.step(f"candidate {len(self.candidates) + 1}: {label}")
        return self._judged(label, layers, self.quantize(nodes, f"cand{len(self.candidates)}"), openvino_hint)

    def try_twin(self, i: int, openvino_hint: str) -> art.SearchCandidate:
        """Candidate ``i``'s graph again, judged with OpenVINO's ``openvino_hint`` (bf16: its float layers in bf16)."""
        c = self.candidates[i]
        label = f"{c.label}; float layers in {openvino_hint} (OpenVINO)"
        self.step(f"candidate {len(self.candidates) + 1}: {label}")
        self.quantize.facts[f"cand{len(self.candidates)}"] = self.quantize.facts[f"cand{i}"]  # the same graph
        return self._judged(label, c.float_layers, self.graphs[i], openvino_hint)

    def _judged(self, label: str, layers: list[str], graph: bytes, openvino_hint: str | None) -> art.SearchCandidate:
        verdict = self.judge(graph, lambda _m: None, openvino_hint)
        sqnr, cosine, drop1 = verdict.figures()
        c = art.SearchCandidate(
            label=label, float_layers=layers, float_nodes=list(self.quantize.facts[f"cand{len(self.candidates)}"]
            ["float_nodes"]), sqnr_db=sqnr, cosine_min=cosine, accuracy_drop_pp=drop1,  # type: ignore[arg-type]
            top5_drop_pp=verdict.drop5, passed=verdict.passed, failure=verdict.failure, checks=verdict.checks,
            openvino_hint=openvino_hint,  # type: ignore[arg-type]
        )  # fmt: skip
        self.candidates.append(c)
        self.graphs.append(graph)
        self.parities.append(verdict.parity)
        self.step(f"  {'passed' if c.passed else 'failed'}: " + describe(c))
        return c


def describe(c: art.SearchCandidate) -> str:
    parts = [f"SQNR {c.sqnr_db:.1f} dB" if c.sqnr_db is not None else "SQNR exact"]
    if c.cosine_min is not None:
        parts.append(f"cosine {c.cosine_min:.4f}")
    if c.accuracy_drop_pp is not None:
        parts.append(f"top-1 drop {c.accuracy_drop_pp:g} pp")
    return ", ".join(parts)
