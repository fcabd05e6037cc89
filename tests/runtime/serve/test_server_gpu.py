"""Triton on a GPU: the served sessions run on the CUDA provider (said by the server, not assumed), answer as
local onnxruntime does within CUDA's tolerance for fp32 and fp16, and stop leaving nothing behind."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytriton", reason="the serve extra (nvidia-pytriton) is not installed")
pytest.importorskip("tritonclient.grpc", reason="the serve extra (tritonclient) is not installed")

from exporter import artifact as art  # noqa: E402
from runtime.compare import compare, default_tolerance  # noqa: E402
from runtime.loadtest.client import TritonEndpoint  # noqa: E402
from runtime.resolve import resolve  # noqa: E402
from runtime.serve import LocalServer, ModelOptions, ServeOptions  # noqa: E402
from runtime.sessions import SessionConfig, create_session, run  # noqa: E402
from tests.helpers import cuda_ready

pytestmark = [
    pytest.mark.serve,
    pytest.mark.gpu,
    pytest.mark.skipif(not cuda_ready(), reason="no CUDA GPU with onnxruntime-gpu"),
]


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_triton_serves_on_the_gpu(exported, tmp_path: Path, precision: str) -> None:
    directory = tmp_path / "resnet_cifar"
    shutil.copytree(exported("resnet_cifar").directory, directory)
    key = art.VariantKey(precision)
    resolved = resolve(str(directory), key=key, say=lambda _m: None)  # builds the fp16 variant if asked
    options = ServeOptions(
        http_port=0, grpc_port=0, metrics_port=0, model=ModelOptions(max_batch=8, device="cuda"), log_path=None
    )
    server = LocalServer(resolved, options)
    server.start()
    try:
        info = server.info
        assert info.device == "cuda" and info.providers[0] == "CUDAExecutionProvider", (info.device, info.providers)
        local, local_info = create_session(resolved.graph, SessionConfig(device="cpu"))
        assert local_info.providers[0] == "CPUExecutionProvider"
        with TritonEndpoint(info.endpoints.grpc, "grpc") as endpoint:
            name = info.model_name
            dtype = np.float16 if local.get_inputs()[0].type == "tensor(float16)" else np.float32
            for batch in (1, 8):
                x = np.random.default_rng(batch).uniform(-1, 1, (batch, 3, 32, 32)).astype(dtype)
                got = endpoint.infer_arrays(name, {"input": x}, ["output"])["output"]
                want = np.asarray(run(local, x)[0], np.float32)
                result = compare(want, np.asarray(got, np.float32), default_tolerance("cuda", precision))
                assert got.shape == (batch, 10) and result.passed, result.failures
    finally:
        report = server.stop()
    assert report.remaining == [], f"server processes left: {report.remaining}"
