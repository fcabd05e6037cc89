"""The server process that :class:`runtime.serve.server.LocalServer` starts (not a user command).

``python -m runtime.serve._worker SPEC.json STATUS_FD``: creates the onnxruntime sessions
with the toolkit's session factory, binds them to Triton through pytriton (one callable per
instance, fed the batches Triton's dynamic batcher forms), starts tritonserver, reports
``{"event": "ready", ...}`` as one JSON line on STATUS_FD, and serves until SIGINT or
SIGTERM. Then it stops Triton, ends and reaps whatever Triton left (this process is a
child subreaper, so orphans come back to it), and exits. Its stdout and stderr are the
server's log.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any


def _status(fd: int, **message: Any) -> None:
    with contextlib.suppress(OSError):
        os.write(fd, (json.dumps(message) + "\n").encode())


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt()


def _become_subreaper() -> None:
    import ctypes

    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(36, 1)  # PR_SET_CHILD_SUBREAPER


def _end_descendants() -> None:
    """End every process still below this one (by id), then reap them."""
    import psutil

    from .processes import end_processes

    me = psutil.Process()
    for _ in range(3):
        children = [c for c in me.children(recursive=True) if c.status() != psutil.STATUS_ZOMBIE]
        if not children:
            break
        logging.info(
            "ending what the server left: %s", "; ".join(f"{c.pid} {' '.join(c.cmdline())[:150]}" for c in children)
        )
        # the resource tracker that ignores SIGTERM has released its shared memory by now
        end_processes(children, grace_s=1)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            time.sleep(0.05)
    logging.info("server process done")


def _tritonserver_exit_code(triton: Any) -> int | None:
    """How tritonserver ended: its exit code, negative for the signal that killed it (None: not known).

    pytriton reaps tritonserver (through ``sh``) and keeps the code on its process handle, which
    has no public name; without it the parent still sees tritonserver gone.
    """
    command = getattr(getattr(triton, "_triton_server", None), "_tritonserver_running_cmd", None)
    code = getattr(getattr(command, "process", None), "exit_code", None)
    return code if isinstance(code, int) else None


def make_infer(
    sess: Any, input_names: list[str], output_names: list[str], batching: bool, min_size: list[int] | None = None
) -> Any:
    """A pytriton inference callable over one session: requests in, one response per request.

    Requests whose inputs have the same per-sample shape are concatenated into one run (that
    is the batch Triton formed); with batching off each request runs alone. A dynamic-size
    graph's input below its minimum height/width is refused before onnxruntime sees it:
    there, onnxruntime can crash the whole process (SIGFPE) instead of raising.
    """
    import numpy as np

    def infer(requests: list[Any]) -> list[dict[str, Any]]:
        if min_size:
            for request in requests:
                dims = request[input_names[0]].shape[-2:]
                if len(dims) == 2 and (dims[0] < min_size[0] or dims[1] < min_size[1]):
                    raise ValueError(
                        f"input size {dims[0]}x{dims[1]} is below the smallest this graph accepts, "
                        f"{min_size[0]}x{min_size[1]}"
                    )
        responses: list[dict[str, Any] | None] = [None] * len(requests)
        groups: dict[tuple[Any, ...], list[int]] = {}
        for i, request in enumerate(requests):
            key = tuple((n, request[n].shape[1:], request[n].dtype.str) for n in input_names) if batching else (i,)
            groups.setdefault(key, []).append(i)
        for members in groups.values():
            if len(members) == 1:
                feeds = {n: requests[members[0]][n] for n in input_names}
            else:
                feeds = {n: np.concatenate([requests[i][n] for i in members]) for n in input_names}
            try:
                outputs = sess.run(output_names, feeds)
            except Exception as exc:  # a request the graph cannot run: one line back to the client
                text = str(exc).strip().splitlines()
                raise ValueError(
                    f"onnxruntime cannot run this request: {text[-1] if text else type(exc).__name__}"
                ) from None
            start = 0
            for i in members:
                size = requests[i][input_names[0]].shape[0] if batching else 1
                stop = start + size
                responses[i] = {name: out[start:stop] if batching else out for name, out in zip(output_names, outputs)}
                start = stop
        return responses  # type: ignore[return-value]

    return infer


class OpenVINOSession:
    """One infer request of an OpenVINO compiled model, with onnxruntime's ``run(names, feeds)``:
    a Triton instance of the OpenVINO backend is one such request on the model's compiled model."""

    def __init__(self, compiled: Any) -> None:
        self.request = compiled.create_infer_request()

    def run(self, output_names: list[str], feeds: dict[str, Any]) -> list[Any]:
        import numpy as np

        self.request.infer(feeds)
        # copies: the request's output tensors are reused by its next inference
        return [np.array(self.request.get_tensor(name).data) for name in output_names]


