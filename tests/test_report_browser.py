"""The report as people see it: report.html opened in headless Chromium (Debian's package), screenshotted, and
the map found on the screenshot."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image

from hubdelta.report.api import run_report
from tests.helpers import PlantedPool, Processes, pool_names, settings_for

WIDTH, HEIGHT = 1280, 2400


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "headless Chromium is needed: apt-get install chromium (scripts/setup.sh does it as root)"
    return found


def screenshot(processes: Processes, page: Path, out: Path) -> np.ndarray:
    """The page rendered by headless Chromium, offline, as an (H, W, 3) uint8 array."""
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--no-first-run", "--disable-extensions", "--disable-background-networking",
               f"--user-data-dir={out.parent / 'chromium-profile'}", f"--window-size={WIDTH},{HEIGHT}",
               f"--screenshot={out}", page.as_uri()]  # fmt: skip
    processes.run(command, check=True, capture_output=True, timeout=120)
    return np.asarray(Image.open(out).convert("RGB"))


def test_the_report_renders_in_chromium_with_its_map(tmp_path: Path, processes: Processes) -> None:
    settings = settings_for(tmp_path / "home", "http://127.0.0.1:9")
    pool = PlantedPool()
    names = pool_names("math", [1, 2, 3]) | pool_names("code", [1, 2, 3]) | pool_names("legal", [1, 2, 3, "fewshot"])
    pool.put(settings, names, datetime.now(UTC))
    report = run_report(settings, command="test")
    page = report.out_dir / "report.html"
    shot = screenshot(processes, page, tmp_path / "screenshot.png")
    assert shot.shape == (HEIGHT, WIDTH, 3)
    # The map: its points carry the clusters' colours (matplotlib's tab10 blue, orange, green), which nothing
    # else on the page has (text is dark, the page light, the "new" badges one green).
    pixels = shot.reshape(-1, 3).astype(int)
    spread = pixels.max(axis=1) - pixels.min(axis=1)  # chroma
    coloured = pixels[spread > 80]
    hues = {"blue": (coloured[:, 2] > coloured[:, 0] + 60) & (coloured[:, 2] > coloured[:, 1]),
            "orange": (coloured[:, 0] > 200) & (coloured[:, 1] > 90) & (coloured[:, 2] < 90),
            "green": (coloured[:, 1] > coloured[:, 0] + 40) & (coloured[:, 1] > coloured[:, 2] + 40)}  # fmt: skip
    counts = {name: int(mask.sum()) for name, mask in hues.items()}
    assert all(n > 50 for n in counts.values()), counts  # three clusters' points on the screenshot
    # and the page's text made it: not a blank or an error page
    assert (shot.mean(axis=2) < 100).sum() > 5000
