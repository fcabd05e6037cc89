"""Where a reduced-precision graph loses precision: per-layer SQNR against the fp32 graph.

:func:`explain` runs an artifact's int8 (or fp16) graph and its fp32 graph on the same
inputs with their intermediate tensors exposed, matches the tensors by name and returns one
typed :class:`LayerError` row per layer of the variant: SQNR, cosine and largest absolute
error of what that layer hands on, and ``loss_db``, how much SQNR the layer itself costs
(the SQNR of its inputs minus that of its output). The lowest SQNR is usually near the
output, where every layer's noise has piled up; the layer with the largest ``loss_db`` is
the one to look at (to exclude from quantization, calibrate differently, ...).

Matching by name: onnxruntime's QDQ quantizer keeps every float tensor name of the graph it
quantized. A quantized layer ``Conv -> T`` becomes ``DQ(x) -> Conv -> T -> Q -> T_QuantizeLinear_Output
-> DQ -> ...``; a ReLU after a convolution is folded into the convolution, which then writes the
ReLU's output name. What the next layer sees is the quantized tensor, so it is read at the
QuantizeLinear's output (the real int8 kernel's result: onnxruntime still fuses ``DQ -> Conv -> Q``
into QLinearConv with that output exposed) and dequantized here with the same scale and zero
point. The fp32 side is the artifact's graph with the same identity nodes stripped as the
variant builder strips, so the names agree. fp16 graphs keep their float names too.

Nothing here prints; sessions come from :func:`runtime.sessions.create_session`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import onnx
from onnx import numpy_helper
from pydantic import BaseModel, ConfigDict

from exporter.artifact import Artifact, VariantKey
from exporter.errors import UserError
from exporter.files import finite_or_none
from exporter.reference import Prepared

from ..sessions import SessionConfig, create_session
from . import DEFAULT_SEED, DIGITS
from .explainable import explainable

#: Ops that move data between representations; they are not layers of their own.
_PLUMBING = {"QuantizeLinear", "DequantizeLinear", "Cast"}
#: The name onnxruntime gives a tensor whose own name had to move to the DequantizeLinear after it.
_Q_INPUT = "_QuantizeLinear_Input"


class _Row(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class LayerError(_Row):
    """One layer of the variant graph compared with the same tensor of the fp32 graph.

    ``sqnr_db`` is None where the tensors are identical; ``loss_db`` is the SQNR of the
    layer's inputs (the worst of them, as this graph computed them) minus the SQNR of its
    output: the precision this layer itself loses (None where its inputs are exact).
    """

    index: int
    node: str
    op_type: str
    tensor: str
    quantized: bool
    shape: list[int]
    sqnr_db: float | None
    cosine_min: float | None
    max_abs_err: float | None
    ref_max_abs: float
    input_sqnr_db: float | None
    loss_db: float | None


class Explanation(_Row):
    """Per-layer errors of one variant graph against the fp32 graph on the same inputs."""

    precision: str
    inputs: str
    batch_sizes: list[int]
    input_sqnr_db: float | None
    layers: list[LayerError]
    #: layers of the variant whose output tensor has no counterpart in the fp32 graph
    unmatched: list[str]

    def worst(self, n: int = 1) -> list[LayerError]:
        """The ``n`` layers losing the most precision themselves (largest ``loss_db``)."""
        ranked = [r for r in self.layers if r.loss_db is not None]
        return sorted(ranked, key=lambda r: -r.loss_db)[:n]  # type: ignore[operator]

    def lowest_sqnr(self) -> LayerError | None:
        rows = [r for r in self.layers if r.sqnr_db is not None]
        return min(rows, key=lambda r: r.sqnr_db) if rows else None  # type: ignore[arg-type,return-value]


class _Stats:
    """Running error figures of one tensor over several batches."""

    def __init__(self) -> None:
        self.signal = 0.0
        self.noise = 0.0
        self.cosine: float | None = None
        self.max_abs = 0.0
        self.ref_max = 0.0
        self.finite = True
        self.shape: list[int] = []

    def add(self, ref: np.ndarray, got: np.ndarray) -> None:
        if ref.shape != got.shape:
            raise UserError(f"tensor shapes differ between the graphs: {ref.shape} vs {got.shape}")
        self.shape = [int(d) for d in ref.shape[1:]]
        r = ref.astype(np.float64).reshape(ref.shape[0] if ref.ndim else 1, -1)
        g = got.astype(np.float64).reshape(r.shape)
        if not np.all(np.isfinite(g)):
            self.finite = False
            return
        d = g - r
        self.signal += float(np.sum(r * r))
        self.noise += float(np.sum(d * d))
        self.max_abs = max(self.max_abs, float(np.max(np.abs(d), initial=0.0)))
        self.ref_max = max(self.ref_max, float(np.max(np.abs(r), initial=0.0)))
        norms = np.linalg.norm(r, axis=1) * np.linalg.norm(g, axis=1)
        dots = np.sum(r * g, axis=1)
        cos = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), 1.0)
        worst = float(cos.min()) if cos.size else 1.0
        self.cosine = worst if self.cosine is None else min(self.cosine, worst)

    @property
    def sqnr(self) -> float | None:
        """dB; None when identical, -inf when not finite."""
        if not self.finite:
            return -math.inf
        if self.noise == 0.0:
            return None
        return 10.0 * math.log10(max(self.signal, 1e-30) / self.noise)


def _as_float(name: str, value: np.ndarray, dequant: dict[str, tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    if name in dequant:
        scale, zero = dequant[name]
        return (value.astype(np.float32) - zero.astype(np.float32)) * scale.astype(np.float32)
    return np.asarray(value, dtype=np.float32)


def _with_outputs(model: onnx.ModelProto, names: Iterable[str]) -> bytes:
    """``model`` serialized with ``names`` added as graph outputs (types left to onnxruntime)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    have = {o.name for o in model.graph.output}
    for name in names:
        if name not in have:
            model.graph.output.append(onnx.ValueInfoProto(name=name))
            have.add(name)
    return model.SerializeToString()


