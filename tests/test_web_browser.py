"""``hubdelta serve``'s pages in headless Chromium (Debian's package, driven by Playwright) over a real index and a
real server process: search -> model page -> a neighbour -> its map; the map draws every point of the space, hover
names the right model, zoom and pan move the view, search and links highlight; a screenshot carries the clusters'
colours; a card that holds HTML stays text. The map's questions name the layout drawn (a stale one is reloaded),
its point count is read back from the draw, focus finds the exact model; only the report the map shows links its
clusters to it; /api/docs is a page of ours under the CSP.

WebGL: headless Chromium renders it in software (ANGLE on SwiftShader); ``--enable-unsafe-swiftshader`` keeps that
allowed (Playwright passes it too), ``--use-angle=swiftshader`` picks it where a GPU exists. Waits are CSS
selectors, not ``wait_for_function``: the page's CSP forbids eval, which Playwright's predicates use.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import sync_playwright

from hubdelta.index.door import open_reader
from hubdelta.query.api import similar
from tests.browser_helpers import (
    CHROMIUM_ARGS,
    COUNT_DRAWS,
    HALF_UPLOADED,
    START,
    Tab,
    cluster_name,
    lone_points,
    palette,
    stored_layout,
    version_of,
    wait_until,
)
from tests.helpers import REPORT_SPACE, settings_for
from tests.web_helpers import XSS_CARD, XSS_REPO, Server

Served = tuple[Server, Path, dict[str, str | None]]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    assert Path(chromium).exists(), "headless Chromium is needed: apt-get install chromium (scripts/setup.sh)"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def tab(browser: Any, served: Served) -> Iterator[Tab]:
    opened = Tab(browser, served[0].url)
    yield opened
    opened.close()
    assert not opened.dialogs, opened.dialogs


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


# ---- the map's data: versions, counts, focus ---------------------------------------------------------------------

QUESTION = re.compile(r"/api/spaces/[^/]+/(points|find|position)\?")


def test_map_questions_name_the_layout_drawn_and_a_stale_one_is_reloaded(tab: Tab, served: Served) -> None:
    _, home, _ = served
    layout = stored_layout(home)
    page = tab.page
    asked: list[str] = []
    answered: list[int] = []
    page.on("request", lambda r: asked.append(r.url))
    page.on("response", lambda r: answered.append(r.status) if "/points?" in r.url else None)

    def stale_once(route: Any) -> None:  # the first hover asks as if it had drawn an older layout: a real 409
        if asked_stale or "/points?" not in route.request.url:
            route.fallback()
            return
        asked_stale.append(route.request.url)
        route.continue_(url=route.request.url.replace(f"v={layout.version}", "v=older"))

    asked_stale: list[str] = []

    page.route(QUESTION, stale_once)
    tab.goto(f"/spaces/{REPORT_SPACE}")
    tab.map_ready()
    assert [version_of(u) for u in asked if u.split("?")[0].endswith("/layout.bin")] == [None]
    first, second = lone_points(tab, layout.n)[:2]
    assert tab.hover_point(first) == layout.repo_ids[first]  # refused, the layout loaded again, asked again
    assert answered[0] == 409 and 200 in answered[1:], answered
    assert len([u for u in asked if u.split("?")[0].endswith("/layout.bin")]) == 2  # the reload
    assert tab.hover_point(second) == layout.repo_ids[second]
    page.fill("#map-search", "chemistry")
    page.wait_for_selector("#map-count:text-is('4 matches')")
    questions = [u for u in asked if QUESTION.search(u)]
    assert any("/find?" in u for u in questions)
    assert len(asked_stale) == 1 and {version_of(u) for u in questions} == {layout.version}, questions
    assert page.get_attribute("#map", "data-points") == str(layout.n)
    assert not [e for e in tab.errors if "409" not in e], tab.errors  # the console logs the refusal itself


@pytest.mark.parametrize("fault", ["", HALF_UPLOADED])
def test_the_point_count_is_read_back_from_the_draw(tab: Tab, served: Served, fault: str) -> None:
    layout = stored_layout(served[1])
    tab.page.add_init_script(COUNT_DRAWS + fault)
    tab.goto(f"/spaces/{REPORT_SPACE}")
    tab.map_ready()
    drawn = tab.page.evaluate("window.pointsDrawn")
    want = layout.n // 2 if fault else layout.n
    assert tab.page.get_attribute("#map", "data-points") == str(drawn) == str(want)
    assert not tab.errors, tab.errors


def test_focus_lights_that_very_model(tab: Tab, served: Served) -> None:
    layout = stored_layout(served[1])
    page = tab.page
    # At Hub scale an id's first 100 substring matches need not hold it: /find answers as if so, and focus must
    # not depend on it.
    others = [i for i, r in enumerate(layout.repo_ids) if r != START]
    page.route(re.compile(r"/find\?"), lambda route: route.fulfill(json={"indices": others}))
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url))
    tab.goto(f"/spaces/{REPORT_SPACE}?focus={START}")
    tab.map_ready()
    at = layout.repo_ids.index(START)
    assert page.evaluate("window.hubdeltaMap.litPoints()") == [at]
    assert page.inner_text("#map-count") == f"{START} is highlighted"
    assert tab.hover_point(at) == START
    assert [version_of(u) for u in asked if "/position?" in u] == [layout.version]
    tab.goto(f"/spaces/{REPORT_SPACE}?focus=x/waiting")  # queued, not embedded: not on the map
    tab.map_ready()
    assert page.inner_text("#map-count") == "x/waiting is not on this map"
    assert page.evaluate("window.hubdeltaMap.lit()") == 0
    assert not [e for e in tab.errors if "404" not in e], tab.errors  # the console logs the 404 itself


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


def test_a_report_page_opens_its_own_files(tab: Tab, served: Served) -> None:
    tab.goto("/reports")
    tab.page.click("table.data a >> nth=0")
    files = tab.page.locator("a[href*='/files/']")
    assert {"report.md", "report.html"} <= set(files.all_inner_texts())
    href = tab.page.locator("a[href$='/files/report.html']").get_attribute("href")
    response = tab.goto(str(href))
    assert response is not None and response.status == 200
    assert "script-src" not in response.headers["content-security-policy"]  # its inline style only: no script
    assert tab.page.locator("img").count() >= 1  # its maps
    response = tab.goto(str(href).replace("report.html", "map-gone.png"))
    assert response is not None and response.status == 404
    assert "is no longer on the server" in tab.page.inner_text(".error-box .message")
    assert str(served[1]) not in tab.page.content()  # where reports live is the server's business
    tab.errors.clear()  # the 404 itself, logged by the console


def test_only_the_report_the_map_shows_links_its_clusters_to_it(tab: Tab, served: Served) -> None:
    layout = stored_layout(served[1])
    with open_reader(settings_for(served[1], "http://127.0.0.1:9")) as index:
        reports = [r["report_id"] for r in index.reports.heads()]
    assert len(reports) == 2 and layout.report_id == reports[0]  # the map is coloured by the newest
    page = tab.page
    for report_id in reports:
        tab.goto(f"/reports/{report_id}")
        section = page.locator("section", has=page.locator(f"h2 code:text-is('{REPORT_SPACE}')"))
        links, names = section.locator("a.cluster-link"), section.locator(".cluster-name")
        if report_id == layout.report_id:
            assert links.count() > 0 and names.count() == 0 and section.locator(".map-note").count() == 0
        else:
            assert links.count() == 0 and names.count() > 0
            assert "the map shows the latest report's clusters" in section.locator(".map-note").inner_text()


def test_api_docs_is_a_page_under_the_csp(tab: Tab, served: Served) -> None:
    response = tab.goto("/api/docs")
    assert response is not None and response.status == 200
    csp = response.headers["content-security-policy"]
    assert "unsafe-inline" not in csp and "script-src 'self'" in csp
    page = tab.page
    route = page.locator("section.api-route[data-method='GET'][data-path='/api/similar']")
    rows = {r.get_attribute("data-param"): r.locator("td").all_inner_texts() for r in route.locator("tr").all()[1:]}
    want = {"repo", "space", "k", "relation", "license", "tag", "min_downloads", "min_likes", "created_after"}
    assert want <= set(rows), rows
    assert rows["repo"][1:4] == ["query", "string\nat most 200 chars", "yes"]
    assert rows["k"][2:] == ["integer\n≥ 1, ≤ 100", "no", "10", "how many neighbours"]
    assert "merge" in rows["relation"][2] and rows["license"][5] == "repeatable: any of these licenses"
    posted = page.locator("section.api-route[data-method='POST'][data-path='/api/similar']")
    assert posted.locator(".body-schema").inner_text() == "VectorQuery"
    openapi = json.loads(served[0].get("/api/openapi.json")[2])
    listed = {(s.get_attribute("data-method"), s.get_attribute("data-path")) for s in page.locator("section").all()}
    assert listed == {(m.upper(), p) for p, ops in openapi["paths"].items() for m in ops}
    assert page.locator("a[href='/api/openapi.json']").count() >= 1
    assert page.locator("script:not([src]), style, [style]").count() == 0
    assert not tab.errors, tab.errors


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
