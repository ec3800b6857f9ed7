"""Run the queries against Elasticsearch and shape the answers into result models.

`shape_*` are pure (response dict in, model out); `run_*` do the one search each.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from finsentry.queries import dsl
from finsentry.queries.params import (
    BreakdownParams,
    ItemSort,
    ItemsParams,
    Order,
    QueryFilters,
    RankBy,
    TickersParams,
    TimeField,
    TimelineParams,
    TimelinePlan,
    TimeWindow,
    TopicsParams,
    format_duration,
    plan_timeline,
    resolve_window,
)

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch


def _mean(value: float | None) -> float | None:
    """Averages of float32 fields, without the float32 noise (6 decimals)."""
    return None if value is None else round(value, 6)


def es_reason(exc: Exception) -> str:
    """The root cause Elasticsearch gave for an ApiError, else its short message."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        causes = error.get("root_cause") or [error]
        cause = causes[0] if isinstance(causes[0], dict) else error
        return f"{cause.get('type', 'error')}: {cause.get('reason', '')}".strip()
    return str(getattr(exc, "message", exc))


def net_sentiment_index(bullish: int, bearish: int, total: int) -> float | None:
    """(bullish - bearish) / total, in [-1, 1]; None when there is nothing to measure."""
    return (bullish - bearish) / total if total else None


class CompanyView(BaseModel):
    """One company of an item with its own verdict (`source`: `entity_head` = the
    per-company head's, `text` = the item's, copied)."""

    model_config = ConfigDict(extra="ignore")

    ticker: str
    name: str | None = None
    sentiment: str
    confidence: float
    score: float
    source: str = "text"


class ItemView(BaseModel):
    """One item as the queries return it (the index document less the probabilities)."""

    model_config = ConfigDict(extra="ignore")

    id: str
    source: str | None = None
    kind: str | None = None
    title: str | None = None
    text: str | None = None
    url: str | None = None
    author: str | None = None
    lang: str | None = None
    tickers: list[str] = Field(default_factory=list)
    companies: list[CompanyView] = Field(default_factory=list)
    evidence: str | None = Field(None, description="Most negative chunk of a long text.")
    chunks: int | None = Field(None, description="Model windows a long text was cut into.")
    topic: str | None = None
    topic_confidence: float | None = None
    sentiment: str | None = None
    sentiment_confidence: float | None = None
    sentiment_score: float | None = None
    model_version: str | None = None
    published_at: datetime | None = None
    ingested_at: datetime | None = None
    scored_at: datetime | None = None
    latency_ms: float | None = None


class ItemsResult(BaseModel):
    mode: Literal["items"] = "items"
    time_field: TimeField
    start: datetime | None
    end: datetime | None
    sort: ItemSort
    total: int = Field(description="Items matching the filters.")
    page: int
    size: int
    pages: int
    items: list[ItemView]


class TimelineBucket(BaseModel):
    start: datetime
    total: int
    bullish: int
    neutral: int
    bearish: int
    net_sentiment: float | None = Field(description="(bullish - bearish) / total")
    mean_score: float | None


class TimelineResult(BaseModel):
    mode: Literal["timeline"] = "timeline"
    time_field: TimeField
    start: datetime
    end: datetime
    interval: str
    total: int
    bullish: int
    neutral: int
    bearish: int
    net_sentiment: float | None
    buckets: list[TimelineBucket]


class BreakdownRow(BaseModel):
    rank: int
    key: str
    volume: int
    bullish: int
    bearish: int
    negative_share: float = Field(description="bearish / volume")
    net_sentiment: float | None
    mean_score: float | None


class BreakdownResult(BaseModel):
    mode: Literal["tickers", "topics"]
    time_field: TimeField
    start: datetime | None
    end: datetime | None
    rank_by: RankBy
    order: Order
    total: int = Field(description="Items matching the filters.")
    rows: list[BreakdownRow]


QueryResult = ItemsResult | TimelineResult | BreakdownResult


def _total(response: dict[str, Any]) -> int:
    total = response.get("hits", {}).get("total", 0)
    return int(total["value"]) if isinstance(total, dict) else int(total)


def shape_items(response: dict[str, Any], params: ItemsParams, window: TimeWindow) -> ItemsResult:
    total = _total(response)
    items = [ItemView.model_validate(hit["_source"]) for hit in response["hits"]["hits"]]
    return ItemsResult(
        time_field=params.time_field,
        start=window.start,
        end=window.end,
        sort=params.sort,
        total=total,
        page=params.page,
        size=params.size,
        pages=math.ceil(total / params.size),
        items=items,
    )


