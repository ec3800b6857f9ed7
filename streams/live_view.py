"""The live terminal view of `finsentry run`: what the pipeline is scoring, from Elasticsearch.

Pure part: `stats_request` / `negatives_request` / `alerts_request` (search bodies),
`build_snapshot` (responses -> `LiveSnapshot`), `layout` (how many rows each panel gets in
a terminal of a given height) and `render` (snapshot -> rich renderable that fits that
height: 40 lines by default). I/O part: `fetch_snapshot` (one round of queries),
`lifecycle_state` (the live model and the background training, from the models folder),
`source_rows` (the sources' health, from the state folder) and `run_live_view` (a rich
`Live` redrawn in place every couple of seconds). Rates and windows use `scored_at`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field
from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from finsentry.messages import Sentiment
from finsentry.models.registry import TrainingStatus
from finsentry.settings import Settings

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

SENTIMENTS: tuple[Sentiment, ...] = ("bearish", "neutral", "bullish")
_COLORS: dict[str, str] = {"bearish": "red", "neutral": "yellow", "bullish": "green"}

RATE_WINDOWS_S = (10, 60)
MIX_WINDOW_S = 300
TICKER_WINDOW_S = 900


class TickerStat(BaseModel):
    ticker: str
    total: int
    negative: int

    @property
    def negative_share(self) -> float:
        return self.negative / self.total if self.total else 0.0


class CompanyVerdict(BaseModel):
    """What the models said about one company of an item (its own sentiment)."""

    ticker: str
    sentiment: Sentiment


class NegativeItem(BaseModel):
    scored_at: datetime | None = None
    tickers: list[str] = Field(default_factory=list)
    companies: list[CompanyVerdict] = Field(default_factory=list)
    text: str
    evidence: str | None = Field(None, description="The most negative chunk of a long text.")
    source: str | None = None
    sentiment_score: float | None = None


class AlertRow(BaseModel):
    created_at: datetime | None = None
    rule: str
    key: str
    negative_share: float | None = None
    total: int | None = None


class SourceRow(BaseModel):
    """One source's health (from `finsentry.sources.state.source_health_rows`)."""

    source: str
    status: str
    last_poll_at: datetime | None = None
    items_total: int = 0
    errors_total: int = 0


class LiveSnapshot(BaseModel):
    """Everything the live view shows, at one moment."""

    taken_at: datetime
    index: str = ""
    total: int = 0
    count_10s: int = 0
    count_1m: int = 0
    mix: dict[str, int] = Field(default_factory=lambda: dict.fromkeys(SENTIMENTS, 0))
    top_negative: list[TickerStat] = Field(default_factory=list)
    min_volume: int = 5
    newest_negative: list[NegativeItem] = Field(default_factory=list)
    model_versions: list[str] = Field(default_factory=list)
    dead_letters: int | None = Field(None, description="None: no dead-letters index (yet).")
    live_model: str | None = Field(None, description="The version workers serve (registry).")
    training: TrainingStatus | None = Field(None, description="The default model's training.")
    alerts: list[AlertRow] = Field(default_factory=list, description="Newest first.")
    sources: list[SourceRow] = Field(default_factory=list)
    error: str | None = None

    @property
    def rate_10s(self) -> float:
        return self.count_10s / RATE_WINDOWS_S[0]

    @property
    def rate_1m(self) -> float:
        return self.count_1m / RATE_WINDOWS_S[1]

    @property
    def mix_total(self) -> int:
        return sum(self.mix.values())

    def mix_percent(self, sentiment: str) -> float:
        total = self.mix_total
        return 100.0 * self.mix.get(sentiment, 0) / total if total else 0.0


# --- queries -------------------------------------------------------------------------


def _since(now: datetime, seconds: int) -> dict[str, Any]:
    start = now - timedelta(seconds=seconds)
    return {"range": {"scored_at": {"gte": start.isoformat(), "lte": now.isoformat()}}}


