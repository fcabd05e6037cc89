"""Serve an ONNX graph with netron's web app.

netron's own ``serve()`` stores the served model on its request-handler *class*, which
all servers in a process share: start a second server and the first one shows the
second model. Each :class:`GraphServer` therefore gets its own handler subclass (netron's
handler and content provider, so the page is netron's as shipped), plus ``no-store``
caching so a browser never shows a stale graph from an earlier run on the same port.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
import threading
import time
import webbrowser
from pathlib import Path

from .errors import UserError

DEFAULT_PORT = 8080
PORT_SEARCH = 50


def _bind_error(host: str, port: int) -> OSError | None:
    """Why ``port`` cannot be served on, or None when it can.

    The probe binds the way the server will (``SO_REUSEADDR``, as ``http.server`` does), so a
    port whose last connection is still in TIME_WAIT after a previous view counts as free.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            return exc
    return None


def _port_problem(host: str, port: int, exc: OSError) -> UserError:
    if exc.errno in (errno.EACCES, errno.EPERM):
        return UserError(
            f"no permission to serve on port {port} (ports below 1024 need administrator rights): "
            "choose an --http-port of 1024 or more"
        )
    if exc.errno == errno.EADDRINUSE:
        return UserError(
            f"port {port} is busy on {host}: choose another --http-port, or omit it to use the next free one"
        )
    return UserError(f"cannot serve on {host}:{port}: {exc.strerror or exc}")


def validate_port(port: int) -> None:
    """UserError unless ``port`` is a TCP port number (0 asks the system for a free one)."""
    if not 0 <= port <= 65535:
        raise UserError(f"--http-port {port} is not a valid port (0-65535)")


def pick_port(host: str, port: int | None) -> int:
    """``port`` if given and usable (busy or forbidden is an error); else 8080 or the next free one."""
    if port is not None:
        validate_port(port)
        problem = _bind_error(host, port) if port else None
        if problem is not None:
            raise _port_problem(host, port, problem)
        return port
    for candidate in range(DEFAULT_PORT, DEFAULT_PORT + PORT_SEARCH):
        if _bind_error(host, candidate) is None:
            return candidate
    return 0


class GraphServer:
    """netron serving one model file on its own port, in a background thread."""

    def __init__(self, path: str | Path, host: str = "localhost", port: int | None = None) -> None:
        from netron import server as netron_server

        from .graph import load_onnx

        self.path = Path(path).resolve()
        if not load_onnx(self.path).graph.node:  # an empty or truncated file loads as an empty graph
            raise UserError(f"{path} holds no ONNX graph (no nodes): nothing to show")
        self.host = host
        content = netron_server._ContentProvider(None, str(self.path), str(self.path), self.path.name)

        class Handler(netron_server._HTTPRequestHandler):
            def end_headers(self) -> None:
                self.send_header("Cache-Control", "no-store")
                super().end_headers()

        Handler.content = content
        chosen = pick_port(host, port)
        server_class = type("Server", (netron_server._ThreadedHTTPServer,), {"allow_reuse_address": True})
        try:
            self._server = server_class((host, chosen), Handler)
        except OSError as exc:
            raise _port_problem(host, chosen, exc) from exc
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def start(self) -> "GraphServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "GraphServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def browser_available() -> bool:
    """A graphical browser can be opened: macOS/Windows, or a Linux desktop session."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def view(
    path: str | Path,
    port: int | None = None,
    open_browser: bool = True,
    announce=print,
    until: threading.Event | None = None,
) -> None:  # type: ignore[no-untyped-def]
    """Serve ``path`` until Ctrl-C (or until ``until`` is set), opening a browser when one exists."""
    with GraphServer(path, port=port) as server:
        announce(f"Serving {server.path.name} with netron at {server.url}  (Ctrl-C to stop)")
        if open_browser and browser_available():
            webbrowser.open(server.url)
        elif open_browser:
            announce("No graphical browser here: open the URL above yourself.")
        try:
            while not (until and until.is_set()):
                time.sleep(0.2)
        except KeyboardInterrupt:
            announce("Stopped.")