def shape_timeline(
    response: dict[str, Any], params: TimelineParams, plan: TimelinePlan
) -> TimelineResult:
    buckets: list[TimelineBucket] = []
    for raw in response["aggregations"]["timeline"]["buckets"]:
        counts = {s: int(raw["sentiment"]["buckets"][s]["doc_count"]) for s in dsl.SENTIMENTS}
        total = int(raw["doc_count"])
        buckets.append(
            TimelineBucket(
                start=datetime.fromtimestamp(raw["key"] / 1000, tz=UTC),
                total=total,
                net_sentiment=net_sentiment_index(counts["bullish"], counts["bearish"], total),
                mean_score=_mean(raw["mean_score"]["value"]),
                **counts,
            )
        )
    sums = {s: sum(getattr(b, s) for b in buckets) for s in dsl.SENTIMENTS}
    total = sum(b.total for b in buckets)
    return TimelineResult(
        time_field=params.time_field,
        start=plan.start,
        end=plan.end,
        interval=format_duration(plan.interval),
        total=total,
        net_sentiment=net_sentiment_index(sums["bullish"], sums["bearish"], total),
        buckets=buckets,
        **sums,
    )


def rank_rows(
    rows: list[BreakdownRow], rank_by: RankBy, order: Order, limit: int
) -> list[BreakdownRow]:
    """The first `limit` rows by `rank_by` in `order`; ties go to volume, then key."""

    def metric(row: BreakdownRow) -> float:
        value = {
            "volume": float(row.volume),
            "negative_share": row.negative_share,
            "mean_score": row.mean_score if row.mean_score is not None else 0.0,
        }[rank_by]
        return -value if order == "desc" else value

    ranked = sorted(rows, key=lambda r: (metric(r), -r.volume, r.key))[:limit]
    return [row.model_copy(update={"rank": i}) for i, row in enumerate(ranked, start=1)]


def shape_breakdown(
    response: dict[str, Any], params: BreakdownParams, by: str, window: TimeWindow
) -> BreakdownResult:
    rows: list[BreakdownRow] = []
    aggregations = response["aggregations"]
    buckets = aggregations.get("companies", aggregations)["keys"]["buckets"]
    for raw in buckets:
        volume = int(raw["doc_count"])
        bearish = int(raw["bearish"]["doc_count"])
        bullish = int(raw["bullish"]["doc_count"])
        rows.append(
            BreakdownRow(
                rank=0,
                key=str(raw["key"]),
                volume=volume,
                bullish=bullish,
                bearish=bearish,
                negative_share=bearish / volume,
                net_sentiment=net_sentiment_index(bullish, bearish, volume),
                mean_score=_mean(raw["mean_score"]["value"]),
            )
        )
    order = params.effective_order
    return BreakdownResult(
        mode="tickers" if by == "tickers" else "topics",
        time_field=params.time_field,
        start=window.start,
        end=window.end,
        rank_by=params.rank_by,
        order=order,
        total=_total(response),
        rows=rank_rows(rows, params.rank_by, order, params.limit),
    )


def _search(es: Elasticsearch, index: str, body: dict[str, Any]) -> dict[str, Any]:
    return dict(es.search(index=index, body=body))


def run_items(es: Elasticsearch, index: str, params: ItemsParams, now: datetime) -> ItemsResult:
    window = resolve_window(params, now)
    return shape_items(_search(es, index, dsl.items_request(params, window)), params, window)


def run_timeline(
    es: Elasticsearch, index: str, params: TimelineParams, now: datetime
) -> TimelineResult:
    plan = plan_timeline(params, now)
    return shape_timeline(_search(es, index, dsl.timeline_request(params, plan)), params, plan)


def run_breakdown(
    es: Elasticsearch, index: str, params: BreakdownParams, by: str, now: datetime
) -> BreakdownResult:
    window = resolve_window(params, now)
    body = dsl.breakdown_request(params, by, window)
    return shape_breakdown(_search(es, index, body), params, by, window)


def run_query(
    es: Elasticsearch, index: str, params: QueryFilters, now: datetime | None = None
) -> QueryResult:
    """Dispatch on the parameter model's type; `now` defaults to the current UTC time."""
    now = now or datetime.now(UTC)
    if isinstance(params, ItemsParams):
        return run_items(es, index, params, now)
    if isinstance(params, TimelineParams):
        return run_timeline(es, index, params, now)
    if isinstance(params, TickersParams):
        return run_breakdown(es, index, params, "tickers", now)
    if isinstance(params, TopicsParams):
        return run_breakdown(es, index, params, "topics", now)
    raise TypeError(f"not a query: {type(params).__name__}")
