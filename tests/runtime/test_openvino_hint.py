"""A variant's recorded OpenVINO precision hint (``VariantRecord.openvino_hint``: an ``auto`` graph the precision
search verified with its float layers in bf16) is the hint every OpenVINO compile of it uses: the bench (latency
and throughput), the profile, the parity check in OpenVINO and the Triton repository runtime.tune writes. They all
compiled it with its precision's default (f32), which is not the graph that was verified."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from exporter import artifact as art
from exporter.files import atomic_outputs
from runtime.openvino_model import compile_config, hint_for, precision_hint
from runtime.sessions import SessionConfig


def _with_auto(directory: Path, hint: str | None = "bf16") -> art.Artifact:
    """The artifact in ``directory`` with an ``auto`` variant (a copy of its fp32 graph: OpenVINO compiles it all
    the same) whose record names ``hint``, written to disk as the exporter would."""
    a = art.open_artifact(directory)
    m = a.manifest
    key = art.VariantKey("auto")
    record = art.VariantRecord(
        key="auto", file=key.file_name(m.name), sha256=m.sha256, size_bytes=m.size_bytes, base_sha256=m.sha256,
        created=m.created, nodes=m.nodes, op_counts=m.op_counts, inputs=m.inputs, outputs=m.outputs,
        identity_nodes_removed=0, io_dtype="float32", parity=m.parity, openvino_hint=hint,
    )  # fmt: skip
    manifest = art.Manifest.model_validate(m.with_variant(record).model_dump())  # the contract accepts it
    shutil.copyfile(a.path(), a.path(key))
    with atomic_outputs(directory) as writer:
        art.write_manifest(writer, directory, manifest)
    return art.open_artifact(directory)


def _needs_bf16() -> None:
    pytest.importorskip("openvino")
    from runtime.bench.engines import openvino_bf16_missing

    why = openvino_bf16_missing()  # OpenVINO ignores the bf16 hint on a CPU without bf16 (it compiles f32)
    if why:
        # not a skip (CI refuses those): what such a CPU does instead is the refusal tested with the read-back
        # hint faked (test_a_hint_the_compiled_model_does_not_take_is_refused)
        pytest.xfail(f"needs bf16 arithmetic: {why}")


def test_compile_config_takes_a_hint_over_the_precisions_default() -> None:
    assert compile_config("int8", 2)["INFERENCE_PRECISION_HINT"] == "f32"
    assert compile_config("auto", 2)["INFERENCE_PRECISION_HINT"] == "f32"
    assert compile_config("auto", 2, hint="bf16")["INFERENCE_PRECISION_HINT"] == "bf16"
    assert compile_config("bf16", 2, hint=None)["INFERENCE_PRECISION_HINT"] == "bf16"
    assert compile_config("bf16", 2, hint="f32")["INFERENCE_PRECISION_HINT"] == "f32"
    assert precision_hint("fp32") == "f32" and precision_hint("int8", "bf16") == "bf16"


def test_hint_for_names_the_variants_recorded_hint_and_none_otherwise(lenet_dir: Path) -> None:
    a = _with_auto(lenet_dir)
    assert hint_for(a, "auto") == "bf16" and hint_for(a.manifest, "auto") == "bf16"
    for key in ("fp32", "bf16", "int8", "fp16.opt-cuda"):  # the exported graph, OpenVINO's bf16, no such variant
        assert hint_for(a, key) is None
    plain = _with_auto(lenet_dir, hint=None)
    assert hint_for(plain, "auto") is None


def _context(a: art.Artifact):  # type: ignore[no-untyped-def]
    from runtime.bench.engines import ModelContext

    graphs = {"fp32": a.path().read_bytes(), "auto": a.path(art.VariantKey("auto")).read_bytes()}
    return ModelContext(
        name=a.name, artifact=a, graphs=graphs, graph_paths={k: k for k in graphs}, reference=None, device="cpu",
        session=SessionConfig(device="cpu", threads=1), threads=1,
    )  # fmt: skip


def test_the_bench_compiles_a_variant_with_its_recorded_hint(lenet_dir: Path) -> None:
    _needs_bf16()
    from runtime.bench.engines import prepare
    from runtime.bench.throughput import Setting, prepare_streams

    a = _with_auto(lenet_dir)
    ctx = _context(a)
    x = np.zeros([1, *a.manifest.input_shape], dtype=np.float32)
    for precision, want in (("auto", "bf16"), ("fp32", "f32")):
        runner = prepare("openvino", ctx, precision, x)
        try:  # read back from the compiled model: what the row records
            assert runner.settings["inference_precision_hint"] in (want, f"<Type: '{_ov_type(want)}'>"), precision
        finally:
            runner.close()
        workers = prepare_streams("openvino", ctx, precision, x, Setting(1, 2))
        try:
            assert workers.settings["inference_precision_hint"] in (want, f"<Type: '{_ov_type(want)}'>"), precision
        finally:
            workers.close()
    # a search's candidate, not yet a variant, is given its hint through the context
    ctx.openvino_hints["auto"] = "f32"
    runner = prepare("openvino", ctx, "auto", x)
    try:
        assert runner.settings["inference_precision_hint"] in ("f32", "<Type: 'float32'>")
    finally:
        runner.close()


def _ov_type(hint: str) -> str:
    return {"f32": "float32", "bf16": "bfloat16"}[hint]


def test_a_hint_the_compiled_model_does_not_take_is_refused(lenet_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A CPU that ignores the bf16 hint must not have its f32 timing recorded as the bf16-verified graph's."""
    pytest.importorskip("openvino")
    from exporter.errors import UserError
    from runtime import openvino_model
    from runtime.bench import engines

    a = _with_auto(lenet_dir)
    monkeypatch.setattr(openvino_model, "inference_precision", lambda _compiled: "f32")
    x = np.zeros([1, *a.manifest.input_shape], dtype=np.float32)
    with pytest.raises(UserError, match="asked for the bf16 hint for the auto graph, compiled with f32"):
        engines.prepare("openvino", _context(a), "auto", x)


