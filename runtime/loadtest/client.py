"""A Triton client for the load test: loopback only, gRPC or HTTP, every failure one line.

:class:`TritonEndpoint` wraps ``tritonclient``'s gRPC or HTTP client for one thread. Its
:meth:`~TritonEndpoint.infer` sends numpy arrays and returns numpy arrays; a request the
server refuses (a malformed one: wrong shape, type, batch size) is a :class:`RequestRefused`
naming what the server said, a server that does not answer is a :class:`ServerUnreachable`.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

import numpy as np

from exporter.errors import UserError

from . import PROTOCOLS


class ServerUnreachable(UserError):
    """No Triton server answers at the address."""


class RequestRefused(UserError):
    """The server refused a request (malformed input, batch too large, unknown model...)."""


class NotTriton(ServerUnreachable):
    """Something answers at the address, but not as Triton does (not JSON, or JSON of other shapes)."""


#: what parsing a reply of the wrong shape raises (a list where a dict is due, a string for a number...)
_MALFORMED = (KeyError, TypeError, ValueError, AttributeError, IndexError)


def split_url(url: str) -> tuple[str, int]:
    """``host:port`` (an ``http://`` or ``grpc://`` prefix is allowed) as (host, port)."""
    text = url.strip()
    for prefix in ("http://", "https://", "grpc://"):
        if text.startswith(prefix):
            text = text[len(prefix) :]
    text = text.rstrip("/")
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise UserError(f"--url {url!r} must be HOST:PORT, such as 127.0.0.1:8001")
    return host.strip("[]"), int(port)


def check_loopback(host: str) -> None:
    """The load test only ever targets this machine: 127.0.0.0/8, ::1 or a name that resolves there."""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError as exc:
        raise UserError(f"cannot resolve {host}: {exc.strerror or exc}") from exc
    outside = [a for a in addresses if not ipaddress.ip_address(a.split("%")[0]).is_loopback]
    if outside or not addresses:
        raise UserError(
            "the load test only targets this machine (127.0.0.1, ::1, localhost); "
            f"{host} is {', '.join(sorted(addresses))}"
        )


@dataclass(frozen=True)
class ServerTensor:
    name: str
    datatype: str  # FP32, ...
    shape: tuple[int, ...]  # as the server reports it, -1 for variable dims


@dataclass(frozen=True)
class ServerModel:
    """What the server says about a model: its tensors and batching."""

    name: str
    versions: tuple[str, ...]
    inputs: tuple[ServerTensor, ...]
    outputs: tuple[ServerTensor, ...]
    max_batch_size: int
    preferred_batch_sizes: tuple[int, ...]
    max_queue_delay_us: int | None
    backend: str
    instances: int


def _first_line(text: str) -> str:
    for line in str(text).strip().splitlines():
        if line.strip():
            return line.strip()
    return "no message"


class TritonEndpoint:
    """One connection to a Triton server (use one per thread)."""

    def __init__(self, url: str, protocol: str = "grpc", timeout_s: float = 30.0) -> None:
        if protocol not in PROTOCOLS:
            raise UserError(f"unknown protocol {protocol!r}: choose {', '.join(PROTOCOLS)}")
        self.host, self.port = split_url(url)
        check_loopback(self.host)
        self.url = f"{self.host}:{self.port}"
        self.protocol = protocol
        self.timeout_s = timeout_s
        try:
            if protocol == "grpc":
                import tritonclient.grpc as client_module
            else:
                import tritonclient.http as client_module
        except ImportError as exc:
            raise UserError(
                f"the load test needs the serve extra ({exc.name} is missing): pip install -e '.[serve]'"
            ) from exc
        self._module = client_module
        if protocol == "grpc":
            self._client = client_module.InferenceServerClient(self.url)
        else:
            self._client = client_module.InferenceServerClient(
                self.url, connection_timeout=timeout_s, network_timeout=timeout_s
            )

    def close(self) -> None:
        try:
            self._client.close()
        except Exception:  # closing a broken connection must not hide the error that broke it
            pass

    def __enter__(self) -> TritonEndpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- errors --

    def _unreachable(self, exc: BaseException) -> ServerUnreachable:
        return ServerUnreachable(
            f"no Triton server answers {self.protocol.upper()} at {self.url} ({_first_line(str(exc))}): "
            "start one with python -m runtime.serve NAME, and check --url and --protocol"
        )

    def _not_triton(self, what: str, exc: BaseException | str) -> NotTriton:
        detail = exc if isinstance(exc, str) else f"{type(exc).__name__}: {_first_line(str(exc))}"
        return NotTriton(
            f"the server at {self.url} does not answer as Triton does over {self.protocol.upper()} "
            f"(its {what} reply: {detail}): check --url and --protocol"
        )

    def _call(self, what: str, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        from tritonclient.utils import InferenceServerException

        try:
            return fn(*args, **kwargs)
        except InferenceServerException as exc:
            message = _first_line(exc.message() if hasattr(exc, "message") and exc.message() else str(exc))
            status = exc.status() if hasattr(exc, "status") else None
            if status and ("UNAVAILABLE" in str(status) or "DEADLINE" in str(status)) and what != "infer":
                raise self._unreachable(exc) from None
            if "failed to connect" in message.lower() or "connection refused" in message.lower():
                raise self._unreachable(exc) from None
            if status and "UNAVAILABLE" in str(status):  # an infer call the server dropped: it died or went away
                raise RequestRefused(f"the server went away during the {what} request: {message}") from None
            raise RequestRefused(f"the server refused the {what} request: {message}") from None
        except (ConnectionError, OSError, socket.timeout) as exc:
            raise self._unreachable(exc) from None
        except Exception as exc:  # a reply tritonclient cannot parse: not JSON, or JSON of other shapes
            raise self._not_triton(what, exc) from None

    # -- queries --

    def model(self, name: str) -> ServerModel:
        """The model's metadata and configuration; a model the server does not have is one clear line."""
        if not self._call("health", self._client.is_server_live):
            raise ServerUnreachable(
                f"no live Triton server answers {self.protocol.upper()} at {self.url} (its health check "
                "did not say live): start one with python -m runtime.serve NAME, and check --url and --protocol"
            )
        try:
            ready = self._call("model readiness", self._client.is_model_ready, name)
        except RequestRefused:
            ready = False
        if not ready:
            names = self.model_names()
            raise UserError(
                f"the server at {self.url} has no ready model '{name}'"
                + (f" (it serves: {', '.join(names)})" if names else "")
                + ": pass --model-name, or serve it with python -m runtime.serve"
            )
        if self.protocol == "grpc":
            meta = self._call("metadata", self._client.get_model_metadata, name, as_json=True)
            config = self._call("configuration", self._client.get_model_config, name, as_json=True)
            config = config.get("config") if isinstance(config, dict) else config
        else:
            meta = self._call("metadata", self._client.get_model_metadata, name)
            config = self._call("configuration", self._client.get_model_config, name)
        for what, reply in (("model metadata", meta), ("model configuration", config)):
            if not isinstance(reply, dict):
                raise self._not_triton(what, f"a JSON {type(reply).__name__}, not an object")
        try:
            return self._server_model(name, meta, config)
        except _MALFORMED as exc:
            raise self._not_triton("model metadata or configuration", exc) from None

    @staticmethod
    def _server_model(name: str, meta: dict, config: dict) -> ServerModel:  # type: ignore[type-arg]
        """The model as the server describes it (TypeError, KeyError... where a reply has other shapes)."""

        def tensors(items: list[dict]) -> tuple[ServerTensor, ...]:  # type: ignore[type-arg]
            return tuple(ServerTensor(t["name"], t["datatype"], tuple(int(d) for d in t["shape"])) for t in items)

        batching = config.get("dynamic_batching") or config.get("dynamicBatching")
        groups = config.get("instance_group") or config.get("instanceGroup") or []
        return ServerModel(
            name=name,
            versions=tuple(str(v) for v in meta.get("versions", [])),
            inputs=tensors(meta.get("inputs", [])),
            outputs=tensors(meta.get("outputs", [])),
            max_batch_size=int(config.get("max_batch_size", config.get("maxBatchSize", 0)) or 0),
            preferred_batch_sizes=tuple(
                int(b)
                for b in (batching or {}).get("preferred_batch_size", (batching or {}).get("preferredBatchSize", []))
            ),
            max_queue_delay_us=(
                int(
                    (batching or {}).get(
                        "max_queue_delay_microseconds", (batching or {}).get("maxQueueDelayMicroseconds", 0)
                    )
                    or 0
                )
                if batching is not None
                else None
            ),
            backend=str(config.get("backend", "")),
            instances=sum(int(g.get("count", 1) or 1) for g in groups) or 1,
        )

    def model_names(self) -> list[str]:
        try:
            if self.protocol == "grpc":
                index = self._call("repository index", self._client.get_model_repository_index, as_json=True)
                entries = index.get("models", [])
            else:
                entries = self._call("repository index", self._client.get_model_repository_index)
            return sorted({str(e["name"]) for e in entries if isinstance(e, dict) and e.get("name")})
        except (UserError, *_MALFORMED):
            return []

    def server_version(self) -> str:
        meta = self._call(
            "metadata", self._client.get_server_metadata, **({"as_json": True} if self.protocol == "grpc" else {})
        )
        return str(meta.get("version", "")) if isinstance(meta, dict) else ""

    # -- inference --

    def prepare(self, arrays: dict[str, np.ndarray]) -> list[object]:
        """Request inputs built once, to send many times."""
        inputs = []
        for name, array in arrays.items():
            datatype = _wire_type(array.dtype)
            tensor = self._module.InferInput(name, list(array.shape), datatype)
            if self.protocol == "http":
                tensor.set_data_from_numpy(array, binary_data=True)
            else:
                tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        return inputs

    def infer(self, model: str, inputs: list[object], output_names: list[str]) -> dict[str, np.ndarray]:
        """Send prepared inputs; the outputs as numpy arrays (RequestRefused for a malformed request)."""
        if self.protocol == "grpc":
            outputs = [self._module.InferRequestedOutput(n) for n in output_names]
            result = self._call(
                "infer", self._client.infer, model, inputs, outputs=outputs, client_timeout=self.timeout_s
            )
        else:
            outputs = [self._module.InferRequestedOutput(n, binary_data=True) for n in output_names]
            result = self._call("infer", self._client.infer, model, inputs, outputs=outputs)
        try:
            arrays = {n: result.as_numpy(n) for n in output_names}
        except _MALFORMED as exc:
            raise self._not_triton("infer", exc) from None
        missing = [n for n, a in arrays.items() if not isinstance(a, np.ndarray)]
        if missing:
            raise self._not_triton("infer", f"no output '{missing[0]}'")
        return arrays

    def infer_arrays(self, model: str, arrays: dict[str, np.ndarray], output_names: list[str]) -> dict[str, np.ndarray]:
        return self.infer(model, self.prepare(arrays), output_names)


_WIRE = {
    "float32": "FP32",
    "float16": "FP16",
    "float64": "FP64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "bool": "BOOL",
}


def _wire_type(dtype: np.dtype) -> str:
    try:
        return _WIRE[np.dtype(dtype).name]
    except KeyError:
        raise UserError(f"cannot send {np.dtype(dtype).name} tensors to Triton") from None
