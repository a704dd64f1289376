"""``hubdelta devhub``: the local Hub-compatible server, synthetic catalogs and the finetune pool."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from hubdelta.cli._options import HostOpt, PortOpt, RootOpt, SeedOpt

if TYPE_CHECKING:  # the dev tools are imported lazily, only when a devhub command runs
    from hubdelta_dev.devhub.faults import FaultConfig

devhub_app = typer.Typer(
    help="A local Hub-compatible server (devhub) and the data it serves.\n\n"
    "Example: hubdelta devhub build-pool --out pool && hubdelta devhub serve --root pool/hub",
    no_args_is_help=True,
)


@devhub_app.command("build-pool")
def build_pool_cmd(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", help="Pool directory: hub/ (a devhub root), labels.json, ...")],
    cache: Annotated[
        Path | None,
        typer.Option("--cache", help="Cache of trained models (default: <home>/cache/pool).", show_default=False),
    ] = None,
    seed: SeedOpt = 0,
    only: Annotated[
        list[str] | None,
        typer.Option("--only", help="Build just this repo id and what it depends on (repeatable).", show_default=False),
    ] = None,
    gemma: Annotated[
        bool, typer.Option("--gemma", help="Add 10 Gemma-3-270M LoRA adapters (5 domains x 2), for family spaces.")
    ] = False,
    recipe: Annotated[
        str,
        typer.Option("--recipe", help="a: the pool of docs/pool.md; b: 25 adapters of five other training recipes."),
    ] = "a",
) -> None:
    """Build the finetune pool (base, LoRA adapters, full finetunes, merges) into a devhub root.

    A cold build trains 24 models (~10 minutes on 2 CPU cores); trained models are cached, so a rebuild only
    links files. --gemma adds Gemma-3-270M and 10 adapters of it (~6 more minutes), for families. --recipe b
    builds the second pool instead: the same domains, each adapter trained with another rank, targets, learning
    rate and schedule (for task search's evaluation, docs/evaluation.md).

    Example: hubdelta devhub build-pool --out pool
    """
    from hubdelta_dev.pool.build import build_pool

    settings = ctx.obj
    cache_dir = cache or settings.cache_dir / "pool"
    manifest = build_pool(out, cache_dir=cache_dir, seed=seed, only=set(only) if only else None, gemma=gemma,
                          recipe=recipe)  # fmt: skip
    hub, labels = out / "hub", out / "labels.json"
    bases = "their two bases" if gemma else "their base"
    typer.echo(f"pool ready: {len(manifest.repos)} models and {bases} under {hub} (labels: {labels})")


TokenOpt = Annotated[
    list[str] | None,
    typer.Option("--token", help="A bearer token that sees private repos and downloads gated ones (repeatable)."),
]
RateOpt = Annotated[
    int | None,
    typer.Option("--rate-limit", help="Quota: requests per window per bucket (api, resolvers); 429 beyond."),
]
WindowOpt = Annotated[float, typer.Option("--rate-window", help="Fixed rate-limit window in seconds.")]
ErrorRateOpt = Annotated[float, typer.Option("--error-rate", help="Fraction of requests answered 500/502/503.")]
LatencyOpt = Annotated[
    float,
    typer.Option("--latency-ms", help="Shaping: ms added to every request, a WAN round trip (Hub-like: 100)."),
]
BandwidthOpt = Annotated[
    str,
    typer.Option(
        "--bandwidth",
        help="Shaping: body bytes/s per connection: 50000000, 50MB, 500KB, 1GB; 0 is unlimited (Hub-like: 50MB).",
    ),
]
FaultLatencyOpt = Annotated[
    int, typer.Option("--fault-latency-ms", help="Latency added to requests matching --fault-path (a fault).")
]
HangRateOpt = Annotated[float, typer.Option("--hang-rate", help="Fraction left unanswered for --hang-s.")]
HangOpt = Annotated[float, typer.Option("--hang-s", help="How long a hung request waits before closing.")]
TruncateOpt = Annotated[
    float,
    typer.Option("--truncate-rate", help="Fraction whose body is cut short after a full Content-Length."),
]
FaultPathOpt = Annotated[str | None, typer.Option("--fault-path", help="Regex: random faults only on matching paths.")]
RequestLogOpt = Annotated[
    Path | None, typer.Option("--request-log", help="Append every request as a JSON line to this file.")
]
PageSizeOpt = Annotated[int, typer.Option("--page-size", help="Largest /api/models page (the Hub's: 1000).")]


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _shaped(faults: FaultConfig) -> str:
    """The shaping in effect, for the startup line (a slowed server should never be mistaken for a slow one)."""
    parts = [f"+{faults.shape_latency_ms:g} ms per request"] if faults.shape_latency_ms else []
    if faults.shape_bandwidth:
        parts.append(f"{faults.shape_bandwidth:,} B/s per connection")
    return f" (shaped: {', '.join(parts)})" if parts else ""


@devhub_app.command("serve")
def serve_cmd(
    root: RootOpt,
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8765,
    token: TokenOpt = None,
    rate_limit: RateOpt = None,
    rate_window: WindowOpt = 300.0,
    error_rate: ErrorRateOpt = 0.0,
    latency_ms: LatencyOpt = 0.0,
    bandwidth: BandwidthOpt = "0",
    fault_latency_ms: FaultLatencyOpt = 0,
    hang_rate: HangRateOpt = 0.0,
    hang_s: HangOpt = 30.0,
    truncate_rate: TruncateOpt = 0.0,
    fault_path: FaultPathOpt = None,
    request_log: RequestLogOpt = None,
    page_size: PageSizeOpt = 1000,
    seed: SeedOpt = 0,
) -> None:
    """Serve a devhub root as a Hugging Face Hub endpoint until Ctrl-C.

    Example: hubdelta devhub serve --root pool/hub --port 8765 --rate-limit 500 --error-rate 0.05
    """
    from hubdelta_dev.devhub.faults import FaultConfig
    from hubdelta_dev.devhub.server import DevhubServer
    from hubdelta_dev.devhub.shaping import parse_bandwidth

    faults = FaultConfig(
        rate_limit=rate_limit,
        rate_window_s=rate_window,
        error_rate=error_rate,
        latency_ms=fault_latency_ms,
        shape_latency_ms=latency_ms,
        shape_bandwidth=parse_bandwidth(bandwidth, flag="--bandwidth"),
        hang_rate=hang_rate,
        hang_s=hang_s,
        truncate_rate=truncate_rate,
        path_regex=fault_path,
        seed=seed,
    )
    server = DevhubServer(
        root,
        host=host,
        port=port,
        tokens=token or (),
        faults=faults,
        request_log=request_log,
        page_size=page_size,
    )
    typer.echo(f"devhub serving {len(server.snapshot.repos)} repos from {root} at {server.url}{_shaped(faults)}")
    typer.echo(f"export HF_ENDPOINT={server.url}")
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops it as cleanly as Ctrl-C
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        typer.echo("devhub stopped")
    finally:
        server.stop()


@devhub_app.command("synth")
def synth_cmd(
    root: RootOpt,
    repos: Annotated[int, typer.Option("--repos", min=0, help="Derived repos to generate.")] = 100_000,
    bases: Annotated[int, typer.Option("--bases", min=1, help="Base models (synth-base/base-<i>).")] = 3,
    seed: SeedOpt = 0,
) -> None:
    """Write a synthetic catalog.jsonl of metadata-only repos derived from a few bases.

    Example: hubdelta devhub synth --root /tmp/hub100k --repos 100000 --bases 3 --seed 0
    """
    from hubdelta_dev.devhub.synth import generate_catalog

    summary = generate_catalog(root, repos, bases, seed=seed)
    mix = ", ".join(f"{k}={v}" for k, v in sorted(summary.relations.items()))
    typer.echo(
        f"wrote {summary.path}: {summary.repos} repos + {len(summary.bases)} bases ({mix}; "
        f"gated={summary.gated}, private={summary.private}) in {summary.seconds:.1f}s"
    )


__all__ = ["HostOpt", "PortOpt", "RootOpt", "devhub_app"]
