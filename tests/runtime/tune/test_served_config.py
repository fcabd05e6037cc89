"""The 15% check's prediction is the bench of the configuration actually served, without serving anything.

Defect (issue: the served throughput within 15% of what tune predicted): the check compared the served figure with
the bench of the chosen candidate (2 streams, 2 in flight, batch 8) while the server ran the search's winner (4
instances, up to 16 images formed per execution), which the bench never measured.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from onnx import TensorProto, helper

from runtime.tune.deploy import BenchSetting, Candidate, Figures, ServedConfig, ServeSearch
from runtime.tune.deployment import model_options, served_batch, served_setting, with_batching
from tests.helpers import relu_graph


def _chosen(engine: str = "onnxruntime", batch: int = 8) -> Candidate:
    f = Figures(throughput_ips=500.0, requests=200)
    return Candidate(engine=engine, precision="int8", streams=2, threads_per_stream=1, concurrency=2,
                     batch_size=batch, status="ok", confirmed=f)  # fmt: skip


def _won(instances: int = 4, clients: int = 8, formed: float | None = 13.7, ips: float = 347.0) -> ServedConfig:
    return ServedConfig(instances=instances, max_batch_size=16, preferred_batch_sizes=[8, 16], max_queue_delay_us=500,
                        status="ok", concurrency=clients, request_batch=8, throughput_ips=ips,
                        mean_formed_batch=formed)  # fmt: skip


def test_the_served_setting_is_the_winning_onnxruntime_instances_at_the_batch_the_server_formed() -> None:
    chosen = _chosen()
    # the search's winner: 4 instances (the 2 threads shared out: 1 each, at least), max batch 16
    options = with_batching(model_options(chosen, "cpu", 2), 4, 16, (8, 16), 500)
    got = served_setting(chosen, options, _won(), threads=2)
    assert (got.streams, got.threads_per_stream, got.threads, got.in_flight, got.batch) == (4, 1, 4, 4, 14)
    assert got.formed_batch == 13.7 and got.engine == "onnxruntime" and got.precision == "int8"
    assert got.label == "4 streams x 1 thread, 4 in flight, batch 14"
    # 4 clients of 8 images: at most 32 images in the server, two executions of 14 at once
    assert served_setting(chosen, options, _won(clients=4), threads=2).in_flight == 2
    # no formed batch recorded (no metrics): the request batch, one request per instance
    plain = served_setting(chosen, options, _won(clients=4, formed=None), threads=2)
    assert (plain.batch, plain.in_flight, plain.formed_batch) == (8, 4, None)


def test_the_formed_batch_rounds_to_the_nearest_size_the_served_graph_takes() -> None:
    assert served_batch(13.7, 8, 16, None) == 14
    assert served_batch(12.5, 8, 16, None) == 13  # half up, not Python's round-half-even (12)
    assert served_batch(40.0, 8, 16, None) == 16  # Triton forms none larger than the max batch
    assert served_batch(3.2, 4, 0, None) == 3 and served_batch(9.0, 4, 0, None) == 4  # no batching: the request's
    assert served_batch(None, 8, 16, None) == 8 and served_batch(0.0, 8, 16, None) == 8
    assert served_batch(13.7, 8, 16, 8) == 8  # a graph with a fixed batch takes that one only


def test_the_served_setting_of_openvino_keeps_its_num_streams_and_threads_with_an_infer_request_per_instance() -> None:
    chosen = _chosen("openvino")
    options = with_batching(model_options(chosen, "cpu", 2), 4, 16, (8, 16), 500)
    assert (options.openvino_streams, options.threads, options.instances) == (2, 2, 4)
    got = served_setting(chosen, options, _won(clients=4, formed=8.0), threads=2)
    # NUM_STREAMS 2 on INFERENCE_NUM_THREADS 2, 4 instances: 4 requests in flight on the 2 streams
    assert (got.streams, got.threads_per_stream, got.threads, got.in_flight, got.batch) == (2, 1, 2, 4, 8)
    assert got.label == "2 streams x 1 thread, 4 in flight, batch 8"
    assert served_setting(chosen, options, _won(formed=15.6), threads=2).batch == 16


def test_the_graphs_batch_dimension_is_fixed_only_where_it_is_a_number() -> None:
    from runtime.tune.triton import _graph_batch

    assert _graph_batch(relu_graph()) is None
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, 8, 8])
    g = helper.make_graph([helper.make_node("Relu", ["input"], ["logits"])], "g", [x], [y])
    assert _graph_batch(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()) == 1


def _result(ips: float | None = None, rps: float | None = None) -> SimpleNamespace:
    row = SimpleNamespace(throughput_ips=ips, throughput_rps=rps, p99_ms=50.0, median_ms=10.0, cpu_busy_cores=None)
    return SimpleNamespace(parity=SimpleNamespace(passed=True), triton_rows=lambda: [row])


def _final_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, served_final: float,
                 benched: dict[str, list[float | None]], chosen: Candidate | None = None,
                 won: ServedConfig | None = None) -> tuple[ServeSearch, list[list[BenchSetting]]]:  # fmt: skip
    """The final check and its summary with Triton and the bench faked: the winner serves ``served_final`` img/s,
    the Identity graph 1000 requests/s (its ceiling far above: the pipelined prediction is the bench's), and each
    bench gives ``benched["chosen"]`` / ``benched["served"]`` in turn (None: that setting failed)."""
    from exporter import artifact as art
    from runtime.resolve import Resolved
    from runtime.tune import triton
    from runtime.tune.config import TuneConfig

    def fake_load_test(config, resolved, options, batch, levels, served=None):  # type: ignore[no-untyped-def]
        return (_result(rps=1000.0) if served is not None else _result(ips=served_final)), None

    asked: list[list[BenchSetting]] = []

    def fake_bench(config, resolved, chosen, settings):  # type: ignore[no-untyped-def]
        asked.append(list(settings))
        n = len(asked) - 1
        figures = [benched["chosen"][n]] + ([benched["served"][n]] if len(settings) > 1 else [])
        return [triton.Benched(f, None if f else "RuntimeError: no") for f in figures]

    monkeypatch.setattr(triton, "load_test", fake_load_test)
    monkeypatch.setattr(triton, "bench_settings", fake_bench)
    chosen = chosen or _chosen()
    won = won or _won()
    options = with_batching(model_options(chosen, "cpu", 2), won.instances, 16, (8, 16), 500)
    artifact = SimpleNamespace(name="relu", manifest=SimpleNamespace(input_shape=[3, 8, 8], min_size=None))
    resolved = Resolved(artifact=artifact, key=art.VariantKey("int8"), graph=relu_graph())  # type: ignore[arg-type]
    out = ServeSearch()
    triton.final_check(TuneConfig(artifact="relu", output_dir=tmp_path), resolved, chosen, options, won, out)
    triton.summarize(out, chosen, model_options(chosen, "cpu", 2), won)
    return out, asked


def test_the_15pct_check_compares_the_final_checks_served_figure_with_the_served_configurations_bench(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the chosen candidate benches 500 img/s, the served configuration 200 and 220: served 189 is 0.9x of 210
    out, asked = _final_check(tmp_path, monkeypatch, 189.0, {"chosen": [500.0, 480.0], "served": [200.0, 220.0]})
    assert len(asked) == 2 and [s.label for s in asked[0]] == [
        "2 streams x 1 thread, 2 in flight, batch 8", "4 streams x 1 thread, 4 in flight, batch 14"
    ]  # fmt: skip
    assert (out.bench_before_ips, out.bench_after_ips) == (500.0, 480.0)  # the like-for-like figures stay
    assert out.served_config_setting == asked[0][1]
    assert (out.served_config_bench_before_ips, out.served_config_bench_after_ips) == (200.0, 220.0)
    assert out.served_config_bench_ips == pytest.approx(210.0) and out.served_final_ips == 189.0
    assert out.served_final_over_served_config_bench == pytest.approx(0.9)
    assert out.check_basis == "served configuration" and out.check_bench_ips == pytest.approx(210.0)
    assert out.check_served_ips == 189.0 and out.served_ips == 347.0  # the search's figure stays the headline
    assert out.pipelined_predicted_ips == pytest.approx(210.0) and out.served_over_pipelined == pytest.approx(0.9)
    assert out.within_15pct_pipelined is True and out.check is not None
    benched = ("the bench of the served configuration, 4 streams x 1 thread, 4 in flight, batch 14: 200 img/s "
               "before, 220 after")  # fmt: skip
    added, pipelined = out.check.split("\n")
    assert added.startswith("15% check ") and f"predicted with the serving path's cost added to {benched}" in added
    assert pipelined == (
        "15% check met: served in the final check 189 img/s is 0.90x the 210 img/s predicted as a pipeline "
        f"(the slower of the serving path and {benched})"
    )
    assert out.note is not None and pipelined in out.note
    assert ("the bench of the served configuration (4 streams x 1 thread, 4 in flight, batch 14): 200 img/s before "
            "and 220 after, Triton 189 between: 0.90x") in out.note  # fmt: skip
    # deploy.json's strict reading keeps the new fields
    again = ServeSearch.model_validate(out.model_dump(mode="json"))
    assert again.served_config_setting == out.served_config_setting and again.check_basis == "served configuration"


def test_a_served_figure_well_above_the_served_configurations_bench_does_not_meet_the_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 273 img/s served, 1.3x the served configuration's 210 (and 0.56x the chosen candidate's 490)
    out, _ = _final_check(tmp_path, monkeypatch, 273.0, {"chosen": [500.0, 480.0], "served": [200.0, 220.0]})
    assert out.served_over_pipelined == pytest.approx(1.3) and out.within_15pct_pipelined is False
    assert out.check is not None and out.check.split("\n")[1].startswith(
        "15% check not met: served in the final check 273 img/s is 1.30x the 210 img/s predicted as a pipeline"
    )


def test_the_served_configurations_bench_moving_between_before_and_after_flags_the_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, _ = _final_check(tmp_path, monkeypatch, 189.0, {"chosen": [500.0, 480.0], "served": [150.0, 270.0]})
    assert out.check is not None
    assert "the bench of the served configuration gave 150 img/s before the final check and 270 after" in out.check


def test_without_the_served_configurations_bench_the_check_falls_back_to_the_chosen_candidate_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, _ = _final_check(tmp_path, monkeypatch, 189.0, {"chosen": [500.0, 480.0], "served": [None, 220.0]})
    assert out.served_config_bench_ips is None and out.served_config_note is not None
    assert out.served_config_note.startswith("the served configuration was not benched: RuntimeError")
    assert out.check_basis == "chosen candidate" and out.check_bench_ips == 500.0 and out.check_served_ips == 347.0
    assert (
        out.check is not None
        and (
            "the 500 img/s predicted as a pipeline (the slower of the serving path and the bench of the chosen "
            "candidate, 2 streams x 1 thread, 2 in flight, batch 8: 500 img/s)"
        )
        in out.check
    )
    assert out.note is not None and out.served_config_note in out.note


def test_a_served_configuration_the_bench_already_times_is_benched_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the winner is the starting configuration: 2 instances, 2 clients, no batch merged beyond the request's
    won = _won(instances=2, clients=2, formed=8.0)
    out, asked = _final_check(tmp_path, monkeypatch, 189.0, {"chosen": [200.0, 220.0], "served": []}, won=won)
    assert [len(a) for a in asked] == [1, 1]
    assert out.served_config_setting is not None and out.served_config_setting.label == asked[0][0].label
    assert out.served_config_bench_ips == pytest.approx(210.0) and out.check_basis == "served configuration"


def test_an_older_deploy_json_served_record_still_reads() -> None:
    old = {"configs": [], "predicted_ips": 265.0, "served_ips": 347.0, "bench_before_ips": 169.0,
           "bench_after_ips": 189.0, "served_final_ips": 203.0, "within_15pct": False,
           "check": "15% check not met"}  # fmt: skip
    got = ServeSearch.model_validate(old)
    assert got.served_config_setting is None and got.served_config_bench_ips is None and got.check_basis is None


def test_the_bench_times_each_setting_with_its_streams_threads_requests_in_flight_and_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The engines faked: what the bench is asked to prepare and time for the chosen and the served setting."""
    from exporter import artifact as art
    from runtime.bench import throughput
    from runtime.resolve import Resolved
    from runtime.tune import triton
    from runtime.tune.config import TuneConfig

    prepared: list[tuple[str, str, int, int, int, int]] = []

    def fake_prepare(engine, ctx, precision, x, setting):  # type: ignore[no-untyped-def]
        if x.shape[0] == 16:
            raise RuntimeError("reshape failed")
        prepared.append((engine, precision, ctx.threads, setting.streams, setting.concurrency, x.shape[0]))
        return SimpleNamespace(batch=int(x.shape[0]))

    def fake_measure(workers, policy):  # type: ignore[no-untyped-def]
        return [SimpleNamespace(windows=[1 / 400.0, 1 / (100.0 * w.batch), 1 / 500.0], error=None) for w in workers]

    monkeypatch.setattr(throughput, "prepare_streams", fake_prepare)
    monkeypatch.setattr(throughput, "measure_throughput_interleaved", fake_measure)
    artifact = SimpleNamespace(name="relu", manifest=SimpleNamespace(input_shape=[3, 8, 8]),
                               path=lambda key: Path("relu.onnx"))  # fmt: skip
    resolved = Resolved(artifact=artifact, key=art.VariantKey("int8"), graph=relu_graph())  # type: ignore[arg-type]
    chosen = _chosen()
    options = with_batching(model_options(chosen, "cpu", 2), 4, 16, (8, 16), 500)
    served = served_setting(chosen, options, _won(), threads=2)
    failing = served.model_copy(update={"batch": 16})
    config = TuneConfig(artifact="relu")
    got = triton.bench_settings(config, resolved, chosen, [triton.candidate_setting(chosen, 2), served, failing])
    assert prepared == [("onnxruntime", "int8", 2, 2, 2, 8), ("onnxruntime", "int8", 4, 4, 4, 14)]
    assert [g.ips for g in got[:2]] == [pytest.approx(500.0), pytest.approx(500.0)]  # the median window
    assert got[2].ips is None and got[2].error == "RuntimeError: reshape failed"


def test_a_failed_final_check_is_still_said_after_the_search_figures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect (review): summarize wrote the 'served through Triton' note over final_check's 'final check
    failed: ...', so a check that never ran read like one that had."""
    from exporter.errors import UserError
    from runtime.tune import triton

    def broken(*_a, **_k):  # type: ignore[no-untyped-def]
        raise UserError("the server went away")

    monkeypatch.setattr(triton, "serving_path", broken)
    out, _ = _final_check(tmp_path, monkeypatch, 189.0, {"chosen": [500.0, 480.0], "served": [200.0, 220.0]})
    assert out.note is not None and "served through Triton" in out.note
    assert out.note.endswith("final check failed: the server went away")
