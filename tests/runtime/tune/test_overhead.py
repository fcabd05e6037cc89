"""The serving path's cost and the prediction that charges it, without serving anything."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from runtime.tune.deploy import Candidate, Figures, ServeSearch, ServingOverhead
from runtime.tune.overhead import (
    charge_serving_path,
    check_line,
    corrected_ips,
    describe,
    identity_graph,
    overhead_from,
    pipelined_ips,
)
from tests.helpers import ort_run, relu_graph


def test_the_trivial_model_returns_its_input_with_the_artifacts_input_and_opset() -> None:
    graph = identity_graph(relu_graph())
    model = onnx.load_model_from_string(graph)
    assert [n.op_type for n in model.graph.node] == ["Identity"]
    assert model.graph.input[0].name == "input" and model.ir_version == 8
    assert [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == ["batch", 3, 8, 8]
    assert model.opset_import[0].version == 17
    x = -np.arange(2 * 3 * 8 * 8, dtype=np.float32).reshape(2, 3, 8, 8)
    assert np.array_equal(ort_run(graph, x), x)  # the input unchanged: not the Relu


def test_the_overhead_is_the_mean_seconds_per_request_with_its_range() -> None:
    got = overhead_from([500.0, 400.0])
    assert got is not None
    assert got.seconds == pytest.approx((1 / 500 + 1 / 400) / 2)
    assert (got.low, got.high) == (pytest.approx(1 / 500), pytest.approx(1 / 400))
    assert got.unstable_reasons and "differ by 22%" in got.unstable_reasons[0]
    assert overhead_from([500.0, 490.0]).unstable_reasons == ()  # type: ignore[union-attr]
    assert overhead_from([500.0]).unstable_reasons == ("measured once",)  # type: ignore[union-attr]
    assert overhead_from([]) is None and overhead_from([0.0]) is None


def test_the_corrected_prediction_adds_the_serving_path_to_the_bench_per_request() -> None:
    # batch 1 at 500 img/s: 2 ms a request; 2 ms of serving path: 4 ms, 250 img/s
    assert corrected_ips(500.0, 1, 0.002) == pytest.approx(250.0)
    # batch 8 at 200 img/s: 40 ms a request, plus 10 ms: 8 images per 50 ms
    assert corrected_ips(200.0, 8, 0.010) == pytest.approx(160.0)
    assert corrected_ips(200.0, 8, 0.0) == pytest.approx(200.0)


def test_the_pipelined_prediction_is_the_slower_stage() -> None:
    # the serving path alone: 8 images per 20 ms, 400 img/s; the bench 518: the serving path sets the pace
    assert pipelined_ips(518.0, 8, 0.020) == pytest.approx(400.0)
    assert pipelined_ips(300.0, 8, 0.020) == pytest.approx(300.0)
    assert pipelined_ips(518.0, 8, 0.020) > corrected_ips(518.0, 8, 0.020)


def test_the_15pct_check_is_stated_plainly_and_flags_unstable_figures() -> None:
    met, line = check_line(230.0, 250.0, [])
    assert met and line.startswith("15% check met: served 230 img/s is 0.92x the 250 img/s")
    met, line = check_line(300.0, 250.0, ["serving path: measured once"])
    assert not met and line.startswith("15% check not met: served 300 img/s is 1.20x")
    assert line.endswith("(figures unstable: serving path: measured once)")
    assert check_line(287.5, 250.0, [])[0] and not check_line(288.0, 250.0, [])[0]


def _chosen(unstable: bool = False) -> Candidate:
    f = Figures(throughput_ips=500.0, requests=200, unstable=unstable, unstable_reasons=["wide CI"] if unstable else [])
    return Candidate(engine="openvino", precision="int8", streams=2, threads_per_stream=1, concurrency=2,
                     batch_size=1, status="ok", confirmed=f)  # fmt: skip


def test_deploy_json_records_the_bench_prediction_the_overhead_the_corrected_prediction_and_the_check() -> None:
    out = ServeSearch(predicted_ips=500.0, served_ips=240.0, bench_before_ips=480.0, bench_after_ips=300.0)
    out.serving_overhead = ServingOverhead(protocol="grpc", concurrency=8, request_batch=1, instances=4,
                                           max_batch_size=2, requests_per_s=[500.0, 500.0])  # fmt: skip
    charge_serving_path(out, _chosen(unstable=True))
    path = out.serving_overhead
    assert path.seconds_per_request == pytest.approx(0.002) and not path.unstable
    assert out.corrected_predicted_ips == pytest.approx(250.0)
    assert out.corrected_predicted_low_ips == out.corrected_predicted_high_ips == pytest.approx(250.0)
    assert out.served_over_corrected == pytest.approx(0.96) and out.within_15pct is True
    assert out.check is not None and out.check.startswith("15% check met")
    # as a pipeline: the slower of 500 img/s (bench) and 500 img/s (the serving path alone)
    assert out.pipelined_predicted_ips == pytest.approx(500.0) and out.served_over_pipelined == pytest.approx(0.48)
    assert out.within_15pct_pipelined is False
    assert "\n15% check not met: served 240 img/s is 0.48x the 500 img/s predicted as a pipeline" in out.check
    assert "bench: wide CI" in out.check and "480 img/s before the final check and 300 after" in out.check
    line = describe(out)
    assert line is not None and "500, 500 requests/s, 2.00 ms per request" in line
    assert "bench-only prediction 500 img/s, with the serving path charged 250 img/s" in line
    assert "as a pipeline 500 img/s (the serving path alone: 500 img/s); served 240 img/s, 0.96x and 0.48x" in line
    # the record survives deploy.json's strict reading
    dumped = ServeSearch.model_validate(out.model_dump(mode="json"))
    assert dumped.serving_overhead == path and dumped.within_15pct is True


def test_no_check_without_a_measured_serving_path() -> None:
    out = ServeSearch(predicted_ips=500.0, served_ips=240.0)
    out.serving_overhead = ServingOverhead(protocol="grpc", concurrency=8, request_batch=1, instances=4,
                                           max_batch_size=1, note="the serving path was not measured: x")  # fmt: skip
    charge_serving_path(out, _chosen())
    assert out.corrected_predicted_ips is None and out.within_15pct is None and out.check is None
    assert describe(out) == "the serving path was not measured: x"


def test_the_trivial_model_is_built_and_checked_once_per_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    """Defect (review): every probe of the serving path parsed the winner's graph and checked its Identity again."""
    from runtime.tune import overhead

    monkeypatch.setattr(overhead, "_IDENTITY", {}, raising=False)
    checked: list[int] = []
    real = onnx.checker.check_model
    monkeypatch.setattr(onnx.checker, "check_model", lambda m, *a, **k: (checked.append(1), real(m, *a, **k))[1])
    graph = relu_graph()
    first = identity_graph(graph)
    assert identity_graph(bytes(graph)) == first and len(checked) == 1  # equal bytes: the same graph
    other = onnx.load_model_from_string(graph)
    other.graph.name = "other"
    identity_graph(other.SerializeToString())
    assert len(checked) == 2


