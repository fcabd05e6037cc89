"""``--precision auto``: budgets, the greedy order, the search on lenet5 (random and digits-trained), what it
writes when a candidate pays off and what it leaves alone when none does."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

from exporter import artifact as art
from exporter.errors import UserError
from runtime.bench.stats import Interval
from runtime.compare import default_tolerance
from runtime.precision import NOT_WORTH_IT, SearchConfig, budget_from, search_precision
from runtime.precision import search as search_module
from runtime.precision.budget import Budget, default_budget, needs_labels
from runtime.precision.layers import int8_order, predicted_int8_sqnr
from runtime.precision.timing import Timing
from tests.helpers import assert_one_line, run_cli, strict_load

AUTO = art.VariantKey("auto")


def test_budget_flags_and_defaults() -> None:
    assert budget_from(None, None, None) is None
    assert default_budget(False) == Budget("sqnr", 25.0) and default_budget(True) == Budget("accuracy", 0.3)
    assert budget_from(30.0, None, None) == Budget("sqnr", 30.0)
    with pytest.raises(UserError, match="give one budget"):
        budget_from(30.0, 0.99, None)
    with pytest.raises(UserError, match="--min-cosine must be in"):
        budget_from(None, 1.5, None)
    with pytest.raises(UserError, match="in dB above 0"):
        budget_from(-5.0, None, None)


@pytest.mark.parametrize("flags", [["--max-loss-db", "-5"], ["--min-cosine", "2"], ["--max-accuracy-drop", "-1"]])
def test_a_bad_budget_is_one_line_before_any_work(flags: list[str], tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Defect (new-user trial): --max-loss-db -5 ran the search; --min-cosine 2 failed only after "reusing ..."."""
    proc = run_cli("exporter", "lenet5", "--precision", "auto", *flags, "--artifacts-dir", str(tmp_path / "a"))
    assert_one_line(proc, "--", code=2)
    assert proc.stdout == "" and not (tmp_path / "a").exists()
    with pytest.raises(UserError, match="needs labelled images"):
        needs_labels(Budget("accuracy", 1.0), labelled=False)
    base = default_tolerance("cpu", "int8")
    assert Budget("sqnr", 30.0).tolerance(base).min_sqnr_db == 30.0
    assert Budget("cosine", 0.999).tolerance(base).min_cosine == 0.999
    assert Budget("accuracy", 0.3).tolerance(base).max_accuracy_drop == pytest.approx(0.003)


def test_an_eval_set_too_small_for_the_budget_is_one_line_before_any_work(tmp_path: Path) -> None:
    """Defect (review): 4 labelled images measure top-1 in steps of 25 points, yet a 0.3-point budget was
    searched against them (one image flipped breaks it). Refused before anything is exported."""
    import numpy as np

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "four.npz", x=rng.random((4, 1, 32, 32), dtype=np.float32), y=np.arange(4))
    proc = run_cli("exporter", "lenet5", "--precision", "auto", "--eval-dir", str(tmp_path),
                   "--max-accuracy-drop", "0.3", "--artifacts-dir", str(tmp_path / "a"))  # fmt: skip
    assert_one_line(proc, "4 labelled images are too few for a budget of 0.3 top-1 points", code=2)
    assert "steps of 25 points (100/4)" in proc.stderr and "at least 334 images" in proc.stderr
    assert proc.stdout == "" and not (tmp_path / "a").exists()


def test_the_eval_set_rule_is_a_step_within_the_budget_and_100_images() -> None:
    import torch

    from exporter.data import Split
    from runtime.precision.budget import check_eval_size, min_eval_images

    assert [min_eval_images(pp) for pp in (0.3, 0.25, 0.1, 1.0, 5.0, 0.0)] == [334, 400, 1000, 100, 100, 100]
    check_eval_size(Budget("accuracy", 0.3), 360)  # the digits' held-out set meets the default budget
    check_eval_size(Budget("sqnr", 25.0), 4)  # an SQNR budget does not read the labels
    with pytest.raises(UserError, match="at least 100 images"):
        check_eval_size(Budget("accuracy", 5.0), 99)
    with pytest.raises(UserError, match="too few"):
        SearchConfig(
            budget=Budget("accuracy", 0.3), eval_set=Split(torch.zeros(4, 1, 8, 8), torch.arange(4))
        ).validate()


