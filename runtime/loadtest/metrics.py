"""Triton's Prometheus metrics: what the server really did with the requests of a load test.

The counters of one model before and after a run give the batches the dynamic batcher
formed (``nv_inference_count`` / ``nv_inference_exec_count``: inferences per model
execution) and where a request's time went (queue vs compute), from the server's side.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from dataclasses import dataclass

from exporter.errors import UserError

COUNTERS = (
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_count",
    "nv_inference_exec_count",
    "nv_inference_request_duration_us",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_input_duration_us",
    "nv_inference_compute_infer_duration_us",
    "nv_inference_compute_output_duration_us",
)
_LINE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)\{(?P<labels>[^}]*)\}\s+(?P<value>\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


class MetricsUnavailable(UserError):
    """The metrics endpoint does not answer or has no figures for the model."""


def parse(text: str, model: str) -> dict[str, float]:
    """Sum each counter of ``model`` over its versions from Prometheus text."""
    out = {name: 0.0 for name in COUNTERS}
    found = False
    for line in text.splitlines():
        m = _LINE.match(line)
        if not m or m.group("name") not in out:
            continue
        labels = dict(_LABEL.findall(m.group("labels")))
        if labels.get("model") != model:
            continue
        try:
            out[m.group("name")] += float(m.group("value"))
            found = True
        except ValueError:
            continue
    if not found:
        raise MetricsUnavailable(f"the metrics have no counters for model '{model}'")
    return out


def scrape(host: str, port: int, model: str, timeout_s: float = 5.0) -> dict[str, float]:
    url = f"http://{host}:{port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 (loopback, checked by the caller)
            text = response.read().decode("utf-8", errors="replace")
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise MetricsUnavailable(f"no metrics at {url} ({reason}): check --metrics-port") from exc
    return parse(text, model)


@dataclass(frozen=True)
class ServerFigures:
    """The difference of two scrapes: what the server did between them."""

    requests: int
    failures: int
    inferences: int
    executions: int
    queue_us: float | None
    compute_us: float | None

    @property
    def mean_batch(self) -> float | None:
        """Inferences (samples) per model execution: the batch size Triton really formed, on average."""
        return self.inferences / self.executions if self.executions else None


def difference(before: dict[str, float], after: dict[str, float]) -> ServerFigures:
    d = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in COUNTERS}
    requests = int(round(d["nv_inference_request_success"]))

    def per_request(key: str) -> float | None:
        return d[key] / requests if requests else None

    compute = None
    if requests:
        compute = (
            sum(
                d[k]
                for k in (
                    "nv_inference_compute_input_duration_us",
                    "nv_inference_compute_infer_duration_us",
                    "nv_inference_compute_output_duration_us",
                )
            )
            / requests
        )
    return ServerFigures(
        requests=requests,
        failures=int(round(d["nv_inference_request_failure"])),
        inferences=int(round(d["nv_inference_count"])),
        executions=int(round(d["nv_inference_exec_count"])),
        queue_us=per_request("nv_inference_queue_duration_us"),
        compute_us=compute,
    )
