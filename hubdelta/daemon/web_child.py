"""The daemon's web service: ``hubdelta serve`` as a child process, restarted if it dies, stopped with the daemon.

A child, not a thread: the daemon's embed runs hold the GIL and the cores for minutes, and the pages must stay
quick meanwhile; a crash of one never takes the other down. The child reads the index without the lock.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import structlog

from hubdelta.kernel.settings import Settings

log = structlog.get_logger(__name__)

RESTART_S = (1.0, 5.0, 30.0, 120.0)  # waits before restarting a child that died, growing while it keeps dying
HEALTHY_S = 300.0  # a child that ran this long before dying starts the waits over
STOP_S = 15.0
CONFIG_EXIT = 2  # ConfigError's exit code: the CLI refused the settings


class WebChild:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._proc: subprocess.Popen[bytes] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def command(self) -> list[str]:
        argv = [sys.executable, "-m", "hubdelta", "--home", str(self.settings.home)]
        if self.settings.config_file is not None:
            argv += ["--config", str(self.settings.config_file)]
        return [*argv, "serve"]

    def start(self) -> None:
        """Start serving (``[serve] enabled``) and watch the child from a thread."""
        self._thread = threading.Thread(target=self._watch, name="hubdelta-serve", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        failures = 0
        while not self._stop.is_set():
            logfile = Path(self.settings.home) / "serve.log"
            with logfile.open("ab") as sink:
                self._proc = subprocess.Popen(self.command(), stdout=sink, stderr=subprocess.STDOUT)
            if self._stop.is_set():  # stop() ran while it started, and may have seen the previous child only
                _end(self._proc)
                return
            s = self.settings.serve
            log.info("serve.child_started", pid=self._proc.pid, url=f"http://{s.host}:{s.port}", log=str(logfile))
            ran = _wait(self._proc, self._stop)
            if self._stop.is_set():
                return
            if self._proc.returncode == CONFIG_EXIT:  # a bad [serve] setting: restarting cannot fix it
                tail = logfile.read_text(errors="replace").strip().splitlines()[-1:] or [""]
                log.error("serve.child_refused", error=tail[0][:300], fix="correct [serve] in hubdelta.toml")
                return
            failures = 0 if ran >= HEALTHY_S else failures + 1
            delay = RESTART_S[min(failures, len(RESTART_S)) - 1] if failures else RESTART_S[0]
            log.warning("serve.child_exited", code=self._proc.returncode, ran_s=round(ran, 1), restart_in_s=delay,
                        log=str(logfile))  # fmt: skip
            self._stop.wait(delay)

    def stop(self) -> None:
        """Stop the child (SIGTERM: it finishes the requests in flight), then the watcher."""
        self._stop.set()
        if self._proc is not None:
            _end(self._proc)
        if self._thread is not None:
            self._thread.join(STOP_S)


def _wait(proc: subprocess.Popen[bytes], stop: threading.Event) -> float:
    """Seconds the child ran before it exited (or before a stop was asked)."""
    began = time.monotonic()
    while proc.poll() is None and not stop.wait(0.5):
        pass
    return time.monotonic() - began


def _end(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (the child finishes the requests in flight), then SIGKILL after ``STOP_S``."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(STOP_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