def stats_request(now: datetime, ticker_buckets: int = 500) -> dict[str, Any]:
    """One aggregation-only search: total, rate windows, sentiment mix, tickers, models."""
    return {
        "size": 0,
        "track_total_hits": True,
        "aggs": {
            "last_10s": {"filter": _since(now, RATE_WINDOWS_S[0])},
            "last_1m": {"filter": _since(now, RATE_WINDOWS_S[1])},
            "mix": {
                "filter": _since(now, MIX_WINDOW_S),
                "aggs": {"sentiment": {"terms": {"field": "sentiment", "size": 10}}},
            },
            "recent": {
                "filter": _since(now, TICKER_WINDOW_S),
                "aggs": {
                    "tickers": {
                        "terms": {"field": "tickers", "size": ticker_buckets},
                        "aggs": {"negative": {"filter": {"term": {"sentiment": "bearish"}}}},
                    }
                },
            },
            "models": {
                "terms": {"field": "model_version", "size": 5, "order": {"latest": "desc"}},
                "aggs": {"latest": {"max": {"field": "scored_at"}}},
            },
        },
    }


def negatives_request(limit: int = 8) -> dict[str, Any]:
    """The newest bearish items."""
    return {
        "size": limit,
        "query": {"term": {"sentiment": "bearish"}},
        "sort": [{"scored_at": {"order": "desc"}}],
        "source": [
            "scored_at",
            "tickers",
            "companies.ticker",
            "companies.sentiment",
            "text",
            "title",
            "evidence",
            "source",
            "sentiment_score",
        ],
    }


def alerts_request(limit: int = 5) -> dict[str, Any]:
    """The newest alerts (the alerter's index)."""
    return {
        "size": limit,
        "sort": [{"created_at": {"order": "desc", "unmapped_type": "date"}}],
        "source": ["created_at", "rule", "key", "negative_share", "total"],
    }


def alert_rows(response: Mapping[str, Any]) -> list[AlertRow]:
    rows = []
    for hit in response.get("hits", {}).get("hits", []):
        source = hit.get("_source", {})
        if source.get("rule") is None or source.get("key") is None:
            continue
        rows.append(AlertRow.model_validate(source))
    return rows


# --- responses -> snapshot -----------------------------------------------------------------


def _doc_count(aggs: Mapping[str, Any], name: str) -> int:
    return int(aggs.get(name, {}).get("doc_count", 0))


def _total_hits(response: Mapping[str, Any]) -> int:
    total = response.get("hits", {}).get("total", 0)
    return int(total.get("value", 0) if isinstance(total, Mapping) else total)


def truncate(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: max(0, limit - 1)].rstrip() + "…"


def company_verdicts(source: Mapping[str, Any]) -> list[CompanyVerdict]:
    """An indexed item's per-company verdicts; entries without a ticker or a known
    sentiment are left out."""
    verdicts = []
    for company in source.get("companies") or []:
        if company.get("ticker") and company.get("sentiment") in SENTIMENTS:
            verdicts.append(CompanyVerdict.model_validate(company))
    return verdicts


def build_snapshot(
    stats: Mapping[str, Any],
    negatives: Mapping[str, Any],
    dead_letters: int | None,
    *,
    taken_at: datetime,
    index: str = "",
    min_volume: int = 5,
    top_n: int = 8,
    text_chars: int = 140,
    error: str | None = None,
) -> LiveSnapshot:
    """Turn the responses of `stats_request` and `negatives_request` into a snapshot.

    Top tickers: at least `min_volume` items in the ticker window, highest negative share
    first (ties: more negative items first).
    """
    aggs = stats.get("aggregations", {})
    mix = dict.fromkeys(SENTIMENTS, 0)
    for bucket in aggs.get("mix", {}).get("sentiment", {}).get("buckets", []):
        mix[str(bucket["key"])] = int(bucket["doc_count"])
    tickers = [
        TickerStat(
            ticker=str(b["key"]),
            total=int(b["doc_count"]),
            negative=int(b.get("negative", {}).get("doc_count", 0)),
        )
        for b in aggs.get("recent", {}).get("tickers", {}).get("buckets", [])
        if int(b["doc_count"]) >= min_volume
    ]
    tickers.sort(key=lambda t: (-t.negative_share, -t.negative, t.ticker))
    newest = []
    for hit in negatives.get("hits", {}).get("hits", []):
        source = hit.get("_source", {})
        evidence = source.get("evidence")
        newest.append(
            NegativeItem(
                scored_at=source.get("scored_at"),
                tickers=source.get("tickers") or [],
                companies=company_verdicts(source),
                evidence=truncate(evidence, text_chars) if evidence else None,
                text=truncate(source.get("text") or source.get("title") or "", text_chars),
                source=source.get("source"),
                sentiment_score=source.get("sentiment_score"),
            )
        )
    return LiveSnapshot(
        taken_at=taken_at,
        index=index,
        total=_total_hits(stats),
        count_10s=_doc_count(aggs, "last_10s"),
        count_1m=_doc_count(aggs, "last_1m"),
        mix=mix,
        top_negative=tickers[:top_n],
        min_volume=min_volume,
        newest_negative=newest,
        model_versions=[str(b["key"]) for b in aggs.get("models", {}).get("buckets", [])],
        dead_letters=dead_letters,
        error=error,
    )


