"""Faster variants of an exported fp32 graph: fp16 (CUDA), int8 (CPU), offline-optimized graphs.

Every variant is built in a temporary folder, verified against PyTorch (and, for models
with a labelled set, scored for accuracy), and only then written beside the fp32 graph
as ``NAME.fp16.onnx``, ``NAME.int8.onnx``, ``NAME[.precision].opt-TARGET.onnx`` and
recorded in ``manifest.json`` under ``variants``.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from . import artifacts
from .errors import ExportFailed, UserError
from .graph import io_shapes, op_counts, topological_sort
from .trace import BATCH_DIM

PRECISIONS = ("fp32", "fp16", "int8")
TARGETS = ("cpu", "cuda")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
#: Kept in float32 in fp16 graphs: LRN sums squares of activations, which can overflow half precision.
FP16_KEEP_FP32 = ("LRN",)


def variant_key(precision: str, optimize_for: str | None) -> str:
    return precision + (f".opt-{optimize_for}" if optimize_for else "")


def variant_path(
    name: str, precision: str, optimize_for: str | None, output_dir: str | Path = artifacts.DEFAULT_OUTPUT_DIR
) -> Path:
    suffix = ("" if precision == "fp32" else f".{precision}") + (f".opt-{optimize_for}" if optimize_for else "")
    return artifacts.onnx_path(name, output_dir, suffix)


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


def optimize_offline(in_path: Path, out_path: Path, target: str) -> dict[str, object]:
    """Save onnxruntime's optimized graph for ``target`` so sessions start without re-optimizing.

    CPU: all levels (including CPU-only layouts; the file then runs on CPU only). CUDA: the
    extended level with the CUDA provider where one works, otherwise only the
    provider-independent basic level (correct on any provider), recorded as such.
    """
    import onnxruntime as ort

    from runtime.sessions import CUDA_PROVIDER, SessionConfig, create_session

    so = ort.SessionOptions()
    so.optimized_model_filepath = str(out_path)
    so.log_severity_level = 3
    level, providers = "all", ["CPUExecutionProvider"]
    if target == "cuda":
        try:
            _, info = create_session(in_path, SessionConfig(device="cuda"))
            level, providers = "extended", [CUDA_PROVIDER, "CPUExecutionProvider"]
        except UserError:
            level = "basic"
    so.graph_optimization_level = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    }[level]
    ort.InferenceSession(str(in_path), sess_options=so, providers=providers)
    if not out_path.is_file():
        raise ExportFailed("onnxruntime did not write the optimized graph")
    return {"target": target, "level": level, "providers": providers}


@dataclass
class VariantResult:
    name: str
    key: str
    path: Path
    record: dict[str, object]
    seconds: float


def build_variant(
    name: str,
    *,
    precision: str = "fp32",
    optimize_for: str | None = None,
    output_dir: str | Path = artifacts.DEFAULT_OUTPUT_DIR,
    calibration_dir: str | Path | None = None,
    calibration_method: str = "minmax",
    fp16_io: bool = False,
    reduce_range: bool | None = None,
) -> VariantResult:
    """Build, verify and record one variant of the exported model ``name`` (its fp32 artifact must exist)."""
    from runtime.parity import check

    from .data import digits, load_calibration_dir

    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}: choose {', '.join(PRECISIONS)}")
    if optimize_for not in (None, *TARGETS):
        raise UserError(f"--optimize-for must be one of {', '.join(TARGETS)}")
    if precision == "fp32" and optimize_for is None:
        raise UserError("fp32 without --optimize-for is the plain export")
    started = time.perf_counter()
    base = artifacts.onnx_path(name, output_dir)
    manifest = artifacts.read_manifest(name, output_dir)
    if manifest is None or not base.is_file():
        raise UserError(f"no fp32 export of {name} in {output_dir}: run 'python -m exporter {name}' first")
    input_shape = tuple(manifest["input_shape"])
    key = variant_key(precision, optimize_for)
    final = variant_path(name, precision, optimize_for, output_dir)
    record: dict[str, object] = {
        "precision": precision,
        "optimized_for": optimize_for,
        "file": final.name,
        "base_sha256": manifest["sha256"],
    }
    with tempfile.TemporaryDirectory(prefix=f"{name}-{key}-") as tmp_dir:
        tmp = Path(tmp_dir)
        model = onnx.load(str(base))
        model, removed = strip_identity_ops(model)
        record["identity_nodes_removed"] = removed
        stage = tmp / "stage.onnx"
        if precision == "fp16":
            model = to_fp16(model, keep_io_types=not fp16_io)
            record["io_dtype"] = "float16" if fp16_io else "float32"
            record["kept_fp32_ops"] = list(FP16_KEEP_FP32)
        onnx.save(model, str(stage))
        if precision == "int8":
            if calibration_dir is not None:
                images, source = load_calibration_dir(calibration_dir, input_shape), str(calibration_dir)
            else:
                images, source = digits(input_shape)[0].x[:256], "sklearn digits (training split)"
            quantized = tmp / "int8.onnx"
            record["quantization"] = to_int8(stage, quantized, images, calibration_method, reduce_range=reduce_range)
            record["calibration_source"] = source
            stage = quantized
        if optimize_for:
            optimized = tmp / "opt.onnx"
            record["optimization"] = optimize_offline(stage, optimized, optimize_for)
            stage = optimized
        graph = onnx.load(str(stage))
        shapes = io_shapes(graph)
        if any(not dims or dims[0] != BATCH_DIM for dims in shapes.values()):
            raise ExportFailed(f"the {key} graph lost the symbolic batch: {shapes}")
        if not (optimize_for and record["optimization"]["level"] == "all"):  # type: ignore[index]
            onnx.checker.check_model(graph)
        record["nodes"] = len(graph.graph.node)
        record["op_counts"] = op_counts(graph)
        record["io"] = {k: v for k, v in shapes.items()}
        report = check(
            name,
            onnx_path=stage,
            batch_sizes=(1, 3),
            device="cpu",
            precision=precision,
            output_dir=output_dir,
            manifest=manifest,
        )
        record["parity"] = report.to_dict()
        if not report.passed:
            raise ExportFailed(f"{name} {key} failed verification: {'; '.join(report.failures()[:3])}")
        data = stage.read_bytes()
    record["sha256"] = hashlib.sha256(data).hexdigest()
    record["size_bytes"] = len(data)
    manifest.setdefault("variants", {})[key] = record
    with artifacts.atomic_outputs(final.parent) as writer:
        writer.write_bytes(final, data)
        writer.write_json(artifacts.manifest_path(name, output_dir), manifest)
    return VariantResult(name, key, final, record, time.perf_counter() - started)
