"""netron viewing and rendering: right model per server, busy ports, real browser drawings."""

from __future__ import annotations

import shutil
import socket
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import onnx
import pytest

from exporter.errors import UserError
from exporter.render import render_available, render_graph
from exporter.viewer import GraphServer, pick_port, view
from tests.helpers import assert_one_line, run_cli

NO_RENDER = render_available()
browser = pytest.mark.skipif(NO_RENDER is not None, reason=f"no browser: {NO_RENDER}")


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.read()


def test_two_models_one_after_the_other_each_show_their_own(exported) -> None:
    first, second = exported("lenet5").onnx_path, exported("resnet_cifar").onnx_path
    with GraphServer(first, port=0) as a:
        assert b'content="/data/lenet5.onnx"' in _get(a.url)
        with GraphServer(second, port=0) as b:
            # netron's own serve() would now show resnet_cifar on both servers.
            assert b'content="/data/resnet_cifar.onnx"' in _get(b.url)
            assert b'content="/data/lenet5.onnx"' in _get(a.url)
            assert _get(a.url + "data/lenet5.onnx") == first.read_bytes()
            assert _get(b.url + "data/resnet_cifar.onnx") == second.read_bytes()
    with GraphServer(second, port=0) as c:
        assert b'content="/data/resnet_cifar.onnx"' in _get(c.url)


def test_served_pages_are_not_cached(exported) -> None:
    with GraphServer(exported("lenet5").onnx_path, port=0) as s:
        with urllib.request.urlopen(s.url, timeout=10) as resp:
            assert resp.headers["Cache-Control"] == "no-store"


def test_busy_port_is_a_clear_error_and_default_moves_on() -> None:
    with socket.socket() as held:
        held.bind(("localhost", 0))
        held.listen()
        port = held.getsockname()[1]
        with pytest.raises(UserError, match=f"port {port} is busy"):
            pick_port("localhost", port)
    assert pick_port("localhost", None) > 0


def test_view_serves_until_stopped(exported) -> None:
    stop = threading.Event()
    lines: list[str] = []
    t = threading.Thread(
        target=view,
        args=(exported("lenet5").onnx_path,),
        kwargs={"port": 0, "open_browser": False, "announce": lines.append, "until": stop},
    )
    t.start()
    for _ in range(50):
        if lines:
            break
        time.sleep(0.1)
    url = lines[0].split(" at ")[1].split()[0]
    assert b"lenet5.onnx" in _get(url)
    stop.set()
    t.join(timeout=5)
    assert not t.is_alive()


def test_cli_view_busy_port_and_bad_file(tmp_path: Path, exported) -> None:
    with socket.socket() as held:
        held.bind(("localhost", 0))
        held.listen()
        port = held.getsockname()[1]
        proc = run_cli(
            "exporter", str(exported("lenet5").onnx_path), "--view", "--http-port", str(port), "--no-browser"
        )
    assert_one_line(proc, f"port {port} is busy", code=2)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx at all")
    proc = run_cli("exporter", str(bad), "--view", "--no-browser")
    assert_one_line(proc, "not a readable ONNX model", code=2)


@browser
@pytest.mark.browser
def test_browser_draws_every_node_and_op_type(exported, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    from exporter.render import CHROMIUM_ARGS, _accept_cookies_and_wait, drawn_graph, find_chromium

    path = exported("googlenet_cifar").onnx_path
    graph = onnx.load(str(path))
    with GraphServer(path, port=0) as server, sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=find_chromium(), headless=True, args=CHROMIUM_ARGS)
        page = b.new_page()
        page.goto(server.url)
        _accept_cookies_and_wait(page, 60_000)
        count, types, batch_labels = drawn_graph(page)
        b.close()
    assert count == len(graph.graph.node)
    assert types == {n.op_type for n in graph.graph.node}
    assert batch_labels > 0


@browser
@pytest.mark.browser
def test_render_writes_nontrivial_png_and_svg(exported, tmp_path: Path) -> None:
    from PIL import Image

    result = render_graph(exported("lenet5").onnx_path, tmp_path / "l.svg", tmp_path / "l.png")
    assert result.nodes_drawn == result.nodes_in_graph == 10
    assert result.batch_edge_labels >= 10
    img = np.asarray(Image.open(tmp_path / "l.png").convert("RGB"))
    assert img.shape[0] > 500 and img.shape[1] > 150
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 16, "image is (nearly) one colour"
    svg = (tmp_path / "l.svg").read_text()
    assert "batch×3×32×32" in svg and svg.count("graph-node") >= 10