def create_engines(graph: bytes, spec: dict[str, Any], instances: int, threads: int | None) -> tuple[list[Any], dict]:
    """One session per instance (onnxruntime), or one compiled model and a request per instance (OpenVINO)."""
    if spec.get("engine") == "openvino":
        import openvino as ov

        core = ov.Core()
        compiled = core.compile_model(core.read_model(graph), "CPU", dict(spec.get("openvino") or {}))
        streams = str(compiled.get_property("NUM_STREAMS"))
        done = {
            "device": "cpu",
            "providers": [f"OpenVINO {ov.__version__} CPU, {streams} streams"],
            "reason": "OpenVINO runs on the CPU",
            "threads": int(compiled.get_property("INFERENCE_NUM_THREADS")),
        }
        return [OpenVINOSession(compiled) for _ in range(instances)], done
    from runtime.sessions import SessionConfig, create_session

    config = SessionConfig(device=spec["device"], threads=threads, allow_spinning=False)
    sessions, infos = [], []
    for _ in range(instances):
        sess, info = create_session(graph, config)
        sessions.append(sess)
        infos.append(info)
    done = {"device": infos[0].device, "providers": infos[0].providers, "reason": infos[0].reason, "threads": threads}
    return sessions, done


def serve(spec: dict[str, Any], status_fd: int) -> int:
    import numpy as np
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    from exporter.errors import first_line

    graph = Path(spec["graph"]).read_bytes()
    if hashlib.sha256(graph).hexdigest() != spec["sha256"]:
        _status(status_fd, event="error", message=f"{spec['graph']} changed after it was checked (sha256 differs)")
        return 1
    instances = int(spec["instances"])
    threads = spec["threads"] or (max(1, (os.cpu_count() or 1) // instances) if instances > 1 else None)
    batching = spec["max_batch"] > 0
    input_names = [t["name"] for t in spec["inputs"]]
    output_names = [t["name"] for t in spec["outputs"]]
    sessions, engine = create_engines(graph, spec, instances, threads)
    if spec["warmup"]:  # the first runs at a batch size allocate; do them before the first client
        shape = [int(d) for d in spec["warmup_shape"]]
        sizes = sorted({1, spec["max_batch"]}) if batching else [None]
        for sess in sessions:
            for size in sizes:
                feeds = {}
                for t in spec["inputs"]:
                    dims = t["dims"]
                    if any(d < 0 for d in dims):
                        dims = shape if batching else [1, *shape]
                    feeds[t["name"]] = np.zeros(([size] if batching else []) + list(dims), dtype=t["dtype"])
                with contextlib.suppress(Exception):
                    sess.run(output_names, feeds)
    logging.info(
        "sessions ready on %s (%s), %s threads", engine["device"], ", ".join(engine["providers"]), engine["threads"]
    )

    host = spec["host"]
    triton_config = TritonConfig(
        http_address=host,
        http_port=spec["http_port"],
        grpc_address=host,
        grpc_port=spec["grpc_port"],
        metrics_address=host,
        metrics_port=spec["metrics_port"],
        exit_timeout_secs=spec["exit_timeout_s"],
        allow_gpu_metrics=False,
        log_verbose=0,
    )
    model_config = ModelConfig(
        batching=batching,
        max_batch_size=spec["max_batch"] if batching else 0,
        batcher=DynamicBatcher(
            max_queue_delay_microseconds=spec["max_queue_delay_us"],
            preferred_batch_size=spec["preferred"] or None,
        ),
    )

    def tensors(items: list[dict[str, Any]]) -> list[Any]:
        return [Tensor(name=t["name"], dtype=np.dtype(t["dtype"]).type, shape=tuple(t["dims"])) for t in items]

    triton = Triton(config=triton_config, workspace=spec["workspace"])
    try:
        triton.bind(
            model_name=spec["model_name"],
            infer_func=[make_infer(s, input_names, output_names, batching, spec.get("min_size")) for s in sessions],
            inputs=tensors(spec["inputs"]),
            outputs=tensors(spec["outputs"]),
            config=model_config,
            strict=False,
        )
        try:
            triton.run()
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            _status(status_fd, event="error", message=first_line(exc)[:500])
            return 1
        version = ""
        with contextlib.suppress(Exception):
            import tritonclient.http as httpclient

            client = httpclient.InferenceServerClient(f"{host}:{spec['http_port']}")
            version = client.get_server_metadata().get("version", "")
            client.close()
        _status(
            status_fd,
            event="ready",
            device=engine["device"],
            providers=engine["providers"],
            reason=engine["reason"],
            threads=engine["threads"],
            triton_version=version,
        )
        while triton.is_alive():
            time.sleep(0.25)
        code = None
        for _ in range(20):  # pytriton's own handler may still be reaping it
            code = _tritonserver_exit_code(triton)
            if code is not None:
                break
            time.sleep(0.05)
        _status(status_fd, event="tritonserver_exited", code=code)
        _status(status_fd, event="error", message="tritonserver exited on its own")
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        with contextlib.suppress(Exception):
            triton.stop()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(args[0]).read_text())
    status_fd = int(args[1])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)
    _become_subreaper()
    code = 0
    try:
        code = serve(spec, status_fd)
    except KeyboardInterrupt:
        logging.info("stop requested")
    except Exception as exc:  # reported to the parent in one line; the traceback stays in the log
        from exporter.errors import UserError, first_line

        logging.exception("server process failed")
        line = first_line(exc)
        _status(
            status_fd, event="error", message=line if isinstance(exc, UserError) else f"{type(exc).__name__}: {line}"
        )
        code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _end_descendants()
        _status(status_fd, event="stopped", code=code)
        with contextlib.suppress(OSError):
            os.close(status_fd)
    return code


if __name__ == "__main__":
    sys.exit(main())
