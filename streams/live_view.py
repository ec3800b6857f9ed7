"""The live terminal view of `finsentry run`: what the pipeline is scoring, from Elasticsearch.

Pure part: `stats_request` / `negatives_request` (search bodies), `build_snapshot` (responses
-> `LiveSnapshot`) and `render` (snapshot -> rich renderable). I/O part: `fetch_snapshot` (one
round of queries) and `run_live_view` (a rich `Live` refreshed every couple of seconds).
Rates and windows use `scored_at`.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field
from rich import box
from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from finsentry.messages import Sentiment
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


class NegativeItem(BaseModel):
    scored_at: datetime | None = None
    tickers: list[str] = Field(default_factory=list)
    text: str
    source: str | None = None
    sentiment_score: float | None = None


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
        "source": ["scored_at", "tickers", "text", "title", "source", "sentiment_score"],
    }


# --- responses -> snapshot -----------------------------------------------------------------


def _doc_count(aggs: Mapping[str, Any], name: str) -> int:
    return int(aggs.get(name, {}).get("doc_count", 0))


def _total_hits(response: Mapping[str, Any]) -> int:
    total = response.get("hits", {}).get("total", 0)
    return int(total.get("value", 0) if isinstance(total, Mapping) else total)


def truncate(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: max(0, limit - 1)].rstrip() + "…"


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
        newest.append(
            NegativeItem(
                scored_at=source.get("scored_at"),
                tickers=source.get("tickers") or [],
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


def _bar(percent: float, width: int = 20) -> str:
    filled = round(width * percent / 100)
    return "█" * filled + "░" * (width - filled)


def render(snapshot: LiveSnapshot) -> RenderableType:
    """The whole screen for one snapshot (no I/O)."""
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
    )

    rates = Table.grid(padding=(0, 2))
    rates.add_column(style="dim")
    rates.add_column(justify="right")
    rates.add_row("last 10 s", f"{snapshot.rate_10s:,.1f} items/s ({snapshot.count_10s:,})")
    rates.add_row("last 1 min", f"{snapshot.rate_1m:,.1f} items/s ({snapshot.count_1m:,})")
    rates.add_row("total", f"{snapshot.total:,}")

    mix = Table.grid(padding=(0, 2))
    mix.add_column()
    mix.add_column(justify="right")
    mix.add_column(justify="right")
    mix.add_column()
    for sentiment in SENTIMENTS:
        percent = snapshot.mix_percent(sentiment)
        color = _COLORS[sentiment]
        mix.add_row(
            Text(sentiment, style=color),
            f"{snapshot.mix.get(sentiment, 0):,}",
            f"{percent:.1f}%",
            Text(_bar(percent), style=color),
        )

    tickers = Table(box=box.SIMPLE_HEAD, pad_edge=False, expand=True)
    tickers.add_column("ticker", style="bold")
    tickers.add_column("items", justify="right")
    tickers.add_column("bearish", justify="right")
    tickers.add_column("share", justify="right")
    for stat in snapshot.top_negative:
        share = 100.0 * stat.negative_share
        tickers.add_row(
            stat.ticker,
            f"{stat.total:,}",
            f"{stat.negative:,}",
            Text(f"{share:.0f}%", style="red" if share >= 50 else ""),
        )

    newest = Table(box=box.SIMPLE_HEAD, pad_edge=False, expand=True)
    newest.add_column("scored", style="dim", no_wrap=True)
    newest.add_column("tickers", style="bold", no_wrap=True)
    newest.add_column("text", overflow="ellipsis", no_wrap=True, ratio=1)
    for item in snapshot.newest_negative:
        when = f"{item.scored_at.astimezone(UTC):%H:%M:%S}" if item.scored_at else "-"
        newest.add_row(when, " ".join(item.tickers) or "-", item.text)

    top = Table.grid(expand=True, padding=(0, 1))
    top.add_column(ratio=1)
    top.add_column(ratio=1)
    top.add_row(
        Panel(rates, title="throughput"),
        Panel(mix, title=f"sentiment, last {MIX_WINDOW_S // 60} min ({snapshot.mix_total:,})"),
    )
    parts: list[RenderableType] = [
        header,
        top,
        Panel(
            tickers,
            title=(
                f"top tickers by bearish share, last {TICKER_WINDOW_S // 60} min"
                f" (>= {snapshot.min_volume} items)"
            ),
        ),
        Panel(newest, title="newest bearish items"),
    ]
    if snapshot.error:
        parts.append(Text(snapshot.error, style="bold red"))
    return Group(*parts)


# --- I/O -------------------------------------------------------------------------------------


def count_dead_letters(es: Elasticsearch, index: str) -> int | None:
    """Documents in the dead-letters index; None when it does not exist."""
    from elasticsearch import NotFoundError

    try:
        return int(es.count(index=index)["count"])
    except NotFoundError:
        return None


def fetch_snapshot(
    es: Elasticsearch,
    items_index: str,
    dead_letters_index: str,
    *,
    now: datetime | None = None,
    min_volume: int = 5,
    top_n: int = 8,
    negatives: int = 8,
) -> LiveSnapshot:
    """Query Elasticsearch once. A missing items index gives an empty snapshot saying so;
    other errors propagate."""
    from elasticsearch import NotFoundError

    now = now or datetime.now(UTC)
    dead = count_dead_letters(es, dead_letters_index)
    try:
        stats = es.search(index=items_index, **stats_request(now)).body
        newest = es.search(index=items_index, **negatives_request(negatives)).body
    except NotFoundError:
        return LiveSnapshot(
            taken_at=now,
            index=items_index,
            min_volume=min_volume,
            dead_letters=dead,
            error=f"index {items_index} does not exist yet: waiting for the first scored items",
        )
    return build_snapshot(
        stats,
        newest,
        dead,
        taken_at=now,
        index=items_index,
        min_volume=min_volume,
        top_n=top_n,
    )


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
    try:
        with Live(render(snapshot), console=console, auto_refresh=False) as live:
            while not stop.is_set():
                try:
                    snapshot = fetch_snapshot(
                        client, settings.items_index, settings.dead_letters_index
                    )
                except (ApiError, TransportError) as exc:
                    snapshot = snapshot.model_copy(
                        update={
                            "taken_at": datetime.now(UTC),
                            "error": f"Elasticsearch: {type(exc).__name__}: {str(exc)[:200]}",
                        }
                    )
                live.update(render(snapshot), refresh=True)
                stop.wait(refresh_s)
    except KeyboardInterrupt:
        pass
    finally:
        if own_client:
            client.close()
