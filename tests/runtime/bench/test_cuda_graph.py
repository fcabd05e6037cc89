"""CUDA graphs per batch: the decision from interleaved timings (stub timings here), what a row records
of it, and the onnxruntime engine's CUDA branch on a stand-in session (no GPU needed)."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import pytest

from exporter.errors import UserError
from runtime.bench import cuda, engines
from runtime.sessions import SessionConfig, SessionInfo


def test_a_graph_that_measures_faster_is_kept() -> None:
    use, reason = cuda.decide([1.0e-3] * 20, [0.8e-3] * 20)
    assert use and reason.startswith("auto: on")
    assert "graph 0.8 ms vs plain 1 ms" in reason and "20 interleaved pairs" in reason and "+20.0%" in reason


@pytest.mark.parametrize("graph_ms", [0.99, 1.0, 1.3])
def test_a_graph_within_the_margin_or_slower_is_not(graph_ms: float) -> None:
    use, reason = cuda.decide([1.0e-3] * 20, [graph_ms * 1e-3] * 20)
    assert not use and reason.startswith("auto: off") and "more than 2% faster" in reason


def test_the_decision_reads_medians_not_means() -> None:
    """One slow outlier in the graph's calls (a host hiccup) does not make it lose."""
    graph = [0.5e-3] * 19 + [50e-3]
    assert cuda.decide([1.0e-3] * 20, graph)[0]


def test_decide_needs_timings_on_both_sides() -> None:
    with pytest.raises(ValueError):
        cuda.decide([], [1.0])


def test_pairs_alternate_which_side_goes_first() -> None:
    order: list[str] = []
    ticks = iter(range(1000))
    plain_s, graph_s = cuda.time_pairs(
        lambda: order.append("p"), lambda: order.append("g"), pairs=4, warmup=1, clock=lambda: next(ticks)
    )
    assert order == ["p", "g", "p", "g", "g", "p", "p", "g", "g", "p"]
    assert len(plain_s) == len(graph_s) == 4 and all(t == 1 for t in plain_s + graph_s)


def test_capture_times_the_allocating_and_capturing_calls() -> None:
    calls: list[int] = []
    capture_s, first = cuda.capture(lambda: calls.append(1), calls=3)
    assert len(calls) == 3 and len(first) == 3 and capture_s >= 0
    assert capture_s * 1e3 == pytest.approx(first[0] + first[1])


def test_a_decision_records_both_medians_and_the_replay_check() -> None:
    d = cuda.GraphDecision("auto", True, "auto: on (...)", 1.0, 0.8, 20, 0.5, (10.0, 5.0, 0.8), 0.0)
    s = d.settings()
    assert s["cuda_graph"] is True and s["cuda_graph_mode"] == "auto"
    assert (s["cuda_graph_ab_plain_ms"], s["cuda_graph_ab_graph_ms"], s["cuda_graph_ab_pairs"]) == (1.0, 0.8, 20)
    assert s["cuda_graph_first_calls_ms"] == "10.000, 5.000, 0.800" and s["cuda_graph_replay_max_abs_diff"] == 0.0
    off = cuda.GraphDecision("off", False, "off (--no-cuda-graph)").settings()
    assert off == {"cuda_graph": False, "cuda_graph_mode": "off", "cuda_graph_decision": "off (--no-cuda-graph)"}


def test_replay_outputs_are_compared_with_the_plain_run() -> None:
    a = [np.zeros((2, 10), np.float32)]
    assert cuda.max_abs_diff(a, [a[0] + 0.25]) == pytest.approx(0.25)
    with pytest.raises(UserError, match="outputs"):
        cuda.max_abs_diff(a, a + a)


# --- the onnxruntime engine's CUDA branch on a stand-in session -------------------------------------


def _meta(name: str, shape: list, kind: str = "tensor(float)") -> SimpleNamespace:
    return SimpleNamespace(name=name, type=kind, shape=shape)


class FakeSession:
    def __init__(self, outputs: list | None = None) -> None:
        self.outputs = outputs or [_meta("output", ["batch", 10])]

    def get_inputs(self) -> list:
        return [_meta("input", ["batch", 3, 8, 8])]

    def get_outputs(self) -> list:
        return self.outputs

    def run(self, _names, feed) -> list:
        return [np.zeros((next(iter(feed.values())).shape[0], 10), np.float32)]


@dataclass
class FakeBound:
    graph: bool
    fixed_outputs: int = 1
    input_transfer: str = "fp32 batch copied to the GPU once, bound"
    calls: list[str] = field(default_factory=list)

    def step(self) -> None:
        self.calls.append("graph" if self.graph else "plain")

    def outputs(self) -> list[np.ndarray]:
        return [np.full((2, 10), 0.5 if self.graph else 0.5, np.float32)]


