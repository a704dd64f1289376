"""Settings, read once at the edge (CLI or daemon entry point) and passed down explicitly."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from hubdelta.kernel.errors import ConfigError
from hubdelta.kernel.recipe import Recipe

DEFAULT_ENDPOINT = "https://huggingface.co"
CONFIG_FILE = "hubdelta.toml"


@dataclass(frozen=True)
class CrawlSettings:
    """``[crawl]`` in hubdelta.toml: how politely and how often the crawler talks to the Hub."""

    requests: int = 450  # per window; the Hub allows 500 anonymous, 1,000 with a free account's token
    window_s: float = 300.0
    max_attempts: int = 8
    timeout_s: float = 30.0
    full_every_days: float = 7.0  # reconcile pass (updates, removals) per base


@dataclass(frozen=True)
class EmbedSettings:
    """``[embed]`` in hubdelta.toml: how vectors are computed and what the worker may download."""

    batch: int = 8  # adapters per batched forward on the resident base
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "float32"  # float32 | bfloat16
    prepack: bool = True  # a CPU's Linear weights laid out once for oneDNN (fp32 ~12% faster here); false: F.linear
    lanes: int = 0  # chunks computed at once on the resident base, each on its share of the cores; 0: 2 on a CPU
    layer: str = "final"  # final | an index | a fraction such as 2/3
    position: str = "last"  # last | mean
    max_attempts: int = 3  # transient failures (network) before a model is marked failed
    allow_pickle: bool = False  # pickle-only weights are refused unless true (then loaded weights_only)
    disk_budget_gb: float = 20.0  # downloads beyond this are refused; full-finetune weights are deleted after
    download_workers: int = 8  # threads downloading ahead of the compute (4 left a bf16 run waiting at 100 ms)
    download_process: bool = True  # the download threads in a child process (their GIL away from the compute's)
    prefetch: int = 4  # chunks downloaded ahead of the compute at most: bounds the disk and the Hub's load
    prefetch_gb: float = 1.0  # and further ahead while what waits to be computed is under this (small adapters)
    commit_every: int = 64  # models whose claims, vectors and statuses share one index commit each
    commit_interval_s: float = 30.0  # computed results are written at least this often (what a kill can cost)


@dataclass(frozen=True)
class FamilySettings:
    """``[family]`` in hubdelta.toml: defaults for new families' meaning spaces (each family keeps its own)."""

    # 20 x 32: a quarter of the earlier 40 x 64's tokens, the same figures on the pool for one sampling seed and
    # within their seed-to-seed spread for others (docs/evaluation.md, Families)
    n: int = 20  # continuations per probe, split evenly over the family's reference models
    tokens: int = 32  # tokens per continuation (in the tokenizer of the model it was sampled from)
    temperature: float = 1.0
    seed: int = 0
    recipe: str = "default"  # default | paper | e.g. text-loglik-concat-centred (docs/families.md)
    batch: int = 4  # adapters scored together on a resident base
    memory_gb: float = 2.0  # activations of one scoring forward (weights not included): sizes its rows, CUDA or CPU


@dataclass(frozen=True)
class RaySettings:
    """``[ray]`` in hubdelta.toml: embed on a Ray cluster (every daemon run when enabled; ``embed --ray`` once)."""

    enabled: bool = False
    address: str = ""  # "": RAY_ADDRESS, else the latest cluster started on this host, else a new local Ray
    workers: int = 0  # 0: one per GPU of the cluster, or one per cpus_per_worker CPUs where it has none
    cpus_per_worker: float = 1.0
    inflight: int = 2  # batches queued on each worker, so it never waits for the driver's commit
    start_timeout_s: float = 300.0  # with no worker alive, how long to wait for one before giving up the run


@dataclass(frozen=True)
class DaemonSettings:
    """``[daemon]`` in hubdelta.toml: what ``hubdelta daemon`` runs, and when (times are the host's local time)."""

    crawl_every_s: float = 1800.0  # incremental crawl of every tracked base
    full_crawl_at: str = "03:00"  # the daily reconcile pass (updates, removals)
    embed_every_s: float = 30.0  # the worker drains the queue: a run every this often while there is work
    embed_limit: int = 64  # models per embed run, so crawls and reports are never starved for long
    report_at: str = "06:00"  # the nightly report
    report_every_s: float = 0.0  # > 0: a report every this often instead of daily (staging, tests)
    compact_every_s: float = 3600.0  # index compaction and ANN maintenance
    layout_every_s: float = 600.0  # maps refreshed after embed jobs at most this often (reports always refresh)
    stop_timeout_s: float = 120.0  # SIGTERM: the running job gets this long to finish its current chunk


