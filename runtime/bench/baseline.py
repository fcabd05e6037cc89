"""The regression gate: this run's rows against an earlier run's ``results.json`` (``--baseline``).

* Rows match on what makes a figure comparable: model, input shape, batch size, engine,
  precision, device (and, in throughput mode, streams and concurrency). Rows of one side
  without a match on the other are listed, never compared with something else.
* Each matched pair gives ``ratio = this run's median / the baseline's median`` (above 1:
  slower now) with a 95% bootstrap interval drawn from both runs' samples: this run's, and
  what the baseline row kept of its own (:class:`~runtime.bench.stats.SampleSummary`, enough
  for the median's bootstrap to be the one its full samples would give).
* A baseline written before rows kept their samples has only each median's 95% interval. The
  ratio's interval is then bounded from those: ``[this low / baseline high, this high /
  baseline low]``, wider than the bootstrap's. Being wider, it can miss a regression the
  bootstrap would have caught but never reports one it would not have. A row with no interval
  at all is listed as not judged.
* A pair fails the gate only when the **whole** interval lies above ``1 + max_slowdown``; a
  row of this run that failed parity fails it too. An interval that straddles the threshold
  is inconclusive: it says the run could not tell, and does not fail.

Nothing here prints; :func:`compare_runs` returns a typed :class:`BaselineComparison` that
the run document keeps and the command prints.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from exporter.errors import UserError
from exporter.files import file_problem, read_regular_text

from .defaults import DEFAULT_MAX_SLOWDOWN
from .stats import SampleSummary, ratio_interval

Verdict = Literal["slower", "faster", "same", "inconclusive", "not judged", "parity failed", "not measured"]
#: the verdicts that fail the gate
FAILING: tuple[str, ...] = ("slower", "parity failed")


class BaselineRow(BaseModel):
    """The part of a results row the gate reads; any results file this bench wrote has these fields
    (newer fields are optional, so older files load)."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    run_id: str | None = None
    model: str
    engine: str
    precision: str
    device: str
    batch_size: int
    input_shape: list[int]
    threads: int | None = None
    status: str
    reason: str | None = None
    mode: str = "latency"
    streams: int | None = None
    concurrency: int | None = None
    median_ms: float | None = None
    median_ci_low_ms: float | None = None
    median_ci_high_ms: float | None = None
    unstable: bool = False
    sample_summary: SampleSummary | None = None
    #: throughput rows: seconds per image of each timed window
    window_summary: SampleSummary | None = None
    seconds_per_image: float | None = None
    seconds_per_image_ci_low: float | None = None
    seconds_per_image_ci_high: float | None = None

    @property
    def key(self) -> tuple[object, ...]:
        return (
            self.model,
            tuple(self.input_shape),
            self.batch_size,
            self.engine,
            self.precision,
            self.device,
            self.mode,
            self.streams,
            self.concurrency,
        )

    @property
    def label(self) -> str:
        setting = f" {self.streams} streams x {self.concurrency} in flight" if self.mode == "throughput" else ""
        return (
            f"{self.model} {'x'.join(map(str, self.input_shape))} batch {self.batch_size} "
            f"{self.engine} {self.precision}{setting}"
        )

    def timing(self) -> tuple[float | None, float | None, float | None, SampleSummary | None]:
        """(figure, 95% low, 95% high, kept samples) of what the gate compares: latency per call, or
        in throughput mode seconds per image (the inverse of throughput, so above 1 is slower too)."""
        if self.mode == "throughput":
            return (
                self.seconds_per_image,
                self.seconds_per_image_ci_low,
                self.seconds_per_image_ci_high,
                self.window_summary,
            )
        return self.median_ms, self.median_ci_low_ms, self.median_ci_high_ms, self.sample_summary


class BaselineFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    run_id: str | None = None
    started: str | None = None
    environment: dict[str, object] = Field(default_factory=dict)
    rows: list[BaselineRow] = Field(default_factory=list)
    skipped_rows: int = 0


