"""The profile's records: what each engine node took per run, each layer's row, the run's coverage and
placement, typed and strict-JSON (no NaN anywhere; a figure the data do not support is None)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from exporter.files import strict_json

from ..machine import MachinePeak

FORMAT = "runtime.profile"
FORMAT_VERSION = 1
#: Below this share of the end-to-end time, the layers do not account for the run (said, not hidden).
MIN_COVERAGE = 0.9


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class NodeTime(_Record):
    """One node of the graph the engine really ran (its optimized graph), timed in every profiled run.

    ``kernel``: onnxruntime's provider, OpenVINO's exec type (``jit_avx2_I8``, ``brgconv_avx512_amx_bf16``);
    ``precision``: what its inputs were (``fp32``, ``fp16``, ``bf16``, ``int8``), None where unknown;
    ``fused``: the graph nodes an engine reports it absorbed (OpenVINO's original layers).
    """

    name: str
    op_type: str
    kernel: str
    provider: str
    precision: str | None
    times_us: list[float]
    median_us: float
    fused: list[str] = Field(default_factory=list)


class LayerRow(_Record):
    """One layer: a module of the PyTorch model (``layer1.0.conv1``), or a node that maps to none,
    under its own name (``module`` None). Times are medians over the profiled runs of the sum of
    its nodes' times in each run; ``share`` is of the sum over all layers."""

    rank: int
    layer: str
    module: str | None
    module_type: str | None = None
    nodes: list[str]
    op_types: list[str]
    kernels: list[str]
    precision: str | None
    median_ms: float
    share: float
    cumulative_share: float
    #: operations (2 per multiply-accumulate) of the whole batch, from the graph's shapes
    flops: int | None = None
    achieved_gflops: float | None = None
    #: the precision whose measured peak this layer is held to (see runtime.machine.compute_precision)
    peak_precision: str | None = None
    peak_gflops: float | None = None
    fraction_of_peak: float | None = None
    #: for a variant: the layer's output against the fp32 graph's (runtime.parity.explain)
    sqnr_db: float | None = None
    loss_db: float | None = None


class Coverage(_Record):
    """How much of the end-to-end time the layers account for, in the same profiled session."""

    layers_ms: float
    end_to_end_ms: float
    fraction: float
    #: the end-to-end median of an identical session without profiling, and the profiled one's excess
    unprofiled_ms: float | None = None
    overhead: float | None = None
    ok: bool

    def line(self) -> str:
        over = (
            f"; profiling overhead {self.overhead:+.1%} (unprofiled median {self.unprofiled_ms:.3f} ms)"
            if self.overhead is not None and self.unprofiled_ms is not None
            else ""
        )
        verdict = "" if self.ok else f": below {MIN_COVERAGE:.0%}, the layers do not account for the run"
        return (
            f"coverage: layers sum to {self.layers_ms:.3f} ms of the {self.end_to_end_ms:.3f} ms end-to-end median "
            f"({self.fraction:.1%}){verdict}{over}"
        )


class PlacedNode(_Record):
    name: str
    op_type: str
    provider: str
    median_us: float | None = None
    #: a node onnxruntime added (not in the graph file), e.g. a Memcpy or a precision Cast
    inserted: bool = False


class Placement(_Record):
    """Where every node ran. On CUDA: every compute node on CUDAExecutionProvider, or the names of those
    that fell back; and every Memcpy and Cast node, with its time."""

    device: str
    expected_provider: str
    compute_nodes: int
    off_device: list[PlacedNode] = Field(default_factory=list)
    memcpy: list[PlacedNode] = Field(default_factory=list)
    casts: list[PlacedNode] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.off_device

    def lines(self) -> list[str]:
        if self.ok:
            out = [f"placement: all {self.compute_nodes} compute nodes on {self.expected_provider}"]
        else:
            names = ", ".join(f"{n.name} ({n.op_type}) on {n.provider}" for n in self.off_device)
            out = [
                f"placement: {len(self.off_device)} of {self.compute_nodes} compute nodes are NOT on "
                f"{self.expected_provider}: {names}"
            ]
        for kind, nodes in (("Memcpy", self.memcpy), ("Cast", self.casts)):
            for n in nodes:
                time = f"{n.median_us:.1f} us" if n.median_us is not None else "not timed"
                added = ", inserted by onnxruntime" if n.inserted else ""
                out.append(f"  {kind}: {n.name} ({n.op_type} on {n.provider}{added}): {time}")
        return out


class Profile(_Record):
    """``profile.json``: one graph profiled on one engine, device, batch and size."""

    format: Literal["runtime.profile"] = FORMAT
    format_version: Literal[1] = FORMAT_VERSION
    created: str
    artifact: str
    graph: str  # the variant key: fp32, int8, int8.opt-cpu, ... (bf16: OpenVINO's hint on the fp32 graph)
    file: str
    engine: str
    device: str
    providers: list[str]
    threads: int
    batch_size: int
    input_shape: list[int]
    warmup: int
    runs: int
    layers: list[LayerRow]
    nodes: list[NodeTime]
    coverage: Coverage
    placement: Placement | None = None
    machine: MachinePeak | None = None
    #: whether the artifact recorded its layer map (older exports did not: layers are node names)
    layer_map: bool = True
    sqnr_source: str | None = None
    notes: list[str] = Field(default_factory=list)
    environment: dict[str, Any] = Field(default_factory=dict)

    def json_text(self) -> str:
        return strict_json(self.model_dump(mode="json"))

    def top(self, n: int | None) -> list[LayerRow]:
        return self.layers if n is None else self.layers[:n]
