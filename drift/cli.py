"""`finsentry drift`: the hourly drift table (and plot); `--watch` keeps it up to date."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import typer

from finsentry.settings import Settings


def _since(value: str) -> timedelta:
    units = {"h": 3600, "d": 86400}
    if len(value) < 2 or value[-1] not in units or not value[:-1].isdigit():
        raise typer.BadParameter(f"{value!r}: use hours or days, e.g. 24h or 7d")
    return timedelta(seconds=int(value[:-1]) * units[value[-1]])


def drift(
    ctx: typer.Context,
    since: str = typer.Option("24h", help="How far back (e.g. 24h, 7d)."),
    plot: Path | None = typer.Option(None, dir_okay=False, help="Also draw it into this PNG."),
    watch: bool = typer.Option(
        False, help="Keep the current hour up to date (metrics on FINSENTRY_DRIFT_METRICS_PORT)."
    ),
) -> None:
    """Per hour: items, predicted sentiment mix, mean confidence, text length and unknown
    words, and each one's population stability index (PSI) against the training data."""
    from finsentry.drift.reference import live_reference
    from finsentry.models.artifact import ArtifactError

    settings: Settings = ctx.obj
    if watch:
        _watch(settings)
        return
    try:
        reference = live_reference(settings)
    except ArtifactError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc
    from finsentry.drift.watch import history
    from finsentry.es_client import make_es_client

    now = datetime.now(UTC)
    rows = history(make_es_client(settings), settings, reference, now - _since(since), now)
    typer.echo(
        f"reference: model {reference.model_version}, {reference.n} held-out texts "
        f"({reference.built_from}); threshold PSI {settings.drift_threshold:g}, "
        f"verdicts from {settings.drift_min_items} items an hour"
    )
    header = (
        f"{'hour (UTC)':<17}{'items':>7}{'bear/neu/bull %':>17}{'conf':>6}{'len':>6}"
        f"{'unk%':>6}  {'PSI sent':>8}{'topic':>7}{'conf':>7}{'len':>7}{'unk':>7}  verdict"
    )
    typer.echo(header)
    for r in rows:
        mix = "/".join(
            f"{100 * r.sentiment_mix.get(k, 0):.0f}" for k in ("bearish", "neutral", "bullish")
        )
        verdict = "DRIFT " + r.worst if r.drifted else ("ok" if r.enough else "too few")
        typer.echo(
            f"{r.hour:%Y-%m-%d %H:00}{r.items:>7}{mix:>17}{r.mean_confidence:>6.2f}"
            f"{r.mean_text_length:>6.0f}{100 * r.unknown_share:>6.1f}  {r.psi_sentiment:>8.3f}"
            f"{r.psi_topic:>7.3f}{r.psi_confidence:>7.3f}{r.psi_text_length:>7.3f}"
            f"{r.psi_unknown_words:>7.3f}  {verdict}"
        )
    if not rows:
        typer.echo("(no scored items in the range)")
    if plot is not None:
        from finsentry.drift.plot import plot_rows

        plot_rows(rows, plot, settings.drift_threshold)
        typer.echo(f"plot: {plot}")


def _watch(settings: Settings) -> None:
    """The watcher process (`finsentry run` starts one, below the worker's CPU priority)."""
    from prometheus_client import start_http_server

    from finsentry.drift.watch import watch

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if settings.drift_metrics_port:
        try:
            start_http_server(settings.drift_metrics_port)
        except OSError as exc:  # the port is taken: watch anyway (the drift index has it all)
            logging.getLogger(__name__).warning(
                "no metrics endpoint on port %d: %s", settings.drift_metrics_port, exc
            )
    stop = threading.Event()
    try:
        watch(settings, stop)
    except KeyboardInterrupt:
        stop.set()


def register(app: typer.Typer) -> None:
    app.command()(drift)