# --- snapshot -> renderable ----------------------------------------------------------------

DEFAULT_HEIGHT = 40
_TOP_LINES = 5  # three panels of three rows, with their borders
_PANEL_OVERHEAD = 3  # border top and bottom, the table's header row


def _bar(percent: float, width: int = 20) -> str:
    filled = round(width * percent / 100)
    return "█" * filled + "░" * (width - filled)


def layout(snapshot: LiveSnapshot, height: int = DEFAULT_HEIGHT) -> dict[str, int]:
    """Rows per table panel so that the whole view is at most `height` lines. Panels with
    nothing to show get one row (tickers, bearish items) or none (alerts, sources); when
    space is short the sources, then the alerts, then the tickers give way."""
    spare = height - 1 - _TOP_LINES - (1 if snapshot.error else 0)
    wanted = {
        "tickers": max(1, len(snapshot.top_negative)),
        "negatives": max(1, len(snapshot.newest_negative)),
        "alerts": min(len(snapshot.alerts), 5),
        "sources": min(len(snapshot.sources), 5),
    }
    shown = [name for name, rows in wanted.items() if rows]
    for dropped in ("sources", "alerts", "tickers"):
        if spare >= (_PANEL_OVERHEAD + 1) * len(shown):
            break
        if dropped in shown:
            shown.remove(dropped)
    rows = dict.fromkeys(wanted, 0)
    if spare < (_PANEL_OVERHEAD + 1) * len(shown):
        return rows  # not even one row of bearish items: header and top only
    budget = spare - (_PANEL_OVERHEAD + 1) * len(shown)
    for name in shown:  # one each first
        rows[name] = 1
    for name, cap in (("sources", 5), ("alerts", 5), ("tickers", 5), ("negatives", 8)):
        if name in shown:  # then up to `cap` rows each, in this order, then more tickers
            extra = min(max(0, min(wanted[name], cap) - rows[name]), budget)
            rows[name] += extra
            budget -= extra
    if "tickers" in shown:
        rows["tickers"] += min(wanted["tickers"] - rows["tickers"], budget)
    return rows


_ARROWS: dict[str, str] = {"bearish": "▼", "neutral": "·", "bullish": "▲"}


def _companies_cell(item: NegativeItem) -> Text:
    """`AAPL▲ MSFT▼`: each company with its own verdict; the bare tickers for an item
    indexed without verdicts."""
    if not item.companies:
        return Text(" ".join(item.tickers) or "-", style="bold")
    cell = Text()
    for i, company in enumerate(item.companies):
        cell.append(" " if i else "")
        cell.append(
            f"{company.ticker}{_ARROWS[company.sentiment]}", style=_COLORS[company.sentiment]
        )
    return cell


def _text_cell(item: NegativeItem) -> Text:
    """The text; for a long text scored in chunks, its most negative chunk (the evidence)."""
    if item.evidence and item.evidence != item.text:
        return Text.assemble(("» ", "dim"), (item.evidence, "italic"))
    return Text(item.text)


