"""What the browser tests (tests/test_web_browser.py) share: Chromium's flags, a tab that records what should never
happen, and readings of the served index's map."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np

from hubdelta.index.door import open_reader
from hubdelta.index.layouts import Layout
from tests.helpers import REPO_ROOT, REPORT_SPACE, settings_for

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT = {"width": 1280, "height": 900}
START = "hubdelta-pool/smollm2-lora-math-1"
MAP_GL_JS = REPO_ROOT / "hubdelta" / "web" / "static" / "map-gl.js"


def palette() -> list[tuple[int, int, int]]:
    """The cluster colours, read from map-gl.js (one source of truth)."""
    block = re.search(r"const PALETTE = \[(.*?)\];", MAP_GL_JS.read_text(), re.S)
    assert block, "map-gl.js has no PALETTE"
    return [(int(r), int(g), int(b)) for r, g, b in re.findall(r"\[(\d+), (\d+), (\d+)\]", block.group(1))]


class Tab:
    """A page that records what should never happen: script errors, dialogs, CSP refusals."""

    def __init__(self, browser: Any, url: str, *, javascript: bool = True) -> None:
        self.url = url
        self.context = browser.new_context(viewport=VIEWPORT, java_script_enabled=javascript)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        self.page.on("console", self._console)
        self.page.on("dialog", self._dialog)

    def _console(self, message: Any) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text}")

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def goto(self, path: str) -> Any:
        return self.page.goto(self.url + path)

    def map_ready(self) -> None:
        self.page.wait_for_selector("#map[data-ready='1']", timeout=20_000)

    def screen_of(self, i: int) -> tuple[float, float]:
        x, y = self.page.evaluate("i => window.hubdeltaMap.screenOf(i)", i)
        return float(x), float(y)

    def hover_point(self, i: int) -> str:
        """Move the pointer onto point ``i``; the repo id the tooltip then shows."""
        self.page.mouse.move(*self.screen_of(i))
        tip = self.page.wait_for_selector(f"#map-tooltip[data-i='{i}']:not([data-repo=''])", timeout=10_000)
        assert tip is not None and tip.is_visible()
        return str(tip.get_attribute("data-repo"))

    def close(self) -> None:
        self.context.close()


def stored_layout(home: Path) -> Layout:
    with open_reader(settings_for(home, "http://127.0.0.1:9")) as index:
        layout = index.layouts.get(REPORT_SPACE)
    assert layout is not None
    return layout


def cluster_name(layout: Layout, i: int) -> str:
    c = int(layout.cluster[i])
    return layout.cluster_names[c] if c >= 0 else "no cluster"


def lone_points(tab: Tab, n: int, apart: float = 3.0) -> list[int]:
    """Points on the canvas with no other point within ``apart`` CSS px: the pointer right on one (mouse
    positions may be rounded to whole pixels) is nearest to it, so hover must pick it."""
    xy = np.array([tab.screen_of(i) for i in range(n)])
    box = tab.page.locator("#map").bounding_box()
    assert box is not None
    inside = ((xy[:, 0] > box["x"] + 10) & (xy[:, 0] < box["x"] + box["width"] - 10)
              & (xy[:, 1] > box["y"] + 10) & (xy[:, 1] < box["y"] + box["height"] - 10))  # fmt: skip
    d = np.linalg.norm(xy[:, None, :] - xy[None, :, :], axis=2) + np.eye(n) * 1e9
    return [i for i in range(n) if inside[i] and d[i].min() > apart]


def wait_until(check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the map did not change"
        time.sleep(0.05)


# Every draw of points recorded (an init script: it runs before the page's own and is not subject to its CSP).
COUNT_DRAWS = """for (const C of [window.WebGL2RenderingContext, window.WebGLRenderingContext]) {
  const draw = C.prototype.drawArrays;
  C.prototype.drawArrays = function (mode, first, count) {
    if (mode === this.POINTS) window.pointsDrawn = count;
    return draw.call(this, mode, first, count);
  };
}"""
# A renderer fault: only the first half of each float column reaches the GPU.
HALF_UPLOADED = """for (const C of [window.WebGL2RenderingContext, window.WebGLRenderingContext]) {
  const upload = C.prototype.bufferData;
  C.prototype.bufferData = function (target, data, usage) {
    const half = data instanceof Float32Array ? data.subarray(0, data.length >> 1) : data;
    return upload.call(this, target, half, usage);
  };
}"""


def version_of(url: str) -> str | None:
    return parse_qs(urlsplit(url).query).get("v", [None])[0]
