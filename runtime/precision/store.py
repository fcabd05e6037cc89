"""Writing the search's choice as the artifact's ``auto`` variant, through the artifact contract."""

from __future__ import annotations

from pathlib import Path

import onnx

from exporter import artifact as art
from exporter.files import sha256_bytes
from exporter.graph import io_spec, op_counts
from exporter.layers import map_variant
from exporter.variants import FP16_KEEP_FP32, check_variant_graph, cpu_int8_features, record_and_write

from .candidates import FP16_REDUCTIONS, Work

AUTO = art.VariantKey("auto")


def plot_name(artifact: str) -> str:
    return f"{artifact}.auto.pareto.png"


def _quantization(work: Work, chosen: int) -> art.QuantizationRecord:
    calib = work.quantize.facts["calibration"]
    facts = work.quantize.facts[f"cand{chosen}"]
    c = work.candidates[chosen]
    return art.QuantizationRecord(
        format="QDQ", activations="uint8", weights="int8", per_channel=bool(facts["per_channel"]),
        reduce_range=bool(facts["reduce_range"]), calibration_method=str(facts["calibration_method"]),
        calibration_images=int(calib["calibration_images"]),  # type: ignore[call-overload]
        calibration_source=str(calib["calibration_source"]),
        calibration_dir=work.calibration_dir,
        calibration_sizes=[tuple(s) for s in calib["sizes"]] if work.judge.sizes else [],  # type: ignore[attr-defined,misc]
        float_nodes=list(facts["float_nodes"]), cpu_features=cpu_int8_features(),  # type: ignore[call-overload]
        float_reasons=[f"chosen by --precision auto: {c.label}"],
    )  # fmt: skip


def write_auto(
    work: Work, search: art.PrecisionSearchRecord, chosen: int
) -> tuple[art.VariantRecord, Path, Path | None]:
    """Write the chosen graph as ``NAME.auto.onnx``, the Pareto PNG beside it, and the manifest last."""
    from .plot import pareto_png

    artifact, manifest = work.artifact, work.artifact.manifest
    data = work.graphs[chosen]
    graph = onnx.load_from_string(data)
    check_variant_graph(graph, manifest, AUTO)
    png = None
    plot = artifact.directory / plot_name(artifact.name)
    try:
        png = pareto_png(search, f"{artifact.name} --precision auto")
    except ImportError:
        search = search.model_copy(update={"notes": [*search.notes, "no Pareto plot: matplotlib is not installed"]})
    if png is not None:
        search = search.model_copy(update={"plot": plot.name})
    spec = io_spec(graph)
    layers = map_variant(work.index, graph) if manifest.layers is not None else None
    final = artifact.path(AUTO)
    fp16 = work.precision == "fp16"  # --target cuda: no quantization; the nodes kept float32 by name instead
    float_nodes = list(work.quantize.facts[f"cand{chosen}"]["float_nodes"]) if fp16 else []  # type: ignore[call-overload]
    record = art.VariantRecord(
        key=str(AUTO), file=final.name, sha256=sha256_bytes(data), size_bytes=len(data), base_sha256=manifest.sha256,
        created=art.now(), nodes=len(graph.graph.node), op_counts=op_counts(graph),
        inputs=spec["inputs"], outputs=spec["outputs"],  # type: ignore[arg-type]
        identity_nodes_removed=work.identity_nodes_removed, io_dtype="float32",
        quantization=None if fp16 else _quantization(work, chosen),
        kept_fp32_ops=[*FP16_KEEP_FP32, *FP16_REDUCTIONS] if fp16 else [], float_nodes=float_nodes,
        precision_search=search, parity=work.parities[chosen], layers=layers,
        openvino_hint=work.candidates[chosen].openvino_hint,  # bf16: OpenVINO runs what it verified
    )  # fmt: skip
    record_and_write(artifact.directory, manifest, final, data, record, [(plot, png)] if png is not None else [])
    return record, final, plot if png is not None else None