class GateRow(BaseModel):
    """One matched pair: this run's figure over the baseline's, with its interval and the verdict."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    label: str
    model: str
    input_shape: list[int]
    batch_size: int
    engine: str
    precision: str
    mode: str = "latency"
    streams: int | None = None
    concurrency: int | None = None
    #: what the figures are: "ms per call" or "s per image"
    unit: str
    baseline: float | None = None
    this_run: float | None = None
    ratio: float | None = None
    ratio_ci_low: float | None = None
    ratio_ci_high: float | None = None
    #: "bootstrap" (both runs' samples) or "confidence bounds" (a baseline without samples)
    method: str | None = None
    verdict: Verdict
    note: str | None = None


class BaselineComparison(BaseModel):
    """The gate's outcome, kept in the run's ``results.json`` under ``baseline``."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    path: str
    run_id: str | None = None
    max_slowdown: float
    rows: list[GateRow] = Field(default_factory=list)
    #: rows of this run with no baseline row of the same key, and the other way round
    only_here: list[str] = Field(default_factory=list)
    only_baseline: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)

    @property
    def failures(self) -> list[GateRow]:
        return [r for r in self.rows if r.verdict in FAILING]

    @property
    def passed(self) -> bool:
        return not self.failures


#: A benchmark's results.json holds a few kB a row: far more than any run measures.
RESULTS_LIMIT = 256 << 20


def _baseline_path(path: Path) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    problem = file_problem(path)
    if problem == "does not exist":
        raise UserError(f"--baseline {path}: no such results file (give a results.json or the folder holding one)")
    if problem:
        raise UserError(f"--baseline {path} {problem}: give a results.json or the folder holding one")
    return path


def load_baseline(path: Path) -> BaselineFile:
    """Read an earlier run's results (a ``results.json`` or its folder); one clear line if it is not one."""
    file = _baseline_path(path)

    def refuse(token: str) -> None:
        raise ValueError(f"non-finite number {token}")

    try:
        doc = json.loads(read_regular_text(file, limit=RESULTS_LIMIT), parse_constant=refuse)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"--baseline {file} is not readable results JSON: {exc}") from None
    rows = doc.get("rows", doc.get("results")) if isinstance(doc, dict) else None
    if not isinstance(rows, list):
        raise UserError(f"--baseline {file} is not a benchmark results file (it has no rows)")
    kept: list[BaselineRow] = []
    skipped = 0
    for raw in rows:
        try:
            kept.append(BaselineRow.model_validate(raw))
        except ValidationError:
            skipped += 1
    if not kept:
        raise UserError(f"--baseline {file} holds no rows this benchmark can read ({skipped} unreadable)")
    env = doc.get("environment") if isinstance(doc.get("environment"), dict) else {}
    return BaselineFile(
        path=str(file), run_id=doc.get("run_id"), started=doc.get("started"), environment=env, rows=kept,
        skipped_rows=skipped,
    )  # fmt: skip


def _verdict(low: float, high: float, max_slowdown: float) -> Verdict:
    if low > 1 + max_slowdown:
        return "slower"
    if high < 1 - max_slowdown:
        return "faster"
    if low >= 1 - max_slowdown and high <= 1 + max_slowdown:
        return "same"
    return "inconclusive"


def _unit(mode: str) -> str:
    return "s per image" if mode == "throughput" else "ms per call"


