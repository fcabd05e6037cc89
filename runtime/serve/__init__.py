"""Serving an artifact at scale on NVIDIA Triton Inference Server.

Library API behind ``python -m runtime.serve``:

* :func:`repository_model` builds the validated ``config.pbtxt`` for Triton's onnxruntime
  backend from a resolved artifact, and :func:`write_repository_model` writes it with the
  graph as ``DIR/NAME/config.pbtxt`` + ``DIR/NAME/1/model.onnx``, atomically;
  :func:`check_repository` validates every model of a repository as the server would.
* :class:`LocalServer` runs a real Triton (bundled by ``nvidia-pytriton``) on 127.0.0.1
  serving the artifact through an onnxruntime session, with Triton's dynamic batching;
  :class:`Supervisor` restarts it when it crashes (:class:`RestartPolicy`).

Example::

    from runtime.resolve import resolve
    from runtime.serve import LocalServer, ModelOptions, ServeOptions, write_repository_model

    resolved = resolve("resnet_cifar")
    write_repository_model(resolved, Path("models"), ModelOptions(max_batch=32))
    with LocalServer(resolved, ServeOptions(http_port=0, grpc_port=0, metrics_port=0)) as server:
        print(server.info.endpoints.grpc)

Nothing in this package prints; commands do.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .config import (
    BACKEND,
    CONFIG_FILE,
    MODEL_FILE,
    PLATFORM,
    ConfigError,
    ConfigSummary,
    GraphIO,
    ModelOptions,
    ServeDependencyMissing,
    TensorIO,
    build_config,
    default_model_name,
    graph_io,
    parse_config,
    render_config,
    summarize,
    validate_config,
)
from .repository import CheckedModel, WrittenModel, check_repository, list_models, write_model

#: The local server's names, imported on first use (psutil, the artifact contract): the command's
#: parser and ``--help`` need none of them.
_SERVER = (
    "Crash",
    "Endpoints",
    "LocalServer",
    "ServeOptions",
    "ServerFailed",
    "ServedGraph",
    "ServerInfo",
    "StopReport",
    "check_serve_dependencies",
    "libpython_dir",
    "server_environment",
)


#: The supervisor's names, which need the server's.
_SUPERVISE = ("Restart", "RestartPolicy", "Supervisor")


def __getattr__(name: str) -> object:
    if name in _SERVER:
        return getattr(importlib.import_module(".server", __name__), name)
    if name in _SUPERVISE:
        return getattr(importlib.import_module(".supervise", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass
class RepositoryModel:
    """A model configuration ready to be written: its name, text and the graph it was validated against."""

    name: str
    config_text: str
    summary: ConfigSummary
    graph: bytes
    sha256: str


def repository_model(  # type: ignore[no-untyped-def]
    resolved, options: ModelOptions | None = None, name: str | None = None, notes: Sequence[str] = ()
) -> RepositoryModel:
    """The validated ``config.pbtxt`` of a resolved artifact's graph for Triton's onnxruntime (or OpenVINO)
    backend; ``notes`` are added to its header comment."""
    from exporter.files import sha256_bytes

    options = options or ModelOptions()
    manifest = resolved.artifact.manifest
    name = name or default_model_name(manifest.name, str(resolved.key))
    config = build_config(name, graph_io(resolved.graph), options, warmup_shape=manifest.input_shape)
    sha = sha256_bytes(resolved.graph)
    header = [
        f"Triton model configuration for the {options.backend} backend, written by cnn-onnx-toolkit "
        "(python -m runtime.serve).",
        f"artifact {manifest.name}, graph {resolved.key} (opset {manifest.settings.opset}), sha256 {sha}",
    ]
    if manifest.dynamic_size:
        header.append("height and width are variable (-1); warm-up uses the export size")
    header += list(notes)
    return RepositoryModel(name, render_config(config, header), summarize(config), resolved.graph, sha)


def write_repository_model(  # type: ignore[no-untyped-def]
    resolved, directory: Path, options: ModelOptions | None = None, name: str | None = None, notes: Sequence[str] = ()
) -> WrittenModel:
    """Build, validate and write one model into the repository ``directory`` (others are kept)."""
    model = repository_model(resolved, options, name, notes)
    return write_model(Path(directory), model.name, model.config_text, model.graph, expected_sha256=model.sha256)


__all__ = [
    "BACKEND",
    "CONFIG_FILE",
    "MODEL_FILE",
    "PLATFORM",
    "CheckedModel",
    "ConfigError",
    "Crash",
    "ConfigSummary",
    "Endpoints",
    "GraphIO",
    "LocalServer",
    "ModelOptions",
    "RepositoryModel",
    "Restart",
    "RestartPolicy",
    "ServeDependencyMissing",
    "ServeOptions",
    "ServedGraph",
    "ServerFailed",
    "ServerInfo",
    "StopReport",
    "Supervisor",
    "TensorIO",
    "build_config",
    "check_repository",
    "check_serve_dependencies",
    "default_model_name",
    "graph_io",
    "libpython_dir",
    "list_models",
    "parse_config",
    "render_config",
    "repository_model",
    "server_environment",
    "summarize",
    "validate_config",
    "write_model",
    "write_repository_model",
]
