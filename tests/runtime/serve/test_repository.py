"""Triton model repositories: written, parsed back with tritonclient's ModelConfig, and every refusal."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

pytest.importorskip("tritonclient.grpc", reason="the serve extra (tritonclient) is not installed")

from runtime.serve import (  # noqa: E402
    ConfigError,
    ModelOptions,
    build_config,
    check_repository,
    graph_io,
    parse_config,
    render_config,
    repository_model,
    validate_config,
    write_repository_model,
)
from runtime.serve import repository as repo_module  # noqa: E402
from tests.helpers import run_cli  # noqa: E402

from .conftest import fixed_batch  # noqa: E402


def _config_text(resolved, **options) -> str:  # type: ignore[no-untyped-def]
    return repository_model(resolved, ModelOptions(**options)).config_text


def _refused(text: str, graph: bytes) -> str:
    with pytest.raises(ConfigError) as info:
        validate_config(parse_config(text), graph_io(graph))
    message = str(info.value)
    assert "\n" not in message
    return message


# --- what is written ---------------------------------------------------------------------------


def test_repository_layout_and_config(resolved_resnet, resolved_lenet, tmp_path: Path) -> None:
    repo = tmp_path / "models"
    written = write_repository_model(resolved_resnet, repo, ModelOptions(max_batch=32, preferred_batch_sizes=(8, 32)))
    assert written.config_path == repo / "resnet_cifar" / "config.pbtxt"
    assert written.model_path.read_bytes() == resolved_resnet.graph  # the artifact's graph, byte for byte
    config = parse_config(written.config_path.read_text())
    assert (config.name, config.platform, config.backend) == ("resnet_cifar", "onnxruntime_onnx", "onnxruntime")
    assert config.max_batch_size == 32
    assert [(i.name, list(i.dims)) for i in config.input] == [("input", [3, 32, 32])]
    assert [(o.name, list(o.dims)) for o in config.output] == [("output", [10])]
    assert config.input[0].data_type == config.output[0].data_type == 11  # TYPE_FP32
    assert list(config.dynamic_batching.preferred_batch_size) == [8, 32]
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    assert [w.batch_size for w in config.model_warmup] == [1, 32]
    assert "kind: KIND_AUTO" in written.config_text  # written even though it is the proto default
    assert "dims: [3, 32, 32]" in written.config_text

    # a second model joins the first; the first is untouched
    before = written.config_path.read_text()
    second = write_repository_model(resolved_lenet, repo, ModelOptions(max_batch=8, device="cpu", threads=1))
    assert second.models == ["lenet5", "resnet_cifar"]
    assert written.config_path.read_text() == before
    lenet = parse_config(second.config_path.read_text())
    assert lenet.instance_group[0].kind == 2  # KIND_CPU
    assert lenet.parameters["intra_op_thread_count"].string_value == "1"
    assert [m.ok for m in check_repository(repo)] == [True, True]

    # rewriting replaces the model whole, and nothing is left staged anywhere
    again = write_repository_model(resolved_resnet, repo, ModelOptions(max_batch=4))
    assert again.replaced and parse_config(again.config_path.read_text()).max_batch_size == 4
    assert not [p for p in [*repo.iterdir(), *tmp_path.iterdir()] if p.name.startswith(".")]


def test_gpu_options_are_written(resolved_resnet) -> None:
    text = _config_text(resolved_resnet, device="cuda", tensorrt="fp16", cuda_graphs=True)
    config = parse_config(text)
    assert config.instance_group[0].kind == 1  # KIND_GPU
    trt = config.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert trt.name == "tensorrt"
    assert trt.parameters["precision_mode"] == "FP16" and trt.parameters["trt_cuda_graph_enable"] == "1"
    graphs_only = parse_config(_config_text(resolved_resnet, device="cuda", cuda_graphs=True))
    cuda = graphs_only.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert (cuda.name, cuda.parameters["enable_cuda_graph"]) == ("cuda", "1")


def test_render_round_trips_and_variable_sizes(resolved_resnet) -> None:
    io = graph_io(resolved_resnet.graph)
    # a dynamic-size graph: height and width symbolic; config dims -1, warm-up at the export size
    from dataclasses import replace

    dynamic = replace(io, inputs=(replace(io.inputs[0], shape=("batch", 3, "height", "width")),))
    config = build_config("dyn", dynamic, ModelOptions(max_batch=4), warmup_shape=(3, 32, 32))
    assert list(config.input[0].dims) == [3, -1, -1]
    assert list(config.model_warmup[0].inputs["input"].dims) == [3, 32, 32]
    assert parse_config(render_config(config)) == config
    with pytest.raises(ConfigError, match="no-warmup"):
        build_config("dyn", dynamic, ModelOptions(max_batch=4))
    build_config("dyn", dynamic, ModelOptions(max_batch=4, warmup=False))


def test_cli_writes_and_checks_a_repository(resolved_lenet, artifacts_dir: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    r = run_cli(
        "runtime.serve",
        "lenet5",
        "--artifacts-dir",
        str(artifacts_dir),
        "--write-repository",
        str(repo),
        "--max-batch-size",
        "16",
        "--preferred-batch-sizes",
        "4",
        "16",
        "--device",
        "cpu",
        "--print-config",
    )
    assert r.returncode == 0, r.stderr
    assert "preferred_batch_size: [4, 16]" in r.stdout
    assert re.search(r"model\.onnx \(\d+\.\d kB, sha256", r.stdout), r.stdout  # lenet5's 252 kB, not "0.3 MB"
    assert f"repository {repo} holds: lenet5" in r.stdout
    assert (repo / "lenet5" / "1" / "model.onnx").is_file()
    r = run_cli("runtime.serve", "--check-repository", str(repo))
    assert r.returncode == 0, r.stderr
    row = [line for line in r.stdout.splitlines() if "lenet5" in line]
    assert len(row) == 1 and re.search(r"\bok\b", row[0]) and "FAIL" not in r.stdout, r.stdout


# --- refusals ----------------------------------------------------------------------------------


def test_fixed_batch_graph_is_refused_when_batching(resolved_lenet, tmp_path: Path) -> None:
    fixed = fixed_batch(resolved_lenet.graph)
    with pytest.raises(ConfigError) as info:
        build_config("lenet5", graph_io(fixed), ModelOptions(max_batch=8))
    message = str(info.value)
    assert "fixed batch dimension of 1" in message and "--max-batch-size 0" in message and "\n" not in message
    # max_batch_size 0 is the setting such a graph allows: the whole shape goes into dims
    config = build_config("lenet5", graph_io(fixed), ModelOptions(max_batch=0))
    assert list(config.input[0].dims) == [1, 3, 32, 32] and not config.HasField("dynamic_batching")
    # and a hand-made repository holding such a graph under a batching config is refused by the check
    write_repository_model(resolved_lenet, tmp_path / "repo", ModelOptions(max_batch=8))
    (tmp_path / "repo" / "lenet5" / "1" / "model.onnx").write_bytes(fixed)
    r = run_cli("runtime.serve", "--check-repository", str(tmp_path / "repo"), env={"COLUMNS": "100"})
    assert r.returncode == 1
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "fixed batch dimension of 1" in errors[0], r.stderr
    # Defect: the problem made the table's row ~150 characters wide in a pipe; it wraps in its cell now
    assert max(len(line) for line in r.stdout.splitlines()) <= 100, r.stdout
    assert "fixed batch" in r.stdout and "FAIL" in r.stdout, r.stdout


def test_preferred_batch_size_above_max_is_refused(resolved_lenet) -> None:
    with pytest.raises(ConfigError, match="outside 1..8"):
        ModelOptions(max_batch=8, preferred_batch_sizes=(4, 16)).check()
    text = _config_text(resolved_lenet, max_batch=8).replace(
        "preferred_batch_size: [8]", "preferred_batch_size: [4, 16]"
    )
    assert "preferred size 16 must be <= max_batch_size (8)" in _refused(text, resolved_lenet.graph)
    text = _config_text(resolved_lenet, max_batch=8).replace("preferred_batch_size: [8]", "preferred_batch_size: [0]")
    assert "must be positive" in _refused(text, resolved_lenet.graph)


def test_dtype_and_name_mismatches_are_refused(resolved_lenet) -> None:
    text = _config_text(resolved_lenet, max_batch=8)
    graph = resolved_lenet.graph
    assert "declared TYPE_FP16, the graph's is TYPE_FP32" in _refused(text.replace("TYPE_FP32", "TYPE_FP16", 1), graph)
    message = _refused(text.replace('name: "input"', 'name: "image"'), graph)
    assert "unexpected input 'image'" in message and "input" in message
    assert "unexpected output 'probs'" in _refused(text.replace('name: "output"', 'name: "probs"'), graph)
    assert "dims [3, 32] give shape [-1, 3, 32]" in _refused(
        text.replace("dims: [3, 32, 32]\n  }\n]\noutput", "dims: [3, 32]\n  }\n]\noutput", 1), graph
    )
    assert "dims [12] give shape [-1, 12]" in _refused(text.replace("dims: [10]", "dims: [12]"), graph)
    assert "backend 'tensorflow'" in _refused(text.replace('backend: "onnxruntime"', 'backend: "tensorflow"'), graph)
    gpu_on_cpu = _config_text(resolved_lenet, device="cuda", tensorrt="fp16").replace("KIND_GPU", "KIND_CPU")
    assert "only KIND_CPU instances" in _refused(gpu_on_cpu, graph)
    with pytest.raises(ConfigError, match="GPU instances only"):
        ModelOptions(device="cpu", tensorrt="fp16").check()


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (("dims: [3, 32, 32]", "dims: [3, 0, 32]"), "dimension 0 must be an integer >= 1, or -1"),
        (("max_batch_size: 8", "max_batch_size: -2"), "max_batch_size must be 0 or more"),
        (
            ("max_queue_delay_microseconds: 500", "max_queue_delay_microseconds: -1"),
            "not a valid Triton model configuration",
        ),
        (("data_type: TYPE_FP32", "data_type: TYPE_FLOAT"), "not a valid Triton model configuration"),
        (("max_batch_size: 8", "max_batch_size: 8\nbatch_size: 8"), "not a valid Triton model configuration"),
        (("max_batch_size: 8", "max_batch_size: eight"), "not a valid Triton model configuration"),
        (
            ('name: "batch_8"\n    batch_size: 8', 'name: "batch_8"\n    batch_size: 9'),
            "batch_size 9 must be between 1 and 8",
        ),
    ],
)
def test_malformed_values_are_refused(resolved_lenet, edit: tuple[str, str], expected: str) -> None:
    text = _config_text(resolved_lenet, max_batch=8)
    assert edit[0] in text
    bad = text.replace(edit[0], edit[1], 1)
    with pytest.raises(ConfigError) as info:
        validate_config(parse_config(bad), graph_io(resolved_lenet.graph))
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_cli_refusals_are_one_line(resolved_lenet, artifacts_dir: Path, tmp_path: Path) -> None:
    r = run_cli(
        "runtime.serve",
        "lenet5",
        "--artifacts-dir",
        str(artifacts_dir),
        "--write-repository",
        str(tmp_path / "r"),
        "--max-batch-size",
        "8",
        "--preferred-batch-sizes",
        "16",
    )
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "error: preferred batch size 16 is outside 1..8 (--max-batch-size): "
        "Triton refuses preferred sizes above max_batch_size"
    ]
    assert not (tmp_path / "r").exists()


def test_a_failed_write_leaves_the_repository_as_it_was(resolved_lenet, tmp_path: Path, monkeypatch) -> None:
    repo = tmp_path / "repo"
    first = write_repository_model(resolved_lenet, repo, ModelOptions(max_batch=8))
    before = first.config_path.read_text()
    real_rename = os.rename

    failures = []

    def failing_rename(src, dst):  # type: ignore[no-untyped-def]
        if Path(dst) == repo / "lenet5" and not failures:
            failures.append(dst)
            raise OSError(28, "No space left on device")
        return real_rename(src, dst)

    monkeypatch.setattr(repo_module.os, "rename", failing_rename)
    with pytest.raises(Exception, match="the disk is full"):
        write_repository_model(resolved_lenet, repo, ModelOptions(max_batch=4))
    monkeypatch.undo()
    assert first.config_path.read_text() == before
    assert (repo / "lenet5" / "1" / "model.onnx").read_bytes() == resolved_lenet.graph
    assert not [p for p in [*repo.iterdir(), *tmp_path.iterdir()] if p.name.startswith(".")]


def test_check_repository_refuses_a_fifo_graph_without_waiting(resolved_lenet, tmp_path: Path) -> None:
    """Defect: --check-repository opened a FIFO model.onnx and waited for a writer forever."""
    write_repository_model(resolved_lenet, tmp_path / "repo", ModelOptions(max_batch=8))
    graph = tmp_path / "repo" / "lenet5" / "1" / "model.onnx"
    graph.unlink()
    os.mkfifo(graph)
    r = run_cli("runtime.serve", "--check-repository", str(tmp_path / "repo"), timeout=120)
    assert r.returncode == 1
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "model.onnx: a FIFO (named pipe), not a regular file" in errors[0], r.stderr
