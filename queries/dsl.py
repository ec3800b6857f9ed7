"""Elasticsearch search bodies built from validated parameters: pure functions, plain dicts.

User input only ever lands in values of structured clauses (term, terms, range, and the
`query` of a simple_query_string restricted to SIMPLE_QUERY_FLAGS), never in field names or
scripts.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from finsentry.queries.params import (
    BREAKDOWN_CANDIDATES,
    BreakdownParams,
    ItemSort,
    ItemsParams,
    QueryFilters,
    TimelineParams,
    TimelinePlan,
    TimeWindow,
    format_duration,
)

SENTIMENTS: tuple[str, ...] = ("bearish", "neutral", "bullish")
TEXT_FIELDS: list[str] = ["title", "text"]
# No PREFIX, FUZZY, NEAR, SLOP or WILDCARD: they expand to many terms and slow the node.
SIMPLE_QUERY_FLAGS = "AND|OR|NOT|PHRASE|PRECEDENCE|WHITESPACE|ESCAPE"
ITEM_FIELDS: list[str] = [
    "id",
    "source",
    "kind",
    "title",
    "text",
    "url",
    "author",
    "lang",
    "tickers",
    "companies",
    "evidence",
    "chunks",
    "topic",
    "topic_confidence",
    "sentiment",
    "sentiment_confidence",
    "sentiment_score",
    "model_version",
    "published_at",
    "ingested_at",
    "scored_at",
    "latency_ms",
]
BREAKDOWN_FIELDS = {"tickers": "tickers", "topics": "topic"}


def es_time(value: datetime) -> str:
    """UTC, millisecond precision, `Z` suffix (strict_date_optional_time)."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _any_of(field: str, values: list[str], *, case_insensitive: bool = False) -> dict[str, Any]:
    if not case_insensitive:
        return {"terms": {field: list(values)}}
    should = [{"term": {field: {"value": v, "case_insensitive": True}}} for v in values]
    return {"bool": {"should": should, "minimum_should_match": 1}}


def text_query(text: str) -> dict[str, Any]:
    """Free text on title and text: all words must match unless `|` says otherwise."""
    return {
        "simple_query_string": {
            "query": text,
            "fields": list(TEXT_FIELDS),
            "flags": SIMPLE_QUERY_FLAGS,
            "default_operator": "and",
        }
    }


def time_range(field: str, window: TimeWindow) -> dict[str, Any] | None:
    bounds: dict[str, str] = {}
    if window.start is not None:
        bounds["gte"] = es_time(window.start)
    if window.end is not None:
        bounds["lt"] = es_time(window.end)
    if not bounds:
        return None
    return {"range": {field: {**bounds, "format": "strict_date_optional_time"}}}


def filter_clauses(params: QueryFilters, window: TimeWindow) -> list[dict[str, Any]]:
    clauses: list[dict[str, Any]] = []
    if params.ticker:
        clauses.append(_any_of("tickers", params.ticker))
    if params.topic:
        clauses.append(_any_of("topic", params.topic, case_insensitive=True))
    if params.sentiment:
        clauses.append(_any_of("sentiment", list(params.sentiment)))
    if params.source:
        clauses.append(_any_of("source", params.source, case_insensitive=True))
    if params.kind:
        clauses.append(_any_of("kind", list(params.kind)))
    if params.text:
        clauses.append(text_query(params.text))
    rng = time_range(params.time_field, window)
    if rng is not None:
        clauses.append(rng)
    return clauses


def query_clause(params: QueryFilters, window: TimeWindow) -> dict[str, Any]:
    clauses = filter_clauses(params, window)
    return {"bool": {"filter": clauses}} if clauses else {"match_all": {}}


def item_sort(sort: ItemSort, time_field: str) -> list[dict[str, Any]]:
    """Total orders: ties broken by time, then id, so pages never overlap."""
    newest = {time_field: {"order": "desc", "missing": "_last"}}
    oldest = {time_field: {"order": "asc", "missing": "_last"}}
    by_sort = {
        "newest": [newest, {"id": {"order": "desc"}}],
        "oldest": [oldest, {"id": {"order": "asc"}}],
        "most_negative": [{"sentiment_score": {"order": "asc"}}, newest, {"id": {"order": "desc"}}],
        "most_positive": [
            {"sentiment_score": {"order": "desc"}},
            newest,
            {"id": {"order": "desc"}},
        ],
    }
    return by_sort[sort]


def items_request(params: ItemsParams, window: TimeWindow) -> dict[str, Any]:
    return {
        "query": query_clause(params, window),
        "sort": item_sort(params.sort, params.time_field),
        "from": (params.page - 1) * params.size,
        "size": params.size,
        "track_total_hits": True,
        "_source": {"includes": list(ITEM_FIELDS)},
    }


def _sentiment_counts() -> dict[str, Any]:
    return {"filters": {"filters": {s: {"term": {"sentiment": s}} for s in SENTIMENTS}}}


def timeline_request(params: TimelineParams, plan: TimelinePlan) -> dict[str, Any]:
    """A date histogram over the plan's window, empty buckets included."""
    window = TimeWindow(plan.start, plan.end)
    return {
        "query": query_clause(params, window),
        "size": 0,
        "track_total_hits": True,
        "aggs": {
            "timeline": {
                "date_histogram": {
                    "field": params.time_field,
                    "fixed_interval": format_duration(plan.interval),
                    "min_doc_count": 0,
                    "extended_bounds": {
                        "min": es_time(plan.start),
                        "max": es_time(plan.end - timedelta(milliseconds=1)),
                    },
                },
                "aggs": {
                    "sentiment": _sentiment_counts(),
                    "mean_score": {"avg": {"field": "sentiment_score"}},
                },
            }
        },
    }


def breakdown_request(params: BreakdownParams, by: str, window: TimeWindow) -> dict[str, Any]:
    """Per key (`by` is "tickers" or "topics"): volume, bearish and bullish counts and mean
    score of the BREAKDOWN_CANDIDATES most active keys; results.rank_rows ranks them.

    Per ticker, the counts are of each company's own verdict (the nested `companies`: the
    per-company head's, or the item's where the model had none), not of the items'.
    Ranking happens client side: the local node ships without the aggregations module
    (no bucket_sort) and without painless (no bucket_script)."""
    prefix = "companies." if by == "tickers" else ""
    keys = {
        "terms": {
            "field": f"{prefix}ticker" if by == "tickers" else BREAKDOWN_FIELDS[by],
            "size": BREAKDOWN_CANDIDATES,
            "min_doc_count": params.min_count,
            "order": [{"_count": "desc"}, {"_key": "asc"}],
        },
        "aggs": {
            "bearish": {"filter": {"term": {f"{prefix}sentiment": "bearish"}}},
            "bullish": {"filter": {"term": {f"{prefix}sentiment": "bullish"}}},
            "mean_score": {"avg": {"field": f"{prefix}score" if prefix else "sentiment_score"}},
        },
    }
    aggs: dict[str, Any] = {"keys": keys}
    if by == "tickers":
        aggs = {"companies": {"nested": {"path": "companies"}, "aggs": aggs}}
    return {
        "query": query_clause(params, window),
        "size": 0,
        "track_total_hits": True,
        "aggs": aggs,
    }
