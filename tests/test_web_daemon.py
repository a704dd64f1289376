"""The daemon serves the pages too (``[serve] enabled``): a child it starts, restarts and stops with itself."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import Processes, free_port, start_daemon, stop_daemon, wait_for
from tests.web_helpers import build_web_index, request


def test_the_daemon_serves_and_stops_its_web_child(processes: Processes, tmp_path: Path) -> None:
    home = tmp_path / "home"
    build_web_index(home)
    port = free_port()
    (home / "hubdelta.toml").write_text(f"[serve]\nenabled = true\nport = {port}\n[daemon]\ncrawl_every_s = 3600\n")
    daemon = start_daemon(processes, home, "http://127.0.0.1:9")
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return request(url + "/api/spaces")[0] == 200
        except OSError:
            return False

    wait_for("the daemon's web child answers", answers, timeout=60, proc=daemon)
    spaces = json.loads(request(url + "/api/spaces")[2])["spaces"]
    assert spaces and spaces[0]["vectors"] > 0
    log = stop_daemon(daemon)
    assert "serve.child_started" in log and daemon.returncode == 0
    assert not answers(), "the web child outlived the daemon"


def test_a_bad_serve_setting_is_logged_once_and_the_daemon_goes_on(processes: Processes, tmp_path: Path) -> None:
    home = tmp_path / "home"
    build_web_index(home)
    (home / "hubdelta.toml").write_text('[serve]\nenabled = true\nhost = "0.0.0.0"\n[daemon]\ncrawl_every_s = 3600\n')
    daemon = start_daemon(processes, home, "http://127.0.0.1:9")
    log_file = Path(daemon.log)  # type: ignore[attr-defined]
    wait_for("the refusal is logged", lambda: "serve.child_refused" in log_file.read_text(), timeout=60, proc=daemon)
    log = stop_daemon(daemon)
    assert log.count("serve.child_started") == 1 and "token" in log and daemon.returncode == 0
