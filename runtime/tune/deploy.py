"""The records a tune run leaves: ``tune.json`` (every candidate, always) and ``deploy.json`` (the
deployment, when one was chosen). Read and written here only, atomically.

``deploy.json`` says what was chosen and from which candidates, the figures measured (the bench's
prediction and, with ``--serve``, the load test through Triton), the machine, the cold start and
the Triton repository written beside it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from exporter.errors import UserError
from exporter.files import AtomicWriter, read_regular_text, strict_json

DEPLOY_JSON = "deploy.json"
TUNE_JSON = "tune.json"
REPOSITORY = "repository"
PARETO_PNG = "pareto.png"
FORMAT = "runtime.tune deployment"
REPORT_FORMAT = "runtime.tune candidates"

Status = Literal["ok", "failed", "refused", "parity-failed", "over budget"]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Figures(_Record):
    """What one timing of a candidate measured (throughput mode: windows and requests)."""

    throughput_ips: float
    throughput_ci_low_ips: float | None = None
    throughput_ci_high_ips: float | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    requests: int
    windows: int | None = None
    unstable: bool = False
    unstable_reasons: list[str] = Field(default_factory=list)
    #: the 1-minute load average when measured (cores busy, this run included)
    load_average: float | None = None


class ColdStartFigures(_Record):
    """From nothing to the first result, per step, in seconds (see runtime.bench.rows.ColdStart)."""

    create_s: float | None = None
    compile_s: float | None = None
    build_s: float | None = None
    engine_cached: bool | None = None
    first_inference_s: float | None = None
    total_s: float | None = None


class Candidate(_Record):
    """One point of the sweep: an engine, a precision, a thread and stream split, a batch size."""

    engine: str
    precision: str
    streams: int
    threads_per_stream: int | None = None
    concurrency: int
    batch_size: int
    status: Status
    reason: str | None = None
    #: the screen's figures (every candidate), and the confirmation's (finalists)
    screen: Figures | None = None
    confirmed: Figures | None = None
    #: accuracy against the PyTorch fp32 reference, from the parity check of this very setting
    sqnr_db: float | None = None
    cosine_min: float | None = None
    max_abs_err: float | None = None
    accuracy_drop_pp: float | None = None
    cold_start: ColdStartFigures | None = None
    settings: dict[str, Any] = Field(default_factory=dict)
    #: whether it meets the target (latency: its confirmed p99; throughput: always when ok)
    meets_target: bool | None = None
    rank: int | None = None

    @property
    def key(self) -> tuple[str, str, int, int, int]:
        return (self.engine, self.precision, self.streams, self.concurrency, self.batch_size)

    @property
    def best(self) -> Figures | None:
        return self.confirmed or self.screen

    @property
    def setting(self) -> str:
        per = f" x {self.threads_per_stream} thread{'s' if self.threads_per_stream != 1 else ''}"
        streams = f"{self.streams} stream{'s' if self.streams != 1 else ''}"
        return f"{streams}{per if self.threads_per_stream else ''}"

    @property
    def label(self) -> str:
        names = {"onnxruntime": "onnxruntime", "openvino": "OpenVINO", "tensorrt": "TensorRT"}
        return f"{self.precision} on {names.get(self.engine, self.engine)}, {self.setting}, batch {self.batch_size}"


class Target(_Record):
    kind: Literal["latency", "throughput"]
    p99_ms: float | None = None
    loss: str


class Machine(_Record):
    device: str
    cpu_model: str | None = None
    cpu_cores: int | None = None
    cpu_flags: dict[str, bool] = Field(default_factory=dict)
    gpu_name: str | None = None
    threads: int
    versions: dict[str, str | None] = Field(default_factory=dict)
    load_average_at_start: list[float] = Field(default_factory=list)


class ArtifactRef(_Record):
    name: str
    directory: str
    variant: str
    graph: str
    sha256: str


class TritonModel(_Record):
    """The repository written: where, which model, and the configuration's settings."""

    repository: str
    model_name: str
    backend: str
    #: the artifact's graph in the repository: its variant key and sha256
    variant: str
    graph_sha256: str
    config_sha256: str
    max_batch_size: int
    preferred_batch_sizes: list[int]
    max_queue_delay_us: int | None
    instances: int
    parameters: dict[str, str] = Field(default_factory=dict)
    validated: bool


