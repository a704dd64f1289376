"""structlog set-up: configured once by the entry point; human lines on a TTY, JSON lines otherwise."""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any

import structlog


class _StderrLogger:
    """Writes to the current ``sys.stderr``: a stream bound once goes stale under test runners.

    One write per line, under one lock: ``print`` writes the text and the newline apart, so two threads (the
    daemon's main thread and its job) could merge two JSON events into one line.
    """

    _lock = threading.Lock()

    def __init__(self, *_args: object) -> None:
        pass

    def msg(self, message: str) -> None:
        with self._lock:
            sys.stderr.write(message + "\n")
            sys.stderr.flush()

    debug = info = warning = warn = error = critical = exception = fatal = msg


class _StderrHandler(logging.StreamHandler):
    """A stdlib handler on the current ``sys.stderr``, for the same reason as :class:`_StderrLogger`."""

    @property
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


_CONFIGURED: dict[str, Any] = {}  # what configure_logging was last called with (a child process repeats it)


def logging_config() -> dict[str, Any]:
    """The arguments of the last :func:`configure_logging` (empty: never called), for a child process."""
    return dict(_CONFIGURED)


def configure_logging(*, json: bool | None = None, level: str = "info") -> None:
    """Configure structlog and stdlib logging to write to stderr.

    Args:
        json: force JSON lines (True) or console lines (False); None picks JSON unless stderr is a TTY.
        level: minimum level name.
    """
    if json is None:
        json = not sys.stderr.isatty()
    _CONFIGURED.update(json=json, level=level)
    lvl = logging.getLevelNamesMapping()[level.upper()]
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=_StderrLogger,
        cache_logger_on_first_use=False,
    )
    # Libraries (huggingface_hub, transformers) log through stdlib: keep them at warning and on stderr.
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(max(lvl, logging.WARNING))
