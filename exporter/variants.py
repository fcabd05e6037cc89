"""Faster variants of an exported fp32 graph: fp16 (CUDA), int8 (CPU), offline-optimized graphs.

One transform per function (Polygraphy's "one loader per transform"): :func:`strip_identity_ops`,
:func:`to_fp16`, :func:`to_int8`, and offline optimization through the session factory. A
variant is built from the artifact's current fp32 graph in a temporary folder, verified
against PyTorch with :func:`runtime.parity.check` (the same check ``runtime.parity`` runs
later, so both give the same verdict), and only then written beside the fp32 graph and
recorded in the manifest, all under the artifact's lock.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from . import artifact as art
from .errors import ExportFailed, UserError
from .files import atomic_outputs, remove_stale_partials, require_free_space, sha256_bytes
from .graph import io_shapes, io_spec, op_counts, topological_sort
from .reference import Prepared, rebuild

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
CALIBRATION_IMAGES = 256
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


def to_fp16(model: onnx.ModelProto, keep_io_types: bool = True) -> onnx.ModelProto:
    """Half-precision weights and compute; float32 inputs/outputs unless ``keep_io_types`` is False."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    half = convert_float_to_float16(
        model, keep_io_types=keep_io_types, op_block_list=list(DEFAULT_OP_BLOCK_LIST) + list(FP16_KEEP_FP32)
    )
    return topological_sort(half)


class _Reader:
    """onnxruntime CalibrationDataReader over a tensor of calibration images."""

    def __init__(self, images: torch.Tensor, input_name: str, batch: int = 16) -> None:
        self._batches = [images[i : i + batch].numpy() for i in range(0, len(images), batch)]
        self._input = input_name
        self._i = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._i >= len(self._batches):
            return None
        self._i += 1
        return {self._input: self._batches[self._i - 1]}

    def rewind(self) -> None:
        self._i = 0