class ServedConfig(_Record):
    """One Triton configuration the ``--serve`` search load-tested (or the validator refused)."""

    instances: int
    max_batch_size: int
    preferred_batch_sizes: list[int]
    max_queue_delay_us: int
    status: Literal["ok", "refused", "failed", "parity-failed", "misses target"]
    reason: str | None = None
    concurrency: int | None = None
    request_batch: int | None = None
    throughput_ips: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    requests: int | None = None
    mean_formed_batch: float | None = None
    start_seconds: float | None = None
    levels: list[dict[str, Any]] = Field(default_factory=list)


class BenchSetting(_Record):
    """A bench setting (throughput mode) in the terms of a Triton configuration: the engine's streams, its
    threads, the requests in flight and the images per request (see :func:`runtime.tune.deployment.served_setting`)."""

    engine: str
    precision: str
    streams: int
    threads_per_stream: int | None = None
    #: all the threads the bench's engine gets (onnxruntime: streams x threads per stream; OpenVINO: its
    #: INFERENCE_NUM_THREADS, shared by its streams)
    threads: int
    in_flight: int
    batch: int
    #: the server's mean formed batch (images per execution) the batch was rounded from; None: not recorded,
    #: ``batch`` is the request batch
    formed_batch: float | None = None

    @property
    def label(self) -> str:
        """``4 streams x 1 thread, 4 in flight, batch 16``."""
        from ..bench.rows import describe_setting

        return f"{describe_setting(self.streams, self.threads_per_stream, self.in_flight)}, batch {self.batch}"


class ServingOverhead(_Record):
    """The serving path's own cost (:mod:`runtime.tune.overhead`): a trivial model (ONNX ``Identity``
    with the artifact's input) load-tested on the local Triton as the winner was."""

    model: Literal["Identity"] = "Identity"
    protocol: str
    concurrency: int
    request_batch: int
    instances: int
    max_batch_size: int
    #: its requests per second, once before and once after the final check's load test
    requests_per_s: list[float] = Field(default_factory=list)
    p50_ms: list[float] = Field(default_factory=list)
    #: cores the machine kept busy during each measurement (/proc/stat), and the cores it has
    busy_cores: list[float] = Field(default_factory=list)
    cores: int | None = None
    #: seconds per request (the mean of the measurements' inverses), and their range
    seconds_per_request: float | None = None
    seconds_per_request_low: float | None = None
    seconds_per_request_high: float | None = None
    unstable: bool = False
    unstable_reasons: list[str] = Field(default_factory=list)
    note: str | None = None


class ServeSearch(_Record):
    """The Triton configuration search: every configuration, the winner, and its figures beside the bench's."""

    configs: list[ServedConfig] = Field(default_factory=list)
    chosen: ServedConfig | None = None
    parity_through_server: bool | None = None
    predicted_ips: float | None = None
    served_ips: float | None = None
    served_over_predicted: float | None = None
    #: the configuration that runs the chosen candidate exactly as the bench measured it (the search's
    #: first), through Triton: the like-for-like comparison with the prediction
    as_measured_ips: float | None = None
    as_measured_over_predicted: float | None = None
    #: the final check: the bench's figure for the chosen candidate measured right before and right
    #: after a last load test of the winning configuration, so that a machine busier than during the
    #: sweep moves both sides alike
    bench_before_ips: float | None = None
    served_final_ips: float | None = None
    served_final_p99_ms: float | None = None
    bench_after_ips: float | None = None
    served_over_bench_now: float | None = None
    #: the served configuration in the bench, timed beside the chosen candidate right before and right after
    #: the final check's load test: the served instances as the engine's streams and threads (as the repository
    #: splits them), as many requests in flight as the instances (fewer where the clients' images bound it), at
    #: the batch the server formed. The prediction the 15% check compares the final check's served figure with.
    served_config_setting: BenchSetting | None = None
    served_config_bench_before_ips: float | None = None
    served_config_bench_after_ips: float | None = None
    #: the mean of before and after
    served_config_bench_ips: float | None = None
    #: served_final_ips / served_config_bench_ips
    served_final_over_served_config_bench: float | None = None
    #: why the served configuration was not benched (None: it was, or no final check ran)
    served_config_note: str | None = None
    #: what the 15% check compares: "served configuration" (served_final_ips against
    #: served_config_bench_ips, measured side by side), or "chosen candidate" (served_ips against
    #: predicted_ips: the served configuration's bench is missing); None: no check
    check_basis: Literal["served configuration", "chosen candidate"] | None = None
    #: the served figure and the bench figure the check's predictions start from
    check_served_ips: float | None = None
    check_bench_ips: float | None = None
    #: the serving path measured with a trivial model, and the prediction that charges it:
    #: request_batch / (request_batch / check_bench_ips + serving_overhead.seconds_per_request)
    serving_overhead: ServingOverhead | None = None
    corrected_predicted_ips: float | None = None
    #: from the range of the serving path's measurements
    corrected_predicted_low_ips: float | None = None
    corrected_predicted_high_ips: float | None = None
    #: check_served_ips / corrected_predicted_ips
    served_over_corrected: float | None = None
    #: min(check_bench_ips, request_batch / serving_overhead.seconds_per_request): the costs fully overlapped
    pipelined_predicted_ips: float | None = None
    served_over_pipelined: float | None = None
    #: check_served_ips within 15% of corrected_predicted_ips (and of pipelined_predicted_ips); None where missing
    within_15pct: bool | None = None
    within_15pct_pipelined: bool | None = None
    #: the serving path's CPU time and the engine's sharing the cores: ``min(pipelined, 1 / (1 / bench +
    #: busy cores / (cores x serving path img/s)))`` (:func:`runtime.tune.overhead.shared_cores_ips`)
    shared_predicted_ips: float | None = None
    served_over_shared: float | None = None
    within_15pct_shared: bool | None = None
    check: str | None = None
    note: str | None = None


