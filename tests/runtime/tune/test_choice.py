"""Tune's pieces without timing anything: budget, space, finalists, ranking, the deployment's settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.artifact import Manifest
from exporter.errors import UserError
from runtime.tune.candidates import over_budget, pick_finalists, rank, stream_counts
from runtime.tune.config import LossBudget, TuneConfig, parse_loss
from runtime.tune.deploy import Candidate, Figures, read_deploy
from runtime.tune.plot import pareto_front
from tests.helpers import fifo


def _c(engine: str = "onnxruntime", precision: str = "fp32", streams: int = 1, batch: int = 1, ips: float = 100.0,
       p99: float | None = 10.0, p50: float = 5.0, confirmed: bool = False, status: str = "ok",
       sqnr: float | None = None) -> Candidate:  # fmt: skip
    f = Figures(throughput_ips=ips, p50_ms=p50, p99_ms=p99, max_ms=(p99 or p50) * 1.2, requests=200 if p99 else 40)
    return Candidate(
        engine=engine, precision=precision, streams=streams, threads_per_stream=2 // streams, concurrency=streams,
        batch_size=batch, status=status, screen=f if status == "ok" else None,  # type: ignore[arg-type]
        confirmed=f if confirmed else None, sqnr_db=sqnr,
    )  # fmt: skip


def test_the_loss_budget_reads_db_or_points_and_nothing_else() -> None:
    assert parse_loss("25db") == LossBudget(min_sqnr_db=25.0)
    assert parse_loss("0.5PP") == LossBudget(max_accuracy_drop_pp=0.5)
    assert parse_loss(None).describe() == "each precision's parity tolerance"
    for bad in ("25", "db", "-3db", "3 dB extra"):
        with pytest.raises(UserError, match="bad --max-loss"):
            parse_loss(bad)


def test_targets_need_what_they_judge_by() -> None:
    with pytest.raises(UserError, match="needs --p99-ms"):
        TuneConfig("resnet_cifar", target="latency").validate()
    with pytest.raises(UserError, match="goes with --target latency"):
        TuneConfig("resnet_cifar", target="throughput", p99_ms=10).validate()
    with pytest.raises(UserError, match="above 0"):
        TuneConfig("resnet_cifar", target="latency", p99_ms=-1).validate()
    assert TuneConfig("resnet_cifar", artifacts_dir=Path("a")).output == Path("a/tune/resnet_cifar")


def test_threads_split_into_equal_streams() -> None:
    assert stream_counts(1) == [1]
    assert stream_counts(2) == [1, 2]
    assert stream_counts(6) == [1, 2]
    assert stream_counts(16) == [1, 2, 4, 8, 16]


def test_the_budget_refuses_lossy_precisions_only() -> None:
    budget = LossBudget(min_sqnr_db=20.0)
    assert over_budget(_c(precision="int8", sqnr=15.0), budget).startswith("SQNR 15.0 dB")  # type: ignore[union-attr]
    assert over_budget(_c(precision="int8", sqnr=25.0), budget) is None
    assert over_budget(_c(precision="fp32", sqnr=5.0), budget) is None
    drop = over_budget(_c(precision="int8"), LossBudget(max_accuracy_drop_pp=1.0))
    assert drop is not None and "no labelled held-out set" in drop


def test_finalists_for_throughput_and_for_a_latency_target() -> None:
    cands = [
        _c(ips=500, p99=40, p50=30, batch=32), _c(ips=300, p99=12, p50=8, batch=8), _c(ips=100, p99=3, p50=2),
        _c(ips=900, status="failed"),
    ]  # fmt: skip
    fast = pick_finalists(cands, TuneConfig("m", finalists=2))
    assert [c.batch_size for c in fast] == [32, 8]
    tight = pick_finalists(cands, TuneConfig("m", target="latency", p99_ms=15, finalists=1))
    # the fastest that can meet 15 ms, and the lowest-latency one in case it does not
    assert [c.batch_size for c in tight] == [8, 1]


def test_ranking_puts_confirmed_candidates_meeting_the_target_first() -> None:
    cands = [
        _c(ips=900, p99=40, confirmed=True, batch=32),  # fastest, misses 15 ms
        _c(ips=300, p99=12, confirmed=True, batch=8),
        _c(ips=200, p99=None, confirmed=True, batch=4),  # no p99: not proven
        _c(ips=2000, p99=2, batch=2),  # only screened: never chosen over a confirmed one
        _c(status="parity-failed"),
    ]
    ranked = rank(cands, TuneConfig("m", target="latency", p99_ms=15))
    assert [c.batch_size for c in ranked] == [8, 32, 4, 2, 1]
    assert [c.meets_target for c in ranked] == [True, False, False, None, None]
    assert [c.rank for c in ranked] == [1, 2, 3, 4, 5]
    by_speed = rank(cands, TuneConfig("m"))
    assert by_speed[0].batch_size == 32 and by_speed[0].meets_target


def test_the_pareto_front_keeps_what_nothing_beats() -> None:
    assert pareto_front([(1, 100), (2, 90), (3, 300), (4, 200), (5, 400)]) == [(1, 100), (3, 300), (5, 400)]


def test_the_deployment_runs_as_measured() -> None:
    from runtime.tune.deployment import model_options, with_batching

    ort = model_options(_c(streams=2, batch=8), "cpu", threads=2)
    assert (ort.backend, ort.instances, ort.threads, ort.max_batch, ort.preferred) == ("onnxruntime", 2, 1, 8, [8])
    ov = model_options(_c(engine="openvino", precision="int8", streams=2, batch=1), "cpu", threads=2)
    assert (ov.backend, ov.instances, ov.threads, ov.openvino_streams, ov.openvino_hint) == ("openvino", 2, 2, 2,
                                                                                             "THROUGHPUT")  # fmt: skip
    assert ov.max_queue_delay_us == 0  # batch 1: nothing to wait for
    one = with_batching(model_options(_c(batch=4), "cpu", threads=2), 2, 8, (4, 8), 100)
    assert (one.instances, one.threads, one.max_batch, one.preferred) == (2, 1, 8, [4, 8])  # threads shared out
    ov.check()
    ort.check()


def test_a_deployment_record_that_is_not_one_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such deployment record"):
        read_deploy(tmp_path)
    (tmp_path / "deploy.json").write_text('{"format": "something else"}')
    with pytest.raises(UserError, match="not a deployment record tune wrote"):
        read_deploy(tmp_path)


def _with_variants(manifest: Manifest, keys: list[str]) -> Manifest:
    """``manifest`` recording a variant under each key (the fp32 graph's record copied: only the keys matter)."""
    from exporter.artifact import VariantKey, VariantRecord

    for key in keys:
        record = VariantRecord(
            key=key, file=VariantKey.parse(key).file_name(manifest.name), sha256=manifest.sha256,
            size_bytes=manifest.size_bytes, base_sha256=manifest.sha256, created=manifest.created,
            nodes=manifest.nodes, op_counts=manifest.op_counts, inputs=manifest.inputs, outputs=manifest.outputs,
            identity_nodes_removed=0, io_dtype="float32", parity=manifest.parity,
        )  # fmt: skip
        manifest = manifest.with_variant(record)
    return Manifest.model_validate(manifest.model_dump())  # the artifact contract accepts what was recorded


def test_every_variant_the_artifact_records_is_a_candidate_precision(exported) -> None:  # type: ignore[no-untyped-def]
    from runtime.tune.candidates import precisions_to_sweep

    m = _with_variants(exported("lenet5").manifest, ["int8", "int8.opt-cpu", "fp32.opt-cpu", "fp16", "fp16.opt-cuda"])
    cpu, skipped = precisions_to_sweep(TuneConfig("lenet5"), m, cuda=False)
    # bf16 is always offered (OpenVINO's hint; the bench names a CPU without bf16 arithmetic)
    assert cpu == ["fp32", "int8", "bf16", "int8.opt-cpu", "fp32.opt-cpu"]
    assert set(skipped) == {"fp16", "fp16.opt-cuda"} and "CUDA" in skipped["fp16"]
    gpu, skipped = precisions_to_sweep(TuneConfig("lenet5"), m, cuda=True)
    assert gpu == ["fp32", "int8", "bf16", "fp16", "fp16.opt-cuda"]
    assert set(skipped) == {"int8.opt-cpu", "fp32.opt-cpu"}
    # the space the user names is the space swept, in their order, once each
    assert precisions_to_sweep(TuneConfig("lenet5", precisions=("int8", "fp32", "int8")), m, cuda=False) == (
        ["int8", "fp32"], {},
    )  # fmt: skip
    # a variant of a kind this tune does not know by name (the `--precision auto` graph, a mixed-precision
    # one) is swept as recorded: the candidates follow the manifest's keys, not a list of names
    extra = m.model_copy(update={"variants": {**m.variants, "auto": m.variants["int8"]}})
    assert precisions_to_sweep(TuneConfig("lenet5"), extra, cuda=False)[0][-1] == "auto"


def test_the_explanation_says_when_a_figure_is_unstable() -> None:
    from runtime.tune.report import why

    steady, noisy = _c(ips=300, confirmed=True, batch=8), _c(ips=480, confirmed=True)
    shaky = noisy.confirmed.model_copy(  # type: ignore[union-attr]
        update={"unstable": True, "unstable_reasons": ["throughput 95% CI spans 25% of it"]}
    )
    noisy = noisy.model_copy(update={"confirmed": shaky})
    line = why(noisy, steady, None, "throughput")
    assert "480 img/s, p99 10 ms (unstable: throughput 95% CI spans 25% of it); next best" in line
    assert "(unstable" not in line.split("next best")[1]  # the steady runner-up is not flagged


def test_the_deployment_names_what_tritons_own_backend_would_run_otherwise() -> None:
    from runtime.tune.deploy import Machine
    from runtime.tune.deployment import caveats

    amx = Machine(device="cpu", threads=2, cpu_flags={"amx_bf16": True})
    plain = Machine(device="cpu", threads=2, cpu_flags={"avx2": True})
    assert "spins by default" in caveats(_c(), plain)[0]
    (note,) = caveats(_c(engine="openvino", precision="int8"), amx)
    assert "no f32 hint" in note and "may choose bf16" in note
    assert caveats(_c(engine="openvino", precision="int8"), plain) == []
    assert caveats(_c(engine="openvino", precision="bf16"), amx) == []  # measured in bf16: the backend's HINT_BF16


def test_a_deploy_record_that_is_a_fifo_is_refused_without_waiting(tmp_path: Path) -> None:
    """Defect: reading a deploy.json that is a FIFO waited for a writer forever."""
    with fifo(tmp_path / "deploy.json"), pytest.raises(UserError) as info:
        read_deploy(tmp_path)
    assert "is not a deployment record tune wrote: a FIFO (named pipe), not a regular file" in str(info.value)
