"""The serving path's own cost, and the prediction that charges it.

The bench times the engine in-process; a served request also pays for the client serialising it,
gRPC, Triton, pytriton's Python stub and the copies between them, all on the same cores. To
measure that cost rather than guess it, ``--serve`` load-tests a trivial model (an ONNX
``Identity`` graph with the artifact's input) exactly as it load-tests the winner: the same local
Triton, protocol, request batch, client count, instances and batching. Its throughput in requests
per second at that client count is the most the serving path alone delivers; its inverse is the
serving path's time per request.

Two predictions follow, the bounds of how far the two costs overlap:

* **costs added** (``corrected_predicted_ips``): ``images per request / (bench seconds per request
  + serving seconds per request)``, as if nothing overlapped: right where both are CPU-bound on the
  same fully busy cores, a lower bound otherwise;
* **pipelined** (``pipelined_predicted_ips``): the slower of the bench's figure and the serving
  path's own ceiling (``images per request / serving seconds per request``), as if they overlapped
  fully: neither stage can go faster than it does alone, so an upper bound;
* **shared cores** (``shared_predicted_ips``): the two overlap, but share the cores: the engine
  needs ``cores / bench img/s`` core-seconds per image (the bench keeps every core busy), the serving
  path ``busy cores / its img/s`` (the machine's busy cores while the Identity graph was served,
  from /proc/stat); served is at most ``1 / (1 / bench + busy / (cores x path img/s))``, and at most
  the pipelined bound.

The bench's figure is that of the configuration served (its instances as the engine's streams and
threads, its requests in flight, the batch the server formed), timed right before and right after
the final check's load test, whose served figure the check compares; the chosen candidate's bench
(the setting the sweep measured) stands in only where that is missing (:func:`check_basis`).

On this project's 2-core machine the serving path alone turned out to be latency-bound (its
clients wait on it without filling the cores), so its time overlaps the engine's: see the README.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .deploy import Candidate, ServeSearch

#: the done-criterion: served within this fraction of the prediction
TOLERANCE = 0.15
#: two measurements of the serving path further apart than this (relative to their mean): unstable
SPREAD_LIMIT = 0.2


#: Identity graphs built in this process, by the sha256 of the graph each stands for: the final check probes
#: the serving path twice with one winner, whose graph need not be parsed and its Identity checked again.
_IDENTITY: dict[bytes, bytes] = {}


def identity_graph(graph: bytes) -> bytes:
    """An ONNX model that returns its input: ``graph``'s input (name, dtype, shape), opset and IR version.

    Built and checked once per process for a given ``graph``."""
    import hashlib

    key = hashlib.sha256(graph).digest()
    made = _IDENTITY.get(key)
    if made is None:
        made = _IDENTITY[key] = _build_identity(graph)
    return made


def _build_identity(graph: bytes) -> bytes:
    import onnx
    from onnx import helper

    model = onnx.load_model_from_string(graph)
    initializers = {i.name for i in model.graph.initializer}
    source = next(v for v in model.graph.input if v.name not in initializers)
    out = onnx.ValueInfoProto()
    out.CopyFrom(source)
    out.name = f"{source.name}_identity"
    node = helper.make_node("Identity", [source.name], [out.name])
    trivial = helper.make_graph([node], "serving_path", [source], [out])
    opsets = [o for o in model.opset_import if o.domain in ("", "ai.onnx")] or [helper.make_opsetid("", 13)]
    made = helper.make_model(trivial, opset_imports=opsets, producer_name="runtime.tune")
    made.ir_version = model.ir_version
    onnx.checker.check_model(made)
    return made.SerializeToString()


@dataclass(frozen=True)
class Overhead:
    """The serving path's seconds per request: the mean of its measurements, and their range."""

    seconds: float
    low: float
    high: float
    unstable_reasons: tuple[str, ...]


def overhead_from(requests_per_s: Sequence[float]) -> Overhead | None:
    """Seconds per request from the trivial model's requests per second (each measurement); None without one."""
    rates = [r for r in requests_per_s if r and r > 0]
    if not rates:
        return None
    per = [1.0 / r for r in rates]
    mean = sum(per) / len(per)
    reasons: list[str] = []
    if len(per) < 2:
        reasons.append("measured once")
    elif (max(per) - min(per)) / mean > SPREAD_LIMIT:
        reasons.append(f"its measurements differ by {(max(per) - min(per)) / mean:.0%} of their mean")
    return Overhead(mean, min(per), max(per), tuple(reasons))