def test_the_serving_path_probe_writes_only_a_scratch_folder_inside_the_tune_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect (review): the probe's graph went to a plain mkdtemp folder (not hidden, not ``.partial``: a killed
    tune left it where no clean-up looks). Triton is faked: the probe's files are what is checked."""
    import tempfile
    from types import SimpleNamespace

    from exporter import artifact as art
    from exporter.errors import UserError
    from exporter.files import PARTIAL_SUFFIX
    from runtime.resolve import Resolved
    from runtime.serve import ModelOptions
    from runtime.tune import triton
    from runtime.tune.config import TuneConfig

    system_tmp, out = tmp_path / "system-tmp", tmp_path / "out"
    system_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    seen: list[Path] = []

    def fake_load_test(config, resolved, options, batch, levels, served=None):  # type: ignore[no-untyped-def]
        seen.append(served.path)
        # the server's workspace (pytriton's Unix sockets) stays in the system's temporary folder, as for any load test
        assert tempfile.gettempdir() == str(system_tmp)
        assert served.path.read_bytes() == resolved.graph == identity_graph(relu_graph())
        raise UserError("no Triton here")

    monkeypatch.setattr(triton, "load_test", fake_load_test)
    artifact = SimpleNamespace(name="relu", manifest=SimpleNamespace(input_shape=[3, 8, 8], min_size=None))
    resolved = Resolved(artifact=artifact, key=art.VariantKey("fp32"), graph=relu_graph())  # type: ignore[arg-type]
    record = ServingOverhead(protocol="grpc", concurrency=1, request_batch=1, instances=1, max_batch_size=1)
    triton.serving_path(TuneConfig(artifact="relu", output_dir=out), resolved, ModelOptions(), 1, 1, record)
    assert record.note == "the serving path was not measured: no Triton here"
    folder = seen[0].parent
    assert folder.parent == out and folder.name.startswith(".serving-path.") and folder.name.endswith(PARTIAL_SUFFIX)
    assert list(out.iterdir()) == [] and list(system_tmp.iterdir()) == []


