"""``hubdelta similar / show / status / export``: the query side. Never imports torch unless ``--embed`` is given."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from hubdelta.cli._options import JsonOpt, KOpt, RelationOpt, WhereOpt

finished_read_only = False  # set when a read-only query has printed its answer: see hubdelta.cli.main

SpaceOpt = Annotated[
    str | None, typer.Option("--space", help="Space id (see hubdelta status); default: the repo's.", show_default=False)
]


def _label_lines(x: Any) -> list[str]:
    """``show``'s lines for one space's suggested labels."""
    if not x.tags:
        return [f"  suggested  none: no documented neighbour in {x.space_id}"]
    tags = ", ".join(f"{t.tag} ({t.score:.2f})" for t in x.tags)
    stale = "; stale: run hubdelta labels" if x.stale else ""
    return [f"  suggested  {tags}   confidence {x.confidence:.2f}{stale}", f"             {x.behaves_like}"]


def _labels_cell(n: Any) -> str:
    x = n.labels
    return "" if x is None or not x.tags else f"{'/'.join(t.tag for t in x.tags[:2])} {x.confidence:.2f}"


def _dump(doc: Any) -> None:
    from hubdelta.query.serialize import dumps

    typer.echo(dumps(doc))


def _neighbors_table(neighbors: list[Any], title: str) -> None:
    """Neighbours in a table that fits the terminal: the repo id is never cut; base, cluster and card columns only
    when they say something, and the least telling columns leave first on a narrow terminal or a pipe."""
    from rich.console import Console, JustifyMethod
    from rich.table import Table

    from hubdelta.cli._tables import fit_columns, print_table

    columns: dict[str, tuple[JustifyMethod, Any]] = {
        "#": ("right", lambda n: str(n.rank)),
        "score": ("right", lambda n: f"{n.score:.3f}"),
        "repo": ("left", lambda n: n.repo_id),
        "relation": ("left", lambda n: n.relation),
        "downloads": ("right", lambda n: f"{n.downloads:,}"),
        "likes": ("right", lambda n: str(n.likes)),
        "license": ("left", lambda n: n.license or ""),
    }
    if len({n.base for n in neighbors}) > 1:
        columns["base"] = ("left", lambda n: n.base)
    if any(n.cluster for n in neighbors):
        columns["cluster"] = ("left", lambda n: n.cluster or "")
    if any(n.labels is not None and n.labels.tags for n in neighbors):
        columns["labels"] = ("left", _labels_cell)  # suggested: the top tags and their confidence
    if any(n.copies for n in neighbors):  # a copy group shown once: how many more it stands for (--all lists them)
        columns["copies"] = ("right", lambda n: f"+{len(n.copies)}" if n.copies else "")
    columns["card"] = ("left", lambda n: n.card)
    natural = {name: max([len(name), *(len(cell(n)) for n in neighbors)]) for name, (_, cell) in columns.items()}
    widths = {**natural, "card": min(natural["card"], 24)}  # the card alone may be cut (…), so it asks little
    width = Console().width
    drop = ("card", "license", "likes", "labels", "base", "cluster", "relation", "downloads", "copies")
    keep = fit_columns(widths, width, drop)
    spare = width - sum(widths[c] + 3 for c in keep) - 1
    table = Table(title=title, title_justify="left")
    for name in keep:
        justify, _ = columns[name]
        if name == "card":  # the card grows into what is left, up to its full length
            table.add_column(name, no_wrap=True, overflow="ellipsis", min_width=widths[name],
                             max_width=max(widths[name], min(natural[name], widths[name] + spare)))  # fmt: skip
        else:
            table.add_column(name, justify=justify, no_wrap=True, overflow="fold", min_width=widths[name])
    for n in neighbors:
        table.add_row(*(columns[name][1](n) for name in keep))
    print_table(table)


def similar_cmd(
    ctx: typer.Context,
    repo: Annotated[
        str | None, typer.Argument(help="A repo id in the index (or with --embed: on the Hub, or a local folder).")
    ] = None,
    k: KOpt = 10,
    where: WhereOpt = None,
    relation: RelationOpt = None,
    space: SpaceOpt = None,
    vector: Annotated[
        Path | None, typer.Option("--vector", help="Search with a saved vector (.npy) instead of a repo.")
    ] = None,
    embed: Annotated[
        bool, typer.Option("--embed", help="Embed REPO now if it has no vector yet (loads torch: slower).")
    ] = False,
    base: Annotated[
        str | None, typer.Option("--base", help="With --embed of a local folder: its base (repo id or folder).")
    ] = None,
    show_all: Annotated[
        bool, typer.Option("--all", help="One row per model: copies (same weights or behaviour) not collapsed.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """The models that behave most like REPO: nearest by cosine of their Delta Activations.

    Copies (byte-identical re-uploads, near-copies) are one row, their group's earliest created model, with
    "+N" copies; --all shows each of them.

    Example: hubdelta similar hubdelta-pool/smollm2-lora-math-1 -k 5 --where "downloads > 10"
    """
    from hubdelta.query.api import similar

    settings = ctx.obj
    if embed and repo is not None:
        repo = _embed_first(settings, repo, base)
    result = similar(settings, repo, vector=vector, k=k, where=where, relation=relation, space=space,
                     show_all=show_all)  # fmt: skip
    if as_json:
        _dump(result)
        _done()
        return
    title = f"nearest to {result.query} in space {result.space_id}" + (f", where {where}" if where else "")
    if not result.neighbors:
        typer.echo(f"{title}: no model matches")
        _done()
        return
    _neighbors_table(result.neighbors, title)
    if result.other_spaces:
        typer.echo(f"also embedded in: {', '.join(result.other_spaces)} (choose with --space)")
    _done()


def _done() -> None:
    global finished_read_only
    finished_read_only = True


def _embed_first(settings: Any, repo: str, base: str | None) -> str:
    """``repo`` embedded if it is not yet: a local folder with ``add``, else from the Hub. Returns its id."""
    from hubdelta.index.door import open_reader
    from hubdelta.kernel.errors import IndexNotFoundError

    path = Path(repo)
    if path.is_dir():
        from hubdelta.embedder.api import add_local

        if base is None:
            from hubdelta.kernel.errors import UsageError

            raise UsageError("--base", f"{repo} is a local folder: its base is needed",
                             fix="add --base REPO_OR_FOLDER")  # fmt: skip
        # The folder asked about is embedded afresh, as before: its own earlier vector is what it replaces.
        return add_local(settings, path, base, replace=True, command="hubdelta similar --embed").repo_id
    try:
        with open_reader(settings) as index:
            if index.vectors.of_repo(repo):
                return repo
    except IndexNotFoundError:  # no index yet: embedding creates it
        pass
    from hubdelta.crawler.api import fetch_model
    from hubdelta.embedder.api import embed_hub_model

    typer.echo(f"embedding {repo} ...", err=True)
    embed_hub_model(settings, fetch_model(settings, repo))
    return repo


def show_cmd(ctx: typer.Context, repo: Annotated[str, typer.Argument(help="A repo id in the index.")],
             k: KOpt = 5, as_json: JsonOpt = False) -> None:  # fmt: skip
    """A model's record: metadata, status and reason, its vectors, and its nearest models.

    A model removed from the Hub is shown with its record and vectors, marked REMOVED, without neighbours.

    Example: hubdelta show hubdelta-pool/smollm2-lora-math-1
    """
    from hubdelta.query.api import show

    shown = show(ctx.obj, repo, k=k)
    r, m = shown.record, shown.record.model
    if as_json:
        from hubdelta.query.serialize import shown_doc

        _dump(shown_doc(shown))
        _done()
        return
    lines = [
        f"{m.repo_id}  ({m.relation.value} of {', '.join(m.base_models) or '?'})",
        f"  status     {r.status.value}" + (f": {r.reason}" if r.reason else ""),
        f"  revision   {m.sha or '?'}",
        f"  license    {m.license or '?'}   downloads {m.downloads:,}   likes {m.likes}",
        f"  created    {m.created_at.isoformat() if m.created_at else '?'}",
        f"  tags       {', '.join(t for t in m.tags if not t.startswith('base_model:'))[:200]}",
        f"  card       {m.card_summary or '-'}",
    ]
    lines += [f"  vector     {v.space_id} (|v| = {v.norm:.3f}, sha {(v.sha or '?')[:12]})" for v in shown.vectors]
    lines += [line for x in shown.labels for line in _label_lines(x)]
    if shown.hidden and r.status == "unchanged":  # ModelStatus.UNCHANGED
        lines.append("  UNCHANGED  no change from its base: no vector; hidden from similar, task, report, export "
                     "and eval")  # fmt: skip
    elif shown.hidden:
        lines.append("  REMOVED    gone from the Hub: hidden from similar, task, report, export and eval "
                     "(its record and vectors are kept)")  # fmt: skip
    lines += _copy_lines(shown)
    typer.echo("\n".join(lines))
    if shown.neighbors:
        _neighbors_table(shown.neighbors, f"nearest to {m.repo_id}")
    _done()


def _copy_lines(shown: Any) -> list[str]:
    """What ``show`` says of a model's copies: whose vector it reused, its group, the group's representative."""
    lines = []
    if shown.copied_from:
        lines.append(f"  copy of    {shown.copied_from} (the same weight files: not downloaded, its vector reused)")
    if shown.copy_of and shown.copy_of != shown.copied_from:
        lines.append(f"  same as    {shown.copy_of} (its copy group's earliest; similar shows the group once)")
    if shown.copies:
        more = f" and {len(shown.copies) - 10} more" if len(shown.copies) > 10 else ""
        lines.append(f"  copies     {', '.join(shown.copies[:10])}{more}")
    return lines


def status_cmd(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Counts by status and space, queue length, last crawl, disk use.

    Example: hubdelta status --json
    """
    from hubdelta.daemon.state import daemon_health
    from hubdelta.query.status import status

    s = status(ctx.obj, daemon=daemon_health(ctx.obj.home))
    _done()  # nothing below writes: the table is only printed
    if as_json:
        _dump(s)
        return
    from rich.table import Table

    counts = ", ".join(f"{k} {v:,}" for k, v in s.by_status.items() if v)
    typer.echo(f"index      {s.index} ({_size(s.index_bytes)}; download cache {_size(s.cache_bytes)})")
    typer.echo(f"models     {s.models:,}: {counts or 'none yet (hubdelta track BASE, then hubdelta crawl)'}")
    typer.echo(f"queue      {s.queue:,} to embed")
    last = s.last_crawl.isoformat(timespec="seconds") if s.last_crawl else "never"
    report = s.last_report.isoformat(timespec="seconds") if s.last_report else "never"
    typer.echo(f"tracked    {s.tracked} base(s); last crawl {last}; last report {report}")
    if s.daemon is not None:
        d = s.daemon
        up = f"running, pid {d['pid']}, up {d['uptime_s'] / 3600:.1f} h" if d["running"] else "not running"
        typer.echo(f"daemon     {up}")
        for job_id, j in d["jobs"].items():
            ok = j["last_success"].isoformat(timespec="seconds") if j["last_success"] else "never"
            err = f"; last error {j['last_error_at']:%Y-%m-%d %H:%M}: {j['last_error']}" if j["last_error"] else ""
            typer.echo(f"  {job_id:<11}{j['runs']} runs, last success {ok}{err}")
    if s.spaces:
        from hubdelta.cli._tables import id_column, print_table

        table = Table()
        id_column(table, "base", [sp.base for sp in s.spaces])
        for header in ("vectors", "dim", "layer", "position", "dtype", "search"):
            table.add_column(header)
        id_column(table, "space", [sp.space_id for sp in s.spaces])  # last: what a user copies into --space
        for sp in s.spaces:
            search = "exact" if sp.ann_index is None else f"{sp.ann_index} (+{sp.unindexed:,} unindexed)"
            table.add_row(sp.base, f"{sp.vectors:,}", str(sp.dim), sp.layer, sp.position, sp.dtype, search,
                          sp.space_id)  # fmt: skip
        print_table(table)


def _size(n: int | None) -> str:
    if n is None:
        return "size not measured on object storage"
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"


def export_cmd(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", help="The file to write (replaced atomically).")],
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format", help="parquet, npz or csv (default: the one --out's suffix names).", show_default=False
        ),
    ] = None,
    space: SpaceOpt = None,
    include_removed: Annotated[
        bool, typer.Option("--include-removed", help="Also export models removed from the Hub (status removed).")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Write one space's vectors and model metadata to a file (npz: embeddings, model_names, base_model).

    Models removed from the Hub are left out, as in every query, unless --include-removed is given.

    The format is the one the file's suffix names (.parquet, .npz, .csv) unless --format says it.

    Example: hubdelta export --out vectors.npz
    """
    from hubdelta.query.export import export

    done = export(ctx.obj, out, fmt=fmt, space=space, include_removed=include_removed)
    if as_json:
        _dump(done)
    else:
        typer.echo(
            f"wrote {done.rows:,} vectors of {done.dim} dims from {done.space_id} to {done.path} ({done.format})"
        )


def register(app: typer.Typer) -> None:
    app.command("similar")(similar_cmd)
    app.command("show")(show_cmd)
    app.command("status")(status_cmd)
    app.command("export")(export_cmd)
