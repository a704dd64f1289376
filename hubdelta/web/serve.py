"""``hubdelta serve``: the web application on uvicorn, with the checks a service needs before it binds."""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass
from pathlib import Path

import structlog

from hubdelta.kernel.errors import ConfigError
from hubdelta.kernel.settings import Settings
from hubdelta.web.security import is_loopback, read_token

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Binding:
    host: str
    port: int
    token: str | None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def binding(settings: Settings, host: str | None, port: int | None, token_file: Path | None) -> Binding:
    """Where to listen and which token to ask, from the flags over ``[serve]``.

    Raises:
        ConfigError: a host off loopback (or a trusted proxy) without a token file; an unreadable or too short
            token; a bad port.
    """
    host = host or settings.serve.host
    port = settings.serve.port if port is None else port
    if not 0 < port < 65536:
        raise ConfigError("--port", f"{port} is not a TCP port", fix="use 1-65535, e.g. 8000")
    path = token_file or (Path(settings.serve.token_file).expanduser() if settings.serve.token_file else None)
    token = read_token(path) if path is not None else None
    if token is None and not is_loopback(host):
        raise ConfigError("--host", f"{host} is reachable from other machines, and no token is set",
                          fix="pass --token-file F (or [serve] token_file), or bind 127.0.0.1")  # fmt: skip
    if token is None and settings.serve.trusted_proxy:  # a proxy in front means other machines reach it
        raise ConfigError("serve.trusted_proxy", "a proxy forwards other machines' requests, and no token is set",
                          fix="pass --token-file F (or [serve] token_file)")  # fmt: skip
    return Binding(host, port, token)


def check_port(b: Binding) -> None:
    """Fail in one line now if the address is taken, rather than in uvicorn's log after start-up.

    Raises:
        ConfigError: the port is in use, or the host is not an address of this machine.
    """
    family = socket.AF_INET6 if ":" in b.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((b.host, b.port))
        except OSError as e:
            what = "is in use" if e.errno == errno.EADDRINUSE else f"cannot be bound ({e.strerror})"
            raise ConfigError("--port", f"{b.host}:{b.port} {what}", fix="pick another --port") from None


def run(settings: Settings, b: Binding) -> None:
    """Serve until interrupted (SIGINT or SIGTERM: uvicorn finishes the requests in flight)."""
    import uvicorn

    from hubdelta.web.app import create_app

    check_port(b)
    app = create_app(settings, token=b.token)
    log.info("serve.start", url=b.url, token=b.token is not None, index=settings.index_uri)
    proxy = settings.serve.trusted_proxy
    # Behind a proxy every request comes from its address: only its forwarded headers tell clients apart (for
    # the rate limit) and say whether the page was asked for over https (the login cookie's Secure flag).
    config = uvicorn.Config(app, host=b.host, port=b.port, log_level="warning", access_log=False,
                            server_header=False, proxy_headers=bool(proxy), forwarded_allow_ips=proxy or None,
                            timeout_graceful_shutdown=10)  # fmt: skip
    uvicorn.Server(config).run()
