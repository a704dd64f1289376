"""The nightly report links to the live pages when ``[serve] base_url`` is set, and to nothing when it is not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from hubdelta.report.api import run_report
from tests.helpers import REPORT_SPACE, PlantedPool, pool_names, settings_for


def test_models_and_clusters_link_to_the_live_pages(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "hubdelta.toml").write_text('[serve]\nbase_url = "https://hd.example/"\n')
    settings = settings_for(home, "http://127.0.0.1:9")
    assert settings.serve.base_url == "https://hd.example/"
    names = pool_names("math", [1, 2, 3]) | pool_names("code", [1, 2, 3]) | {"odd/it's <b>": None}
    PlantedPool().put(settings, names, datetime.now(UTC) - timedelta(hours=1))
    report = run_report(settings, command="test")
    assert report.out_dir is not None
    page = (report.out_dir / "report.html").read_text()
    assert f'<a href="https://hd.example/reports/{report.report_id}">Live pages</a>' in page
    assert ('<a href="https://hd.example/models/hubdelta-pool/smollm2-lora-math-1">'
            "<code>hubdelta-pool/smollm2-lora-math-1</code></a>") in page  # fmt: skip
    assert f'<a href="https://hd.example/spaces/{REPORT_SPACE}?cluster=math"><b>math</b></a>' in page
    assert "https://hd.example/models/odd/it%27s%20%3Cb%3E" in page and '<b>"' not in page


def test_without_a_base_url_nothing_links(tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "home", "http://127.0.0.1:9")
    PlantedPool().put(settings, pool_names("math", [1, 2, 3]) | pool_names("code", [1, 2, 3]), datetime.now(UTC))
    report = run_report(settings, command="test")
    assert report.out_dir is not None and "<a href" not in (report.out_dir / "report.html").read_text()
