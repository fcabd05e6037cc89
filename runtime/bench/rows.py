"""The benchmark's records: one typed row per (model, input size, batch, engine, precision), and the run.

:class:`BenchRow` is the schema of every row in ``results.json``; the CSV's columns are its
fields, in order, all but the kept samples (:func:`csv_text`). Numbers are finite or absent: a
figure the data do not support (a p99 from 40 samples, a speedup without a PyTorch row) is None,
never NaN, and the JSON is strict.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from exporter.artifact import ParityRecord
from exporter.files import strict_json

from ..machine import MachinePeak
from ..profile.records import Placement
from .baseline import BaselineComparison
from .stats import SampleSummary

FORMAT = "runtime.bench results"
FORMAT_VERSION = 3

Status = Literal["ok", "failed", "refused", "parity-failed"]
Setting = str | int | float | bool | None


def describe_setting(streams: int | None, threads_per_stream: int | None, concurrency: int | None) -> str:
    """A throughput setting in words: ``2 streams x 1 thread, 2 in flight``."""
    per = f" x {threads_per_stream} thread{'s' if threads_per_stream != 1 else ''}" if threads_per_stream else ""
    return f"{streams} stream{'s' if streams != 1 else ''}{per}, {concurrency} in flight"


class ColdStart(BaseModel):
    """What it took an engine to give its first result here, in seconds (None: no such step).

    ``create_s``: everything before the first inference (onnxruntime: the session, graph
    optimisation included; OpenVINO: reading, reshaping and compiling the graph, and its infer
    request; torch.compile: its compiling first call; TensorRT: the session); ``compile_s``: the
    compiling part of it (OpenVINO's ``compile_model``, inductor's compile); ``build_s``:
    TensorRT's first run, which builds its
    engine (or loads it from the cache, ``engine_cached``); ``capture_s``: a CUDA graph's
    allocating and capturing calls (onnxruntime captures on its second run); ``first_inference_s``:
    the first inference once ready (with a CUDA graph: its first replay), at this row's batch and
    size. ``shared``: the onnxruntime session
    was made earlier in this run (for another batch size) and reused: ``create_s`` is that
    creation's time, and the first inference is not a fresh session's.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    create_s: float | None = None
    compile_s: float | None = None
    build_s: float | None = None
    engine_cached: bool | None = None
    capture_s: float | None = None
    first_inference_s: float | None = None
    shared: bool = False

    @property
    def to_first_result_s(self) -> float | None:
        """From nothing to the first result: creation (compiling included), any engine build or graph
        capture, the first call."""
        known = [p for p in (self.create_s, self.build_s, self.capture_s, self.first_inference_s) if p is not None]
        return sum(known) if known else None


