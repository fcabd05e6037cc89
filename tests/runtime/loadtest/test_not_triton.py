"""A load test over HTTP against a local server that is not Triton ends in one line, never a traceback.

Tiny HTTP servers in this process answer every request with: a plain file server's 404s, text that
is not JSON, an empty body, JSON of the wrong shape (a list; an object whose fields have the wrong
types), and a server that describes lenet5 as Triton would but answers inference with text.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.helpers import run_cli

pytest.importorskip("tritonclient.http", reason="the serve extra (tritonclient) is not installed")

LENET_METADATA = {
    "name": "lenet5",
    "versions": ["1"],
    "platform": "python",
    "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 32, 32]}],
    "outputs": [{"name": "output", "datatype": "FP32", "shape": [-1, 10]}],
}
LENET_CONFIG = {"name": "lenet5", "max_batch_size": 8, "backend": "python", "dynamic_batching": {}}

REPLIES: dict[str, object] = {
    "text": b"<html><body>hello</body></html>",
    "empty": b"",
    "json list": [1, 2, 3],
    "wrong types": {"name": 1, "versions": 3, "inputs": "x", "outputs": 5, "max_batch_size": "lots"},
}


def _handler(reply: object) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            if reply == "half":  # describes lenet5 as Triton would; inference answers with text
                if self.path.endswith("/config"):
                    body = json.dumps(LENET_CONFIG).encode()
                elif self.path.endswith("/infer"):
                    body = b"not an inference reply"
                else:
                    body = json.dumps(LENET_METADATA).encode()
            else:
                body = reply if isinstance(reply, bytes) else json.dumps(reply).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args: object) -> None:
            pass

    return Handler


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def serve_http() -> Iterator[object]:
    servers: list[ThreadingHTTPServer] = []

    def start(handler: type[BaseHTTPRequestHandler]) -> int:
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)  # a free port
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return int(server.server_address[1])

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _loadtest(port: int, artifacts_dir: Path, out: Path):  # type: ignore[no-untyped-def]
    return run_cli(
        "runtime.loadtest",
        "lenet5",
        "--artifacts-dir",
        str(artifacts_dir),
        "--protocol",
        "http",
        "--url",
        f"127.0.0.1:{port}",
        "--metrics-port",
        "0",
        "--seconds",
        "0.5",
        "--output",
        str(out),
        timeout=120,
    )


@pytest.mark.parametrize("kind", [*REPLIES, "half"])
def test_a_server_that_is_not_triton_is_one_line(  # type: ignore[no-untyped-def]
    kind: str, serve_http, exported, artifacts_dir: Path, tmp_path: Path
) -> None:
    exported("lenet5")
    port = serve_http(_handler("half" if kind == "half" else REPLIES[kind]))
    r = _loadtest(port, artifacts_dir, tmp_path / "lt")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    last = lines[-1]
    assert last.startswith(f"error: the server at 127.0.0.1:{port} does not answer as Triton does over HTTP ("), last
    assert last.endswith("): check --url and --protocol")
    assert not (tmp_path / "lt" / "results.json").exists()  # nothing measured, nothing written


def test_a_plain_file_server_is_not_live_triton(  # type: ignore[no-untyped-def]
    serve_http, exported, artifacts_dir: Path, tmp_path: Path
) -> None:
    exported("lenet5")
    port = serve_http(functools.partial(_Quiet, directory=str(tmp_path)))  # python -m http.server: 404 for /v2/
    r = _loadtest(port, artifacts_dir, tmp_path / "lt")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        f"error: no live Triton server answers HTTP at 127.0.0.1:{port} (its health check did not say live): "
        "start one with python -m runtime.serve NAME, and check --url and --protocol"
    ]


def test_results_follow_artifacts_dir_and_nothing_lands_in_the_default(lenet_dir: Path, tmp_path: Path) -> None:
    """Defect (hostile pass): results went to ./artifacts/loadtest whatever --artifacts-dir said, unlike
    runtime.bench's and runtime.profile's. Refused here (no server), but the folder checked is the one asked."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    arts = lenet_dir.parent
    proc = run_cli("runtime.loadtest", "lenet5", "--artifacts-dir", str(arts), "--url", "127.0.0.1:9",
                   "--seconds", "1", cwd=cwd)  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert not (cwd / "artifacts").exists() and (arts / "loadtest").is_dir()


def test_an_infer_request_the_server_dropped_says_it_went_away() -> None:
    """Defect (hostile pass): with tritonserver killed mid-run the line read 'the server refused the infer
    request: Stream removed', though it had died, not refused."""
    from tritonclient.utils import InferenceServerException

    from runtime.loadtest.client import RequestRefused, TritonEndpoint

    endpoint = TritonEndpoint.__new__(TritonEndpoint)  # no connection: only _call's reading of the error
    endpoint.url, endpoint.protocol = "127.0.0.1:8001", "grpc"

    def dropped() -> None:
        raise InferenceServerException(msg="Stream removed", status="StatusCode.UNAVAILABLE")

    def refused() -> None:
        raise InferenceServerException(msg="unexpected shape for input 'input'", status="StatusCode.INVALID_ARGUMENT")

    with pytest.raises(RequestRefused, match="^the server went away during the infer request: Stream removed$"):
        endpoint._call("infer", dropped)
    with pytest.raises(RequestRefused, match="^the server refused the infer request: unexpected shape"):
        endpoint._call("infer", refused)
