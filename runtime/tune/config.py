"""What a tune run is asked to do: the target, the accuracy budget, the space to sweep, validated first.

This module imports nothing heavy (the command's parser builds one of these before any engine is
loaded).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from exporter.errors import UserError

TARGETS = ("latency", "throughput")
DEFAULT_BATCH_SIZES = (1, 8, 32)
DEFAULT_ENGINES = ("onnxruntime", "openvino", "tensorrt")
#: finalists re-timed together, long enough for a p99
DEFAULT_FINALISTS = 3
#: requests a p99 needs (as the bench's statistics count it)
P99_REQUESTS = 100


@dataclass(frozen=True)
class LossBudget:
    """How much accuracy a reduced-precision candidate may lose against the PyTorch fp32 reference.

    ``min_sqnr_db``: the output's SQNR (signal over the error's power) must be at least this;
    ``max_accuracy_drop_pp``: top-1 on the labelled held-out set (digits-trained models) may drop
    at most this many points. Neither: each precision's own parity tolerance is the budget.
    """

    min_sqnr_db: float | None = None
    max_accuracy_drop_pp: float | None = None

    def describe(self) -> str:
        if self.min_sqnr_db is not None:
            return f"SQNR >= {self.min_sqnr_db:g} dB against PyTorch fp32"
        if self.max_accuracy_drop_pp is not None:
            return f"top-1 drop <= {self.max_accuracy_drop_pp:g} points on the labelled held-out set"
        return "each precision's parity tolerance"


def parse_loss(text: str | None) -> LossBudget:
    """``--max-loss``: ``25db`` (SQNR at least 25 dB) or ``1pp`` (top-1 drop at most 1 point)."""
    if text is None:
        return LossBudget()
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(db|pp)\s*", text.lower())
    if not m:
        raise UserError(
            f"bad --max-loss {text!r}: give an SQNR floor in dB (25db: the output's error at least 25 dB below it) "
            "or a top-1 drop in points (1pp, for artifacts with labelled data)"
        )
    value = float(m.group(1))
    return LossBudget(min_sqnr_db=value) if m.group(2) == "db" else LossBudget(max_accuracy_drop_pp=value)


@dataclass(frozen=True)
class TuneConfig:
    """One tune run (see :func:`runtime.tune.run_tune`)."""

    artifact: str
    target: str = "throughput"
    p99_ms: float | None = None
    loss: LossBudget = field(default_factory=LossBudget)
    device: str = "auto"
    engines: tuple[str, ...] = DEFAULT_ENGINES
    #: empty: fp32, int8, bf16 where the CPU has it, fp16 on CUDA, and the artifact's other variants
    precisions: tuple[str, ...] = ()
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    threads: int | None = None
    finalists: int = DEFAULT_FINALISTS
    #: screening: windows per setting and the seconds a (batch) group may take
    screen_windows: int = 5
    screen_seconds: float = 1.0
    screen_max_seconds: float = 60.0
    #: confirming: the finalists together, at most this long
    confirm_windows: int = 10
    confirm_max_seconds: float = 120.0
    serve: bool = False
    #: the Triton search (--serve): seconds per load-test level, at most this many configurations
    serve_seconds: float = 5.0
    serve_configs: int = 8
    output_dir: Path | None = None
    artifacts_dir: Path = Path("artifacts")
    rebuild: bool = True
    reference: str | None = None
    seed: int = 0

    def validate(self) -> None:
        if self.target not in TARGETS:
            raise UserError(f"unknown --target {self.target!r}: choose latency (with --p99-ms) or throughput")
        if self.target == "latency":
            if self.p99_ms is None:
                raise UserError("--target latency needs --p99-ms X: the 99th-percentile request latency to meet")
            if not (self.p99_ms > 0 and math.isfinite(self.p99_ms)):
                raise UserError(f"--p99-ms must be a number above 0, got {self.p99_ms}")
        elif self.p99_ms is not None:
            raise UserError("--p99-ms goes with --target latency (throughput mode maximises img/s, whatever the p99)")
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise UserError(f"batch sizes must be at least 1, got {list(self.batch_sizes)}")
        if self.threads is not None and self.threads < 1:
            raise UserError("--threads must be at least 1")
        if self.finalists < 1:
            raise UserError("--finalists must be at least 1")
        if self.device not in ("auto", "cpu", "cuda"):
            raise UserError(f"unknown device {self.device!r}: choose auto, cpu or cuda")
        for value, what in ((self.screen_windows, "screen windows"), (self.confirm_windows, "confirm windows")):
            if value < 1:
                raise UserError(f"{what} must be at least 1")
        if not (self.serve_seconds > 0 and math.isfinite(self.serve_seconds)):
            raise UserError("--serve-seconds must be a number above 0")
        if self.serve_configs < 1:
            raise UserError("--serve-configs must be at least 1")

    @property
    def output(self) -> Path:
        from exporter.artifact import locate, results_name

        if self.output_dir is not None:
            return Path(self.output_dir)
        # named after the artifact's folder, not its manifest's name, and hashed when the folder is not
        # artifacts_dir/<name>: a renamed or copied artifact, or a namesake elsewhere, must not share,
        # and replace, another's results
        directory = locate(self.artifact, self.artifacts_dir).directory
        return Path(self.artifacts_dir) / "tune" / results_name(directory, self.artifacts_dir)
