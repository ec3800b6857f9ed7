"""Command-line entry points of this stage (registered on the main `finsentry` app):
`finsentry query` (ad-hoc questions on the items index) and `finsentry api` (the same over
HTTP)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from finsentry.queries.output import OutputFormat
from finsentry.queries.params import QueryMode
from finsentry.settings import Settings

# Parameter names as the command line spells them, for error messages.
_OPTION_NAMES = {
    "from": "--from",
    "from_": "--from",
    "time_field": "--time-field",
    "rank_by": "--rank-by",
    "min_count": "--min-count",
}
_SPLIT_ON_COMMA = ("ticker", "sentiment", "kind")


def _option(field: str) -> str:
    return _OPTION_NAMES.get(field, f"--{field.replace('_', '-')}")


def validation_messages(exc: Any, mode: str) -> list[str]:
    """One readable line per pydantic error, named by option (`exc` is a ValidationError)."""
    lines = []
    for error in exc.errors():
        loc = [str(p) for p in error.get("loc", ()) if not isinstance(p, int)]
        where = _option(loc[0]) if loc else "options"
        if error.get("type") == "extra_forbidden":
            lines.append(f"{where} does not apply to `query {mode}`")
        else:
            lines.append(f"{where}: {str(error.get('msg', '')).removeprefix('Value error, ')}")
    return lines


def _values(options: dict[str, Any]) -> dict[str, Any]:
    """Only what was given; comma lists split; `from_` under its alias."""
    values: dict[str, Any] = {}
    for name, value in options.items():
        if value is None or value == []:
            continue
        if name in _SPLIT_ON_COMMA:
            value = [part.strip() for v in value for part in v.split(",") if part.strip()]
        values["from" if name == "from_" else name] = value
    return values


def _fail(lines: list[str], code: int = 2) -> typer.Exit:
    for line in lines:
        typer.echo(f"error: {line}", err=True)
    return typer.Exit(code)


def query(
    ctx: typer.Context,
    mode: QueryMode = typer.Argument(
        ..., help="items (newest first, paged) | timeline | tickers | topics"
    ),
    ticker: list[str] | None = typer.Option(
        None, "--ticker", "-t", help="Ticker; repeat or comma-separate."
    ),
    topic: list[str] | None = typer.Option(None, "--topic", help="Topic; repeat for several."),
    sentiment: list[str] | None = typer.Option(
        None, "--sentiment", "-s", help="bearish | neutral | bullish; repeat or comma-separate."
    ),
    source: list[str] | None = typer.Option(None, "--source", help="Source; repeat."),
    kind: list[str] | None = typer.Option(None, "--kind", help="news | comment | post."),
    text: str | None = typer.Option(
        None, "--text", "-q", help='Words in title/text: "phrase", +, |, -, ( ).'
    ),
    since: str | None = typer.Option(None, "--since", help="Back from now: 30m, 6h, 7d, 2w."),
    from_: str | None = typer.Option(None, "--from", help="Start, ISO 8601 (UTC if naive)."),
    to: str | None = typer.Option(None, "--to", help="End, exclusive, ISO 8601."),
    time_field: str | None = typer.Option(
        None, "--time-field", help="ingested_at (default) | published_at | scored_at."
    ),
    interval: str | None = typer.Option(None, "--interval", help="timeline: 1h, 1d or auto."),
    page: int | None = typer.Option(None, "--page", help="items: 1-based page."),
    size: int | None = typer.Option(None, "--size", help="items: page size (max 500)."),
    sort: str | None = typer.Option(
        None, "--sort", help="items: newest | oldest | most_negative | most_positive."
    ),
    rank_by: str | None = typer.Option(
        None, "--rank-by", help="tickers/topics: volume | negative_share | mean_score."
    ),
    order: str | None = typer.Option(None, "--order", help="tickers/topics: asc | desc."),
    limit: int | None = typer.Option(None, "--limit", help="tickers/topics: rows (max 500)."),
    min_count: int | None = typer.Option(
        None, "--min-count", help="tickers/topics: ignore keys with fewer items."
    ),
    output: OutputFormat = typer.Option(OutputFormat.table, "--format", "-f"),
    plot: Path | None = typer.Option(None, "--plot", help="timeline: also write a PNG chart."),
    index: str | None = typer.Option(None, "--index", help="Default: FINSENTRY_ITEMS_INDEX."),
) -> None:
    """Ask the items index a question: items, a sentiment timeline, or ticker/topic rankings."""
    from elasticsearch import ApiError, NotFoundError, TransportError
    from pydantic import ValidationError
    from rich.console import Console

    from finsentry.es_client import make_es_client
    from finsentry.queries.output import plot_timeline, to_csv, to_json, to_table
    from finsentry.queries.params import PARAMS_BY_MODE, QueryError
    from finsentry.queries.results import TimelineResult, es_reason, run_query

    settings: Settings = ctx.obj
    if plot is not None and mode is not QueryMode.timeline:
        raise _fail(["--plot needs `query timeline`"])
    options = {
        "ticker": ticker,
        "topic": topic,
        "sentiment": sentiment,
        "source": source,
        "kind": kind,
        "text": text,
        "since": since,
        "from_": from_,
        "to": to,
        "time_field": time_field,
        "interval": interval,
        "page": page,
        "size": size,
        "sort": sort,
        "rank_by": rank_by,
        "order": order,
        "limit": limit,
        "min_count": min_count,
    }
    try:
        params = PARAMS_BY_MODE[mode].model_validate(_values(options))
    except ValidationError as exc:
        raise _fail(validation_messages(exc, mode.value)) from None
    target = index or settings.items_index
    try:
        result = run_query(make_es_client(settings), target, params)
    except QueryError as exc:
        raise _fail([str(exc)]) from None
    except NotFoundError:
        raise _fail([f"index {target!r} not found"], 1) from None
    except ApiError as exc:
        raise _fail([f"elasticsearch refused the query: {es_reason(exc)}"], 1) from None
    except TransportError as exc:
        raise _fail([f"elasticsearch unreachable at {settings.es_url}: {exc}"], 1) from None

    if output is OutputFormat.json:
        typer.echo(to_json(result))
    elif output is OutputFormat.csv:
        typer.echo(to_csv(result), nl=False)
    else:
        Console().print(to_table(result))
    if plot is not None and isinstance(result, TimelineResult):
        written = plot_timeline(result, plot)
        typer.echo(f"wrote {written}", err=True)


def api(
    ctx: typer.Context,
    host: str | None = typer.Option(None, "--host", help="Default: FINSENTRY_API_HOST."),
    port: int | None = typer.Option(None, "--port", help="Default: FINSENTRY_API_PORT."),
) -> None:
    """Serve the query HTTP API (OpenAPI document at /docs and /openapi.json)."""
    import uvicorn

    from finsentry.es_client import describe_es_client
    from finsentry.queries.api import create_api

    settings: Settings = ctx.obj
    app = create_api(settings)
    auth = "bearer token" if settings.api_token is not None else "OFF (no FINSENTRY_API_TOKEN)"
    typer.echo(f"elasticsearch: {describe_es_client(settings)}; auth: {auth}", err=True)
    uvicorn.run(app, host=host or settings.api_host, port=port or settings.api_port)


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the main app."""
    app.command("query")(query)
    app.command("api")(api)