def _initializers(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in model.graph.initializer}


def explain(
    variant: bytes | onnx.ModelProto,
    fp32: bytes | onnx.ModelProto,
    inputs: Sequence[np.ndarray],
    *,
    precision: str,
    inputs_name: str = "random uniform [-1, 1)",
    session: SessionConfig | None = None,
    reference_session: SessionConfig | None = None,
) -> Explanation:
    """Compare every layer of ``variant`` with the same tensor of ``fp32`` on ``inputs`` (batches).

    ``fp32`` is the artifact's exported graph; identity nodes are stripped from it as the
    variant builder strips them, so tensor names agree. ``session`` runs the variant,
    ``reference_session`` (default: the same) the fp32 graph: a TensorRT engine of the variant
    is explained against the fp32 graph on onnxruntime's own provider.
    """
    from exporter.variants import strip_identity_ops

    if not inputs:
        raise UserError("explain needs at least one input batch")
    var = variant if isinstance(variant, onnx.ModelProto) else onnx.load_from_string(variant)
    ref = fp32 if isinstance(fp32, onnx.ModelProto) else onnx.load_from_string(fp32)
    ref, _ = strip_identity_ops(onnx.ModelProto.FromString(ref.SerializeToString()))
    ref_produced = {o for n in ref.graph.node for o in n.output if o}
    ref_op = {o: n.op_type for n in ref.graph.node for o in n.output if o}
    graph_input = var.graph.input[0].name

    producer = {o: n for n in var.graph.node for o in n.output if o}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in var.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    inits = _initializers(var)

    # Where each float tensor is read: at its QuantizeLinear's output where it has one (what
    # the next quantized layer sees, dequantized here), else the tensor itself.
    dequant: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    read_at: dict[str, str] = {}

    def reading(tensor: str) -> str:
        q = next((c for c in consumers.get(tensor, []) if c.op_type == "QuantizeLinear"), None)
        if q is None or len(q.input) < 2 or q.input[1] not in inits:
            return tensor
        scale = numpy_helper.to_array(inits[q.input[1]])
        zero = (
            numpy_helper.to_array(inits[q.input[2]])
            if len(q.input) > 2 and q.input[2] in inits
            else np.zeros((), np.uint8)
        )
        if scale.size != 1:  # per-channel activations: read the float tensor instead
            return tensor
        dequant[q.output[0]] = (scale.reshape(()), zero.reshape(()))
        return q.output[0]

    def named(tensor: str) -> str:
        """The fp32 graph's name of ``tensor``: fp16's converter renames a graph output (``output``
        becomes ``graph_output_cast_0``, then a Cast to float writes ``output``)."""
        if tensor in ref_produced:
            return tensor
        cast = next((c for c in consumers.get(tensor, []) if c.op_type == "Cast" and c.output), None)
        return cast.output[0] if cast is not None and cast.output[0] in ref_produced else tensor

    def source(tensor: str) -> str:
        """The float tensor a (possibly dequantized) input carries: through DQ and Q back to T."""
        for _ in range(4):
            node = producer.get(tensor)
            if node is None or node.op_type not in _PLUMBING:
                return tensor
            tensor = node.input[0]
        return tensor

    layers: list[tuple[onnx.NodeProto, str, bool, list[str]]] = []
    unmatched: list[str] = []
    for node in var.graph.node:
        if node.op_type in _PLUMBING or not node.output or not node.output[0]:
            continue
        tensor = node.output[0]
        if tensor not in ref_produced and tensor.endswith(_Q_INPUT):
            tensor = tensor[: -len(_Q_INPUT)]  # a graph output quantized too: T -> Q -> DQ -> T
        tensor = named(tensor)
        quantized = any(
            i in producer and producer[i].op_type == "DequantizeLinear" and producer[i].input[0] not in inits
            for i in node.input
        )
        if tensor not in ref_produced:
            unmatched.append(tensor)
            continue
        sources = [source(i) for i in node.input if i and i not in inits and source(i) not in inits]
        sources = [s for s in sources if s in ref_produced or s == graph_input]
        read_at[tensor] = reading(node.output[0])
        layers.append((node, tensor, quantized, sources))
    input_read = reading(graph_input)
    if input_read == graph_input:  # fp16 with float32 inputs: what the layers see is the input cast to half
        cast = next((c for c in consumers.get(graph_input, []) if c.op_type == "Cast" and c.output), None)
        input_read = cast.output[0] if cast is not None else graph_input

    if not layers:
        raise UserError("no layer of this graph has a tensor of the same name in the fp32 graph to compare with")
    config = session or SessionConfig(device="cpu")
    var_sess, _ = create_session(_with_outputs(var, [*read_at.values(), input_read]), config)
    ref_sess, _ = create_session(_with_outputs(ref, [t for _, t, _, _ in layers]), reference_session or config)
    var_names = [o.name for o in var_sess.get_outputs()]
    ref_names = [o.name for o in ref_sess.get_outputs()]
    var_in = var_sess.get_inputs()[0]
    feed_dtype = np.float16 if var_in.type == "tensor(float16)" else np.float32

    stats = {t: _Stats() for _, t, _, _ in layers}
    input_stats = _Stats()
    batch_sizes = []
    for x in inputs:
        x = np.asarray(x, dtype=np.float32)
        batch_sizes.append(int(x.shape[0]))
        got = dict(zip(var_names, var_sess.run(None, {var_in.name: x.astype(feed_dtype)})))
        want = dict(zip(ref_names, ref_sess.run(None, {ref_sess.get_inputs()[0].name: x})))
        for _, tensor, _, _ in layers:
            stats[tensor].add(want[tensor], _as_float(read_at[tensor], got[read_at[tensor]], dequant))
        input_stats.add(x, _as_float(input_read, got[input_read], dequant) if input_read in got else x)
        del got, want

    sqnr = {t: s.sqnr for t, s in stats.items()}
    sqnr[graph_input] = input_stats.sqnr
    rows = []
    for index, (node, tensor, quantized, sources) in enumerate(layers):
        s = stats[tensor]
        own = sqnr[tensor]
        ins = [math.inf if sqnr.get(src) is None else sqnr[src] for src in sources if src in sqnr]
        before = min(ins) if ins else math.inf
        loss = None
        if own is not None and math.isfinite(before):
            loss = before - own if math.isfinite(own) else None
        op = node.op_type
        if ref_op.get(tensor, op) != op:
            op = f"{op}+{ref_op[tensor]}"  # e.g. a ReLU folded into the quantized convolution
        rows.append(
            LayerError(
                index=index,
                node=node.name or tensor,
                op_type=op,
                tensor=tensor,
                quantized=quantized,
                shape=s.shape,
                sqnr_db=finite_or_none(own) if own is not None else None,
                cosine_min=finite_or_none(s.cosine) if s.finite else None,
                max_abs_err=finite_or_none(s.max_abs) if s.finite else None,
                ref_max_abs=s.ref_max,
                input_sqnr_db=finite_or_none(before),
                loss_db=finite_or_none(loss),
            )
        )
    return Explanation(
        precision=precision,
        inputs=inputs_name,
        batch_sizes=batch_sizes,
        input_sqnr_db=finite_or_none(input_stats.sqnr) if input_stats.sqnr is not None else None,
        layers=rows,
        unmatched=unmatched,
    )


