"""``hubdelta devhub``: the local Hub-compatible server, synthetic catalogs and the finetune pool."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hubdelta.cli._options import HostOpt, PortOpt, RootOpt, SeedOpt

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
) -> None:
    """Build the finetune pool (base, LoRA adapters, full finetunes, merges) into a devhub root.

    Example: hubdelta devhub build-pool --out pool
    """
    from hubdelta.pool.build import build_pool

    settings = ctx.obj
    manifest = build_pool(out, cache_dir=cache or settings.cache_dir / "pool", seed=seed)
    typer.echo(f"pool ready: {len(manifest.repos)} repos under {out / 'hub'} (labels: {out / 'labels.json'})")


__all__ = ["HostOpt", "PortOpt", "RootOpt", "devhub_app"]
