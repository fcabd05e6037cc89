"""Fixtures for the Triton tests: free loopback ports, graphs with a fixed batch, one shared server."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter import artifact as art
from runtime.resolve import Resolved, resolve


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports on 127.0.0.1 (held open together while chosen)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def fixed_batch(graph: bytes, size: int = 1) -> bytes:
    """The same graph with its batch dimension fixed, as a non-toolkit export would have it."""
    import onnx

    model = onnx.load_model_from_string(graph)
    for value in [*model.graph.input, *model.graph.output]:
        dim = value.type.tensor_type.shape.dim[0]
        dim.ClearField("dim_param")
        dim.dim_value = size
    return model.SerializeToString()


@pytest.fixture(scope="session")
def resolved_lenet(exported, artifacts_dir: Path) -> Resolved:  # type: ignore[no-untyped-def]
    exported("lenet5")
    return resolve("lenet5", artifacts_dir=artifacts_dir, rebuild=False, say=lambda _m: None)


@pytest.fixture(scope="session")
def resolved_resnet(exported, artifacts_dir: Path) -> Resolved:  # type: ignore[no-untyped-def]
    exported("resnet_cifar")
    return resolve("resnet_cifar", key=art.BASE, artifacts_dir=artifacts_dir, rebuild=False, say=lambda _m: None)


@pytest.fixture(scope="session")
def triton_server(resolved_resnet: Resolved, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """One real Triton serving resnet_cifar on free ports, shared by the server tests."""
    pytest.importorskip("pytriton")
    pytest.importorskip("tritonclient.grpc")
    from runtime.serve import LocalServer, ModelOptions, ServeOptions

    log = tmp_path_factory.mktemp("triton") / "server.log"
    options = ServeOptions(
        http_port=0,
        grpc_port=0,
        metrics_port=0,
        model=ModelOptions(max_batch=16, max_queue_delay_us=2000),
        log_path=log,
    )
    server = LocalServer(resolved_resnet, options)
    server.start()
    try:
        yield server
    finally:
        report = server.stop()
        assert report.remaining == [], f"server processes left: {report.remaining}"