def test_int8_order_is_time_saved_per_noise_and_noises_add() -> None:
    costs = [
        art.LayerCost(layer="a", nodes=["a"], recovered_db=None, alone_int8_sqnr_db=30.0, cost_ms=1.0),
        art.LayerCost(layer="b", nodes=["b"], recovered_db=None, alone_int8_sqnr_db=40.0, cost_ms=1.0),
        art.LayerCost(layer="c", nodes=["c"], recovered_db=None, alone_int8_sqnr_db=20.0, cost_ms=5.0),
    ]
    order = int8_order(costs)
    assert [c.layer for c in order] == ["b", "a", "c"]  # 1e4 ms per unit noise, then 1e3, then 500
    assert predicted_int8_sqnr(order, 1) == pytest.approx(40.0)
    assert predicted_int8_sqnr(order, 2) == pytest.approx(10 * math.log10(1 / (1e-4 + 1e-3)))


def _fake_timing(speedups: list[float]):  # type: ignore[no-untyped-def]
    """time_candidates as if measured: fp32 1 ms, candidate i at 1/speedups[i] ms with a 2% interval."""

    def fake(artifact, fp32, candidates, x, engine, threads, policy=None, **_where):  # type: ignore[no-untyped-def]
        out = []
        for i, _ in enumerate(candidates):
            s = speedups[min(i, len(speedups) - 1)]
            out.append(Timing(Interval(1 / s, 0.98 / s, 1.02 / s), Interval(s, s * 0.98, s * 1.02), 30))
        return Interval(1.0, 0.99, 1.01), out

    return fake


