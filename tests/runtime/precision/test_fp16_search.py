"""``--precision auto --target cuda``: fp16 candidates with float32 fallback, judged by the same budget. This
machine has no GPU: the refusal without one, the fp16 builder, and the search driven with CUDA's sessions
served by the CPU provider (the GPU run is ``test_fp16_search_gpu.py``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from exporter import artifact as art
from exporter.errors import UserError
from runtime import sessions
from runtime.bench.stats import Interval
from runtime.precision import SearchConfig, search_precision
from runtime.precision import candidates as candidates_module
from runtime.precision import layers as layers_module
from runtime.precision import search as search_module
from runtime.precision.budget import Budget
from runtime.precision.candidates import FP16_REDUCTIONS, HalfBuilder
from runtime.precision.timing import Timing
from tests.helpers import assert_one_line, ort_run, run_cli, strict_load

AUTO = art.VariantKey("auto")
CONV2 = "/conv_layer/conv_layer.2/Conv"
POOL1 = "/conv_layer/conv_layer.1/MaxPool"


def test_target_cuda_without_a_usable_cuda_provider_is_one_line_before_any_work(tmp_path: Path) -> None:
    """Without CUDA (none here; hidden on a GPU machine, where the probe session falls back to the CPU) the
    search refuses in one line, naming the GPU and the provider, before anything is exported."""
    proc = run_cli("exporter", "lenet5", "--precision", "auto", "--target", "cuda",
                   "--artifacts-dir", str(tmp_path / "a"), env={"CUDA_VISIBLE_DEVICES": ""})  # fmt: skip
    assert_one_line(proc, "--precision auto --target cuda needs a CUDA GPU", code=2)
    assert "onnxruntime's CUDA provider could not be created" in proc.stderr and "not built yet" not in proc.stderr
    assert proc.stdout == "" and not (tmp_path / "a").exists()


def test_target_cuda_times_onnxruntime_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(search_module, "cuda_missing", lambda: None)
    with pytest.raises(UserError, match="--engine openvino runs on the CPU"):
        SearchConfig(target="cuda", engine="openvino").validate()
    SearchConfig(target="cuda").validate()
    monkeypatch.setattr(search_module, "cuda_missing", lambda: "no CUDA GPU is visible")
    with pytest.raises(UserError, match="needs a CUDA GPU: onnxruntime's CUDA provider could not be created here"):
        SearchConfig(target="cuda").validate()


def _dtypes(model: onnx.ModelProto) -> dict[str, int]:
    """Every tensor's element type: initializers, graph inputs/outputs and inferred intermediates."""
    inferred = onnx.shape_inference.infer_shapes(model)
    out = {i.name: i.data_type for i in model.graph.initializer}
    for v in [*inferred.graph.value_info, *model.graph.input, *model.graph.output]:
        out[v.name] = v.type.tensor_type.elem_type
    return out


def test_the_fp16_builder_keeps_the_named_nodes_float32(exported) -> None:  # type: ignore[no-untyped-def]
    """The nodes asked for compute in float32, their weights stay float32 and their inputs arrive float32 (no
    round trip through half precision between two float nodes); every other node is fp16, Casts between."""
    a = art.open_artifact(exported("lenet5").directory)
    fp32 = a.path().read_bytes()
    builder = HalfBuilder(fp32)
    graph = onnx.load_from_string(builder([POOL1, CONV2], "mixed"))
    onnx.checker.check_model(graph)
    types = _dtypes(graph)
    nodes = {n.name: n for n in graph.graph.node}
    for name in (POOL1, CONV2):
        assert all(types[t] == TensorProto.FLOAT for t in [*nodes[name].input, *nodes[name].output]), name
    # the pool's float32 output feeds conv2 directly: no Cast to float16 and back between them
    assert nodes[CONV2].input[0] == nodes[POOL1].output[0]
    half = [n for n in graph.graph.node if n.op_type != "Cast" and n.name not in (POOL1, CONV2)]
    assert len(half) == 8 and all(types[n.output[0]] == TensorProto.FLOAT16 for n in half)
    assert types["conv_layer.0.weight"] == TensorProto.FLOAT16 and types["conv_layer.2.weight"] == TensorProto.FLOAT
    casts = [n for n in graph.graph.node if n.op_type == "Cast"]
    # input -> fp16 (conv1); conv1's pool fp16 -> fp32 (pool1); conv2 fp32 -> fp16; logits fp16 -> fp32
    assert len(casts) == 4, [(c.input, c.output) for c in casts]
    assert builder.facts["mixed"]["float_nodes"] == [POOL1, CONV2]
    assert types[graph.graph.input[0].name] == types[graph.graph.output[0].name] == TensorProto.FLOAT
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 32, 32)).astype(np.float32)
    got, want = ort_run(builder([POOL1, CONV2], "again"), x), ort_run(fp32, x)
    assert np.abs(got - want).max() < 1e-2 * np.abs(want).max()  # fp16 elsewhere: close, not equal
    everything = [n.name for n in onnx.load_from_string(fp32).graph.node]
    all_float = onnx.load_from_string(builder(everything, "float"))
    assert [n.op_type for n in all_float.graph.node if n.op_type == "Cast"] == []
    assert np.abs(ort_run(all_float.SerializeToString(), x) - want).max() < 1e-5


