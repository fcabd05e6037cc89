"""Repositories for Triton's OpenVINO backend, read back into serving settings, and served with --repository."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tritonclient.grpc", reason="the serve extra (tritonclient) is not installed")

from runtime.serve import (  # noqa: E402
    ConfigError,
    ModelOptions,
    build_config,
    graph_io,
    parse_config,
    render_config,
    validate_config,
    write_repository_model,
)
from runtime.serve.config import options_from_config  # noqa: E402
from runtime.serve.repository import read_repository_model  # noqa: E402
from tests.helpers import ROOT, run_cli  # noqa: E402

from .conftest import free_ports  # noqa: E402

OPENVINO = dict(backend="openvino", device="cpu", threads=2, openvino_streams=2, openvino_hint="THROUGHPUT")


def _text(resolved, **options) -> str:  # type: ignore[no-untyped-def]
    io = graph_io(resolved.graph)
    return render_config(build_config("m", io, ModelOptions(**options), warmup_shape=(3, 32, 32)))


def _refused(text: str, graph: bytes) -> str:
    with pytest.raises(ConfigError) as info:
        validate_config(parse_config(text), graph_io(graph))
    assert "\n" not in str(info.value)
    return str(info.value)


def test_openvino_config_names_the_backend_its_parameters_and_the_onnx_file(resolved_resnet) -> None:
    text = _text(resolved_resnet, max_batch=8, instances=2, **OPENVINO)
    config = parse_config(text)
    assert (config.backend, config.platform, config.default_model_filename) == ("openvino", "", "model.onnx")
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert params == {"NUM_STREAMS": "2", "INFERENCE_NUM_THREADS": "2", "PERFORMANCE_HINT": "THROUGHPUT"}
    assert [g.count for g in config.instance_group] == [2] and "kind: KIND_CPU" in text
    validate_config(config, graph_io(resolved_resnet.graph))


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('NUM_STREAMS"\n  value {\n    string_value: "2"', 'NUM_STREAMS"\n  value {\n    string_value: "many"',
         "NUM_STREAMS must be AUTO, NUMA or a number"),
        ('string_value: "THROUGHPUT"', 'string_value: "FASTEST"', "PERFORMANCE_HINT must be one of"),
        ("kind: KIND_CPU", "kind: KIND_GPU", "KIND_CPU instances only"),
        ('default_model_filename: "model.onnx"\n', "", "reads model.xml unless default_model_filename"),
        ('backend: "openvino"', 'platform: "onnxruntime_onnx"\nbackend: "openvino"', "does not go with backend"),
    ],
)  # fmt: skip
def test_openvino_configs_the_backend_would_refuse_are_refused(resolved_resnet, old, new, message) -> None:
    text = _text(resolved_resnet, max_batch=8, **OPENVINO)
    assert old in text
    assert message in _refused(text.replace(old, new), resolved_resnet.graph)


def test_openvino_options_that_make_no_sense_are_one_line() -> None:
    with pytest.raises(ConfigError, match="CPU instances only"):
        ModelOptions(backend="openvino", device="cuda").check()
    with pytest.raises(ConfigError, match="go with the openvino backend"):
        ModelOptions(openvino_streams=2).check()


@pytest.mark.parametrize(
    "options",
    [
        dict(max_batch=8, preferred_batch_sizes=(4, 8), max_queue_delay_us=100, instances=2, device="cpu", threads=1),
        dict(max_batch=16, instances=3, **OPENVINO),
        dict(max_batch=0, device="cpu"),
    ],
)
def test_a_config_reads_back_into_the_settings_that_wrote_it(resolved_resnet, options) -> None:
    io = graph_io(resolved_resnet.graph)
    written = ModelOptions(**options)
    config = parse_config(render_config(build_config("m", io, written, warmup_shape=(3, 32, 32))))
    back = options_from_config(config)
    assert back == written if written.preferred_batch_sizes else back.preferred == written.preferred
    rebuilt = build_config("m", io, back, warmup_shape=(3, 32, 32))
    assert render_config(rebuilt) == render_config(config)


def test_reading_a_repository_refuses_what_the_local_server_would_drop(resolved_resnet, tmp_path: Path) -> None:
    written = write_repository_model(resolved_resnet, tmp_path / "r", ModelOptions(max_batch=8, device="cpu"))
    model = read_repository_model(tmp_path / "r")
    assert model.name == "resnet_cifar" and model.warmup_shape == (3, 32, 32)
    assert model.options.backend == "onnxruntime" and model.options.max_batch == 8
    extra = 'parameters {\n  key: "execution_mode"\n  value {\n    string_value: "1"\n  }\n}\n'
    text = written.config_path.read_text().replace("instance_group", extra + "instance_group")
    written.config_path.write_text(text)
    with pytest.raises(ConfigError, match="cannot run this configuration as written: parameters"):
        read_repository_model(tmp_path / "r")


def test_serve_repository_refuses_flags_the_repository_decides(tmp_path: Path) -> None:
    result = run_cli("runtime.serve", "--repository", str(tmp_path), "--instances", "2")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "the repository's config.pbtxt says what is served" in result.stderr


@pytest.mark.serve
def test_serve_repository_runs_openvino_as_configured(resolved_resnet, tmp_path: Path) -> None:
    """The local Triton serves an OpenVINO repository through OpenVINO, with its streams, and answers right."""
    pytest.importorskip("pytriton")
    pytest.importorskip("openvino")
    from runtime.loadtest.client import TritonEndpoint
    from runtime.sessions import SessionConfig, create_session

    repo = tmp_path / "repo"
    write_repository_model(resolved_resnet, repo, ModelOptions(max_batch=4, instances=2, **OPENVINO))
    http, grpc, metrics = free_ports(3)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "runtime.serve", "--repository", str(repo), "--http-port", str(http),
         "--grpc-port", str(grpc), "--metrics-port", str(metrics)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 180
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "serving until Ctrl-C" in line:
                break
        printed = "".join(lines)
        assert "serving until Ctrl-C" in printed, printed
        assert "(openvino backend)" in printed and "OpenVINO" in printed and "2 streams" in printed
        x = np.random.default_rng(0).uniform(-1, 1, size=(3, 3, 32, 32)).astype(np.float32)
        with TritonEndpoint(f"127.0.0.1:{grpc}") as endpoint:
            got = endpoint.infer_arrays("resnet_cifar", {"input": x}, ["output"])["output"]
        sess, _ = create_session(resolved_resnet.graph, SessionConfig(device="cpu"))
        assert np.allclose(got, sess.run(["output"], {"input": x})[0], atol=1e-3)
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "no server process left" in out
