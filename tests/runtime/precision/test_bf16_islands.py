"""``--precision auto --engine openvino`` on a CPU with bf16 arithmetic: the passing candidates again with their
float layers in OpenVINO's bf16 hint, judged so, timed so, and the hint recorded where such a graph is chosen."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter import artifact as art
from runtime.precision import SearchConfig, search_precision
from runtime.precision import search as search_module
from runtime.precision.budget import Budget
from tests.helpers import strict_load

from .test_search import _fake_timing

pytest.importorskip("openvino")


def _needs_bf16() -> None:
    """On a CPU without bf16 arithmetic the search builds no twins and says why (the test with the missing
    capability faked); these tests are expected to fail there, not skipped (CI refuses skips)."""
    from runtime.bench.engines import openvino_bf16_missing

    why = openvino_bf16_missing()
    if why:
        pytest.xfail(f"needs bf16 arithmetic: {why}")


def _timing_that_records(seen: dict[str, object]):  # type: ignore[no-untyped-def]
    """Fake timing: a graph OpenVINO compiles with the bf16 hint 3x fp32, the others 1.5x; the hints recorded."""

    def timed(*args, **kwargs):  # type: ignore[no-untyped-def]
        hints = list(kwargs.get("openvino_hints", ()))
        seen["openvino_hints"] = hints
        return _fake_timing([3.0 if h == "bf16" else 1.5 for h in hints])(*args, **kwargs)

    return timed


def test_passing_candidates_are_judged_again_with_float_layers_in_bf16(
    lenet_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """lenet5's all-int8 graph measures 42.7 dB: at 43.5 dB the search keeps layers float; each passing graph is
    judged again in OpenVINO with the bf16 hint (read back from the compiled model), and the twins, timed
    fastest here, carry their hint into the timing and, chosen, into the variant's record."""
    _needs_bf16()
    seen: dict[str, object] = {}
    monkeypatch.setattr(search_module, "time_candidates", _timing_that_records(seen))
    outcome = search_precision(lenet_dir, SearchConfig(budget=Budget("sqnr", 43.5), engine="openvino", threads=1))
    s = outcome.search
    twins = [c for c in s.candidates if c.openvino_hint == "bf16"]
    plain = [c for c in s.candidates if c.openvino_hint is None]
    assert twins and all("float layers in bf16 (OpenVINO)" in c.label for c in twins)
    assert all(c.float_nodes for c in twins), "a twin has float layers to run in bf16"
    for t in twins:
        assert [k.engine for k in t.checks] == ["onnxruntime", "openvino"]
        assert t.checks[1].inference_precision == "bf16" and t.checks[0].inference_precision is None
    assert all(c.checks[1].inference_precision == "f32" for c in plain)
    # the timing is told which candidates OpenVINO compiles with the bf16 hint
    assert seen["openvino_hints"] == [c.openvino_hint for c in s.candidates]
    chosen = next(c for c in s.candidates if c.chosen)
    record = art.open_artifact(lenet_dir).manifest.variants["auto"]
    assert record.openvino_hint == chosen.openvino_hint
    # bf16 costs lenet5's float layers about 1-3 dB (measured 43.0-44.2 dB against 44.4-46.6 in f32): some
    # stay within 43.5 dB, and timed 3x against 1.5x such a twin is the fastest passing graph
    assert any(t.passed for t in twins) and not all(t.passed for t in twins)
    assert chosen.openvino_hint == "bf16" and record.openvino_hint == "bf16"
    strict_load(lenet_dir / "manifest.json")