def _model_panel(snapshot: LiveSnapshot) -> Table:
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column(no_wrap=True, overflow="ellipsis")
    grid.add_row("live", Text(snapshot.live_model or "-", style="cyan"))
    training = snapshot.training
    if training is None:
        grid.add_row("train", "-")
        grid.add_row("", "")
        return grid
    detail = training.message
    if training.phase == "training" and training.total:
        eta = f" ETA {training.eta_s / 60:.0f} min" if training.eta_s is not None else ""
        progress = f"{_bar(100 * training.fraction, 8)} {100 * training.fraction:.0f}%{eta}"
        detail = f"{training.step:,}/{training.total:,} {training.message}"
    elif training.phase == "done":
        progress = f"done: {training.version or '-'}"
    else:
        progress = training.phase
    style = "red" if training.phase in {"failed", "stopped"} else ""
    grid.add_row("train", Text(progress, style=style))
    grid.add_row("", Text(detail, style="dim"))
    return grid


def _table(*columns: tuple[str, dict[str, Any]]) -> Table:
    table = Table(box=None, pad_edge=False, expand=True, header_style="bold dim")
    for name, options in columns:
        table.add_column(name, **{"no_wrap": True, "overflow": "ellipsis", **options})
    return table


def render(snapshot: LiveSnapshot, *, height: int = DEFAULT_HEIGHT) -> RenderableType:
    """The whole screen for one snapshot, at most `height` lines (no I/O)."""
    rows = layout(snapshot, height)
    header = Text.assemble(
        ("finsentry live", "bold"),
        f"  {snapshot.taken_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC",
        f"  index {snapshot.index}" if snapshot.index else "",
        "  models: ",
        (", ".join(snapshot.model_versions) or "-", "cyan"),
        "  dead letters: ",
        (
            "-" if snapshot.dead_letters is None else f"{snapshot.dead_letters:,}",
            "red" if snapshot.dead_letters else "",
        ),
        no_wrap=True,
        overflow="ellipsis",
    )

    # Cells never wrap (a wrapped cell would make the frame taller): they are cut instead.
    cut: dict[str, Any] = {"no_wrap": True, "overflow": "ellipsis"}
    rates = Table.grid(padding=(0, 1))
    rates.add_column(style="dim", **cut)
    rates.add_column(justify="right", **cut)
    rates.add_row("last 10 s", f"{snapshot.rate_10s:,.1f} items/s ({snapshot.count_10s:,})")
    rates.add_row("last 1 min", f"{snapshot.rate_1m:,.1f} items/s ({snapshot.count_1m:,})")
    rates.add_row("total", f"{snapshot.total:,}")

    mix = Table.grid(padding=(0, 1))
    mix.add_column(**cut)
    mix.add_column(justify="right", **cut)
    mix.add_column(justify="right", **cut)
    mix.add_column(**cut)
    for sentiment in SENTIMENTS:
        percent = snapshot.mix_percent(sentiment)
        color = _COLORS[sentiment]
        mix.add_row(
            Text(sentiment, style=color),
            f"{snapshot.mix.get(sentiment, 0):,}",
            f"{percent:.1f}%",
            Text(_bar(percent, 10), style=color),
        )

    top = Table.grid(expand=True, padding=(0, 1))
    top.add_column(ratio=2)
    top.add_column(ratio=3)
    top.add_column(ratio=4)
    top.add_row(
        Panel(rates, title="throughput"),
        Panel(mix, title=f"sentiment, {MIX_WINDOW_S // 60} min ({snapshot.mix_total:,})"),
        Panel(_model_panel(snapshot), title="model"),
    )
    parts: list[RenderableType] = [header, top]

    if rows["tickers"]:
        tickers = _table(
            ("ticker", {"style": "bold"}),
            ("items", {"justify": "right"}),
            ("bearish", {"justify": "right"}),
            ("share", {"justify": "right"}),
        )
        for stat in snapshot.top_negative[: rows["tickers"]]:
            share = 100.0 * stat.negative_share
            tickers.add_row(
                stat.ticker,
                f"{stat.total:,}",
                f"{stat.negative:,}",
                Text(f"{share:.0f}%", style="red" if share >= 50 else ""),
            )
        if not snapshot.top_negative:
            tickers.add_row(Text("none yet", style="dim"), "", "", "")
        title = (
            f"top tickers by bearish share, last {TICKER_WINDOW_S // 60} min"
            f" (>= {snapshot.min_volume} items)"
        )
        parts.append(Panel(tickers, title=title))

    if rows["negatives"]:
        newest = _table(
            ("scored", {"style": "dim", "no_wrap": True}),
            ("companies", {"no_wrap": True, "max_width": 30}),
            ("text", {"overflow": "ellipsis", "no_wrap": True, "ratio": 1}),
        )
        for item in snapshot.newest_negative[: rows["negatives"]]:
            when = f"{item.scored_at.astimezone(UTC):%H:%M:%S}" if item.scored_at else "-"
            newest.add_row(when, _companies_cell(item), _text_cell(item))
        if not snapshot.newest_negative:
            newest.add_row("", "", Text("none yet", style="dim"))
        parts.append(Panel(newest, title="newest bearish items"))

    if rows["alerts"]:
        alerts = _table(
            ("at", {"style": "dim", "no_wrap": True}),
            ("rule", {"no_wrap": True}),
            ("key", {"style": "bold", "no_wrap": True}),
            ("bearish share", {"justify": "right"}),
            ("items", {"justify": "right"}),
        )
        for alert in snapshot.alerts[: rows["alerts"]]:
            when = f"{alert.created_at.astimezone(UTC):%H:%M:%S}" if alert.created_at else "-"
            share = "-" if alert.negative_share is None else f"{100 * alert.negative_share:.0f}%"
            total = "-" if alert.total is None else f"{alert.total:,}"
            alerts.add_row(when, alert.rule, alert.key, Text(share, style="red"), total)
        parts.append(Panel(alerts, title="newest alerts"))

    if rows["sources"]:
        sources = _table(
            ("source", {"style": "bold", "no_wrap": True}),
            ("status", {"no_wrap": True}),
            ("last poll", {"style": "dim"}),
            ("items", {"justify": "right"}),
            ("errors", {"justify": "right"}),
        )
        for row in snapshot.sources[: rows["sources"]]:
            when = f"{row.last_poll_at.astimezone(UTC):%H:%M:%S}" if row.last_poll_at else "-"
            style = "red" if row.status.startswith("error") else ""
            sources.add_row(
                row.source,
                Text(row.status, style=style),
                when,
                f"{row.items_total:,}",
                f"{row.errors_total:,}",
            )
        parts.append(Panel(sources, title="sources"))
    if snapshot.error:
        parts.append(Text(snapshot.error, style="bold red", no_wrap=True, overflow="ellipsis"))
    return Group(*parts)