def compare_pair(mine: BaselineRow, base: BaselineRow, max_slowdown: float, rng: np.random.Generator) -> GateRow:
    """One matched pair's ratio, interval and verdict."""
    fields = dict(
        label=mine.label, model=mine.model, input_shape=mine.input_shape, batch_size=mine.batch_size,
        engine=mine.engine, precision=mine.precision, mode=mine.mode, streams=mine.streams,
        concurrency=mine.concurrency, unit=_unit(mine.mode),
    )  # fmt: skip
    if mine.status == "parity-failed":
        return GateRow(**fields, verdict="parity failed", note=mine.reason)  # type: ignore[arg-type]
    if mine.status != "ok" or base.status != "ok":
        side = "this run" if mine.status != "ok" else "the baseline"
        why = (mine.reason if mine.status != "ok" else base.reason) or "no measurement"
        return GateRow(**fields, verdict="not measured", note=f"{side}: {why}")  # type: ignore[arg-type]
    value, low, high, kept = mine.timing()
    b_value, b_low, b_high, b_kept = base.timing()
    if value is None or b_value is None or b_value <= 0:
        return GateRow(**fields, verdict="not judged", note="no figure to compare")  # type: ignore[arg-type]
    ratio = value / b_value
    notes = []
    if mine.unstable or base.unstable:
        notes.append(f"{'this run' if mine.unstable else 'the baseline'}'s figure is flagged unstable")
    if kept is not None and b_kept is not None:
        iv = ratio_interval(kept, b_kept, rng)
        lo, hi, method = iv.low, iv.high, "bootstrap"
    elif None not in (low, high, b_low, b_high) and b_low > 0:  # type: ignore[operator]
        lo, hi, method = low / b_high, high / b_low, "confidence bounds"  # type: ignore[operator]
        notes.append("the baseline kept no samples: interval bounded from both medians' 95% intervals")
    else:
        return GateRow(
            **fields, baseline=b_value, this_run=value, ratio=ratio, verdict="not judged",  # type: ignore[arg-type]
            note="no interval: the baseline row has neither samples nor a confidence interval",
        )  # fmt: skip
    return GateRow(
        **fields, baseline=b_value, this_run=value, ratio=ratio, ratio_ci_low=lo, ratio_ci_high=hi,  # type: ignore[arg-type]
        method=method, verdict=_verdict(lo, hi, max_slowdown), note="; ".join(notes) or None,
    )  # fmt: skip


def _environment_notes(mine: dict[str, object], base: dict[str, object]) -> list[str]:
    notes = []
    keys = (("cpu_model", "CPU"), ("gpu_name", "GPU"), ("threads", "threads"), ("onnxruntime", "onnxruntime"))
    for key, what in keys:
        a, b = mine.get(key), base.get(key)
        if a is not None and b is not None and a != b:
            notes.append(f"the baseline was measured with {what} {b}, this run with {a}: the ratios compare that too")
    return notes


def compare_runs(
    rows: Sequence[BaselineRow] | Iterable[object],
    environment: dict[str, object],
    baseline: BaselineFile,
    max_slowdown: float = DEFAULT_MAX_SLOWDOWN,
    seed: int = 0,
) -> BaselineComparison:
    """This run's ``rows`` (BenchRows or their dicts) against ``baseline`` (see the module docstring)."""
    if not (max_slowdown >= 0 and math.isfinite(max_slowdown)):
        raise UserError(f"--max-slowdown must be a finite number >= 0, got {max_slowdown}")
    mine = [r if isinstance(r, BaselineRow) else BaselineRow.model_validate(_as_dict(r)) for r in rows]
    by_key = {}
    for r in baseline.rows:
        by_key.setdefault(r.key, r)  # a file with the same key twice: its first row
    rng = np.random.default_rng([seed, 7919])
    out = BaselineComparison(path=baseline.path, run_id=baseline.run_id, max_slowdown=max_slowdown)
    matched = set()
    for r in mine:
        base = by_key.get(r.key)
        if base is None:
            out.only_here.append(r.label)
            continue
        matched.add(r.key)
        out.rows.append(compare_pair(r, base, max_slowdown, rng))
    out.only_baseline = [r.label for k, r in by_key.items() if k not in matched]
    out.notes = _environment_notes(environment, baseline.environment)
    if baseline.skipped_rows:
        out.notes.append(f"{baseline.skipped_rows} rows of the baseline could not be read and were left out")
    return out


def _as_dict(row: object) -> dict[str, object]:
    dump = getattr(row, "model_dump", None)
    return dump() if callable(dump) else dict(row)  # type: ignore[call-overload]
