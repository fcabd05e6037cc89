"""Pictures of a graph as netron draws it: headless Chromium driven by playwright.

The page is netron's own (served by :class:`exporter.viewer.GraphServer`); its cookie
prompt is accepted, the drawing awaited, the drawn operator nodes counted against the
ONNX graph, and netron's own "Export as SVG/PNG" (its menu shortcuts) is captured as a
download, exactly what a person would save from the page.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from .errors import ExportFailed, UserError
from .files import atomic_outputs
from .viewer import GraphServer

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
INSTALL_HINT = (
    "install them with: pip install playwright && sudo apt-get install chromium "
    "(or set CHROMIUM_PATH to a Chromium/Chrome binary)"
)


#: Characters netron draws in its labels beyond ASCII (view.js): a weight's shape as 〈64×3×7×7〉
#: (U+3008, U+3009, U+00D7) and a cut value with an ellipsis (U+2026). Without a font holding them
#: Chromium draws boxes, and the picture is broken whatever else is right.
NETRON_GLYPHS = {"\u3008": "U+3008", "\u3009": "U+3009", "\u00d7": "U+00D7", "\u2026": "U+2026"}
FONT_HINT = "install a font that has them: sudo apt-get install fonts-wqy-microhei"


class RenderUnavailable(UserError):
    """playwright or a Chromium binary is missing."""


@dataclass
class RenderResult:
    svg_path: Path
    png_path: Path
    nodes_drawn: int
    nodes_in_graph: int
    op_types_drawn: set[str] = field(default_factory=set)
    batch_edge_labels: int = 0


def find_chromium() -> str:
    """Path of a Chromium binary: $CHROMIUM_PATH, else the usual names on PATH."""
    env = os.environ.get("CHROMIUM_PATH")
    if env and Path(env).is_file():
        return env
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    raise RenderUnavailable(f"--render needs Chromium, and none was found; {INSTALL_HINT}")


def _fonts_covering(char: str) -> list[str] | None:
    """The font families fontconfig (what Chromium uses on Linux) has for ``char``; None where there is
    no fontconfig to ask (macOS and Windows ship fonts with these characters)."""
    import subprocess

    fc_list = shutil.which("fc-list")
    if fc_list is None:
        return None
    try:
        listed = subprocess.run(
            [fc_list, f":charset={ord(char):x}", "family"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return [line for line in listed.stdout.splitlines() if line.strip()]


def missing_glyphs() -> list[str]:
    """The characters of netron's labels (:data:`NETRON_GLYPHS`) that no installed font has, as U+XXXX."""
    return [code for char, code in NETRON_GLYPHS.items() if _fonts_covering(char) == []]


def render_available() -> str | None:
    """None when rendering can work here (and draw every character of netron's labels), else why not."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return f"playwright is not installed; {INSTALL_HINT}"
    try:
        find_chromium()
    except RenderUnavailable as exc:
        return str(exc)
    missing = missing_glyphs()
    if missing:
        return (
            f"no installed font has {', '.join(missing)}, which netron draws in weight labels (〈64×3×7×7〉): "
            f"the picture would show boxes instead; {FONT_HINT}"
        )
    return None


def _accept_cookies_and_wait(page, timeout_ms: int) -> None:  # type: ignore[no-untyped-def]
    """netron asks once for cookie consent before drawing; accept it, then wait for nodes."""
    button = page.locator("#message-button")
    try:
        button.wait_for(state="visible", timeout=timeout_ms // 2)
        if button.inner_text().strip().lower() == "accept":
            button.click()
    except Exception:  # no prompt (consent cookie already set): nothing to accept
        pass
    page.wait_for_selector("#canvas .graph-node", timeout=timeout_ms)
    # The layout is drawn in one pass; wait until the node count stops changing.
    last, stable = -1, 0
    while stable < 3:
        count = page.locator("#canvas .graph-node").count()
        stable = stable + 1 if count == last else 0
        last = count
        page.wait_for_timeout(150)


def drawn_graph(page) -> tuple[int, set[str], int]:  # type: ignore[no-untyped-def]
    """(operator nodes drawn, their op types, edge labels showing the symbolic batch).

    netron disables ``window.eval``, so this reads the page through locators only.
    """
    nodes = page.locator("#canvas .graph-node")
    types = page.locator("#canvas .graph-node .node-item-type text")
    labels = page.locator("#canvas .edge-label")
    op_types = {(types.nth(i).text_content() or "").strip() for i in range(types.count())}
    batch = sum(1 for i in range(labels.count()) if (labels.nth(i).text_content() or "").startswith("batch"))
    return nodes.count(), {t for t in op_types if t}, batch


# netron's menu accelerators: File > Export as SVG / Export as PNG.
_EXPORT_KEYS = {"svg": "Control+Alt+KeyE", "png": "Control+Shift+KeyE"}


def _export(page, kind: str, timeout_ms: int) -> bytes:  # type: ignore[no-untyped-def]
    with page.expect_download(timeout=timeout_ms) as download:
        page.keyboard.press(_EXPORT_KEYS[kind])
    return Path(download.value.path()).read_bytes()


def render_graph(
    onnx_path: str | Path,
    svg_path: str | Path | None = None,
    png_path: str | Path | None = None,
    timeout_s: float = 120.0,
) -> RenderResult:
    """Render ``onnx_path`` to SVG and PNG beside it (or where given); nothing is written on failure."""
    src = Path(onnx_path)
    reason = render_available()
    if reason:
        raise RenderUnavailable(f"--render: {reason}")
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    graph = onnx.load(str(src), load_external_data=False)
    expected_nodes = len(graph.graph.node)
    expected_types = {n.op_type for n in graph.graph.node}
    svg_out = Path(svg_path) if svg_path else src.with_suffix(".svg")
    png_out = Path(png_path) if png_path else src.with_suffix(".png")
    timeout_ms = int(timeout_s * 1000)
    try:
        with GraphServer(src, port=0) as server, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=find_chromium(), headless=True, args=CHROMIUM_ARGS)
            try:
                page = browser.new_context(accept_downloads=True, viewport={"width": 1400, "height": 1000}).new_page()
                page.goto(server.url, timeout=timeout_ms)
                _accept_cookies_and_wait(page, timeout_ms)
                count, types, batch_labels = drawn_graph(page)
                if count != expected_nodes:
                    raise ExportFailed(f"netron drew {count} operator nodes, the ONNX graph has {expected_nodes}")
                missing = expected_types - types
                if missing:
                    raise ExportFailed(f"netron's drawing lacks op types: {', '.join(sorted(missing))}")
                svg = _export(page, "svg", timeout_ms)
                png = _export(page, "png", timeout_ms)
            finally:
                browser.close()
    except PlaywrightError as exc:
        raise ExportFailed(f"rendering {src.name} in Chromium failed: {str(exc).strip().splitlines()[0]}") from exc
    if not png.startswith(b"\x89PNG") or b"<svg" not in svg[:2000]:
        raise ExportFailed("netron's export did not produce a PNG and an SVG")
    with atomic_outputs(svg_out.parent) as writer:
        writer.write_bytes(svg_out, svg)
        writer.write_bytes(png_out, png)
    return RenderResult(svg_out, png_out, count, expected_nodes, types, batch_labels)