def test_the_fp16_builder_keeps_reductions_float32() -> None:
    """The issue's float fallbacks: LRN (onnxruntime's block list plus FP16_KEEP_FP32) and reductions stay float32
    in every candidate, the all-fp16 one included."""
    from onnx import helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4, 1, 1])
    w = onnx.numpy_helper.from_array(np.ones((4, 4, 1, 1), np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("LRN", ["c"], ["l"], name="lrn", size=3),
             helper.make_node("ReduceMean", ["l"], ["y"], name="mean", axes=[2, 3], keepdims=1)]  # fmt: skip
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [w]), opset_imports=[helper.make_opsetid("", 13)])
    builder = HalfBuilder(model.SerializeToString())
    assert builder.kept_ops == ["LRN", "ReduceMean"] and "ReduceMean" in FP16_REDUCTIONS
    half = onnx.load_from_string(builder([], "all"))
    types = _dtypes(half)
    ops = {n.name: n for n in half.graph.node}
    assert types[ops["conv"].output[0]] == TensorProto.FLOAT16
    assert types[ops["lrn"].output[0]] == types[ops["mean"].output[0]] == TensorProto.FLOAT
    assert ops["mean"].input[0] == ops["lrn"].output[0]  # float32 from LRN into the reduction, no round trip
    assert builder.facts["all"]["float_nodes"] == ["lrn", "mean"]


def _cpu_served(real: type) -> object:
    """SessionConfig as the search's modules call it, with device cuda served by the CPU provider."""

    def make(*args: object, **kw: object) -> object:
        if kw.get("device") == "cuda":
            kw["device"] = "cpu"
        return real(*args, **kw)

    return make


def test_the_cuda_search_writes_the_fastest_passing_fp16_graph(
    lenet_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """lenet5's all-fp16 graph measures about 72 dB: an 80 dB budget makes the search measure the layers and
    build fp16 graphs with float layers. CUDA's sessions are the CPU's here and the timing is faked; what is
    checked is the search: what it builds, what it chooses, and what it records."""
    monkeypatch.setattr(search_module, "cuda_missing", lambda: None)
    monkeypatch.setattr(candidates_module, "SessionConfig", _cpu_served(sessions.SessionConfig))
    monkeypatch.setattr(layers_module, "SessionConfig", _cpu_served(sessions.SessionConfig))
    asked: list[dict[str, object]] = []
    speedups = [1.9, 1.3, 2.6, 1.1, 2.2, 1.7, 1.5, 2.4, 1.2, 2.0, 1.6, 1.4]

    def fake(artifact, fp32, candidates, x, engine, threads, policy=None, **where):  # type: ignore[no-untyped-def]
        asked.append(where)
        out = [Timing(Interval(1 / s, 0.98 / s, 1.02 / s), Interval(s, s * 0.98, s * 1.02), 30)
               for s in speedups[: len(candidates)]]  # fmt: skip
        return Interval(1.0, 0.99, 1.01), out

    monkeypatch.setattr(search_module, "time_candidates", fake)
    outcome = search_precision(lenet_dir, SearchConfig(budget=Budget("sqnr", 80.0), target="cuda"))
    s = outcome.search
    assert asked == [{"device": "cuda", "precision": "fp16"}]
    assert (s.target, s.device, s.precision, s.engine) == ("cuda", "cuda", "fp16", "onnxruntime")
    first = s.candidates[0]
    assert first.label == "all layers fp16 (no LRN or reduction to keep float32)" and not first.passed
    assert first.sqnr_db is not None and 60 < first.sqnr_db < 80
    assert len(s.layers) == 5 and all(c.alone_int8_sqnr_db is not None for c in s.layers)
    assert any(c.label.startswith("greedy: ") and " layers fp16 " in c.label for c in s.candidates)
    assert any("fp16 candidates keep float32" in n for n in s.notes)
    passing = [c for c in s.candidates if c.passed]
    assert passing and len(passing) < len(s.candidates)
    chosen = [c for c in s.candidates if c.chosen]
    assert len(chosen) == 1 and chosen[0].speedup == max(c.speedup for c in passing)  # type: ignore[type-var]
    assert chosen[0].sqnr_db is not None and chosen[0].sqnr_db >= 80 and s.float_layers == chosen[0].float_layers

    record = art.open_artifact(lenet_dir).manifest.variants["auto"]
    assert record.precision_search == s and record.quantization is None and record.io_dtype == "float32"
    assert record.float_nodes == chosen[0].float_nodes and record.float_nodes
    assert "LRN" in record.kept_fp32_ops and "ReduceMean" in record.kept_fp32_ops
    assert record.parity.precision == "fp16" and record.parity.passed
    graph = onnx.load(str(outcome.path))
    types = {i.data_type for i in graph.graph.initializer}
    assert TensorProto.FLOAT16 in types and any(n.op_type == "Cast" for n in graph.graph.node)
    assert art.open_artifact(lenet_dir).stale_reason(AUTO) is None
    strict_load(lenet_dir / "manifest.json")
    # the tune sweeps it on CUDA only, as it does the fp16 variant
    from runtime.tune.candidates import precisions_to_sweep
    from runtime.tune.config import TuneConfig

    manifest = art.open_artifact(lenet_dir).manifest
    cpu, skipped = precisions_to_sweep(TuneConfig("lenet5"), manifest, cuda=False)
    assert "auto" not in cpu and "runs on CUDA" in skipped["auto"]
    assert "auto" in precisions_to_sweep(TuneConfig("lenet5"), manifest, cuda=True)[0]


def test_a_search_record_from_before_target_cuda_still_loads() -> None:
    """The field an fp16 auto variant added has a default: a record written without it reads as int8's."""
    record = art.PrecisionSearchRecord.model_validate(
        dict(budget="output SQNR >= 25 dB", metric="sqnr", threshold=25.0, target="cpu", engine="onnxruntime",
             device="cpu", threads=2, batch_size=1, fp32_ms=1.0, fp32_low_ms=0.9, fp32_high_ms=1.1, float_layers=[])
    )  # fmt: skip
    assert record.precision == "int8"