def test_parity_in_openvino_runs_a_variant_with_its_recorded_hint(lenet_dir: Path) -> None:
    _needs_bf16()
    from exporter.reference import rebuild
    from runtime.compare import default_tolerance
    from runtime.parity import check_artifact

    a = _with_auto(lenet_dir)
    key = art.VariantKey("auto")
    record = check_artifact(
        a, key, rebuild(a.manifest), a.path(key).read_bytes(), batch_sizes=[1], engine="openvino",
        session=SessionConfig(device="cpu", threads=1), tolerance=default_tolerance("cpu", "int8"), inputs="random",
    )  # fmt: skip
    assert record.engine == "openvino" and record.inference_precision == "bf16"


def test_parity_in_openvino_refuses_a_hint_the_cpu_ignores_in_one_line(
    lenet_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect: a bf16-verified auto graph checked in OpenVINO on a CPU that compiles the bf16 hint as f32 ended
    in a RuntimeError's traceback (the bench refused it in one line): one rule, one UserError, for both."""
    pytest.importorskip("openvino")
    from exporter.errors import UserError
    from exporter.reference import rebuild
    from runtime import openvino_model
    from runtime.parity import check_artifact

    a = _with_auto(lenet_dir)
    key = art.VariantKey("auto")
    monkeypatch.setattr(openvino_model, "inference_precision", lambda _compiled: "f32")  # such a CPU, faked
    with pytest.raises(UserError, match="asked for the bf16 hint for the auto graph, compiled with f32"):
        check_artifact(a, key, rebuild(a.manifest), a.path(key).read_bytes(), batch_sizes=[1], engine="openvino",
                       session=SessionConfig(device="cpu", threads=1), inputs="random")  # fmt: skip


def test_the_profile_collects_a_variant_with_its_recorded_hint(lenet_dir: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("openvino")
    from exporter.errors import UserError
    from runtime.profile import runner
    from runtime.profile.collectors import OpenvinoCollector

    _with_auto(lenet_dir)
    made: list[OpenvinoCollector] = []

    class Stop(Exception):
        pass

    def collector(*args: object) -> OpenvinoCollector:
        made.append(OpenvinoCollector(*args))  # type: ignore[arg-type]
        raise Stop

    monkeypatch.setattr(runner, "OpenvinoCollector", collector)
    monkeypatch.setattr("runtime.bench.engines.openvino_bf16_missing", lambda: None)
    config = runner.ProfileConfig(
        artifact=str(lenet_dir), engine="openvino", precision="auto", artifacts_dir=lenet_dir.parent, runs=1,
        peaks=False, sqnr=False,
    )  # fmt: skip
    with pytest.raises(Stop):
        runner.profile_artifact(config)
    assert [(c.precision, c.hint) for c in made] == [("auto", "bf16")]
    # a CPU without bf16 cannot run what was verified: one line, nothing profiled in f32 instead
    monkeypatch.setattr("runtime.bench.engines.openvino_bf16_missing", lambda: "this CPU has no bf16 arithmetic (x)")
    with pytest.raises(UserError, match="verified with OpenVINO's bf16 hint, and this CPU has no bf16 arithmetic"):
        runner.profile_artifact(config)
    assert len(made) == 1


def test_the_profile_compiles_with_the_hint_it_is_given(lenet_dir: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("openvino")
    import openvino as ov

    from runtime.profile.collectors import OpenvinoCollector

    seen: list[object] = []

    class Core(ov.Core):
        def compile_model(self, model, device, config):  # type: ignore[no-untyped-def,override]
            seen.append(config["INFERENCE_PRECISION_HINT"])
            return super().compile_model(model, device, config)

    monkeypatch.setattr(ov, "Core", Core)
    a = art.open_artifact(lenet_dir)
    x = np.zeros([1, *a.manifest.input_shape], dtype=np.float32)
    OpenvinoCollector(1, "auto", "bf16")(a.path().read_bytes(), x, 1, 2)
    assert seen == ["bf16", "bf16"]  # the profiled model and its unprofiled twin


def test_tunes_triton_repository_asks_openvino_for_bf16_for_a_bf16_verified_variant() -> None:
    from runtime.tune.deploy import Candidate, Figures, Machine
    from runtime.tune.deployment import caveats, model_options

    chosen = Candidate(engine="openvino", precision="auto", streams=2, threads_per_stream=1, concurrency=2,
                       batch_size=8, status="ok", confirmed=Figures(throughput_ips=500.0, requests=200))  # fmt: skip
    machine = Machine(device="cpu", threads=2, cpu_flags={"avx512_bf16": True})
    assert model_options(chosen, "cpu", 2, "bf16").bf16 and not model_options(chosen, "cpu", 2).bf16
    assert caveats(chosen, machine, "bf16") == [] and "f32 precision hint" in caveats(chosen, machine)[0]


def test_the_search_times_a_candidate_with_its_own_hint_never_the_manifests(
    lenet_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect: a candidate given no hint fell back to the hint the manifest records for its precision's key
    (``int8``): a graph the search built, not that variant, would have been timed with another variant's hint."""
    from runtime.bench import engines
    from runtime.precision import timing

    class Stop(Exception):
        pass

    seen: list[str | None] = []

    def fake_prepare(engine, ctx, precision, x):  # type: ignore[no-untyped-def]
        seen.append(ctx.openvino_hint(precision))
        if len(seen) == 3:
            raise Stop
        return None

    monkeypatch.setattr(engines, "hint_for", lambda _source, _key: "bf16")  # every variant "records" bf16
    monkeypatch.setattr(timing, "prepare", fake_prepare)
    a = art.open_artifact(lenet_dir)
    fp32 = a.path().read_bytes()
    with pytest.raises(Stop):
        timing.time_candidates(a, fp32, [fp32, fp32], np.zeros((1, 3, 32, 32), np.float32), "openvino", 1,
                               openvino_hints=[None, "bf16"])  # fmt: skip
    # fp32 is the artifact's own graph (its key names no variant); the candidates: what they were judged with
    assert seen[1:] == ["f32", "bf16"]