def test_search_writes_the_fastest_passing_graph(lenet_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """lenet5's all-int8 graph measures 42.7 dB: a 44 dB budget makes the search measure layers and build more."""
    monkeypatch.setattr(search_module, "time_candidates", _fake_timing([1.8, 2.5, 1.2]))
    outcome = search_precision(lenet_dir, SearchConfig(budget=Budget("sqnr", 44.0)))
    s = outcome.search
    assert outcome.written and outcome.path == lenet_dir / "lenet5.auto.onnx" and outcome.path.is_file()
    record = art.open_artifact(lenet_dir).manifest.variants["auto"]
    assert record.precision_search == s and record.parity.passed
    assert s.budget == "output SQNR >= 44 dB" and s.candidates[0].label == "all layers int8"
    assert not s.candidates[0].passed and len(s.candidates) >= 3
    chosen = [c for c in s.candidates if c.chosen]
    fastest = max(c.speedup for c in s.candidates if c.passed and c.speedup is not None)
    assert len(chosen) == 1 and chosen[0].passed and chosen[0].speedup == fastest
    assert all(c.latency_low_ms <= c.latency_ms <= c.latency_high_ms for c in s.candidates)  # type: ignore[operator]
    assert len(s.layers) == 5 and all(c.cost_ms is not None and c.cost_ms > 0 for c in s.layers)
    assert all(c.recovered_db is not None and c.alone_int8_sqnr_db is not None for c in s.layers)
    assert s.float_layers == chosen[0].float_layers and s.float_reasons
    assert s.plot == "lenet5.auto.pareto.png" and (lenet_dir / s.plot).read_bytes()[:4] == b"\x89PNG"
    assert art.open_artifact(lenet_dir).stale_reason(AUTO) is None
    strict_load(lenet_dir / "manifest.json")


def test_search_that_does_not_pay_writes_nothing(lenet_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = (lenet_dir / "manifest.json").read_bytes()
    monkeypatch.setattr(search_module, "time_candidates", _fake_timing([0.7]))
    outcome = search_precision(lenet_dir, SearchConfig(budget=Budget("sqnr", 20.0)))
    assert [c.label for c in outcome.search.candidates] == ["all layers int8"], "it passed: nothing else is built"
    assert outcome.search.layers == [], "nor are the layers measured"
    assert not outcome.written and "does not pay" in outcome.message and "0.70x" in outcome.message
    assert (lenet_dir / "manifest.json").read_bytes() == before
    assert not (lenet_dir / "lenet5.auto.onnx").exists() and not list(lenet_dir.glob("*.png"))
    # printed as a paragraph wrapped to the width (it was one line of about 190 characters)
    import io

    from exporter.__main__ import print_search
    from exporter.console import Console

    monkeypatch.setenv("COLUMNS", "80")
    printed = io.StringIO()
    print_search(Console(printed), outcome)
    lines = printed.getvalue().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("int8 does not pay here"))
    assert " ".join(lines[start:]) == outcome.message and max(len(line) for line in lines[start:]) <= 80


def test_an_impossible_budget_is_one_line_and_writes_nothing(lenet_dir: Path) -> None:
    proc = run_cli("exporter", "lenet5", "--precision", "auto", "--max-loss-db", "90",
                   "--artifacts-dir", str(lenet_dir.parent))  # fmt: skip
    assert_one_line(proc, "no graph met the budget (output SQNR >= 90 dB)", code=3, after_progress=True)
    assert not (lenet_dir / "lenet5.auto.onnx").exists()


def test_search_flags_need_precision_auto(lenet_dir: Path) -> None:
    proc = run_cli("exporter", "lenet5", "--max-loss-db", "20", "--artifacts-dir", str(lenet_dir.parent))
    assert_one_line(proc, "--max-loss-db go(es) with --precision auto", code=2)
    proc = run_cli("exporter", "lenet5", "--precision", "auto", "--max-accuracy-drop", "1",
                   "--artifacts-dir", str(lenet_dir.parent))  # fmt: skip
    assert_one_line(proc, "--max-accuracy-drop needs labelled images", code=2, after_progress=True)


def test_cli_on_lenet5_says_whether_it_paid(lenet_dir: Path) -> None:
    """Measured for real: LeNet-5 is too small for int8 to pay on 2 threads (the issue's example); either way
    the exit status, the files and the line agree."""
    proc = run_cli("exporter", "lenet5", "--precision", "auto", "--max-loss-db", "20",
                   "--artifacts-dir", str(lenet_dir.parent))  # fmt: skip
    assert proc.returncode in (0, NOT_WORTH_IT), proc.stderr[-2000:]
    written = (lenet_dir / "lenet5.auto.onnx").exists()
    assert written == (proc.returncode == 0) and "all layers int8" in proc.stdout
    if not written:
        text = " ".join(proc.stdout.split())  # the line is a paragraph wrapped to the width
        assert "does not pay" in text and "nothing written" in text
        assert "auto" not in art.open_artifact(lenet_dir).manifest.variants


def test_digits_trained_default_budget_is_top1_within_0_3_points(
    trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "lenet5"
    shutil.copytree(trained, directory)
    monkeypatch.setattr(search_module, "time_candidates", _fake_timing([2.0]))
    outcome = search_precision(directory, SearchConfig())
    s = outcome.search
    assert s.metric == "accuracy" and s.threshold == 0.3
    chosen = next(c for c in s.candidates if c.chosen)
    assert chosen.accuracy_drop_pp is not None and chosen.accuracy_drop_pp <= 0.3 and chosen.top5_drop_pp is not None
    acc = outcome.record.parity.accuracy
    assert acc is not None and acc.n == 360 and acc.pytorch_fp32 - acc.onnx <= 0.003 + 1e-9


def test_eval_dir_judges_top1_on_the_users_labels(lenet_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A labelled set of the user's makes accuracy the budget's metric, even for random weights."""
    from exporter.data import digits

    held_out = digits((3, 32, 32))[1]
    monkeypatch.setattr(search_module, "time_candidates", _fake_timing([2.0]))
    config = SearchConfig(budget=Budget("accuracy", 5.0), eval_set=held_out, eval_name="my.npz")
    outcome = search_precision(lenet_dir, config)
    acc = outcome.record.parity.accuracy
    assert acc is not None and acc.dataset == "my.npz" and acc.n == len(held_out.y) and acc.passed
    assert all(c.accuracy_drop_pp is not None for c in outcome.search.candidates)


def test_wide_intervals_are_flagged_unstable() -> None:
    def cand(low: float, high: float) -> art.SearchCandidate:
        return art.SearchCandidate(label="c", float_layers=[], float_nodes=[], sqnr_db=30.0, cosine_min=0.999,
                                   passed=True, speedup=2.0, speedup_low=low, speedup_high=high)  # fmt: skip

    assert search_module._unstable(Interval(10.0, 9.9, 10.1), [cand(1.95, 2.05)]) == []
    notes = search_module._unstable(Interval(80.0, 63.0, 88.0), [cand(1.4, 3.9)])
    assert len(notes) == 1 and notes[0].startswith("unstable: fp32 80.000 ms (63.000-88.000) and 1 candidate(s)")


def test_a_float_layer_keeps_its_input_float(exported) -> None:  # type: ignore[no-untyped-def]
    """The pool and ReLU feeding a layer are kept float with it: the rounding of its input is what hurts."""
    import onnx

    from exporter.layers import LayerIndex
    from runtime.precision.layers import quantizable_layers

    a = art.open_artifact(exported("lenet5").directory)
    model = onnx.load(str(a.path()))
    layers = {layer.name: layer.nodes for layer in quantizable_layers(model, LayerIndex(a.manifest.layers, model))}
    assert layers["conv_layer.0"] == ("/conv_layer/conv_layer.0/Conv",)
    assert (
        layers["conv_layer.2"][0] == "/conv_layer/conv_layer.2/Conv"
        and "/conv_layer/conv_layer.1/MaxPool" in (layers["conv_layer.2"])
    )


def test_greedy_tries_the_predicted_set_then_fewer_then_more_while_passing() -> None:
    """Predicted 3 of 20 layers int8 for 30 dB; the graphs pass up to 7 int8: tried 3 (pass), 5, 7, then 11 fails."""
    costs = [
        art.LayerCost(layer=f"l{i}", nodes=[f"n{i}"], recovered_db=None, alone_int8_sqnr_db=35.0, cost_ms=1.0)
        for i in range(20)
    ]
    tried: list[int] = []

    class FakeWork:
        def try_graph(self, label: str, nodes: list[str], layers: list[str]):  # type: ignore[no-untyped-def]
            int8 = 20 - len(layers)
            tried.append(int8)
            return type("C", (), {"passed": int8 <= 7})()

    search_module._greedy(FakeWork(), int8_order(costs), 30.0, 0.0)  # type: ignore[arg-type]
    assert tried == [3, 5, 7, 11]


def test_the_auto_variant_is_never_built_as_a_plain_variant(lenet_dir: Path) -> None:
    """A stale auto graph rebuilt like int8 would be the fp32 graph under the auto name: refused instead."""
    from exporter.variants import build_variant

    with pytest.raises(UserError, match="chosen by the precision search"):
        build_variant(lenet_dir, AUTO)


def test_a_dynamic_size_auto_graph_that_lost_its_height_and_width_is_refused(lenet_dir: Path) -> None:
    """Defect (review): write_auto checked the symbolic batch only, so a dynamic-size artifact could be given an
    auto graph of one fixed size. lenet5's own graph (symbolic batch, fixed 32x32) stands for such a graph."""
    from types import SimpleNamespace

    from exporter.errors import ExportFailed
    from runtime.precision.store import write_auto

    artifact = art.open_artifact(lenet_dir)
    m = artifact.manifest
    dynamic = m.model_copy(update={"settings": m.settings.model_copy(update={"dynamic_size": True})})
    assert dynamic.dynamic_size
    fixed = artifact.path().read_bytes()
    work = SimpleNamespace(artifact=SimpleNamespace(manifest=dynamic, directory=lenet_dir, name=m.name), graphs=[fixed])
    before = (lenet_dir / "manifest.json").read_bytes()
    with pytest.raises(ExportFailed, match="the auto graph lost the symbolic height/width"):
        write_auto(work, None, 0)  # type: ignore[arg-type]
    assert (lenet_dir / "manifest.json").read_bytes() == before and not (lenet_dir / "lenet5.auto.onnx").exists()


def test_noise_first_starts_from_the_layers_alone_below_the_budget_and_says_how_fast_they_leave_it() -> None:
    """Layers whose alone-int8 SQNR misses the budget stay float in every passing graph: the noise-first
    candidates start from them (noisiest first) and add the next noisiest until one passes; the note gives
    the measured speed-up of the graph with only them float (the most a passing graph can be expected to
    reach; a profile-based estimate said 1.57x on vgg16_bn where that graph measured 2.08x)."""
    from runtime.precision.layers import below_budget

    alone = {"stem": 14.0, "mid": 19.0, "a": 24.0, "b": 30.0, "c": 40.0}
    costs = [art.LayerCost(layer=k, nodes=[k], recovered_db=None, alone_int8_sqnr_db=v, cost_ms=1.0)
             for k, v in alone.items()]  # fmt: skip
    assert [c.layer for c in below_budget(costs, 21.5)] == ["stem", "mid"]
    tried: list[list[str]] = []

    class FakeWork:
        candidates = [object()]  # all-int8 tried before

        def try_graph(self, label: str, nodes: list[str], layers: list[str]):  # type: ignore[no-untyped-def]
            tried.append(layers)
            return type("C", (), {"passed": len(layers) >= 4})()

    measured = search_module.Measured(costs, 20.0, 5.0, 0.0)
    found = search_module._noise_first(FakeWork(), measured, 21.5)  # type: ignore[arg-type]
    assert tried == [["stem", "mid"], ["stem", "mid", "a", "b"]]
    assert found is not None and found.base == 1
    timed = [
        art.SearchCandidate(label=str(i), float_layers=[], float_nodes=[], sqnr_db=None, cosine_min=None,
                            passed=False, speedup=s, speedup_low=s - 0.1, speedup_high=s + 0.1)
        for i, s in enumerate([3.0, 2.08])
    ]  # fmt: skip
    note = found.explain(timed)
    assert note.startswith("2 layer(s) alone int8 already miss the budget (stem 14.0 dB, mid 19.0 dB)")
    assert "with only them float the graph runs 2.08x fp32 (95% interval 1.98-2.18)" in note
    assert search_module._noise_first(FakeWork(), measured, 10.0) is None  # none below: no candidate, no note
    every = search_module._noise_first(FakeWork(), measured, 50.0)
    assert every is not None and every.base is None and "no int8 graph meets it" in every.note


def test_a_residual_blocks_add_is_a_unit_the_search_can_keep_float(exported) -> None:  # type: ignore[no-untyped-def]
    """Defect (resnet50, measured): its 16 residual Adds belonged to no layer, so they stayed int8 in every
    candidate and capped the output at 15.8 dB even with every Conv and Gemm float (93.6 dB with the Adds
    float too): "no graph met the budget" at 17.8 dB. A block's Add is now a unit of its own."""
    import onnx

    from exporter.layers import LayerIndex
    from runtime.precision.layers import quantizable_layers

    a = art.open_artifact(exported("resnet_cifar").directory)
    model = onnx.load(str(a.path()))
    layers = quantizable_layers(model, LayerIndex(a.manifest.layers, model))
    covered = {n for la in layers for n in la.nodes}
    adds = [n.name for n in model.graph.node if n.op_type == "Add"]
    assert adds and set(adds) <= covered
    block = next(la for la in layers if adds[0] in la.nodes)
    assert not any(n.op_type in ("Conv", "Gemm") for n in model.graph.node if n.name in block.nodes)


def test_a_float_unit_without_a_time_of_its_own_still_gets_its_measured_reason() -> None:
    """Defect (resnet50 run): a residual Add fused into its Conv has no profiled time, and its reason read only
    "part of '<label>'", dropping the dB it was measured to recover and lose."""
    costs = [
        art.LayerCost(layer="layer1.0", nodes=["add"], recovered_db=0.12, alone_int8_sqnr_db=16.8, cost_ms=None),
        art.LayerCost(layer="conv1", nodes=["c"], recovered_db=0.29, alone_int8_sqnr_db=15.6, cost_ms=0.309),
    ]
    chosen = art.SearchCandidate(label="x", float_layers=["layer1.0", "conv1"], float_nodes=[], sqnr_db=18.0,
                                 cosine_min=None, passed=True)  # fmt: skip
    reasons = search_module._reasons(chosen, costs, [chosen])
    assert reasons == [
        "layer1.0: alone float it recovers +0.12 dB, alone int8 16.8 dB, no time of its own in the profile (fused)",
        "conv1: alone float it recovers +0.29 dB, alone int8 15.6 dB, for 0.309 ms",
    ]