class TuneReport(_Record):
    """``tune.json``: every candidate of one run, ranked, and what came of it."""

    format: Literal["runtime.tune candidates"] = REPORT_FORMAT
    format_version: Literal[1] = 1
    created: str
    artifact: ArtifactRef
    target: Target
    machine: Machine
    bench_results: str | None = None
    candidates: list[Candidate] = Field(default_factory=list)
    skipped: dict[str, str] = Field(default_factory=dict)
    chosen: Candidate | None = None
    runner_up: Candidate | None = None
    why: str
    notes: list[str] = Field(default_factory=list)


class DeployRecord(_Record):
    """``deploy.json``: the deployment tune chose, proved and wrote."""

    format: Literal["runtime.tune deployment"] = FORMAT
    format_version: Literal[1] = 1
    created: str
    artifact: ArtifactRef
    target: Target
    machine: Machine
    chosen: Candidate
    runner_up: Candidate | None = None
    why: str
    #: every candidate, in the order ranked (its figures, or why it has none)
    candidates: list[Candidate] = Field(default_factory=list)
    cold_start: ColdStartFigures | None = None
    triton: TritonModel
    served: ServeSearch | None = None
    bench_results: str | None = None
    notes: list[str] = Field(default_factory=list)


def _write(path: Path, record: BaseModel) -> Path:
    writer = AtomicWriter(path.parent)
    try:
        writer.write_text(path, strict_json(record.model_dump(mode="json")) + "\n")
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    return path


def write_report(directory: Path, report: TuneReport) -> Path:
    return _write(Path(directory) / TUNE_JSON, report)


def write_deploy(directory: Path, record: DeployRecord) -> Path:
    return _write(Path(directory) / DEPLOY_JSON, record)


def read_deploy(path: Path) -> DeployRecord:
    """A ``deploy.json`` (or the folder holding one); one clear line if it is not one."""
    path = Path(path)
    if path.is_dir():
        path = path / DEPLOY_JSON
    try:
        return DeployRecord.model_validate(json.loads(read_regular_text(path)))
    except FileNotFoundError:
        raise UserError(f"{path}: no such deployment record (python -m runtime.tune writes one)") from None
    except (OSError, ValueError, ValidationError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{path} is not a deployment record tune wrote: {first}") from None


def read_report(path: Path) -> TuneReport:
    path = Path(path)
    if path.is_dir():
        path = path / TUNE_JSON
    try:
        return TuneReport.model_validate(json.loads(read_regular_text(path)))
    except FileNotFoundError:
        raise UserError(f"{path}: no such tune report") from None
    except (OSError, ValueError, ValidationError) as exc:
        raise UserError(f"{path} is not a tune report: {str(exc).splitlines()[0]}") from None