def corrected_ips(bench_ips: float, batch: int, overhead_s: float) -> float:
    """Images per second through the server: ``batch / (batch / bench_ips + overhead_s)``."""
    return batch / (batch / bench_ips + overhead_s)


def pipelined_ips(bench_ips: float, batch: int, overhead_s: float) -> float:
    """The slower stage's images per second: ``min(bench_ips, batch / overhead_s)``."""
    return min(bench_ips, batch / overhead_s)


def shared_cores_ips(bench_ips: float, path_ips: float, busy: float, cores: int) -> float:
    """Images per second when the engine (``cores / bench_ips`` core-seconds an image) and the serving path
    (``busy / path_ips``) share ``cores``, never above the pipelined bound ``min(bench_ips, path_ips)``."""
    shared = 1.0 / (1.0 / bench_ips + busy / (cores * path_ips))
    return min(shared, bench_ips, path_ips)


def check_line(served_ips: float, corrected: float, unstable: Sequence[str],
               how: str = "with the serving path's cost added",
               served: str = "served") -> tuple[bool, str]:  # fmt: skip
    """Whether ``served_ips`` is within 15% of ``corrected``, and the sentence that says so with the figures.

    ``served``: what names the served figure (``served ... in the final check``)."""
    ratio = served_ips / corrected
    met = abs(ratio - 1.0) <= TOLERANCE
    verdict = "met" if met else "not met"
    line = (
        f"15% check {verdict}: {served} {served_ips:.0f} img/s is {ratio:.2f}x the {corrected:.0f} img/s "
        f"predicted {how}"
    )
    if unstable:
        line += f" (figures unstable: {'; '.join(unstable)})"
    return met, line


@dataclass(frozen=True)
class Basis:
    """What the check compares: the served figure, the bench figure its predictions start from, and words."""

    kind: str
    served_ips: float | None
    bench_ips: float
    #: the bench, named: ``the bench of the served configuration, 4 streams x 1 thread, 4 in flight, batch 16:
    #: 230 img/s before, 220 after``
    benched: str
    served: str


def check_basis(out: ServeSearch, chosen: Candidate) -> Basis | None:
    """The served configuration's bench against the final check's served figure, both measured side by side;
    where that bench is missing, the chosen candidate's (``out.predicted_ips``) against ``out.served_ips``."""
    setting = out.served_config_setting
    if out.served_config_bench_ips and out.served_final_ips and setting is not None:
        benched = (
            f"the bench of the served configuration, {setting.label}: {out.served_config_bench_before_ips:.0f} "
            f"img/s before, {out.served_config_bench_after_ips:.0f} after"
        )
        return Basis("served configuration", out.served_final_ips, out.served_config_bench_ips, benched,
                     "served in the final check")  # fmt: skip
    if not out.predicted_ips:
        return None
    benched = f"the bench of the chosen candidate, {chosen.setting}, {chosen.concurrency} in flight, batch "
    benched += f"{chosen.batch_size}: {out.predicted_ips:.0f} img/s"
    return Basis("chosen candidate", out.served_ips, out.predicted_ips, benched, "served")


