"""`finsentry models list|promote|rollback|bootstrap|train-default` and `finsentry rescore`."""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path

import typer

from finsentry.settings import Settings

models_app = typer.Typer(help="The model registry: list, promote, roll back.", no_args_is_help=True)


def _settings(ctx: typer.Context) -> Settings:
    obj = ctx.find_root().obj
    return obj if isinstance(obj, Settings) else Settings()


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


@models_app.command("list")
def list_command(
    ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="JSON lines.")
) -> None:
    """Every artifact: version, runtime, test accuracy, int8 parity, which one is live."""
    from rich.console import Console
    from rich.table import Table

    from finsentry.models.registry import list_models

    settings = _settings(ctx)
    models = list_models(settings.models_dir, settings.data_dir)
    if as_json:
        for info in models:
            typer.echo(info.model_dump_json())
        return
    if not models:
        typer.echo(f"no artifacts in {settings.models_dir}")
        return
    table = Table(title=f"models in {settings.models_dir}")
    for column in ("live", "version", "runtime", "created", "accuracy s / t", "parity", "note"):
        table.add_column(column)
    for info in models:
        acc = " / ".join(
            f"{info.accuracy[t]:.3f}" for t in ("sentiment", "topic") if t in info.accuracy
        )
        parity = " / ".join(f"{v:.2%}" for _, v in sorted(info.parity.items()))
        table.add_row(
            "*" if info.live else "",
            info.version,
            info.runtime,
            f"{info.created_at:%Y-%m-%d %H:%M}",
            acc or "-",
            parity or "-",
            (info.problem or "")[:80]
            or (f"export of {info.parent_version}" if info.parent_version else ""),
        )
    Console().print(table)


@models_app.command("promote")
def promote_command(
    ctx: typer.Context,
    version: str = typer.Argument(..., help="Version (or unique prefix, folder name, path)."),
    reason: str = typer.Option("", help="Why (kept in the history)."),
) -> None:
    """Make an artifact live (validated first); running workers swap it in between batches."""
    from finsentry.models.artifact import ArtifactError
    from finsentry.models.registry import promote

    settings = _settings(ctx)
    try:
        entry = promote(settings.models_dir, version, data_dir=settings.data_dir, reason=reason)
    except ArtifactError as exc:
        _fail(f"refused: {exc}")
        return
    typer.echo(f"live: {entry.version} ({entry.path})")


@models_app.command("rollback")
def rollback_command(ctx: typer.Context) -> None:
    """Make the previously live artifact live again."""
    from finsentry.models.artifact import ArtifactError
    from finsentry.models.registry import rollback

    settings = _settings(ctx)
    try:
        entry = rollback(settings.models_dir, data_dir=settings.data_dir)
    except ArtifactError as exc:
        _fail(str(exc))
        return
    typer.echo(f"live: {entry.version} ({entry.path})")


@models_app.command("bootstrap")
def bootstrap_command(
    ctx: typer.Context,
    promote_it: bool = typer.Option(True, "--promote/--no-promote", help="Make it live."),
) -> None:
    """Train the TF-IDF + logistic regression bootstrap model (seconds)."""
    from finsentry.models.bootstrap import train_bootstrap
    from finsentry.models.registry import promote

    settings = _settings(ctx)
    path = train_bootstrap(
        settings.data_dir, settings.models_dir, max_samples=settings.bootstrap_max_samples
    )
    typer.echo(str(path))
    if promote_it:
        entry = promote(settings.models_dir, str(path), data_dir=settings.data_dir)
        typer.echo(f"live: {entry.version}")


@models_app.command("train-default")
def train_default_command(
    ctx: typer.Context,
    rescore_items: bool = typer.Option(
        True, "--rescore/--no-rescore", help="Re-score the bootstrap model's items afterwards."
    ),
) -> None:
    """Train the default model, export it to int8, promote it, re-score bootstrap items
    (what `finsentry run` starts in the background on a fresh machine)."""
    from finsentry.training.defaults import train_default

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    path = train_default(_settings(ctx), progress=True, rescore_items=rescore_items)
    typer.echo(f"serving {path}")


def rescore_command(
    ctx: typer.Context,
    since: str | None = typer.Option(None, help="scored_at from: ISO time or span (2h, 7d)."),
    until: str | None = typer.Option(None, help="scored_at before: ISO time or span."),
    from_version: str | None = typer.Option(
        None, help="Only items this model version scored (wildcards: bootstrap-*)."
    ),
    batch: int | None = typer.Option(None, help="Items a page (FINSENTRY_RESCORE_BATCH)."),
    max_rate: float | None = typer.Option(
        None, help="Most items/s; 0 = no cap (FINSENTRY_RESCORE_MAX_RATE)."
    ),
    restart: bool = typer.Option(False, help="Ignore a checkpoint of an interrupted run."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Re-score indexed items with the live model (resumable: rerun after a kill)."""
    from finsentry.es_client import make_es_client
    from finsentry.index.rescore import (
        RescoreQuery,
        checkpoint_file,
        parse_time,
        rescore_as_configured,
    )
    from finsentry.models.artifact import ArtifactError
    from finsentry.models.scorer import load_scorer

    settings = _settings(ctx)
    if settings.rescore_nice:
        os.nice(settings.rescore_nice)
    now = datetime.now(UTC)
    try:
        query = RescoreQuery(
            index=settings.items_index,
            since=parse_time(since, now) if since else None,
            until=parse_time(until, now) if until else None,
            from_version=from_version,
        )
    except ValueError as exc:
        _fail(f"bad time: {exc}")
        return
    try:
        scorer = load_scorer(settings)
    except ArtifactError as exc:
        _fail(str(exc))
        return
    checkpoint = checkpoint_file(settings.state_dir, query, scorer.version)
    if restart:
        Path(checkpoint).unlink(missing_ok=True)
    es = make_es_client(settings)
    try:
        result = rescore_as_configured(
            es, scorer, query, settings, batch=batch, max_rate=max_rate, progress=progress
        )
    finally:
        es.close()
    if as_json:
        typer.echo(json.dumps({**result.model_dump(), "items_per_s": result.items_per_s}))
    else:
        typer.echo(
            f"re-scored {result.updated:,} items with {result.target_version} in "
            f"{result.seconds:.1f} s ({result.items_per_s:.1f} items/s"
            f"{', resumed' if result.resumed else ''}; {result.yielded_s:.0f} s paused for live "
            f"traffic; {result.conflicts} skipped: re-written by the worker meanwhile)"
        )


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
    app.command("rescore")(rescore_command)
