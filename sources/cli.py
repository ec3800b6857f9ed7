"""`finsentry sources run | check | health`."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import typer

from finsentry.settings import Settings

sources_app = typer.Typer(
    help="Real sources (RSS/Atom, SEC EDGAR, JSON APIs) polled into the raw topic.",
    no_args_is_help=True,
)


def _settings(ctx: typer.Context) -> Settings:
    obj = ctx.find_root().obj
    return obj if isinstance(obj, Settings) else Settings()


def _sources_path(settings: Settings, path: Path | None) -> Path:
    chosen = path or settings.sources_file
    if chosen is None:
        raise typer.BadParameter("give a sources file (--file) or set FINSENTRY_SOURCES_FILE")
    return chosen


def load_or_exit(settings: Settings, path: Path | None):  # type: ignore[no-untyped-def]
    """The validated sources file, or exit 2 with the error naming the bad entry."""
    from finsentry.sources.config import SourcesFileError, load_sources, resolve

    try:
        sources = load_sources(_sources_path(settings, path))
        for source in sources.sources:
            resolve(source, settings.source_secrets)  # every ${NAME} must be set
    except SourcesFileError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    return sources


@sources_app.command("run")
def run(
    ctx: typer.Context,
    file: Path | None = typer.Option(None, "--file", "-f", help="Sources file (YAML)."),
    loglevel: str = typer.Option("INFO", help="Log level."),
) -> None:
    """Poll every source until Ctrl-C; new items go to the raw topic."""
    from finsentry.sources.runner import run_blocking

    settings = _settings(ctx)
    logging.basicConfig(level=loglevel, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    sources = load_or_exit(settings, file)
    with contextlib.suppress(KeyboardInterrupt):
        run_blocking(settings, sources)


@sources_app.command("check")
def check(
    ctx: typer.Context,
    file: Path | None = typer.Argument(None, help="Sources file (default FINSENTRY_SOURCES_FILE)."),
) -> None:
    """Validate a sources file (and that its ${NAME} secrets are set)."""
    sources = load_or_exit(_settings(ctx), file)
    for source in sources.sources:
        typer.echo(f"{source.name}\t{source.kind}\tevery {source.interval:g}s")
    typer.echo(f"{len(sources.sources)} sources OK")


@sources_app.command("health")
def health(ctx: typer.Context) -> None:
    """Each source's last poll, status, items and errors (from the state dir)."""
    from rich.console import Console
    from rich.table import Table

    from finsentry.sources.state import source_health_rows

    rows = source_health_rows(_settings(ctx).state_dir)
    table = Table("source", "kind", "last poll", "status", "items", "polls", "errors", "last error")
    for row in rows:
        table.add_row(
            row.source,
            row.kind,
            row.last_poll_at.isoformat(timespec="seconds") if row.last_poll_at else "-",
            row.last_status,
            str(row.last_items),
            str(row.polls),
            str(row.errors_total),
            (row.last_error or "")[:60],
        )
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(sources_app, name="sources")
