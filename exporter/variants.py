"""Faster variants of an exported fp32 graph: fp16 (CUDA), int8 (CPU), offline-optimized graphs.

One transform per function (Polygraphy's "one loader per transform"): :func:`strip_identity_ops`,
:func:`to_fp16`, :func:`quantize_int8`, and offline optimization through the session factory. A
variant is built from the artifact's current fp32 graph in a temporary folder, verified
against PyTorch with :func:`runtime.parity.check` (the same check ``runtime.parity`` runs
later, so both give the same verdict), and only then written beside the fp32 graph and
recorded in the manifest, all under the artifact's lock.
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch

from . import artifact as art
from .errors import ExportFailed, UserError, describe_os_error, first_line
from .files import atomic_outputs, remove_stale_partials, require_free_space, scratch_dir, sha256_bytes
from .graph import io_shapes, io_spec, op_counts, topological_sort
from .ranges import CALIBRATION_BATCH, CalibrationReader
from .reference import Prepared, rebuild

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
CALIBRATION_IMAGES = 256
#: The layers whose count bounds a float stem (see :func:`float_stem`).
COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
#: When every layer in int8 fails verification, graphs keeping the first 1, 2, ... of this many
#: compute layers in float are tried, cheapest first. Measured on GoogLeNet (random weights):
#: all-int8 SQNR 13.6 dB, cosine 0.977; minmax, entropy, percentile and MSE-optimal ranges all
#: within 0.4 dB of each other (the rounding is not the problem: each layer's own quantization
#: keeps 44 dB); ``--explain`` shows conv2, the 1x1 convolution after the first max-pool, losing
#: 11 dB: max-pooled activations are mostly a common offset which its folded BatchNorm removes,
#: so the 8-bit rounding of its input grows 10x relative to what is left. With conv1, the pool
#: and conv2 in float: 15.5 dB, cosine 0.986.
MAX_FLOAT_STEM = 3
#: See :func:`int8_tolerance`.
FLOOR_BUDGET_DB = 3.0
#: Seed of the random calibration batch: the same distribution as the parity inputs, other samples.
CALIBRATION_SEED = 4242
#: Kept in float32 in fp16 graphs: LRN sums squares of activations, which can overflow half precision.
FP16_KEEP_FP32 = ("LRN",)


def cpu_int8_features() -> dict[str, bool]:
    """Which x86 integer dot-product instructions this CPU has (from /proc/cpuinfo)."""
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    return {"avx2": "avx2" in flags, "avx512_vnni": "avx512_vnni" in flags, "avx_vnni": "avx_vnni" in flags}


def default_reduce_range() -> bool:
    """7-bit weights where the CPU has AVX2 but no VNNI.

    Without VNNI, onnxruntime's u8s8 kernels use ``vpmaddubsw``, whose int16 accumulation
    can saturate with full 8-bit ranges; onnxruntime's guidance is reduce_range there.
    With VNNI (``vpdpbusd`` accumulates in int32) full-range int8 is exact and more accurate.
    """
    f = cpu_int8_features()
    return f["avx2"] and not (f["avx512_vnni"] or f["avx_vnni"])


def strip_identity_ops(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Remove nodes that compute their input unchanged: 1x1/stride-1/unpadded pools, Identity, Dropout.

    An adaptive pool whose output size equals its input (AlexNet's 6x6, VGG's 7x7) traces to
    such an AveragePool; onnxsim keeps it. Graph outputs are never rewired away.
    """
    graph = model.graph
    outputs = {o.name for o in graph.output}
    rename: dict[str, str] = {}
    keep = []
    removed = 0

    def ints(node: onnx.NodeProto, attr: str) -> list[int]:
        return next((list(a.ints) for a in node.attribute if a.name == attr), [])

    for node in graph.node:
        identity = (
            node.op_type in ("Identity", "Dropout")
            and len(node.output) >= 1
            and (len(node.output) == 1 or not node.output[1])
        )
        if node.op_type in ("AveragePool", "MaxPool") and len(node.output) == 1:
            kernel = ints(node, "kernel_shape")
            identity = (
                bool(kernel)
                and all(k == 1 for k in kernel)
                and all(s == 1 for s in ints(node, "strides") or [1])
                and not any(ints(node, "pads"))
                and not any(ints(node, "dilations") and d != 1 for d in ints(node, "dilations"))
            )
        if identity and node.output[0] not in outputs:
            src = node.input[0]
            rename[node.output[0]] = rename.get(src, src)
            removed += 1
            continue
        keep.append(node)
    for node in keep:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    del graph.node[:]
    graph.node.extend(keep)
    dead = set(rename)
    kept_vi = [vi for vi in graph.value_info if vi.name not in dead]
    del graph.value_info[:]
    graph.value_info.extend(kept_vi)
    return model, removed