@dataclass(frozen=True)
class ServeSettings:
    """``[serve]`` in hubdelta.toml: the web service (``hubdelta serve``; the daemon serves too when enabled)."""

    enabled: bool = False  # the daemon also serves the pages and the API
    host: str = "127.0.0.1"  # any other address requires a token
    port: int = 8000
    token_file: str = ""  # a file holding the access token (required off loopback)
    base_url: str = ""  # where the pages are reachable: the nightly report links to them when set
    rate_per_s: float = 50.0  # requests a second per client address, sustained
    burst: int = 200  # requests a client may make at once before the rate applies
    max_body_bytes: int = 1_000_000  # the largest request body (a posted vector)
    trusted_proxy: str = ""  # a reverse proxy's address: its X-Forwarded-For/-Proto name the client and scheme


_ZERO_OK = {"family.seed", "ray.workers", "daemon.layout_every_s", "embed.prefetch_gb", "embed.lanes"}  # 0 meaningful:
# a seed; "automatic"; "always"; no lookahead past [embed] prefetch; "automatic"
_CHOICES = {
    "embed.device": ("auto", "cpu", "cuda"),
    "embed.dtype": ("float32", "bfloat16"),
    "embed.position": ("last", "mean", "first"),
}


def _table(name: str, value: Any) -> Mapping[str, Any]:
    """A section of hubdelta.toml, which must be a table (``hub = 5`` is not one)."""
    if not isinstance(value, dict):
        raise ConfigError(name, f"is {type(value).__name__}, not a table", fix=f"write it as [{name}], its keys below")
    return value


def _section(name: str, cls: type[Any], data: Any) -> Any:
    """Build a settings dataclass from a toml table, refusing unknown keys and wrong types."""
    data = _table(name, data)
    fields = {f.name: f for f in cls.__dataclass_fields__.values()}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(f"{name}.{key}", "unknown setting", fix=f"use one of {', '.join(fields)}")
        want = type(getattr(cls(), key))
        if (isinstance(value, bool) and want is not bool) or not isinstance(
            value, (int, float) if want is float else want
        ):
            raise ConfigError(f"{name}.{key}", f"expected a {want.__name__}, got {value!r}")
        if want in (int, float) and value <= 0 and not (f"{name}.{key}" in _ZERO_OK and value == 0):
            raise ConfigError(f"{name}.{key}", f"must be positive, got {value!r}")
        choices = _CHOICES.get(f"{name}.{key}")
        if choices and value not in choices:
            raise ConfigError(f"{name}.{key}", f"unknown value {value!r}", fix=f"use one of {', '.join(choices)}")
    return cls(**{k: type(getattr(cls(), k))(v) for k, v in data.items()})


@dataclass(frozen=True)
class Settings:
    """Everything configurable. Built by :func:`load_settings`; nothing else reads the environment."""

    home: Path  # state dir: index, caches, logs
    hf_endpoint: str = DEFAULT_ENDPOINT
    hf_token: str | None = field(default=None, repr=False)
    hf_home: Path | None = None
    log_json: bool = False
    log_level: str = "info"
    crawl: CrawlSettings = field(default_factory=CrawlSettings)
    embed: EmbedSettings = field(default_factory=EmbedSettings)
    daemon: DaemonSettings = field(default_factory=DaemonSettings)
    family: FamilySettings = field(default_factory=FamilySettings)
    ray: RaySettings = field(default_factory=RaySettings)
    serve: ServeSettings = field(default_factory=ServeSettings)
    config_file: Path | None = None  # the hubdelta.toml read, if any (the daemon's child processes read it too)
    extra: Mapping[str, Any] = field(default_factory=dict)  # unknown toml sections, for later stages

    def _index_table(self) -> Mapping[str, Any]:
        """``[index]`` in hubdelta.toml (empty when absent)."""
        table = self.extra.get("index", {})
        if not isinstance(table, Mapping):
            raise ConfigError("index", f"expected a table, got {table!r}", fix='write it as [index] uri = "..."')
        return table

    @property
    def index_uri(self) -> str:
        """``[index] uri``: a local folder (default ``<home>/index``) or object storage, e.g. ``s3://bucket/prefix``."""
        value = self._index_table().get("uri", str(self.home / "index"))
        if not isinstance(value, str) or not value:
            raise ConfigError("index.uri", f"expected a path or uri, got {value!r}", fix='e.g. uri = "s3://bucket/hd"')
        return value

    @property
    def index_storage(self) -> dict[str, str]:
        """``[index.storage]``: string options LanceDB passes to the object store (docs/storage.md).

        E.g. aws_endpoint, aws_region, allow_http, aws_access_key_id; Lance also reads the AWS_* environment.
        """
        table = self._index_table().get("storage", {})
        if not isinstance(table, Mapping):
            raise ConfigError("index.storage", f"expected a table, got {table!r}",
                              fix='write it as [index.storage] aws_region = "..."')  # fmt: skip
        for key, value in table.items():
            if not isinstance(value, str):
                quoted = str(value).lower() if isinstance(value, bool) else str(value)
                raise ConfigError(f"index.storage.{key}", f"expected a string, got {type(value).__name__}",
                                  fix=f'quote it: {key} = "{quoted}"')  # fmt: skip
        return dict(table)

    @property
    def ann_threshold(self) -> int:
        """``[index] ann_threshold``: vectors in a space above which it gets an ANN index (exact search below)."""
        value = self._index_table().get("ann_threshold", 20_000)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError("index.ann_threshold", f"expected a positive integer, got {value!r}")
        return value

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"