@pytest.fixture()
def fake_cuda(monkeypatch: pytest.MonkeyPatch):
    """prepare_onnxruntime on CUDA with sessions, binding and A/B timings stubbed; returns a context
    factory and the sessions it created."""
    created: list[SessionConfig] = []
    bound: list[FakeBound] = []

    def create(_graph, config: SessionConfig):
        created.append(config)
        options = {"CUDAExecutionProvider": {"enable_cuda_graph": "1" if config.cuda_graph else "0"}}
        info = SessionInfo("cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"], "CUDA", options, 1)
        return FakeSession(), info

    def bind(sess, x, cuda_graph: bool) -> FakeBound:
        b = FakeBound(cuda_graph)
        bound.append(b)
        return b

    monkeypatch.setattr(engines, "create_session", create)
    monkeypatch.setattr(engines, "bind", bind)

    def context(mode: str, **session: object) -> engines.ModelContext:
        return engines.ModelContext(
            name="net",
            artifact=None,  # type: ignore[arg-type]
            graphs={"fp32": b"graph"},
            graph_paths={"fp32": "net.onnx"},
            reference=None,
            device="cuda",
            session=SessionConfig(device="cuda", **session),  # type: ignore[arg-type]
            threads=1,
            cuda_graph=mode,
        )

    return SimpleNamespace(context=context, created=created, bound=bound)


X = np.zeros((2, 3, 8, 8), np.float32)


def test_auto_keeps_the_graph_where_it_measures_faster(fake_cuda, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engines, "time_pairs", lambda plain, graph: ([1e-3] * 20, [0.5e-3] * 20))
    ctx = fake_cuda.context("auto")
    runner = engines.prepare_onnxruntime(ctx, "fp32", X)
    s = runner.settings
    assert s["cuda_graph"] is True and s["cuda_graph_decision"].startswith("auto: on")
    assert s["cuda_graph_ab_plain_ms"] == pytest.approx(1.0) and s["cuda_graph_ab_graph_ms"] == pytest.approx(0.5)
    assert s["cuda_graph_replay_max_abs_diff"] == 0.0 and s["io_binding"] is True
    assert [c.cuda_graph for c in fake_cuda.created] == [False, True]
    assert ("fp32", X.shape, "cuda-graph") in ctx.sessions
    runner.step()
    assert fake_cuda.bound[-1].calls[-1] == "graph"
    assert runner.cold_start["capture_s"] is not None and runner.cold_start["shared"] is False


def test_auto_drops_a_graph_that_does_not_pay(fake_cuda, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engines, "time_pairs", lambda plain, graph: ([1e-3] * 20, [1.1e-3] * 20))
    ctx = fake_cuda.context("auto")
    runner = engines.prepare_onnxruntime(ctx, "fp32", X)
    assert runner.settings["cuda_graph"] is False and runner.settings["cuda_graph_decision"].startswith("auto: off")
    assert list(ctx.sessions) == ["fp32"], "the graph's session is freed"
    runner.step()
    assert fake_cuda.bound[0].calls[-1] == "plain" and "capture_s" not in runner.cold_start


def test_on_always_replays_and_off_never_captures(fake_cuda, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engines, "time_pairs", lambda plain, graph: pytest.fail("on and off do not measure"))
    on = engines.prepare_onnxruntime(fake_cuda.context("on", io_binding=False), "fp32", X)
    assert on.settings["cuda_graph"] is True and on.settings["cuda_graph_mode"] == "on"
    assert on.settings["io_binding"] is True, "--cuda-graph binds even with --no-io-binding"
    off = engines.prepare_onnxruntime(fake_cuda.context("off"), "fp32", X)
    assert off.settings["cuda_graph"] is False and off.settings["cuda_graph_decision"] == "off (--no-cuda-graph)"


def test_auto_without_io_binding_says_why_there_is_no_graph(fake_cuda) -> None:
    r = engines.prepare_onnxruntime(fake_cuda.context("auto", io_binding=False), "fp32", X)
    assert r.settings["cuda_graph"] is False and "needs IO binding" in r.settings["cuda_graph_decision"]
    assert r.settings["io_binding"] is False


def test_auto_with_outputs_of_open_shape_stays_plain(fake_cuda, monkeypatch: pytest.MonkeyPatch) -> None:
    def bind(sess, x, cuda_graph: bool):
        if cuda_graph:
            raise UserError("a CUDA graph needs fixed output shapes, and output o is ['batch', 'h']")
        return FakeBound(False)

    monkeypatch.setattr(engines, "bind", bind)
    r = engines.prepare_onnxruntime(fake_cuda.context("auto"), "fp32", X)
    assert r.settings["cuda_graph"] is False and "fixed output shapes" in r.settings["cuda_graph_decision"]
    with pytest.raises(UserError, match="fixed output shapes"):
        engines.prepare_onnxruntime(fake_cuda.context("on"), "fp32", X)


def test_cuda_rows_record_the_provider_settings(fake_cuda, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engines, "time_pairs", lambda plain, graph: ([1e-3] * 20, [1e-3] * 20))
    s = engines.prepare_onnxruntime(fake_cuda.context("auto", cudnn_max_workspace=False), "fp32", X).settings
    assert s["cudnn_conv_use_max_workspace"] is False and s["cudnn_conv_algo_search"] == "EXHAUSTIVE"
    assert s["prefer_nhwc"] is False and s["prefer_nhwc_asked"] is False and "nhwc_build" in s
    assert s["tf32"] is True and s["bound_outputs"] == 1 and "input_transfer" in s