# --- I/O -------------------------------------------------------------------------------------


def count_dead_letters(es: Elasticsearch, index: str) -> int | None:
    """Documents in the dead-letters index; None when it does not exist."""
    from elasticsearch import NotFoundError

    try:
        return int(es.count(index=index)["count"])
    except NotFoundError:
        return None


def fetch_alerts(es: Elasticsearch, index: str, limit: int = 5) -> list[AlertRow]:
    """The newest alerts; none when the alerts index does not exist (yet)."""
    response = es.options(ignore_status=404).search(index=index, **alerts_request(limit))
    return alert_rows(response.body)


def lifecycle_state(models_dir: Path) -> tuple[str | None, TrainingStatus | None]:
    """The live model's version and the background training's status, from the models
    folder (a training whose process is gone shows as `stopped`)."""
    from finsentry.models.artifact import ArtifactError, newest_servable, read_manifest
    from finsentry.models.registry import read_live, read_training_status

    try:
        pointer = read_live(models_dir)
        if pointer is not None:
            live: str | None = pointer.live.version
        else:
            newest = newest_servable(models_dir)
            live = read_manifest(newest).version if newest is not None else None
    except ArtifactError:
        live = None
    training = read_training_status(models_dir)
    if (
        training is not None
        and training.phase not in {"done", "failed"}
        and training.pid is not None
        and not _alive(training.pid)
    ):
        training = training.model_copy(update={"phase": "stopped"})
    return live, training


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def source_rows(state_dir: Path) -> list[SourceRow]:
    """The sources' health (`finsentry.sources.state`), worst first; none without sources."""
    try:
        from finsentry.sources.state import source_health_rows
    except ImportError:
        return []
    rows = [
        SourceRow(
            source=h.source,
            status=h.last_status,
            last_poll_at=h.last_poll_at,
            items_total=h.items_total,
            errors_total=h.errors_total,
        )
        for h in source_health_rows(state_dir)
    ]
    return sorted(rows, key=lambda r: (not r.status.startswith("error"), r.source))