def test_the_shared_cores_prediction_charges_the_serving_paths_cpu_time() -> None:
    """resnet18 int8 on OpenVINO at batch 32 (2026-12-03, AMD EPYC, 2 cores): the bench of the served setting
    220 img/s, the Identity graph 320 img/s alone; served 160 img/s fell between costs added (132) and the
    pipeline (220). With the serving path keeping 1 core busy the cores bound it at 1 / (1/220 + 1/(2*320))."""
    from runtime.tune.overhead import shared_cores_ips

    assert shared_cores_ips(220.0, 320.0, 1.0, 2) == pytest.approx(1 / (1 / 220 + 1 / 640))
    assert shared_cores_ips(220.0, 100.0, 0.01, 2) == pytest.approx(100.0)  # never above the pipeline
    out = ServeSearch(predicted_ips=220.0, served_ips=160.0)
    out.serving_overhead = ServingOverhead(protocol="grpc", concurrency=2, request_batch=32, instances=2,
                                           max_batch_size=64, requests_per_s=[10.0, 10.0], busy_cores=[0.9, 1.1],
                                           cores=2)  # fmt: skip
    charge_serving_path(out, _chosen())
    assert out.shared_predicted_ips == pytest.approx(1 / (1 / 220 + 1 / 640))
    assert out.within_15pct_shared is True and out.served_over_shared == pytest.approx(160 / out.shared_predicted_ips)
    assert out.check is not None and out.check.splitlines()[2].startswith(
        "15% check met: served 160 img/s is 0.98x the 164 img/s predicted with the serving path's CPU time sharing "
        "the 2 cores (it kept 1.00 busy for its 320 img/s)"
    )
    no_cpu = ServeSearch(predicted_ips=220.0, served_ips=160.0)
    no_cpu.serving_overhead = out.serving_overhead.model_copy(update={"busy_cores": [], "cores": None})
    charge_serving_path(no_cpu, _chosen())
    assert no_cpu.shared_predicted_ips is None and no_cpu.check is not None and len(no_cpu.check.splitlines()) == 2


def test_busy_cores_are_the_busy_share_of_the_cpu_time_between_two_readings() -> None:
    from runtime.loadtest.run import busy_cores, cpu_jiffies

    assert busy_cores((100, 1000, 2), (400, 1600, 2)) == pytest.approx(1.0)  # 300 of 600 jiffies on 2 CPUs
    assert busy_cores(None, (1, 2, 2)) is None and busy_cores((5, 10, 2), (5, 10, 2)) is None
    reading = cpu_jiffies()
    assert reading is not None and reading[1] >= reading[0] >= 0 and reading[2] >= 1  # Linux: /proc/stat