def test_without_bf16_the_float_layers_stay_f32_and_a_note_says_why(
    lenet_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runtime.bench import engines

    monkeypatch.setattr(engines, "openvino_bf16_missing", lambda: "this CPU has no bf16 arithmetic (test)")
    monkeypatch.setattr(search_module, "time_candidates", _fake_timing([1.5, 2.0, 1.2, 2.2]))
    outcome = search_precision(lenet_dir, SearchConfig(budget=Budget("sqnr", 44.0), engine="openvino", threads=1))
    s = outcome.search
    assert all(c.openvino_hint is None for c in s.candidates)
    assert "float layers stay f32 in OpenVINO: this CPU has no bf16 arithmetic (test)" in s.notes
    if outcome.record is not None:
        assert outcome.record.openvino_hint is None


def test_onnxruntime_searches_build_no_bf16_twins(lenet_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(search_module, "time_candidates", _fake_timing([1.5, 2.0, 1.2, 2.2]))
    outcome = search_precision(lenet_dir, SearchConfig(budget=Budget("sqnr", 44.0), threads=1))
    assert all(c.openvino_hint is None for c in outcome.search.candidates)
    assert not any("bf16" in n for n in outcome.search.notes)


def test_the_timing_compiles_a_bf16_candidate_with_the_bf16_hint(
    lenet_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Timed for real (a few samples): the candidate judged with the bf16 hint is timed with it too, fp32 and
    the other candidate with f32, each as OpenVINO reads it back from the compiled model."""
    _needs_bf16()
    from exporter.data import check_batch
    from runtime.bench.timing import TimingPolicy
    from runtime.precision import timing

    artifact = art.open_artifact(lenet_dir)
    fp32 = artifact.path().read_bytes()
    compiled: list[str] = []
    real = timing.prepare

    def spy(engine, ctx, precision, x):  # type: ignore[no-untyped-def]
        runner = real(engine, ctx, precision, x)
        compiled.append(str(runner.settings.get("inference_precision_hint")))
        return runner

    monkeypatch.setattr(timing, "prepare", spy)
    x = check_batch((3, 32, 32), 1, 0, seed=1).numpy()
    policy = TimingPolicy(min_samples=3, min_seconds=0.0, max_seconds=5.0, warmup=1, warmup_seconds=0.0)
    _fp32, timed = timing.time_candidates(artifact, fp32, [fp32, fp32], x, "openvino", 1, policy,
                                          openvino_hints=["bf16", None])  # fmt: skip
    assert len(timed) == 2 and all(t.samples >= 3 for t in timed)
    names = {"<Type: 'float32'>": "f32", "<Type: 'bfloat16'>": "bf16"}
    assert [names.get(c, c) for c in compiled] == ["f32", "bf16", "f32"]


class _FakeWork:
    """The parts of ``Work`` the bf16 stage uses: candidates (f32, passing as given), and every graph tried."""

    def __init__(self, float_counts: list[int], twins_pass: bool, extension_passes_at: int | None) -> None:
        self.candidates = [
            art.SearchCandidate(
                label=f"c{i}",
                float_layers=[f"l{j}" for j in range(n)],
                float_nodes=["n"] * n,
                sqnr_db=40.0,
                cosine_min=0.999,
                passed=True,
            )  # fmt: skip
            for i, n in enumerate(float_counts)
        ]
        self.twins_pass, self.passes_at = twins_pass, extension_passes_at
        self.twins: list[int] = []
        self.tried: list[tuple[str, list[str], str | None]] = []

    def try_twin(self, i: int, hint: str) -> art.SearchCandidate:
        self.twins.append(i)
        return self.candidates[i].model_copy(update={"passed": self.twins_pass, "openvino_hint": hint})

    def try_graph(self, label: str, nodes: list[str], layers: list[str], hint: str | None = None):  # type: ignore[no-untyped-def]
        self.tried.append((label, layers, hint))
        return self.candidates[0].model_copy(update={"passed": len(layers) == self.passes_at})


def _order(n: int) -> list[art.LayerCost]:
    return [art.LayerCost(layer=f"L{i}", nodes=[f"L{i}/n"], recovered_db=1.0, cost_ms=0.1) for i in range(n)]


@pytest.mark.parametrize(
    ("n", "counts", "passes_at", "float_sizes"),
    [
        (8, [2, 3], None, [4, 5, 7]),  # 3 float at most: 1, 2 and 4 more, none passing
        (8, [2, 3], 5, [4, 5]),  # stops at the first that passes
        (5, [3], None, [4]),  # 2 int8 at most: 1 more leaves 1 int8; 2 more would be all-float
        (4, [4], None, []),  # a passing graph with every layer float: nothing more to float
    ],
)
def test_the_bf16_extension_floats_more_layers_never_all_nor_none(
    monkeypatch: pytest.MonkeyPatch, n: int, counts: list[int], passes_at: int | None, float_sizes: list[int]
) -> None:
    """Where no twin passes, the greedy's sets with 1, 2, 4 more layers float (its order's tail), in bf16:
    each keeps at least one layer int8 and floats at least one more than the passing graph with most."""
    from runtime.bench import engines

    monkeypatch.setattr(engines, "openvino_bf16_missing", lambda: None)
    work = _FakeWork(counts, twins_pass=False, extension_passes_at=passes_at)
    order = _order(n)
    assert search_module._bf16_islands(work, order) == []  # type: ignore[arg-type]
    assert work.twins == list(range(len(counts)))
    assert [len(layers) for _l, layers, _h in work.tried] == float_sizes
    for label, layers, hint in work.tried:
        assert hint == "bf16" and 0 < len(layers) < n
        assert layers == [c.layer for c in order[n - len(layers) :]], "the order's tail: its last layers float"
        assert label == f"greedy: {n - len(layers)} of {n} layers int8, float layers in bf16 (OpenVINO)"


def test_a_passing_twin_ends_the_bf16_stage(monkeypatch: pytest.MonkeyPatch) -> None:
    from runtime.bench import engines

    monkeypatch.setattr(engines, "openvino_bf16_missing", lambda: None)
    work = _FakeWork([2, 3], twins_pass=True, extension_passes_at=None)
    assert search_module._bf16_islands(work, _order(8)) == []  # type: ignore[arg-type]
    assert work.twins == [0, 1] and work.tried == []