class BenchRow(BaseModel):
    """One measurement (``status == "ok"``), or why there is none."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    run_id: str
    model: str
    engine: str
    precision: str
    device: str
    machine: str
    batch_size: int
    input_shape: list[int]
    threads: int
    #: the 1-minute load average when the row's group finished (cores busy, this run included)
    load_average: float | None = None
    status: Status
    reason: str | None = None
    graph: str | None = None
    # timing: samples are per-call latencies after warm-up, interleaved with the other engines
    samples: int | None = None
    rounds: int | None = None
    timed_seconds: float | None = None
    median_ms: float | None = None
    median_ci_low_ms: float | None = None
    median_ci_high_ms: float | None = None
    mean_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    std_ms: float | None = None
    throughput_ips: float | None = None
    #: the 95% interval of throughput (latency mode: batch over the median's interval; throughput
    #: mode: from the windows)
    throughput_ci_low_ips: float | None = None
    throughput_ci_high_ips: float | None = None
    # throughput mode (--streams/--concurrency): the setting, and its windows
    mode: Literal["latency", "throughput"] = "latency"
    streams: int | None = None
    concurrency: int | None = None
    threads_per_stream: int | None = None
    windows: int | None = None
    window_seconds: float | None = None
    #: the median window's seconds per image (1 / throughput), with its 95% bootstrap interval
    seconds_per_image: float | None = None
    seconds_per_image_ci_low: float | None = None
    seconds_per_image_ci_high: float | None = None
    #: the windows' seconds per image as far as a later run needs them (``--baseline``)
    window_summary: SampleSummary | None = None
    #: the timed samples (ms) as far as a later run needs them to bootstrap a ratio against this row
    #: (``--baseline``); absent in results written before it was kept
    sample_summary: SampleSummary | None = None
    # ratios of medians in this (model, size, batch), each with its 95% bootstrap interval
    vs_pytorch: float | None = None
    vs_pytorch_ci_low: float | None = None
    vs_pytorch_ci_high: float | None = None
    vs_best: float | None = None
    vs_best_ci_low: float | None = None
    vs_best_ci_high: float | None = None
    best: str | None = None
    vs_fp32: float | None = None
    vs_fp32_ci_low: float | None = None
    vs_fp32_ci_high: float | None = None
    unstable: bool = False
    unstable_reasons: list[str] = Field(default_factory=list)
    # the physical limit
    gflop: float | None = None  # model FLOPs of the whole batch at this input size, in G
    weight_bytes: int | None = None  # the weights at this precision
    achieved_gflops: float | None = None
    fraction_of_peak: float | None = None
    floor_ms: float | None = None
    time_over_floor: float | None = None
    bound: str | None = None
    #: the precision whose measured peak the row is held to (int8 rows to the int8 peak, ...)
    peak_precision: str | None = None
    # how it was run
    setup_seconds: float | None = None
    cold_start: ColdStart | None = None
    parity: Literal["pass", "fail", "skipped"] | None = None
    parity_max_abs_err: float | None = None
    tf32: bool | None = None
    io_binding: bool | None = None
    cudnn_conv_algo_search: str | None = None
    cuda_graph: bool | None = None
    settings: dict[str, Setting] = Field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def group(self) -> tuple[str, tuple[int, ...], int, str]:
        """The (model, input shape, batch, device) the ratios compare within."""
        return (self.model, tuple(self.input_shape), self.batch_size, self.device)

    @property
    def label(self) -> str:
        if self.mode == "throughput":
            setting = describe_setting(self.streams, self.threads_per_stream, self.concurrency)
            return f"{self.engine} {self.precision} [{setting}]"
        return f"{self.engine} {self.precision}"


class ParityEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    model: str
    engine: str
    precision: str
    record: ParityRecord


class PlacementEntry(BaseModel):
    """``--placement-audit``: where every node of one engine's graph ran (onnxruntime's profiler), once
    per (model, precision, input size), with the settings it was created with."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    model: str
    engine: str
    precision: str
    input_shape: list[int]
    batch_size: int
    #: every compute node on the expected provider and no Memcpy node inside the graph
    clean: bool
    line: str
    placement: Placement
    settings: dict[str, Setting] = Field(default_factory=dict)


class RunDocument(BaseModel):
    """``results.json``: the run, where and how it was measured, and every row."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    format: Literal["runtime.bench results"] = FORMAT
    format_version: Literal[3] = FORMAT_VERSION
    run_id: str
    started: str
    finished: str | None = None
    status: Literal["running", "complete", "interrupted", "failed"] = "running"
    interrupted_by: str | None = None
    device: str
    device_reason: str
    machine: MachinePeak | None = None
    environment: dict[str, Any]
    config: dict[str, Any]
    notes: list[str] = Field(default_factory=list)
    skipped_engines: dict[str, str] = Field(default_factory=dict)
    parity: list[ParityEntry] = Field(default_factory=list)
    placements: list[PlacementEntry] = Field(default_factory=list)
    rows: list[BenchRow] = Field(default_factory=list)
    untrustworthy: list[str] = Field(default_factory=list)
    fastest: list[str] = Field(default_factory=list)
    #: the regression gate's outcome when the run was given ``--baseline``
    baseline: BaselineComparison | None = None

    @property
    def measured(self) -> int:
        return sum(1 for r in self.rows if r.ok)

    def json_text(self) -> str:
        return strict_json(self.model_dump(mode="json"))


#: Fields of a row kept out of the CSV: lists of hundreds of numbers are for the JSON, not a spreadsheet.
JSON_ONLY = ("sample_summary", "window_summary")
CSV_COLUMNS: tuple[str, ...] = tuple(f for f in BenchRow.model_fields if f not in JSON_ONLY)


def _cell(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, list):
        return "x".join(str(v) for v in value) if all(isinstance(v, int) for v in value) else "; ".join(map(str, value))
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, allow_nan=False)
    return value


def csv_text(rows: list[BenchRow]) -> str:
    """The rows as CSV: a column per :class:`BenchRow` field but :data:`JSON_ONLY` (lists joined, settings as JSON)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        dumped = row.model_dump(mode="json")
        writer.writerow({k: _cell(dumped[k]) for k in CSV_COLUMNS})
    return buf.getvalue()


def measured_rows(text: str) -> int:
    """How many measured rows an earlier ``results.json`` holds (any format this bench wrote)."""

    def refuse(token: str) -> None:
        raise ValueError(f"non-finite number {token}")

    try:
        doc = json.loads(text, parse_constant=refuse)
    except ValueError:
        return 0
    if not isinstance(doc, dict):
        return 0
    rows = doc.get("rows", doc.get("results", []))
    if not isinstance(rows, list):
        return 0
    return sum(1 for r in rows if isinstance(r, dict) and r.get("status") == "ok")