def charge_serving_path(out: ServeSearch, chosen: Candidate) -> None:
    """Fill ``out``'s serving-path figures: the overhead, the corrected prediction, the ratio and the 15% check.

    Needs ``out.serving_overhead`` measured, and the served configuration's bench (or ``out.predicted_ips``);
    a served figure for the check (see :func:`check_basis`).
    """
    path = out.serving_overhead
    if path is None:
        return
    got = overhead_from(path.requests_per_s)
    if got is None:
        return
    path.seconds_per_request = got.seconds
    path.seconds_per_request_low, path.seconds_per_request_high = got.low, got.high
    path.unstable, path.unstable_reasons = bool(got.unstable_reasons), list(got.unstable_reasons)
    basis = check_basis(out, chosen)
    if basis is None:
        return
    batch, bench = path.request_batch, basis.bench_ips
    out.check_basis, out.check_bench_ips = basis.kind, bench  # type: ignore[assignment]
    out.corrected_predicted_ips = corrected_ips(bench, batch, got.seconds)
    out.corrected_predicted_low_ips = corrected_ips(bench, batch, got.high)
    out.corrected_predicted_high_ips = corrected_ips(bench, batch, got.low)
    out.pipelined_predicted_ips = pipelined_ips(bench, batch, got.seconds)
    if not basis.served_ips:
        return
    served = out.check_served_ips = basis.served_ips
    out.served_over_corrected = served / out.corrected_predicted_ips
    out.served_over_pipelined = served / out.pipelined_predicted_ips
    unstable = unstable_reasons(out, chosen)
    how = f"with the serving path's cost added to {basis.benched}"
    out.within_15pct, added = check_line(served, out.corrected_predicted_ips, unstable, how, basis.served)
    how = f"as a pipeline (the slower of the serving path and {basis.benched})"
    out.within_15pct_pipelined, pipelined = check_line(served, out.pipelined_predicted_ips, unstable, how,
                                                       basis.served)  # fmt: skip
    out.check = f"{added}\n{pipelined}"
    if path.busy_cores and path.cores:
        busy = sum(path.busy_cores) / len(path.busy_cores)
        alone = batch / got.seconds
        out.shared_predicted_ips = shared_cores_ips(bench, alone, busy, path.cores)
        out.served_over_shared = served / out.shared_predicted_ips
        how = (f"with the serving path's CPU time sharing the {path.cores} cores (it kept {busy:.2f} busy for its "
               f"{alone:.0f} img/s) with {basis.benched}")  # fmt: skip
        out.within_15pct_shared, shared = check_line(served, out.shared_predicted_ips, unstable, how, basis.served)
        out.check += f"\n{shared}"


def unstable_reasons(out: ServeSearch, chosen: Candidate) -> list[str]:
    """Why the check's figures are not to be trusted as they stand (none: stable)."""
    reasons = [f"serving path: {r}" for r in (out.serving_overhead.unstable_reasons if out.serving_overhead else [])]
    best = chosen.best
    if out.check_basis != "served configuration" and best is not None and best.unstable:
        reasons.append(f"bench: {'; '.join(best.unstable_reasons) or 'flagged'}")
    pairs = [(out.bench_before_ips, out.bench_after_ips, "the bench")]
    if out.check_basis == "served configuration":
        pairs.append((out.served_config_bench_before_ips, out.served_config_bench_after_ips,
                      "the bench of the served configuration"))  # fmt: skip
    for before, after, what in pairs:
        if before and after and abs(before - after) / ((before + after) / 2) > SPREAD_LIMIT:
            reasons.append(f"{what} gave {before:.0f} img/s before the final check and {after:.0f} after")
    return reasons


def describe(out: ServeSearch) -> str | None:
    """One line: the bench-only prediction, the serving path's cost, the corrected prediction, served and the ratio."""
    path = out.serving_overhead
    if path is None or path.seconds_per_request is None or out.corrected_predicted_ips is None:
        return path.note if path is not None else None
    rates = ", ".join(f"{r:.0f}" for r in path.requests_per_s)
    line = (
        f"serving path (an Identity graph served the same way: {path.concurrency} clients, batches of "
        f"{path.request_batch}): {rates} requests/s, {path.seconds_per_request * 1e3:.2f} ms per request "
        f"({path.seconds_per_request_low * 1e3:.2f}-{path.seconds_per_request_high * 1e3:.2f}); "  # type: ignore[operator]
        f"bench-only prediction {out.check_bench_ips or out.predicted_ips:.0f} img/s, with the serving path charged "
        f"{out.corrected_predicted_ips:.0f} img/s ({out.corrected_predicted_low_ips:.0f}-"
        f"{out.corrected_predicted_high_ips:.0f})"
    )
    alone = path.request_batch / path.seconds_per_request
    line += f", as a pipeline {out.pipelined_predicted_ips:.0f} img/s (the serving path alone: {alone:.0f} img/s)"
    if out.served_over_corrected is not None:
        line += f"; served {out.check_served_ips or out.served_ips:.0f} img/s, {out.served_over_corrected:.2f}x and "
        line += f"{out.served_over_pipelined:.2f}x"
    return line