def fetch_snapshot(
    es: Elasticsearch,
    items_index: str,
    dead_letters_index: str,
    *,
    now: datetime | None = None,
    min_volume: int = 5,
    top_n: int = 8,
    negatives: int = 8,
    alerts_index: str | None = None,
) -> LiveSnapshot:
    """Query Elasticsearch once. A missing items index gives an empty snapshot saying so;
    other errors propagate."""
    from elasticsearch import NotFoundError

    now = now or datetime.now(UTC)
    dead = count_dead_letters(es, dead_letters_index)
    alerts = fetch_alerts(es, alerts_index) if alerts_index else []
    try:
        stats = es.search(index=items_index, **stats_request(now)).body
        newest = es.search(index=items_index, **negatives_request(negatives)).body
    except NotFoundError:
        return LiveSnapshot(
            taken_at=now,
            index=items_index,
            min_volume=min_volume,
            dead_letters=dead,
            alerts=alerts,
            error=f"index {items_index} does not exist yet: waiting for the first scored items",
        )
    snapshot = build_snapshot(
        stats,
        newest,
        dead,
        taken_at=now,
        index=items_index,
        min_volume=min_volume,
        top_n=top_n,
    )
    return snapshot.model_copy(update={"alerts": alerts})


def run_live_view(
    settings: Settings,
    stop_event: threading.Event | None = None,
    *,
    refresh_s: float = 2.0,
    console: Console | None = None,
    es: Elasticsearch | None = None,
) -> None:
    """Show the live view until `stop_event` is set or Ctrl-C. Elasticsearch errors are shown
    on screen (with the last good numbers) and retried at the next refresh."""
    from elastic_transport import TransportError
    from elasticsearch import ApiError
    from rich.live import Live

    from finsentry.es_client import make_es_client

    stop = stop_event or threading.Event()
    own_client = es is None
    client = es if es is not None else make_es_client(settings)
    snapshot = LiveSnapshot(taken_at=datetime.now(UTC), index=settings.items_index)
    console = console or Console()

    def height() -> int:
        return max(12, min(console.size.height, DEFAULT_HEIGHT))

    # Redrawn in place: the frame never exceeds the terminal (cropped if it is tiny), and
    # nothing else prints meanwhile (`finsentry run` logs to a file).
    live = Live(
        render(snapshot, height=height()),
        console=console,
        auto_refresh=False,
        vertical_overflow="crop",
    )
    try:
        live.start()
        while not stop.is_set():
            try:
                snapshot = fetch_snapshot(
                    client,
                    settings.items_index,
                    settings.dead_letters_index,
                    alerts_index=settings.alerts_index,
                )
            except (ApiError, TransportError) as exc:
                snapshot = snapshot.model_copy(
                    update={
                        "taken_at": datetime.now(UTC),
                        "error": f"Elasticsearch: {type(exc).__name__}: {str(exc)[:200]}",
                    }
                )
            live_model, training = lifecycle_state(settings.models_dir)
            snapshot = snapshot.model_copy(
                update={
                    "live_model": live_model,
                    "training": training,
                    "sources": source_rows(settings.state_dir),
                }
            )
            live.update(render(snapshot, height=height()), refresh=True)
            stop.wait(refresh_s)
    except KeyboardInterrupt:
        pass
    finally:
        live.stop()
        if own_client:
            client.close()