@browser
@pytest.mark.browser
def test_cli_render_writes_beside_the_graph(tmp_path: Path) -> None:
    proc = run_cli("exporter", "lenet5", "--render", "--artifacts-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "lenet5" / "lenet5.png").is_file() and (tmp_path / "lenet5" / "lenet5.svg").is_file()
    assert "10 operator nodes drawn (graph has 10)" in proc.stdout


def test_render_without_browser_says_how_to_install(monkeypatch: pytest.MonkeyPatch, exported, tmp_path: Path) -> None:
    import exporter.render as render

    monkeypatch.setattr(render, "CHROMIUM_CANDIDATES", ("no-such-browser",))
    monkeypatch.delenv("CHROMIUM_PATH", raising=False)
    monkeypatch.setattr(render.shutil, "which", lambda name: None)
    with pytest.raises(UserError, match="apt-get install chromium"):
        render_graph(exported("lenet5").onnx_path, tmp_path / "x.svg", tmp_path / "x.png")
    assert not (tmp_path / "x.svg").exists()


def test_cli_render_without_browser_fails_before_exporting(tmp_path: Path) -> None:
    import os

    env_path = os.environ.get("PATH", "")
    proc = run_cli(
        "exporter",
        "lenet5",
        "--render",
        "--artifacts-dir",
        str(tmp_path),
        env={"PATH": "/nonexistent", "CHROMIUM_PATH": ""},
    )
    assert_one_line(proc, "apt-get install chromium", code=2)
    assert not (tmp_path / "lenet5").exists()
    assert os.environ.get("PATH", "") == env_path  # the test process's PATH is untouched


@browser
@pytest.mark.browser
def test_cli_render_of_any_onnx_file(exported, tmp_path: Path) -> None:
    src = tmp_path / "copy.onnx"
    shutil.copy(exported("resnet_cifar").onnx_path, src)
    proc = run_cli("exporter", str(src), "--render")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "copy.svg").is_file() and (tmp_path / "copy.png").is_file()


def test_port_in_time_wait_after_a_view_is_reused(exported) -> None:
    """Defect: a port in TIME_WAIT after a stopped view was reported as busy."""
    with GraphServer(exported("lenet5").onnx_path, port=0) as first:
        port = first.port
        with urllib.request.urlopen(first.url, timeout=10) as page:
            assert page.status == 200
    assert pick_port("localhost", port) == port
    with GraphServer(exported("lenet5").onnx_path, port=port) as again:
        with urllib.request.urlopen(again.url, timeout=10) as page:
            assert page.status == 200


def test_permission_denied_is_not_reported_as_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Defect: a privileged port (permission error) was reported as "busy"."""
    import errno

    import exporter.viewer as viewer

    monkeypatch.setattr(viewer, "_bind_error", lambda host, port: OSError(errno.EACCES, "Permission denied"))
    with pytest.raises(UserError, match="no permission to serve on port 80") as info:
        pick_port("localhost", 80)
    assert "busy" not in str(info.value)


def test_empty_onnx_is_refused_not_served(tmp_path: Path) -> None:
    """Defect: an empty .onnx was served as if it were a graph."""
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    proc = run_cli("exporter", str(empty), "--view", "--no-browser", timeout=60)
    assert_one_line(proc, "holds no ONNX graph", code=2)


def test_sigterm_to_view_says_the_viewer_stopped(exported) -> None:
    """Defect: SIGTERM to --view printed "interrupted: nothing partial was written" (nothing was being written)."""
    import os
    import signal
    import subprocess
    import sys

    from tests.helpers import ROOT

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "exporter", str(exported("lenet5").onnx_path), "--view", "--no-browser"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert "Serving lenet5.onnx with netron" in proc.stdout.readline()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 143
    assert err.strip() == "interrupted: the viewer stopped", err


def test_render_refuses_where_no_font_has_netrons_characters(
    monkeypatch: pytest.MonkeyPatch, exported, tmp_path: Path
) -> None:
    """Defect: weight labels (〈6×3×5×5〉) came out as boxes on a machine without such a font, and the
    render was reported as fine."""
    import exporter.render as render

    monkeypatch.setattr(render, "_fonts_covering", lambda char: [] if char in "\u3008\u3009" else ["DejaVu Sans"])
    assert render.missing_glyphs() == ["U+3008", "U+3009"]
    with pytest.raises(UserError, match=r"no installed font has U\+3008, U\+3009.*fonts-wqy-microhei"):
        render_graph(exported("lenet5").onnx_path, tmp_path / "x.svg", tmp_path / "x.png")
    assert not (tmp_path / "x.svg").exists()


@browser
@pytest.mark.browser
def test_cli_render_without_the_font_fails_before_exporting(tmp_path: Path) -> None:
    import os
    import stat

    fake = tmp_path / "bin" / "fc-list"  # fontconfig that knows no font for any character
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = {"PATH": f"{fake.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = run_cli("exporter", "lenet5", "--render", "--artifacts-dir", str(tmp_path / "arts"), env=env)
    assert_one_line(proc, "the picture would show boxes instead", code=2)
    assert not (tmp_path / "arts" / "lenet5").exists()


@browser
@pytest.mark.browser
def test_this_machine_has_a_font_for_every_netron_character() -> None:
    from exporter.render import missing_glyphs

    assert missing_glyphs() == [], ".ci/run installs fonts-wqy-microhei for these"