def to_int8(
    fp32_path: Path,
    out_path: Path,
    calibration: torch.Tensor,
    method: str = "minmax",
    per_channel: bool = True,
    reduce_range: bool | None = None,
) -> dict[str, object]:
    """Static QDQ quantization (uint8 activations, int8 per-channel weights) calibrated on images."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in CALIBRATION_METHODS:
        raise UserError(f"unknown calibration method {method!r}: choose {', '.join(CALIBRATION_METHODS)}")
    if not torch.isfinite(calibration).all():
        raise UserError("the calibration images contain NaN or Inf values")
    reduce = default_reduce_range() if reduce_range is None else reduce_range
    reader = type("Reader", (_Reader, CalibrationDataReader), {})(calibration, "input")
    prepared = out_path.with_name(out_path.stem + ".pre.onnx")
    quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
    calib = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[method]
    # A BatchNormalization that could not be folded into a convolution (one after a ReLU) has no
    # int8 kernel; quantizing around it only adds Q/DQ pairs, so it stays float.
    float_nodes = [
        n.name
        for n in onnx.load(str(prepared), load_external_data=False).graph.node
        if n.op_type == "BatchNormalization"
    ]
    quantize_static(
        str(prepared),
        str(out_path),
        reader,
        quant_format=QuantFormat.QDQ,
        per_channel=per_channel,
        reduce_range=reduce,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=calib,
        nodes_to_exclude=float_nodes,
        extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
    )
    return {
        "format": "QDQ",
        "activations": "uint8",
        "weights": "int8",
        "per_channel": per_channel,
        "reduce_range": reduce,
        "calibration_method": method,
        "calibration_images": int(len(calibration)),
        "float_nodes": float_nodes,
        "cpu_features": cpu_int8_features(),
    }


def calibration_images(reference: Prepared, calibration_dir: str | Path | None) -> tuple[torch.Tensor, str]:
    """Images to calibrate int8 on, from the distribution the parity check feeds.

    The user's folder where given; the digits training split for digits-trained weights;
    otherwise seeded random inputs in [-1, 1), the distribution the check of a model with
    random weights uses (calibrating on one distribution and checking on another makes
    every activation range wrong).
    """
    from .data import digits, load_calibration_dir, random_input

    if calibration_dir is not None:
        return load_calibration_dir(calibration_dir, reference.input_shape), str(calibration_dir)
    if reference.trained_on == "sklearn digits":
        return digits(reference.input_shape)[0].x[:CALIBRATION_IMAGES], "sklearn digits (training split)"
    return (
        random_input(reference.input_shape, CALIBRATION_IMAGES, seed=CALIBRATION_SEED),
        f"random uniform [-1, 1), seed {CALIBRATION_SEED}",
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


def _build(
    base: Path, tmp: Path, key: art.VariantKey, reference: Prepared, options: VariantOptions
) -> tuple[Path, dict[str, object]]:
    """Apply the transforms of ``key`` to the fp32 graph at ``base``; return the staged file and its facts."""
    facts: dict[str, object] = {"kept_fp32_ops": [], "io_dtype": "float32"}
    model, facts["identity_nodes_removed"] = strip_identity_ops(onnx.load(str(base)))
    stage = tmp / "stage.onnx"
    if key.precision == "fp16":
        model = to_fp16(model, keep_io_types=not options.fp16_io)
        facts["io_dtype"] = "float16" if options.fp16_io else "float32"
        facts["kept_fp32_ops"] = list(FP16_KEEP_FP32)
    onnx.save(model, str(stage))
    if key.precision == "int8":
        images, source = calibration_images(reference, options.calibration_dir)
        quantized = tmp / "int8.onnx"
        q = to_int8(stage, quantized, images, options.calibration_method, reduce_range=options.reduce_range)
        facts["quantization"] = art.QuantizationRecord(
            **q,  # type: ignore[arg-type]
            calibration_source=source,
            calibration_dir=str(options.calibration_dir) if options.calibration_dir else None,
        )
        stage = quantized
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
        with tempfile.TemporaryDirectory(prefix=f"{artifact.name}-{key}-") as tmp_dir:
            step(f"building the {key} graph")
            stage, facts = _build(artifact.path(), Path(tmp_dir), key, reference, options)
            graph = onnx.load(str(stage))
            shapes = io_shapes(graph)
            if any(not dims or dims[0] != art.BATCH_DIM for dims in shapes.values()):
                raise ExportFailed(f"the {key} graph lost the symbolic batch: {shapes}")
            if manifest.dynamic_size and any(
                dims[2:4] != [art.HEIGHT_DIM, art.WIDTH_DIM] for dims in [shapes[i.name] for i in manifest.inputs]
            ):
                raise ExportFailed(f"the {key} graph lost the symbolic height/width: {shapes}")
            optimization = facts.get("optimization")
            if not (isinstance(optimization, art.OptimizationRecord) and optimization.level == "all"):
                onnx.checker.check_model(graph)  # level "all" writes onnxruntime-only operators
            data = stage.read_bytes()
        on_cuda = key.optimize_for == "cuda" and cuda_usable()
        step(f"verifying the {key} graph against PyTorch")
        parity = check(
            data,
            reference,
            precision=key.precision,
            sizes=_sizes(manifest),
            session=SessionConfig(device="cuda" if on_cuda else "cpu"),
            on_step=step,
        )
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
            **facts,  # type: ignore[arg-type]
        )
        remove_stale_partials(directory)
        require_free_space(directory, len(data), final.name)
        with atomic_outputs(directory) as writer:
            writer.write_bytes(final, data)
            art.write_manifest(writer, directory, manifest.with_variant(record))
    return VariantResult(artifact.name, key, final, record, time.perf_counter() - started)


def _sizes(manifest: art.Manifest) -> list[tuple[int, int]]:
    from runtime.parity import check_sizes

    if not manifest.dynamic_size:
        return []
    _, h, w = manifest.input_shape
    return check_sizes((h, w), manifest.min_size)