def to_fp16(model: onnx.ModelProto, keep_io_types: bool = True, keep_float: Sequence[str] = ()) -> onnx.ModelProto:
    """Half-precision weights and compute; float32 inputs/outputs unless ``keep_io_types`` is False.

    The ops of onnxruntime's default block list and :data:`FP16_KEEP_FP32` stay float32, and so do the
    nodes named in ``keep_float`` (the precision search's float layers), with Casts around each of them."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    half = convert_float_to_float16(
        model,
        keep_io_types=keep_io_types,
        op_block_list=list(DEFAULT_OP_BLOCK_LIST) + list(FP16_KEEP_FP32),
        node_block_list=list(keep_float),
    )
    return topological_sort(drop_half_round_trips(half))


def drop_half_round_trips(model: onnx.ModelProto) -> onnx.ModelProto:
    """Remove the Cast pairs float32 -> float16 -> float32 the converter leaves between two float32 nodes.

    onnxruntime's converter makes every tensor float16 and casts around each blocked node, so a tensor
    from one float32 node to the next (a float layer's input, LRN into a float layer) was still rounded to
    half precision on the way: keeping a layer float must keep its input float too (on lenet5, every node
    kept float measured 71.9 dB against all-fp16's 71.6 with the pairs, 135 dB without them)."""
    from onnx import TensorProto

    graph = model.graph
    outputs = {o.name for o in graph.output}
    inputs = {i.name for i in graph.input}
    declared = {v.name: v.type.tensor_type.elem_type for v in [*graph.value_info, *graph.input]}

    def to(node: onnx.NodeProto) -> int | None:
        return next((a.i for a in node.attribute if a.name == "to"), None) if node.op_type == "Cast" else None

    producer = {o: n for n in graph.node for o in n.output}
    removed: set[str] = set()
    for back in list(graph.node):
        down = producer.get(back.input[0]) if to(back) == TensorProto.FLOAT else None
        if down is None or to(down) != TensorProto.FLOAT16 or declared.get(down.input[0], 1) != TensorProto.FLOAT:
            continue
        source, result = down.input[0], back.output[0]
        if result in outputs and (source in inputs or source in outputs):
            continue  # both names must stay: the pair is left as it is
        if result in outputs:  # the graph's output keeps its name: the source's producer writes it directly
            old, new = source, result
        else:
            old, new = result, source
        for node in graph.node:
            node.input[:] = [new if i == old else i for i in node.input]
            node.output[:] = [new if o == old else o for o in node.output]
        graph.node.remove(back)
        producer = {o: n for n in graph.node for o in n.output}
        removed |= {old, back.input[0]}
    used = {i for n in graph.node for i in n.input} | outputs
    for node in list(graph.node):  # the float16 Casts whose only reader was a removed pair
        if node.op_type == "Cast" and not any(o in used for o in node.output):
            graph.node.remove(node)
            removed |= set(node.output)
    kept = [v for v in graph.value_info if v.name not in removed]
    del graph.value_info[:]
    graph.value_info.extend(kept)
    return model


def prepare_for_int8(fp32_path: Path, out_path: Path) -> onnx.ModelProto:
    """onnxruntime's pre-processing for quantization (shape inference, basic fusions), saved to ``out_path``."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(fp32_path), str(out_path), skip_symbolic_shape=True)
    return onnx.load(str(out_path), load_external_data=False)


def unfused_batchnorms(model: onnx.ModelProto) -> list[str]:
    """BatchNormalization nodes left in the graph (one after a ReLU cannot fold into a convolution)."""
    return [n.name for n in model.graph.node if n.op_type == "BatchNormalization"]


def float_stem(model: onnx.ModelProto, layers: int) -> list[str]:
    """The nodes from the graph's input up to and including its ``layers``-th compute layer
    (Conv, Gemm, MatMul), in graph order: the stem kept in float by a mixed-precision attempt."""
    names: list[str] = []
    seen = 0
    for node in model.graph.node:
        if seen >= layers:
            break
        names.append(node.name)
        seen += node.op_type in COMPUTE_OPS
    return names if seen >= layers else []


def quantize_int8(
    prepared: Path,
    out_path: Path,
    calibration: torch.Tensor | Sequence[torch.Tensor] | None,
    *,
    method: str = "minmax",
    per_channel: bool = True,
    reduce_range: bool | None = None,
    keep_float: Sequence[str] = (),
    cache: Path | None = None,
) -> dict[str, object]:
    """Static QDQ quantization of a pre-processed graph: uint8 activations, int8 (per-channel) weights.

    Nodes in ``keep_float`` (and BatchNormalizations that did not fold) stay float. With
    ``cache``, the activation ranges are computed once and reused from that file, so a second
    graph with other float nodes costs no second calibration (``calibration`` may then be None).
    ``calibration`` is one tensor of images or several of different input sizes (dynamic-size graphs).
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    if method not in CALIBRATION_METHODS:
        raise UserError(f"unknown calibration method {method!r}: choose {', '.join(CALIBRATION_METHODS)}")
    groups = [calibration] if isinstance(calibration, torch.Tensor) else list(calibration or [])
    if any(not torch.isfinite(g).all() for g in groups):
        raise UserError("the calibration images contain NaN or Inf values")
    reduce = default_reduce_range() if reduce_range is None else reduce_range
    model = onnx.load(str(prepared), load_external_data=False)
    reader = None
    if calibration is not None:
        reader = type("Reader", (CalibrationReader, CalibrationDataReader), {})(groups, model.graph.input[0].name)
    float_nodes = list(dict.fromkeys([*unfused_batchnorms(model), *keep_float]))
    extra: dict[str, object] = {"WeightSymmetric": True, "ActivationSymmetric": False}
    if method != "minmax":
        extra["CalibStridedMinMax"] = 1  # histograms one batch at a time (see CalibrationReader)
    quantize_static(
        str(prepared),
        str(out_path),
        reader,
        quant_format=QuantFormat.QDQ,
        per_channel=per_channel,
        reduce_range=reduce,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method={
            "minmax": CalibrationMethod.MinMax,
            "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile,
        }[method],
        nodes_to_exclude=float_nodes,
        extra_options=extra,
        calibration_cache_path=cache,
    )
    return {
        "format": "QDQ",
        "activations": "uint8",
        "weights": "int8",
        "per_channel": per_channel,
        "reduce_range": reduce,
        "calibration_method": method,
        "float_nodes": float_nodes,
        "cpu_features": cpu_int8_features(),
    }


def input_grid(model: onnx.ModelProto) -> tuple[float, int] | None:
    """(scale, zero point) of the QuantizeLinear on the graph's input, None where the input stays float."""
    from onnx import numpy_helper

    name = model.graph.input[0].name
    inits = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] == name and node.input[1] in inits:
            scale = float(numpy_helper.to_array(inits[node.input[1]]).reshape(-1)[0])
            zero = int(numpy_helper.to_array(inits[node.input[2]]).reshape(-1)[0]) if len(node.input) > 2 else 0
            return scale, zero
    return None


def input_rounding_floor(
    reference: Prepared, grid: tuple[float, int], batch_sizes: Sequence[int], seed: int
) -> tuple[float | None, float]:
    """How well the PyTorch model agrees with itself when only its input is rounded to ``grid``
    (uint8 scale and zero point), on the random inputs the parity check feeds: (min SQNR dB, min cosine).

    Every int8 graph rounds its input this way before its first layer, so no int8 graph can
    do systematically better. Well-conditioned networks stay far above the int8 tolerance
    (AlexNet 68 dB, VGG-16 54 dB); the deepest random-weight networks amplify this rounding
    alone down to about the tolerance (ResNet-152 13.8 dB, cosine 0.977).
    """
    from runtime.compare import compare, default_tolerance

    from .data import check_batch
    from .reference import forward_outputs

    scale, zero = grid
    tol = default_tolerance("cpu", "int8")
    sqnr: list[float | None] = []
    cosine: list[float] = []
    for i, batch in enumerate(batch_sizes):
        x = check_batch(reference.input_shape, batch, i, seed=seed)
        rounded = (torch.clamp(torch.round(x / scale) + zero, 0, 255) - zero) * scale
        for a, b in zip(
            forward_outputs(reference.model, x, reference.name),
            forward_outputs(reference.model, rounded, reference.name),
        ):
            c = compare(a.float().numpy(), b.float().numpy(), tol)
            sqnr.append(c.sqnr_db)
            cosine.append(c.cosine_min if c.cosine_min is not None else -1.0)
    finite = [s for s in sqnr if s is not None]
    return (min(finite) if finite else None), min(cosine)


def int8_tolerance(
    default: art.Tolerance, floor_sqnr: float | None, floor_cosine: float
) -> tuple[art.Tolerance, str | None]:
    """The int8 tolerance for a random-weight model whose own input-rounding floor is near the default.

    Budget: all the quantized layers together may add at most as much noise as the input
    rounding the model cannot avoid, i.e. SQNR >= floor - 3 dB and 1 - cosine <= 2 (1 - floor
    cosine). The default applies wherever it is the weaker demand, which is every zoo model
    but the deepest: measured on this project's random-weight zoo (parity inputs, batches 1, 3, 5),
    the floors are AlexNet 68 dB, VGG-16 54 dB, ResNet-18 44 dB, GoogLeNet 23.1 dB / 0.9974,
    ResNet-50 20.4 dB / 0.9955 (default kept), but ResNet-101 15.3 dB / 0.9846 and ResNet-152
    13.8 dB / 0.9766: rounding ResNet-152's input alone already fails cosine >= 0.98, so no
    int8 graph of it could pass the default. Their random bottleneck stacks are chaotic (a
    48 dB perturbation of the input leaves ~0 dB SQNR at layer4: the features decorrelate and
    only the global average pool's common part survives), which ``--explain`` shows layer by layer.
    """
    if floor_sqnr is None or default.min_sqnr_db is None:
        return default, None
    min_sqnr = min(default.min_sqnr_db, round(floor_sqnr - FLOOR_BUDGET_DB, 2))
    min_cosine = min(default.min_cosine, round(1.0 - 2.0 * (1.0 - floor_cosine), 4))
    if (min_sqnr, min_cosine) == (default.min_sqnr_db, default.min_cosine):
        return default, None
    reason = (
        f"rounding only the input to the graph's 8-bit grid already leaves the PyTorch model at "
        f"SQNR {floor_sqnr:.1f} dB, cosine {floor_cosine:.4f}: int8 layers may add as much noise again "
        f"(SQNR >= {min_sqnr:g} dB, cosine >= {min_cosine:g} instead of {default.min_sqnr_db:g} dB, "
        f"{default.min_cosine:g})"
    )
    return default.model_copy(update={"min_sqnr_db": min_sqnr, "min_cosine": min_cosine}), reason


def calibration_images(
    reference: Prepared,
    calibration_dir: str | Path | None,
    sizes: Sequence[tuple[int, int]] = (),
    min_size: tuple[int, int] | None = None,
) -> tuple[list[torch.Tensor], str]:
    """Images to calibrate int8 on, from the distribution the parity check feeds: one tensor per input size.

    The user's folder where given; the digits training split for digits-trained weights;
    otherwise seeded random inputs in [-1, 1), the distribution the check of a model with
    random weights uses (calibrating on one distribution and checking on another makes
    every activation range wrong).

    ``sizes`` (a dynamic-size graph's verified (height, width) pairs): the built-in images are
    drawn at every one of them, :data:`CALIBRATION_IMAGES` in all, since activation ranges move
    with the input size (resnet_cifar calibrated at 32x32 only: SQNR 2.1 dB at 256x300, its
    global average pool's inputs spread wider than at 32x32); a folder's images keep their own
    sizes (raised to ``min_size`` where smaller).
    """
    from .data import digits, load_calibration_dir, load_calibration_groups, random_input

    channels = reference.input_shape[0]
    shapes = [(channels, h, w) for h, w in sizes] or [reference.input_shape]
    per_size = max(CALIBRATION_BATCH, CALIBRATION_IMAGES // len(shapes))
    where = "" if not sizes else " at " + ", ".join(f"{h}x{w}" for h, w in sizes)
    if calibration_dir is not None:
        if sizes:
            groups = load_calibration_groups(calibration_dir, channels, min_size or (1, 1))
            return groups, f"{calibration_dir} (at their own sizes)"
        return [load_calibration_dir(calibration_dir, reference.input_shape)], str(calibration_dir)
    if reference.trained_on == "sklearn digits":
        n = per_size if sizes else CALIBRATION_IMAGES
        return [digits(s)[0].x[:n] for s in shapes], "sklearn digits (training split)" + where
    if not sizes:
        images = random_input(reference.input_shape, CALIBRATION_IMAGES, seed=CALIBRATION_SEED)
        return [images], f"random uniform [-1, 1), seed {CALIBRATION_SEED}"
    return (
        [random_input(s, per_size, seed=CALIBRATION_SEED + j) for j, s in enumerate(shapes)],
        f"random uniform [-1, 1), seed {CALIBRATION_SEED}" + where,
    )


def optimize_offline(in_path: Path, out_path: Path, target: str) -> art.OptimizationRecord:
    """Save onnxruntime's optimized graph for ``target`` so sessions start without re-optimizing.

    CPU: all levels (including CPU-only layouts; the file then runs on CPU only). CUDA: the
    extended level with the CUDA provider where one works, otherwise only the
    provider-independent basic level (correct on any provider), recorded as such.
    """
    from runtime.sessions import SessionConfig, cuda_usable, save_optimized

    if target == "cpu":
        level, device = "all", "cpu"
    elif cuda_usable():
        level, device = "extended", "cuda"
    else:
        level, device = "basic", "cpu"
    providers = save_optimized(in_path, out_path, SessionConfig(device=device, graph_optimization=level))
    if not out_path.is_file():
        raise ExportFailed("onnxruntime did not write the optimized graph")
    return art.OptimizationRecord(target=target, level=level, providers=providers)


@dataclass
class VariantOptions:
    """How to build a variant; recorded in its manifest entry so it can be rebuilt exactly."""

    calibration_dir: str | Path | None = None
    calibration_method: str = "minmax"
    fp16_io: bool = False
    reduce_range: bool | None = None


@dataclass
class VariantResult:
    name: str
    key: art.VariantKey
    path: Path
    record: art.VariantRecord
    seconds: float


def _label(stem_layers: int) -> str:
    return "all layers int8" if not stem_layers else f"first {stem_layers} compute layer(s) float"


def _summary(parity: art.ParityRecord) -> str:
    sqnr = [r.sqnr_db for r in parity.results if r.sqnr_db is not None]
    cos = [r.cosine_min for r in parity.results if r.cosine_min is not None]
    figures = (f"min SQNR {min(sqnr):.1f} dB, " if sqnr else "") + (f"min cosine {min(cos):.4f}" if cos else "")
    return figures + (", passed" if parity.passed else f", failed ({'; '.join(parity.failures()[:1])})")


def _fallbacks(
    model: onnx.ModelProto, prepared: Path, images: Sequence[torch.Tensor], tmp: Path
) -> Iterator[tuple[str, list[str], str]]:
    """(label, nodes kept float, why) of each graph tried after every-layer int8 fails, cheapest first:
    the first 1..:data:`MAX_FLOAT_STEM` compute layers, then, where calibration covered several input
    sizes, the tensors whose ranges differ most between the sizes (:mod:`exporter.ranges`)."""
    from .ranges import SPREAD_STEPS, range_spread, size_ranges, spread_float_nodes

    for layers in range(1, MAX_FLOAT_STEM + 1):
        stem = float_stem(model, layers)
        if not stem:
            break
        yield _label(layers), stem, "stem kept float"
    if len(images) < 2:
        return
    spread = range_spread(size_ranges(prepared, images, tmp))
    seen: list[str] = []
    for tensors in SPREAD_STEPS:
        nodes, least = spread_float_nodes(model, spread, tensors)
        if nodes == seen:
            continue
        seen = nodes
        yield (
            f"the {tensors} tensors whose ranges differ most between input sizes float",
            nodes,
            f"the {tensors} tensors whose activation ranges differ most between the calibrated input sizes kept "
            f"float (each range at least {least:.1f}x wider over all sizes than at one of them)",
        )


def _int8_graph(
    stage: Path,
    tmp: Path,
    reference: Prepared,
    options: VariantOptions,
    verify: Callable[[bytes, art.Tolerance | None], art.ParityRecord],
    device: str,
    step: Callable[[str], None],
    sizes: Sequence[tuple[int, int]] = (),
    min_size: tuple[int, int] | None = None,
) -> tuple[Path, art.QuantizationRecord, art.ParityRecord, art.Tolerance | None]:
    """Quantize, verify, and where every-layer int8 fails, keep a growing stem in float (see
    :data:`MAX_FLOAT_STEM`) with the same calibrated ranges; the first graph that passes wins."""
    from runtime.compare import default_tolerance
    from runtime.parity import DEFAULT_BATCH_SIZES, DEFAULT_SEED

    images, source = calibration_images(reference, options.calibration_dir, sizes, min_size)
    count = sum(len(g) for g in images)
    prepared = tmp / "int8.pre.onnx"
    model = prepare_for_int8(stage, prepared)
    common: dict = dict(
        method=options.calibration_method, reduce_range=options.reduce_range, cache=tmp / "int8.ranges.json"
    )
    out = tmp / "int8.onnx"
    step(f"calibrating on {count} images ({source})")
    facts = quantize_int8(prepared, out, images, **common)
    reasons = ["BatchNormalization after a ReLU: no int8 kernel, kept exact"] if facts["float_nodes"] else []

    tolerance, tolerance_reason, floor = None, None, (None, None)
    data = out.read_bytes()
    grid = input_grid(onnx.load_from_string(data))
    if reference.weights.kind == "random" and reference.trained_on is None and grid is not None:
        step("measuring how far rounding the input to 8 bits moves the PyTorch model")
        floor = input_rounding_floor(reference, grid, DEFAULT_BATCH_SIZES, DEFAULT_SEED)
        adjusted, tolerance_reason = int8_tolerance(default_tolerance(device, "int8"), *floor)
        tolerance = adjusted if tolerance_reason else None

    step("verifying the int8 graph against PyTorch")
    parity = verify(data, tolerance)
    attempts: list[str] = []
    label, chosen = _label(0), None
    if not parity.passed:
        for next_label, keep, why in _fallbacks(model, prepared, images, tmp):
            attempts.append(label + ": " + _summary(parity))
            label = next_label
            step(f"int8 failed verification; trying {label}")
            out = tmp / f"int8.try{len(attempts)}.onnx"
            facts = quantize_int8(prepared, out, None, keep_float=keep, **common)
            parity = verify(out.read_bytes(), tolerance)
            if parity.passed:
                chosen = (keep, why)
                break
    if chosen is not None:
        kept = [n for n in facts["float_nodes"] if n in set(chosen[0])]  # type: ignore[union-attr]
        reasons.append(
            f"{chosen[1]} ({', '.join(kept)}): with fewer layers float the graph failed verification "
            "(see attempts); python -m runtime.parity NAME --precision int8 --explain shows where precision goes"
        )
    elif not parity.passed:
        attempts.append(label + ": " + _summary(parity))
        floor_note = (
            f"; rounding only its input to 8 bits leaves the PyTorch model at SQNR {floor[0]:.1f} dB, "
            f"cosine {floor[1]:.4f}"
            if floor[0] is not None
            else ""
        )
        raise ExportFailed(
            f"int8 failed verification however much of its stem stayed float ({' | '.join(attempts)}){floor_note}. "
            "Calibrate on images like the ones it will see (--calibration-dir), try --calibration-method entropy, "
            "or use fp32/fp16"
        )
    record = art.QuantizationRecord(
        **facts,  # type: ignore[arg-type]
        calibration_images=count,
        calibration_sizes=[(int(g.shape[-2]), int(g.shape[-1])) for g in images] if sizes else [],
        calibration_source=source,
        calibration_dir=str(options.calibration_dir) if options.calibration_dir else None,
        float_reasons=reasons,
        attempts=attempts,
        input_rounding_sqnr_db=floor[0],
        input_rounding_cosine=floor[1],
        tolerance_reason=tolerance_reason,
    )
    return out, record, parity, tolerance


def _build(
    base: Path,
    tmp: Path,
    key: art.VariantKey,
    reference: Prepared,
    options: VariantOptions,
    verify: Callable[[bytes, art.Tolerance | None], art.ParityRecord],
    device: str,
    step: Callable[[str], None],
    sizes: Sequence[tuple[int, int]] = (),
    min_size: tuple[int, int] | None = None,
) -> tuple[Path, dict[str, object]]:
    """Apply the transforms of ``key`` to the fp32 graph at ``base``; return the staged file and its facts
    (with ``parity`` and ``tolerance`` where the graph was verified on the way, as int8 is)."""
    facts: dict[str, object] = {"kept_fp32_ops": [], "io_dtype": "float32"}
    model, facts["identity_nodes_removed"] = strip_identity_ops(onnx.load(str(base)))
    stage = tmp / "stage.onnx"
    if key.precision == "fp16":
        model = to_fp16(model, keep_io_types=not options.fp16_io)
        facts["io_dtype"] = "float16" if options.fp16_io else "float32"
        facts["kept_fp32_ops"] = list(FP16_KEEP_FP32)
    onnx.save(model, str(stage))
    if key.precision == "int8":
        stage, facts["quantization"], parity, facts["tolerance"] = _int8_graph(
            stage, tmp, reference, options, verify, device, step, sizes, min_size
        )
        if not key.optimize_for:
            facts["parity"] = parity
    if key.optimize_for:
        optimized = tmp / "opt.onnx"
        facts["optimization"] = optimize_offline(stage, optimized, key.optimize_for)
        stage = optimized
    return stage, facts


def build_variant(
    directory: Path,
    key: art.VariantKey,
    *,
    options: VariantOptions | None = None,
    reference: Prepared | None = None,
    on_step: Callable[[str], None] | None = None,
) -> VariantResult:
    """Build, verify and record the ``key`` variant of the artifact in ``directory``.

    The fp32 graph must be current (as its manifest records). ``reference`` is the PyTorch
    model to verify against; by default it is rebuilt from the manifest (zoo models only).
    """
    from runtime.parity import check
    from runtime.sessions import SessionConfig, cuda_usable

    step = on_step or (lambda _msg: None)
    options = options or VariantOptions()
    if key.is_base:
        raise UserError("fp32 without --optimize-for is the exported graph itself")
    if key.precision == "auto":
        # its graph depends on measured times: only the search itself makes (or remakes) it
        raise UserError("the auto variant is chosen by the precision search: python -m exporter NAME --precision auto")
    started = time.perf_counter()
    with art.artifact_lock(directory, on_wait=step):
        artifact = art.open_artifact(directory)
        stale = artifact.stale_reason()
        if stale:
            raise art.ArtifactError(f"cannot build the {key} variant: {stale}; export {artifact.name} again first")
        manifest = artifact.manifest
        if reference is None:
            step("rebuilding the PyTorch reference")
            reference = rebuild(manifest)
        final = artifact.path(key)
        on_cuda = key.optimize_for == "cuda" and cuda_usable()
        sizes = _sizes(manifest)
        prepared_reference = reference

        def verify(data: bytes, tolerance: art.Tolerance | None) -> art.ParityRecord:
            return check(
                data,
                prepared_reference,
                precision=key.precision,
                sizes=sizes,
                session=SessionConfig(device="cuda" if on_cuda else "cpu"),
                tolerance=tolerance,
                on_step=step,
            )

        remove_stale_partials(directory)
        with scratch_dir(directory, f"{artifact.name}.{key}") as tmp, _quiet_library_output():
            step(f"building the {key} graph")
            stage, facts = _build(
                artifact.path(),
                tmp,
                key,
                reference,
                options,
                verify,
                "cuda" if on_cuda else "cpu",
                step,
                sizes,
                manifest.min_size,
            )
            graph = onnx.load(str(stage))
            optimization = facts.get("optimization")
            # level "all" writes onnxruntime-only operators, which the ONNX checker refuses
            standard = not (isinstance(optimization, art.OptimizationRecord) and optimization.level == "all")
            check_variant_graph(graph, manifest, key, checker=standard)
            data = stage.read_bytes()
        tolerance = facts.pop("tolerance", None)
        parity = facts.pop("parity", None)
        if parity is None:
            step(f"verifying the {key} graph against PyTorch")
            parity = verify(data, tolerance)  # type: ignore[arg-type]
        if not parity.passed:
            raise ExportFailed(f"{artifact.name} {key} failed verification: {'; '.join(parity.failures()[:3])}")
        spec = io_spec(graph)
        record = art.VariantRecord(
            key=str(key),
            file=final.name,
            sha256=sha256_bytes(data),
            size_bytes=len(data),
            base_sha256=manifest.sha256,
            created=art.now(),
            nodes=len(graph.graph.node),
            op_counts=op_counts(graph),
            inputs=spec["inputs"],  # type: ignore[arg-type]
            outputs=spec["outputs"],  # type: ignore[arg-type]
            parity=parity,
            layers=_variant_layers(manifest, artifact.path(), graph),
            **facts,  # type: ignore[arg-type]
        )
        remove_stale_partials(directory)
        record_and_write(directory, manifest, final, data, record)
    return VariantResult(artifact.name, key, final, record, time.perf_counter() - started)


def check_variant_graph(
    graph: onnx.ModelProto, manifest: art.Manifest, key: art.VariantKey, *, checker: bool = True
) -> None:
    """Refuse a variant graph that lost the artifact's symbolic batch, or (``manifest.dynamic_size``) its
    symbolic height and width; then, where ``checker``, run the ONNX checker on it."""
    shapes = io_shapes(graph)
    if any(not dims or dims[0] != art.BATCH_DIM for dims in shapes.values()):
        raise ExportFailed(f"the {key} graph lost the symbolic batch: {shapes}")
    if manifest.dynamic_size and any(
        shapes.get(i.name, [])[2:4] != [art.HEIGHT_DIM, art.WIDTH_DIM] for i in manifest.inputs
    ):
        raise ExportFailed(f"the {key} graph lost the symbolic height/width: {shapes}")
    if checker:
        onnx.checker.check_model(graph)


def record_and_write(
    directory: Path,
    manifest: art.Manifest,
    final: Path,
    data: bytes,
    record: art.VariantRecord,
    extra_files: Sequence[tuple[Path, bytes]] = (),
) -> None:
    """Write a variant's graph ``data`` as ``final``, ``extra_files`` beside it (a plot) and the manifest
    with ``record`` last, all or nothing, after checking the disk has room for them."""
    require_free_space(directory, len(data) + sum(len(b) for _, b in extra_files), final.name)
    with atomic_outputs(directory) as writer:
        writer.write_bytes(final, data)
        for path, content in extra_files:
            writer.write_bytes(path, content)
        art.write_manifest(writer, directory, manifest.with_variant(record))


def _variant_layers(manifest: art.Manifest, base: Path, graph: onnx.ModelProto) -> art.LayerMap | None:
    """The variant's layer map, derived from the fp32 graph's (None where that has none)."""
    from .layers import LayerIndex, map_variant

    if manifest.layers is None:
        return None
    return map_variant(LayerIndex(manifest.layers, onnx.load(str(base))), graph)


@contextlib.contextmanager
def _quiet_library_output() -> Iterator[None]:
    """onnxruntime's quantization tools print progress and, on failure, their own traceback; both
    are dropped and the user gets the toolkit's one line instead (the exception's first line)."""
    dropped = io.StringIO()
    try:
        with contextlib.redirect_stdout(dropped), contextlib.redirect_stderr(dropped):
            yield
    except OSError as exc:
        raise UserError(describe_os_error(exc, "building the variant")) from exc
    except Exception as exc:
        if type(exc).__module__.startswith("onnxruntime"):  # Fail, InvalidProtobuf, ... from its C++ side
            raise ExportFailed(f"onnxruntime could not build the variant: {first_line(exc)}") from exc
        raise


def _sizes(manifest: art.Manifest) -> list[tuple[int, int]]:
    from runtime.parity import check_sizes

    if not manifest.dynamic_size:
        return []
    _, h, w = manifest.input_shape
    return check_sizes((h, w), manifest.min_size)