def _check_recipe(name: str) -> None:
    try:
        Recipe.parse(name)
    except ValueError as e:
        raise ConfigError(
            "family.recipe", str(e), fix="use default, paper or e.g. text-loglik-concat-centred"
        ) from None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(str(path), f"not valid TOML ({e})", fix="correct or delete the file") from e
    except UnicodeDecodeError as e:  # tomllib decodes the bytes itself and lets this through
        raise ConfigError(str(path), f"not UTF-8 text (byte {e.start})", fix="save it as UTF-8") from e
    except OSError as e:
        raise ConfigError(str(path), f"cannot be read ({e.strerror})", fix="check the path and its permissions") from e


def _check_home(home: Path, source: str) -> None:
    """The state directory may be missing (commands create it) but never a file or other non-folder."""
    if home.exists() and not home.is_dir():
        raise ConfigError(source, f"{home} is not a folder", fix="point it to a folder (or a path to create)")


def _endpoint(value: str, source: str) -> str:
    """The Hub's base URL: http or https with a host, else every request would fail after all its retries."""
    url = value.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(source, f"{value!r} is not an http(s) URL with a host",
                          fix=f"e.g. {DEFAULT_ENDPOINT} or http://127.0.0.1:8000 (a devhub)")  # fmt: skip
    return url


def _endpoint_source(env: Mapping[str, str], hub: Mapping[str, Any]) -> tuple[str, str]:
    if env.get("HF_ENDPOINT"):
        return env["HF_ENDPOINT"], "HF_ENDPOINT"
    value = hub.get("endpoint") or DEFAULT_ENDPOINT
    return (value, "hub.endpoint") if isinstance(value, str) else (repr(value), "hub.endpoint")


def load_settings(
    env: Mapping[str, str] | None = None,
    *,
    home: Path | None = None,
    config_file: Path | None = None,
    log_json: bool | None = None,
) -> Settings:
    """Build the settings from flags, then the environment, then ``hubdelta.toml``, then defaults.

    Args:
        env: the environment to read (``os.environ`` when None).
        home: ``--home`` flag; overrides ``HUBDELTA_HOME``.
        config_file: ``--config`` flag; defaults to ``<home>/hubdelta.toml`` when that exists.
        log_json: ``--log-json`` flag.

    Raises:
        ConfigError: a malformed config file or value.
    """
    env = os.environ if env is None else env
    source = "--home" if home else "HUBDELTA_HOME" if env.get("HUBDELTA_HOME") else "home"
    home = home or Path(env.get("HUBDELTA_HOME") or Path.home() / ".hubdelta")
    home = home.expanduser()
    _check_home(home, source)
    if config_file is None and (home / CONFIG_FILE).is_file():
        config_file = home / CONFIG_FILE
    if config_file is not None and not config_file.is_file():
        raise ConfigError("--config", f"{config_file} does not exist", fix="give the path of a hubdelta.toml")
    data = _read_toml(config_file) if config_file else {}
    hub = _table("hub", data.pop("hub", {}))
    crawl = _section("crawl", CrawlSettings, data.pop("crawl", {}))
    embed = _section("embed", EmbedSettings, data.pop("embed", {}))
    daemon = _section("daemon", DaemonSettings, data.pop("daemon", {}))
    family = _section("family", FamilySettings, data.pop("family", {}))
    ray = _section("ray", RaySettings, data.pop("ray", {}))
    serve = _section("serve", ServeSettings, data.pop("serve", {}))
    _check_recipe(family.recipe)
    log = _table("log", data.pop("log", {}))
    level = str(log.get("level", env.get("HUBDELTA_LOG_LEVEL", "info"))).lower()
    if level not in {"debug", "info", "warning", "error"}:
        raise ConfigError("log.level", f"unknown level {level!r}", fix="use debug, info, warning or error")
    hf_home = env.get("HF_HOME") or hub.get("hf_home")
    return Settings(
        home=home,
        hf_endpoint=_endpoint(*_endpoint_source(env, hub)),
        hf_token=env.get("HF_TOKEN") or hub.get("token") or None,
        hf_home=Path(hf_home).expanduser() if hf_home else None,
        log_json=bool(log.get("json", False)) if log_json is None else log_json,
        log_level=level,
        crawl=crawl,
        embed=embed,
        daemon=daemon,
        family=family,
        ray=ray,
        serve=serve,
        config_file=config_file,
        extra=data,
    )