def check_inputs(
    input_shape: Sequence[int], batch_sizes: Sequence[int], *, digits_inputs: bool, seed: int
) -> list[np.ndarray]:
    """The batches :func:`runtime.parity.check` feeds at the export size, in the same order and from
    the same seeds, so a layer table explains the parity figures printed above it."""
    from exporter.data import check_batch, digits

    shape = tuple(int(d) for d in input_shape)
    held_out = digits(shape)[1] if digits_inputs else None
    return [check_batch(shape, batch, i, seed=seed, held_out=held_out).numpy() for i, batch in enumerate(batch_sizes)]


def explain_artifact(
    artifact: Artifact,
    key: VariantKey,
    graph: bytes,
    reference: Prepared,
    *,
    batch_sizes: Sequence[int],
    inputs: str = "auto",
    seed: int = DEFAULT_SEED,
    session: SessionConfig | None = None,
    reference_session: SessionConfig | None = None,
    foreign: bool = False,
) -> Explanation:
    """:func:`explain` for an artifact's variant ``key`` (its verified bytes ``graph``) against the
    artifact's fp32 graph, on the inputs ``runtime.parity`` feeds (``graph`` may be the fp32 graph
    itself where ``session`` computes it in ``key``'s precision: TensorRT's fp16 engines).
    ``foreign``: ``graph`` is a file the artifact does not record (``--graph``), compared layer by
    layer with the recorded fp32 graph at any precision, fp32 included (a rewritten fp32 graph
    keeps most tensor names)."""
    problem = explainable(key, foreign=foreign)
    if problem:
        raise UserError(problem)
    stale = artifact.stale_reason()
    if stale:
        raise UserError(f"--explain needs the current fp32 graph of {artifact.name}: {stale}")
    use_digits = inputs == "digits" or (inputs == "auto" and reference.trained_on == DIGITS)
    batches = check_inputs(reference.input_shape, batch_sizes, digits_inputs=use_digits, seed=seed)
    return explain(
        graph,
        artifact.path().read_bytes(),
        batches,
        precision=key.precision,
        inputs_name=f"{DIGITS} held-out" if use_digits else "random uniform [-1, 1)",
        session=session,
        reference_session=reference_session,
    )
