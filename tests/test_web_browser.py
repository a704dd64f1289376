"""``hubdelta serve``'s pages in headless Chromium (Debian's package, driven by Playwright) over a real index and a
real server process: search -> model page -> a neighbour -> its map; the map draws every point of the space, hover
names the right model, zoom and pan move the view, search and links highlight; a screenshot carries the clusters'
colours; a card that holds HTML stays text.

WebGL: headless Chromium renders it in software (ANGLE on SwiftShader); ``--enable-unsafe-swiftshader`` keeps that
allowed (Playwright passes it too), ``--use-angle=swiftshader`` picks it where a GPU exists. Waits are CSS
selectors, not ``wait_for_function``: the page's CSP forbids eval, which Playwright's predicates use.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import sync_playwright

from hubdelta.index.door import open_reader
from hubdelta.index.layouts import Layout
from hubdelta.query.api import similar
from tests.helpers import REPO_ROOT, REPORT_SPACE, settings_for
from tests.web_helpers import XSS_CARD, XSS_REPO, Server

Served = tuple[Server, Path, dict[str, str | None]]
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


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    assert Path(chromium).exists(), "headless Chromium is needed: apt-get install chromium (scripts/setup.sh)"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


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


@pytest.fixture
def tab(browser: Any, served: Served) -> Iterator[Tab]:
    opened = Tab(browser, served[0].url)
    yield opened
    opened.close()
    assert not opened.dialogs, opened.dialogs


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


# ---- the journey ------------------------------------------------------------------------------------------------


def test_search_model_neighbour_map_hover_and_click(tab: Tab, served: Served) -> None:
    _, home, names = served
    page = tab.page
    tab.goto("/")
    page.fill("#q", "lora-math-1")  # completion through /api/complete
    page.click(f"#suggestions a:text-is('{START}')")
    page.wait_for_url(f"**/models/{START}")
    assert page.inner_text("h1") == START
    settings = settings_for(home, "http://127.0.0.1:9")
    want = [n.repo_id for n in similar(settings, START, k=10).neighbors]
    shown = page.locator("a.neighbour").all_inner_texts()
    assert shown == want and names[want[0]] == "math"
    layout = stored_layout(home)
    cluster = page.locator("dl.meta a[href*='?cluster=']")  # its cluster, as its map colours it
    assert cluster.inner_text() == cluster_name(layout, layout.repo_ids.index(START))

    neighbour = want[0]
    page.click(f"a.neighbour:text-is('{neighbour}')")
    page.wait_for_url(f"**/models/{neighbour}")
    assert page.inner_text("h1") == neighbour
    page.click("a.map-link")
    page.wait_for_url(re.compile(rf"/spaces/{REPORT_SPACE}\?focus="))
    tab.map_ready()
    assert page.get_attribute("#map", "data-points") == str(layout.n) == str(len(names))
    assert page.evaluate("window.hubdeltaMap.lit()") == 1  # the focused model, and only it
    focused = layout.repo_ids.index(neighbour)
    assert tab.hover_point(focused) == neighbour
    assert cluster_name(layout, focused) in page.inner_text("#map-tooltip")

    page.mouse.click(*tab.screen_of(focused))  # a click opens the model
    page.wait_for_url(f"**/models/{neighbour}")
    assert not tab.errors, tab.errors


def test_hover_names_the_point_under_the_pointer(tab: Tab, served: Served) -> None:
    _, home, _ = served
    layout = stored_layout(home)
    tab.goto(f"/spaces/{REPORT_SPACE}")
    tab.map_ready()
    alone = lone_points(tab, layout.n)
    assert len(alone) >= 3, "the planted layout should have separated points"
    for i in alone[:4]:
        assert tab.hover_point(i) == layout.repo_ids[i]
        text = tab.page.inner_text("#map-tooltip")
        assert layout.repo_ids[i] in text and cluster_name(layout, i) in text
        assert tab.page.locator("#map-tooltip .tip-new").count() == int(layout.new[i])
    tab.page.mouse.move(2, 2)  # off the map: the tooltip goes
    tab.page.wait_for_selector("#map-tooltip", state="hidden")
    assert not tab.errors, tab.errors


def test_screenshot_shows_the_cluster_colours_and_the_new_rings(tab: Tab, served: Served, tmp_path: Path) -> None:
    _, home, _ = served
    layout = stored_layout(home)
    tab.goto(f"/spaces/{REPORT_SPACE}")
    tab.map_ready()
    shot = tmp_path / "map.png"
    tab.page.locator("#map").screenshot(path=str(shot))
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3).astype(int)
    colours = palette()

    def count(rgb: tuple[int, int, int]) -> int:
        return int((np.abs(pixels - np.array(rgb)).max(axis=1) <= 6).sum())

    present = {c: count(colours[c]) for c in sorted(set(layout.cluster.tolist()) - {-1})}
    assert len(present) >= 2 and all(n >= 20 for n in present.values()), present
    unused = [count(colours[c]) for c in range(len(colours)) if c not in present]
    assert max(unused, default=0) < 5  # no colour of a cluster the layout does not have
    assert layout.new.any() and count((31, 36, 51)) > 0  # new models' dark rings (map-gl.js's FRAGMENT)


def test_wheel_zooms_around_the_pointer_and_drag_pans(tab: Tab, served: Served) -> None:
    _, home, _ = served
    tab.goto(f"/spaces/{REPORT_SPACE}")
    tab.map_ready()
    page = tab.page
    a, b = lone_points(tab, stored_layout(home).n)[:2]
    ax, ay = tab.screen_of(a)
    far = np.hypot(*np.subtract(tab.screen_of(a), tab.screen_of(b)))
    page.mouse.move(ax, ay)
    page.mouse.wheel(0, -400)
    wait_until(lambda: np.hypot(*np.subtract(tab.screen_of(a), tab.screen_of(b))) > far * 1.5)
    assert np.allclose(tab.screen_of(a), (ax, ay), atol=1.0)  # the point under the pointer stayed under it
    x0, y0 = tab.screen_of(a)
    page.mouse.move(x0 + 3, y0 + 40)
    page.mouse.down()
    page.mouse.move(x0 + 83, y0 + 10, steps=5)
    page.mouse.up()
    assert np.allclose(tab.screen_of(a), (x0 + 80, y0 - 30), atol=1.0)
    assert page.url.endswith(f"/spaces/{REPORT_SPACE}")  # a drag is not a click


def wait_until(check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the map did not change"
        time.sleep(0.05)


def test_search_box_and_cluster_links_highlight(tab: Tab, served: Served) -> None:
    _, home, _ = served
    layout = stored_layout(home)
    page = tab.page
    tab.goto(f"/spaces/{REPORT_SPACE}")
    tab.map_ready()
    page.fill("#map-search", "chemistry")
    chemistry = sum(1 for r in layout.repo_ids if "chemistry" in r)
    page.wait_for_selector(f"#map-count:text-is('{chemistry} matches')")
    assert page.evaluate("window.hubdeltaMap.lit()") == chemistry == 4
    page.fill("#map-search", "")
    page.wait_for_selector("#map-count:empty", state="attached")
    assert page.evaluate("window.hubdeltaMap.lit()") == 0

    tab.goto("/reports")
    page.click("table.data a >> nth=0")  # the newest report
    link = page.locator("a.cluster-link").first
    name = link.inner_text()
    link.click()
    tab.map_ready()
    members = int((layout.cluster == layout.cluster_names.index(name)).sum())
    assert members > 0 and page.evaluate("window.hubdeltaMap.lit()") == members
    assert page.get_attribute("#map-legend button[aria-pressed='true']", "data-cluster") is not None
    assert not tab.errors, tab.errors


def test_neighbour_filters_are_a_form(tab: Tab, served: Served) -> None:
    _, home, _ = served
    page = tab.page
    tab.goto(f"/models/{START}")
    page.fill("input[name='license']", "mit")
    page.click("form.filters button")
    page.wait_for_url("**license=mit**")
    assert page.locator("a.neighbour").all_inner_texts() == [XSS_REPO]  # the one MIT-licensed model
    assert page.input_value("input[name='license']") == "mit"
    page.select_option("select[name='relation']", "merge")
    page.fill("input[name='license']", "")
    page.click("form.filters button")
    page.wait_for_url("**relation=merge**")
    assert page.locator("a.neighbour").count() == 0 and "No model matches" in page.inner_text("main")
    settings = settings_for(home, "http://127.0.0.1:9")
    assert similar(settings, START, relation="merge").neighbors == []


def test_search_works_without_javascript(browser: Any, served: Served) -> None:
    _, _, names = served
    tab = Tab(browser, served[0].url, javascript=False)
    try:
        tab.goto("/")
        tab.page.fill("#q", "LEGAL")  # case-insensitive
        tab.page.click("form.search button")
        tab.page.wait_for_url("**/search?q=LEGAL")
        found = tab.page.locator("ul.results a").all_inner_texts()
        assert sorted(found) == sorted(r for r, d in names.items() if d == "legal")
        tab.goto(f"/search?q={START}")  # an exact id goes straight to its page
        assert tab.page.url.endswith(f"/models/{START}") and tab.page.inner_text("h1") == START
    finally:
        tab.close()


def test_a_report_page_opens_its_own_files(tab: Tab) -> None:
    tab.goto("/reports")
    tab.page.click("table.data a >> nth=0")
    files = tab.page.locator("a[href*='/files/']")
    assert {"report.md", "report.html"} <= set(files.all_inner_texts())
    href = tab.page.locator("a[href$='/files/report.html']").get_attribute("href")
    response = tab.goto(str(href))
    assert response is not None and response.status == 200
    assert "script-src" not in response.headers["content-security-policy"]  # its inline style only: no script
    assert tab.page.locator("img").count() >= 1  # its maps


# ---- untrusted strings, errors -----------------------------------------------------------------------------------


def test_a_card_holding_html_is_shown_as_text(tab: Tab, served: Served) -> None:
    page = tab.page
    response = tab.goto(f"/models/{XSS_REPO}")
    assert response is not None and response.status == 200
    assert page.inner_text("p.card") == XSS_CARD  # the markup, as text
    assert page.locator("main img").count() == 0
    sources = page.eval_on_selector_all("script", "els => els.map(e => e.getAttribute('src'))")
    assert all(s and s.startswith("/static/") for s in sources), sources  # no script but the page's own
    # The card in a neighbour table (another model's page) and in the tooltip of the map: still text.
    tab.goto(f"/models/{START}")
    cards = page.locator("table.neighbours div.small").all_inner_texts()
    assert any("<script>" in c for c in cards)
    assert page.locator("main img").count() == 0
    page.wait_for_timeout(300)  # anything an injected element would do has had its chance
    assert not tab.dialogs and not tab.errors, (tab.dialogs, tab.errors)


def test_unknown_things_get_a_page_with_the_fix(tab: Tab) -> None:
    for path, status, needle in [
        ("/models/nobody/nothing", 404, "not in the index"),
        (f"/models/{START}?relation=lora", 400, "unknown relation"),
        ("/spaces/no-such-space", 404, "no such space"),
        ("/reports/no-such-report", 404, "no such report"),
    ]:
        response = tab.goto(path)
        assert response is not None and response.status == status, path
        assert needle in tab.page.inner_text(".error-box .message") and tab.page.inner_text(".error-box .fix")
    tab.errors.clear()  # the 4xx answers themselves are logged by the console
