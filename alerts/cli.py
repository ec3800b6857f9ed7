"""Commands of the alerts stage: `finsentry alerts list|ack` and `finsentry digest`."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import typer

from finsentry.settings import Settings

alerts_app = typer.Typer(help="List and acknowledge alerts.")

_AGO = re.compile(r"^(\d+)([mhd])$")


def parse_since(value: str | None, now: datetime) -> datetime | None:
    """'90m', '24h', '7d' (ago) or an ISO 8601 time (UTC when it has no zone)."""
    if value is None:
        return None
    match = _AGO.match(value.strip())
    if match:
        unit = {"m": "minutes", "h": "hours", "d": "days"}[match.group(2)]
        return now - timedelta(**{unit: int(match.group(1))})
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as error:
        raise typer.BadParameter(f"{value!r}: use 90m, 24h, 7d or an ISO 8601 time") from error
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@alerts_app.command("list")
def list_alerts(
    ctx: typer.Context,
    watchlist: str | None = typer.Option(None, help="Only this watchlist's alerts."),
    company: str | None = typer.Option(None, help="Ticker or company name."),
    rule: str | None = typer.Option(None, help="severe_item, negative_share, ..."),
    since: str | None = typer.Option(None, help="90m, 24h, 7d or an ISO time."),
    size: int = typer.Option(20, min=1, max=500),
    as_json: bool = typer.Option(False, "--json", help="One JSON document per line."),
) -> None:
    """Alerts, newest first."""
    from finsentry.alerts.store import AlertFilter, search_alerts
    from finsentry.es_client import make_es_client

    settings: Settings = ctx.obj
    where = AlertFilter(
        watchlist=watchlist,
        company=company,
        rule=rule,
        since=parse_since(since, datetime.now(UTC)),
        size=size,
    )
    with make_es_client(settings) as es:
        found = search_alerts(es, settings.alerts_index, where)
    for doc in found:
        if as_json:
            typer.echo(json.dumps(doc.model_dump(mode="json")))
        else:
            ack = "ack" if doc.acknowledged else "   "
            typer.echo(f"{doc.window_end:%Y-%m-%d %H:%M} {ack} {doc.id} {doc.summary}")
    if not found and not as_json:
        typer.echo("no alerts")


@alerts_app.command("ack")
def ack_alert(
    ctx: typer.Context,
    alert_id: str = typer.Argument(..., help="The alert's id (from `alerts list`)."),
    by: str | None = typer.Option(None, help="Who acknowledges."),
) -> None:
    """Acknowledge one alert."""
    from finsentry.alerts.store import acknowledge
    from finsentry.es_client import make_es_client

    settings: Settings = ctx.obj
    with make_es_client(settings) as es:
        done = acknowledge(es, settings.alerts_index, alert_id, by, datetime.now(UTC))
    if done is None:
        typer.echo(f"no alert {alert_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"acknowledged {alert_id}: {done.summary}")


def digest(
    ctx: typer.Context,
    watchlist: str = typer.Option(..., help="The watchlist's name."),
    since: str = typer.Option("24h", help="Period start: 90m, 24h, 7d or an ISO time."),
    output: Path = typer.Option(
        None, help="File to write: .html (chart inline), .png (chart) or .txt."
    ),
    baseline_days: int = typer.Option(7, min=1, help="Days before the period for the baseline."),
) -> None:
    """Render a watchlist's digest (chart + most negative stories) to a file."""
    from finsentry.alerts.digest import (
        digest_from_es,
        digest_html,
        digest_text,
        render_png,
    )
    from finsentry.alerts.watchlists import get_watchlist
    from finsentry.es_client import make_es_client

    settings: Settings = ctx.obj
    now = datetime.now(UTC)
    start = parse_since(since, now)
    assert start is not None
    with make_es_client(settings) as es:
        found = get_watchlist(es, settings.watchlists_index, watchlist)
        if found is None:
            typer.echo(f"no watchlist {watchlist!r}", err=True)
            raise typer.Exit(1)
        result = digest_from_es(es, settings.items_index, found, start, now, baseline_days)
    target = output or Path(f"digest-{watchlist}-{now:%Y%m%d-%H%M}.html")
    suffix = target.suffix.lower()
    if suffix == ".txt":
        target.write_text(digest_text(result), encoding="utf-8")
    elif suffix == ".png":
        target.write_bytes(render_png(result))
    else:
        target.write_text(digest_html(result, render_png(result)), encoding="utf-8")
    typer.echo(f"wrote {target}")


def register(app: typer.Typer) -> None:
    app.add_typer(alerts_app, name="alerts")
    app.command("digest")(digest)
