"""Unit tests of the query stage's pure parts: parameters, DSL, shaping, output, rate limit,
and the Elasticsearch client options (no server needed)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from finsentry.es_client import describe_es_client, es_client_options
from finsentry.queries import dsl
from finsentry.queries.api import RateLimiter
from finsentry.queries.output import plot_timeline, tabular, to_csv, to_json, to_table
from finsentry.queries.params import (
    MAX_TIMELINE_BUCKETS,
    ItemsParams,
    QueryError,
    TickersParams,
    TimelineParams,
    TimeWindow,
    auto_interval,
    format_duration,
    parse_duration,
    plan_timeline,
    resolve_window,
    timeline_bucket_count,
)
from finsentry.queries.results import (
    BreakdownRow,
    es_reason,
    net_sentiment_index,
    rank_rows,
    shape_breakdown,
    shape_timeline,
)
from finsentry.settings import Settings

NOW = datetime(2025, 3, 6, 12, 0, tzinfo=UTC)


# --- Elasticsearch client ------------------------------------------------------------


def test_es_client_options_carry_auth_tls_and_retries() -> None:
    settings = Settings(
        es_url="https://es.example:9200",
        es_username="reader",
        es_password="pw-secret",
        es_ca_certs=Path("/etc/ca.pem"),
        es_request_timeout=7.5,
        es_retry_on_timeout=False,
        es_max_retries=1,
    )
    options = es_client_options(settings)
    assert options == {
        "hosts": ["https://es.example:9200"],
        "basic_auth": ("reader", "pw-secret"),
        "ca_certs": "/etc/ca.pem",
        "request_timeout": 7.5,
        "retry_on_timeout": False,
        "max_retries": 1,
    }
    assert "pw-secret" not in json.dumps(describe_es_client(settings))


def test_es_client_api_key_wins_and_is_never_described() -> None:
    settings = Settings(es_username="u", es_password="p", es_api_key="key-secret")
    options = es_client_options(settings)
    assert options["api_key"] == "key-secret"
    assert "basic_auth" not in options
    assert describe_es_client(settings)["auth"] == "api_key"
    assert "key-secret" not in repr(settings)


# --- parameters ----------------------------------------------------------------------


def test_durations_round_trip() -> None:
    assert parse_duration("6h") == timedelta(hours=6)
    assert parse_duration(" 2w ") == timedelta(days=14)
    assert format_duration(timedelta(hours=36)) == "36h"
    assert format_duration(timedelta(days=2)) == "2d"
    assert format_duration(timedelta(seconds=90)) == "90s"
    for bad in ("6", "h", "-1h", "0m", "1y", "6 hours"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_filters_normalise_and_default() -> None:
    params = ItemsParams.model_validate(
        {"ticker": ["$nvda", " brk.b "], "from": "2025-03-01", "to": "2025-03-02T10:00:00+02:00"}
    )
    assert params.ticker == ["NVDA", "BRK.B"]
    assert params.from_ == datetime(2025, 3, 1, tzinfo=UTC)
    assert params.to == datetime(2025, 3, 2, 8, tzinfo=UTC)
    assert params.time_field == "ingested_at"
    assert (params.page, params.size, params.sort) == (1, 50, "newest")


@pytest.mark.parametrize(
    ("model", "values", "message"),
    [
        (ItemsParams, {"from": "2025-13-01"}, "month value is outside"),
        (ItemsParams, {"from": "yesterday"}, "valid datetime"),
        (ItemsParams, {"from": "2025-03-02", "to": "2025-03-01"}, "from must be before to"),
        (ItemsParams, {"since": "6h", "to": "2025-03-01"}, "either since or from/to"),
        (ItemsParams, {"size": 501}, "less than or equal to 500"),
        (ItemsParams, {"page": 21, "size": 500}, "page * size"),
        (ItemsParams, {"interval": "1h"}, "Extra inputs are not permitted"),
        (ItemsParams, {"ticker": ["NV DA"]}, "not a ticker symbol"),
        (ItemsParams, {"sentiment": ["angry"]}, "bearish"),
        (ItemsParams, {"time_field": "url"}, "ingested_at"),
        (ItemsParams, {"text": "sentiment:bullish OR *"}, "unsupported query syntax"),
        (ItemsParams, {"text": "nvda~2"}, "unsupported query syntax"),
        (ItemsParams, {"text": '"open phrase'}, 'unbalanced "'),
        (ItemsParams, {"text": "x" * 300}, "at most 256"),
        (ItemsParams, {"topic": ["a\nb"]}, "control characters"),
        (TimelineParams, {"interval": "30s"}, "at least 1m"),
        (TickersParams, {"limit": 10_000}, "less than or equal to 500"),
        (TickersParams, {"rank_by": "price"}, "volume"),
    ],
)
def test_bad_parameters_are_refused_clearly(
    model: type[ItemsParams], values: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError) as info:
        model.model_validate(values)
    assert message in str(info.value)


def test_since_resolves_against_now() -> None:
    params = ItemsParams.model_validate({"since": "6h"})
    assert resolve_window(params, NOW) == TimeWindow(NOW - timedelta(hours=6), NOW)
    assert resolve_window(ItemsParams(), NOW) == TimeWindow(None, None)


def test_timeline_plan_limits() -> None:
    week = plan_timeline(TimelineParams(), NOW)
    assert (week.start, week.end) == (NOW - timedelta(days=7), NOW)
    assert week.interval == auto_interval(week.start, week.end) == timedelta(hours=3)
    fixed = plan_timeline(
        TimelineParams.model_validate({"from": "2025-03-01", "to": "2025-03-04", "interval": "1d"}),
        NOW,
    )
    assert fixed.buckets == 3
    with pytest.raises(QueryError, match="at most 90 days"):
        plan_timeline(TimelineParams.model_validate({"since": "91d"}), NOW)
    with pytest.raises(QueryError, match=f"max {MAX_TIMELINE_BUCKETS}"):
        plan_timeline(TimelineParams.model_validate({"since": "30d", "interval": "1m"}), NOW)
    with pytest.raises(QueryError, match="before to"):
        plan_timeline(TimelineParams.model_validate({"from": "2030-01-01"}), NOW)


def test_bucket_count_follows_epoch_alignment() -> None:
    start = datetime(2025, 3, 1, 0, 30, tzinfo=UTC)
    assert timeline_bucket_count(start, start + timedelta(hours=2), timedelta(hours=1)) == 3
    assert timeline_bucket_count(start, start + timedelta(minutes=30), timedelta(hours=1)) == 1


# --- DSL -----------------------------------------------------------------------------


def test_items_request_is_structured_and_paged() -> None:
    params = ItemsParams.model_validate(
        {
            "ticker": ["NVDA"],
            "topic": ["Earnings"],
            "sentiment": ["bearish"],
            "text": '"rate cut" | bank',
            "from": "2025-03-01",
            "to": "2025-03-02",
            "page": 3,
            "size": 20,
            "sort": "most_negative",
        }
    )
    body = dsl.items_request(params, resolve_window(params, NOW))
    assert body["from"] == 40 and body["size"] == 20 and body["track_total_hits"] is True
    assert body["sort"][0] == {"sentiment_score": {"order": "asc"}}
    clauses = body["query"]["bool"]["filter"]
    assert {"terms": {"tickers": ["NVDA"]}} in clauses
    assert {"terms": {"sentiment": ["bearish"]}} in clauses
    text = next(c["simple_query_string"] for c in clauses if "simple_query_string" in c)
    assert text["query"] == '"rate cut" | bank'
    assert text["fields"] == ["title", "text"]
    assert set(text["flags"].split("|")) == {
        "AND",
        "OR",
        "NOT",
        "PHRASE",
        "PRECEDENCE",
        "WHITESPACE",
        "ESCAPE",
    }
    rng = next(c["range"] for c in clauses if "range" in c)
    assert rng == {
        "ingested_at": {
            "gte": "2025-03-01T00:00:00.000Z",
            "lt": "2025-03-02T00:00:00.000Z",
            "format": "strict_date_optional_time",
        }
    }
    topic = next(c for c in clauses if "bool" in c)
    assert topic["bool"]["should"][0]["term"]["topic"]["case_insensitive"] is True
    assert dsl.items_request(ItemsParams(), TimeWindow(None, None))["query"] == {"match_all": {}}


def test_timeline_request_has_bounds_and_sentiment_counts() -> None:
    params = TimelineParams.model_validate(
        {"from": "2025-03-01", "to": "2025-03-04", "interval": "1d", "time_field": "scored_at"}
    )
    plan = plan_timeline(params, NOW)
    histogram = dsl.timeline_request(params, plan)["aggs"]["timeline"]
    assert histogram["date_histogram"]["field"] == "scored_at"
    assert histogram["date_histogram"]["fixed_interval"] == "1d"
    assert histogram["date_histogram"]["min_doc_count"] == 0
    assert histogram["date_histogram"]["extended_bounds"] == {
        "min": "2025-03-01T00:00:00.000Z",
        "max": "2025-03-03T23:59:59.999Z",
    }
    assert set(histogram["aggs"]["sentiment"]["filters"]["filters"]) == set(dsl.SENTIMENTS)


# --- shaping -------------------------------------------------------------------------


def test_net_sentiment_index() -> None:
    assert net_sentiment_index(3, 1, 8) == 0.25
    assert net_sentiment_index(0, 0, 0) is None


def _row(key: str, volume: int, bearish: int, mean: float) -> BreakdownRow:
    return BreakdownRow(
        rank=0,
        key=key,
        volume=volume,
        bullish=0,
        bearish=bearish,
        negative_share=bearish / volume,
        net_sentiment=None,
        mean_score=mean,
    )


def test_rank_rows_orders_and_breaks_ties() -> None:
    rows = [_row("B", 2, 1, 0.2), _row("A", 2, 1, -0.1), _row("C", 5, 1, 0.0), _row("D", 1, 1, 0)]
    assert [r.key for r in rank_rows(rows, "volume", "desc", 10)] == ["C", "A", "B", "D"]
    by_share = rank_rows(rows, "negative_share", "desc", 3)
    assert [(r.rank, r.key) for r in by_share] == [(1, "D"), (2, "A"), (3, "B")]
    assert [r.key for r in rank_rows(rows, "mean_score", "asc", 2)] == ["A", "C"]


def test_shape_timeline_and_breakdown_from_responses() -> None:
    params = TimelineParams.model_validate(
        {"from": "2025-03-01", "to": "2025-03-03", "interval": "1d"}
    )
    plan = plan_timeline(params, NOW)

    def bucket(day: int, bear: int, neu: int, bull: int, mean: float | None) -> dict:
        counts = {"bearish": bear, "neutral": neu, "bullish": bull}
        return {
            "key": int(datetime(2025, 3, day, tzinfo=UTC).timestamp() * 1000),
            "doc_count": bear + neu + bull,
            "sentiment": {"buckets": {k: {"doc_count": v} for k, v in counts.items()}},
            "mean_score": {"value": mean},
        }

    response = {
        "hits": {"total": {"value": 5, "relation": "eq"}},
        "aggregations": {
            "timeline": {"buckets": [bucket(1, 1, 1, 3, 0.3), bucket(2, 0, 0, 0, None)]}
        },
    }
    result = shape_timeline(response, params, plan)
    assert [b.total for b in result.buckets] == [5, 0]
    assert result.buckets[0].net_sentiment == pytest.approx(0.4)
    assert result.buckets[1].net_sentiment is None
    assert (result.total, result.bullish, result.bearish) == (5, 3, 1)
    assert result.interval == "1d"

    tickers = TickersParams.model_validate({"rank_by": "negative_share"})
    breakdown = {
        "hits": {"total": {"value": 4, "relation": "eq"}},
        "aggregations": {
            "keys": {
                "buckets": [
                    {
                        "key": "NVDA",
                        "doc_count": 3,
                        "bearish": {"doc_count": 1},
                        "bullish": {"doc_count": 2},
                        "mean_score": {"value": 0.2},
                    },
                    {
                        "key": "JPM",
                        "doc_count": 1,
                        "bearish": {"doc_count": 1},
                        "bullish": {"doc_count": 0},
                        "mean_score": {"value": -0.9},
                    },
                ]
            }
        },
    }
    shaped = shape_breakdown(breakdown, tickers, "tickers", TimeWindow(None, None))
    assert [(r.rank, r.key, r.negative_share) for r in shaped.rows] == [
        (1, "JPM", 1.0),
        (2, "NVDA", pytest.approx(1 / 3)),
    ]
    assert shaped.order == "desc" and shaped.total == 4


# --- output and rate limit ---------------------------------------------------------------


def test_outputs_render_every_format(tmp_path: Path) -> None:
    params = TimelineParams.model_validate(
        {"from": "2025-03-01", "to": "2025-03-02", "interval": "12h"}
    )
    plan = plan_timeline(params, NOW)
    start = int(datetime(2025, 3, 1, tzinfo=UTC).timestamp() * 1000)
    buckets = [
        {
            "key": start + i * 12 * 3600 * 1000,
            "doc_count": 2,
            "sentiment": {
                "buckets": {
                    "bearish": {"doc_count": i},
                    "neutral": {"doc_count": 0},
                    "bullish": {"doc_count": 2 - i},
                }
            },
            "mean_score": {"value": 0.5 - i},
        }
        for i in range(2)
    ]
    result = shape_timeline({"aggregations": {"timeline": {"buckets": buckets}}}, params, plan)
    columns, rows = tabular(result)
    assert columns[0] == "start" and len(rows) == 2
    assert to_csv(result).splitlines()[1] == "2025-03-01T00:00:00+00:00,2,2,0,0,1.0000,0.5000"
    assert json.loads(to_json(result))["net_sentiment"] == 0.5
    assert to_table(result).row_count == 2
    png = plot_timeline(result, tmp_path / "out" / "timeline.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rate_limiter_sliding_window() -> None:
    clock = [0.0]
    limiter = RateLimiter(2, window=60.0, clock=lambda: clock[0])
    assert limiter.hit("a") is None and limiter.hit("a") is None
    assert limiter.hit("a") == pytest.approx(60.0)
    assert limiter.hit("b") is None
    clock[0] = 30.0
    assert limiter.hit("a") == pytest.approx(30.0)
    clock[0] = 60.5
    assert limiter.hit("a") is None
    assert RateLimiter(0).hit("a") is None


def test_es_reason_prefers_the_root_cause() -> None:
    refused = Exception("parsing_exception")
    refused.body = {  # type: ignore[attr-defined]
        "error": {"root_cause": [{"type": "parsing_exception", "reason": "bad agg"}]}
    }
    assert es_reason(refused) == "parsing_exception: bad agg"
    assert es_reason(ValueError("plain")) == "plain"
