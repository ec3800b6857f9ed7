"""The queries against the real local Elasticsearch: runner, HTTP API and CLI, on one index of
crafted items whose counts, shares and means are worked out by hand below."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from typer.testing import CliRunner

from finsentry.index.template import apply_items_template
from finsentry.messages import CompanyScores, ScoredItem
from finsentry.queries.api import create_api
from finsentry.queries.params import ItemsParams, TickersParams, TimelineParams, TopicsParams
from finsentry.queries.results import BreakdownResult, ItemsResult, TimelineResult, run_query
from finsentry.settings import Settings
from tests.conftest import unique_settings

pytestmark = pytest.mark.integration

T0 = datetime(2025, 3, 3, tzinfo=UTC)
WINDOW = {"from": "2025-03-03T00:00:00Z", "to": "2025-03-06T00:00:00Z"}

# id, tickers, topic, sentiment, score, source, kind, hours after T0, title
ROWS: list[tuple[str, list[str], str, str, float, str, str, int, str]] = [
    ("a1", ["NVDA"], "Stock Movement", "bullish", 0.8, "reuters", "news", 1,
     "Nvidia shares surge on AI demand"),
    ("a2", ["NVDA"], "Earnings", "bullish", 0.6, "twitter", "post", 2, "NVDA earnings beat"),
    ("a3", ["NVDA", "AMD"], "Stock Movement", "bearish", -0.7, "reuters", "news", 3,
     "Chip stocks slide as export rules tighten"),
    ("a4", ["AMD"], "Stock Movement", "neutral", 0.0, "reddit", "comment", 5,
     "AMD trades flat"),
    ("a5", ["JPM"], "Financials", "bearish", -0.9, "reuters", "news", 25,
     "Bank shares fall after rate cut warning"),
    ("a6", ["JPM", "BAC"], "Financials", "bearish", -0.5, "bloomberg", "news", 26,
     "Banks hit by loan loss provisions"),
    ("a7", ["BAC"], "Financials", "bullish", 0.4, "twitter", "post", 27,
     "Bank of America upgrade"),
    ("a8", [], "Macro", "neutral", 0.1, "reuters", "news", 49, "Fed holds rates steady"),
    ("a9", ["NVDA"], "Analyst Update", "bearish", -0.3, "twitter", "post", 50,
     "Analyst downgrade on valuation"),
]  # fmt: skip


def crafted_items() -> list[ScoredItem]:
    items = []
    for item_id, tickers, topic, sentiment, score, source, kind, hours, title in ROWS:
        ingested = T0 + timedelta(hours=hours)
        items.append(
            ScoredItem(
                id=item_id,
                source=source,
                kind=kind,
                title=title,
                text=f"{title}. More at 11.",
                # a8 has no publication time: it never matches a published_at range.
                published_at=None if item_id == "a8" else ingested - timedelta(minutes=30),
                tickers=tickers,
                # What the worker writes when the model has no per-company head.
                companies=[
                    CompanyScores(
                        ticker=t, sentiment=sentiment, confidence=0.8, score=score, source="text"
                    )
                    for t in tickers
                ],
                topic=topic,
                topic_confidence=0.9,
                sentiment=sentiment,
                sentiment_confidence=0.8,
                sentiment_probs={},
                sentiment_score=score,
                model_version="test-1",
                ingested_at=ingested,
                scored_at=ingested + timedelta(seconds=2),
                latency_ms=2000.0,
            )
        )
    return items


@pytest.fixture(scope="module")
def loaded(services: Settings, es: Any) -> Iterator[Settings]:
    """One index with the crafted items for the whole module (deleted afterwards)."""
    settings = unique_settings(services, api_token=None, api_rate_limit=0)
    index = settings.items_index
    apply_items_template(es, index)
    operations: list[dict[str, Any]] = []
    for item in crafted_items():
        operations.append({"index": {"_index": index, "_id": item.id}})
        operations.append(item.model_dump(mode="json", exclude_none=True))
    response = es.bulk(operations=operations, refresh="wait_for")
    assert not response["errors"]
    yield settings
    es.options(ignore_status=404).indices.delete(index=index)
    es.options(ignore_status=404).indices.delete_index_template(name=index)


def query(es: Any, settings: Settings, params: Any, now: datetime | None = None) -> Any:
    return run_query(es, settings.items_index, params, now=now)


def ids(result: ItemsResult) -> list[str]:
    return [item.id for item in result.items]


# --- runner: each mode's numbers against the hand-computed ones --------------------------


def test_items_newest_first_and_paged(es: Any, loaded: Settings) -> None:
    first = query(es, loaded, ItemsParams.model_validate({**WINDOW, "size": 4}))
    assert (first.total, first.pages) == (9, 3)
    assert ids(first) == ["a9", "a8", "a7", "a6"]
    last = query(es, loaded, ItemsParams.model_validate({**WINDOW, "size": 4, "page": 3}))
    assert ids(last) == ["a1"]
    oldest = query(es, loaded, ItemsParams.model_validate({"sort": "oldest", "size": 2}))
    assert ids(oldest) == ["a1", "a2"]


def test_items_filters(es: Any, loaded: Settings) -> None:
    def matching(**values: Any) -> list[str]:
        return sorted(ids(query(es, loaded, ItemsParams.model_validate(values))))

    assert matching(ticker=["nvda"]) == ["a1", "a2", "a3", "a9"]
    assert matching(sentiment=["bearish"]) == ["a3", "a5", "a6", "a9"]
    assert matching(source=["REUTERS"]) == ["a1", "a3", "a5", "a8"]
    assert matching(kind=["post"], ticker=["NVDA"]) == ["a2", "a9"]
    assert matching(topic=["financials", "macro"]) == ["a5", "a6", "a7", "a8"]
    assert matching(text="bank") == ["a5", "a7"]
    assert matching(text="bank | banks") == ["a5", "a6", "a7"]
    assert matching(text='"rate cut"') == ["a5"]
    assert matching(text="shares -bank") == ["a1"]
    # Half-open: a6 arrived at exactly 02:00, the (exclusive) end.
    assert matching(**{"from": "2025-03-04", "to": "2025-03-04T02:00:00"}) == ["a5"]
    # published_at is 30 minutes earlier; a8 has none and so never matches a range on it.
    assert matching(time_field="published_at", **WINDOW) == [
        f"a{i}" for i in (1, 2, 3, 4, 5, 6, 7, 9)
    ]
    recent = ItemsParams.model_validate({"since": "24h"})
    assert sorted(ids(query(es, loaded, recent, now=T0 + timedelta(hours=72)))) == ["a8", "a9"]


def test_most_negative_items_about_banks(es: Any, loaded: Settings) -> None:
    params = ItemsParams.model_validate({"topic": ["Financials"], "sort": "most_negative"})
    result = query(es, loaded, params)
    assert ids(result) == ["a5", "a6", "a7"]
    assert [i.sentiment_score for i in result.items] == pytest.approx([-0.9, -0.5, 0.4])


def test_timeline_counts_and_net_sentiment(es: Any, loaded: Settings) -> None:
    result = query(es, loaded, TimelineParams.model_validate({**WINDOW, "interval": "1d"}))
    assert isinstance(result, TimelineResult)
    assert [b.start for b in result.buckets] == [T0 + timedelta(days=d) for d in range(3)]
    assert [(b.bullish, b.neutral, b.bearish) for b in result.buckets] == [
        (2, 1, 1),
        (1, 0, 2),
        (0, 1, 1),
    ]
    assert [b.net_sentiment for b in result.buckets] == pytest.approx([0.25, -1 / 3, -0.5])
    assert [b.mean_score for b in result.buckets] == pytest.approx([0.175, -1 / 3, -0.1], abs=1e-6)
    assert (result.total, result.bullish, result.neutral, result.bearish) == (9, 3, 2, 4)
    assert result.net_sentiment == pytest.approx(-1 / 9)


def test_timeline_keeps_empty_buckets(es: Any, loaded: Settings) -> None:
    nvda = TimelineParams.model_validate({**WINDOW, "interval": "1d", "ticker": ["NVDA"]})
    result = query(es, loaded, nvda)
    assert [b.total for b in result.buckets] == [3, 0, 1]
    assert [b.net_sentiment for b in result.buckets] == [pytest.approx(1 / 3), None, -1.0]
    half_days = query(es, loaded, TimelineParams.model_validate({**WINDOW, "interval": "12h"}))
    assert [b.total for b in half_days.buckets] == [4, 0, 3, 0, 2, 0]


def test_tickers_ranked_every_way(es: Any, loaded: Settings) -> None:
    def rank(**values: Any) -> BreakdownResult:
        return query(es, loaded, TickersParams.model_validate({**WINDOW, **values}))

    by_volume = rank()
    assert [(r.key, r.volume, r.bearish, r.bullish) for r in by_volume.rows] == [
        ("NVDA", 4, 2, 2),
        ("AMD", 2, 1, 0),
        ("BAC", 2, 1, 1),
        ("JPM", 2, 2, 0),
    ]
    rows = {r.key: r for r in by_volume.rows}
    assert rows["NVDA"].mean_score == pytest.approx(0.1, abs=1e-6)
    assert rows["NVDA"].net_sentiment == 0
    assert rows["AMD"].mean_score == pytest.approx(-0.35, abs=1e-6)
    assert rows["JPM"].negative_share == 1.0
    assert by_volume.total == 9
    assert [r.key for r in rank(rank_by="negative_share").rows] == ["JPM", "NVDA", "AMD", "BAC"]
    assert [r.key for r in rank(rank_by="mean_score").rows] == ["JPM", "AMD", "BAC", "NVDA"]
    assert [r.key for r in rank(rank_by="mean_score", order="desc", limit=2).rows] == [
        "NVDA",
        "BAC",
    ]
    assert [r.key for r in rank(min_count=3).rows] == ["NVDA"]


def test_topics_ranked(es: Any, loaded: Settings) -> None:
    result = query(es, loaded, TopicsParams.model_validate(WINDOW))
    assert [(r.key, r.volume) for r in result.rows] == [
        ("Financials", 3),
        ("Stock Movement", 3),
        ("Analyst Update", 1),
        ("Earnings", 1),
        ("Macro", 1),
    ]
    share = query(es, loaded, TopicsParams.model_validate({"rank_by": "negative_share"}))
    assert share.rows[0].key == "Analyst Update"  # 1 of 1 bearish
    assert share.rows[1].key == "Financials"
    assert share.rows[1].negative_share == pytest.approx(2 / 3)


# --- HTTP API ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(es: Any, loaded: Settings) -> TestClient:
    return TestClient(create_api(loaded, es=es))


def test_api_queries_match_the_runner(client: TestClient) -> None:
    items = client.get("/v1/items", params={**WINDOW, "ticker": ["NVDA", "AMD"], "size": 2})
    assert items.status_code == 200, items.text
    assert [i["id"] for i in items.json()["items"]] == ["a9", "a4"]
    assert items.json()["total"] == 5
    timeline = client.get("/v1/timeline", params={**WINDOW, "interval": "1d"}).json()
    assert [b["total"] for b in timeline["buckets"]] == [4, 3, 2]
    assert timeline["net_sentiment"] == pytest.approx(-1 / 9)
    tickers = client.get("/v1/tickers", params={**WINDOW, "rank_by": "negative_share"}).json()
    assert [r["key"] for r in tickers["rows"]] == ["JPM", "NVDA", "AMD", "BAC"]
    topics = client.get("/v1/topics", params={"sentiment": "bearish", "limit": 1}).json()
    assert topics["rows"] == [
        {
            "rank": 1,
            "key": "Financials",
            "volume": 2,
            "bullish": 0,
            "bearish": 2,
            "negative_share": 1.0,
            "net_sentiment": -1.0,
            "mean_score": pytest.approx(-0.7, abs=1e-6),
        }
    ]
    assert client.get("/v1/items", params={"since": "6h"}).json()["total"] == 0


@pytest.mark.parametrize(
    ("path", "params", "status", "message"),
    [
        ("/v1/items", {"from": "2025-03-32"}, 422, "from: Input should be a valid datetime"),
        ("/v1/items", {"from": "2025-03-05", "to": "2025-03-04"}, 400, "from must be before to"),
        ("/v1/items", {"size": 100_000}, 422, "size: Input should be less than or equal to 500"),
        ("/v1/items", {"page": 10_000}, 400, "page * size must be at most 10000"),
        ("/v1/items", {"tickr": "NVDA"}, 422, "tickr: Extra inputs are not permitted"),
        ("/v1/items", {"text": "title:x OR _exists_:id"}, 422, "unsupported query syntax"),
        ("/v1/items", {"text": '"bank) | (x'}, 400, 'unbalanced "'),
        ("/v1/timeline", {"since": "120d"}, 400, "a timeline spans at most 90 days"),
        ("/v1/timeline", {"since": "30d", "interval": "1m"}, 400, "use a larger interval"),
        ("/v1/tickers", {"order": "sideways"}, 422, "order: Input should be 'asc' or 'desc'"),
    ],
)
def test_api_bad_parameters(
    client: TestClient, path: str, params: dict[str, Any], status: int, message: str
) -> None:
    response = client.get(path, params=params)
    assert response.status_code == status
    assert message in response.json()["detail"]


def test_api_allowed_operators_never_fail_in_es(client: TestClient) -> None:
    for text in ["-", "|", "+", "()", '""', "bank -", "a | | b", "S&P 500", "$NVDA."]:
        response = client.get("/v1/items", params={"text": text})
        assert response.status_code == 200, (text, response.text)


def test_api_token_required_when_configured(es: Any, loaded: Settings) -> None:
    secured = loaded.model_copy(update={"api_token": SecretStr("s3cret-token")})
    api = TestClient(create_api(secured, es=es))
    refused = api.get("/v1/items")
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == "Bearer"
    assert api.get("/v1/items", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert api.get("/v1/items", headers={"Authorization": "Basic s3cret-token"}).status_code == 401
    ok = api.get("/v1/items", headers={"Authorization": "Bearer s3cret-token"})
    assert ok.status_code == 200 and ok.json()["total"] == 9
    assert api.get("/healthz").status_code == 200
    spec = api.get("/openapi.json").json()
    assert "HTTPBearer" in spec["components"]["securitySchemes"]


def test_api_rate_limit(es: Any, loaded: Settings) -> None:
    limited = TestClient(create_api(loaded.model_copy(update={"api_rate_limit": 2}), es=es))
    assert [limited.get("/v1/topics").status_code for _ in range(2)] == [200, 200]
    refused = limited.get("/v1/topics")
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert "rate limit of 2 requests a minute" in refused.json()["detail"]


def test_api_healthz_and_metrics(client: TestClient, loaded: Settings) -> None:
    health = client.get("/healthz")
    assert health.status_code == 200
    assert health.json()["elasticsearch"]["reachable"] is True
    assert health.json()["elasticsearch"]["items_index_exists"] is True
    client.get("/v1/items", params={"size": 1})
    metrics = client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    for name in (
        "finsentry_items_scored_total",
        "finsentry_scoring_latency_seconds",
        "finsentry_dead_letters_total",
        "finsentry_alerts_total",
        "finsentry_api_request_seconds",
    ):
        assert f"# TYPE {name}" in text
    assert 'finsentry_api_requests_total{method="GET",route="/v1/items",status="200"}' in text
    unreachable = loaded.model_copy(
        update={"es_url": "http://127.0.0.1:1", "es_max_retries": 0, "es_request_timeout": 2}
    )
    down = TestClient(create_api(unreachable))
    assert down.get("/healthz").status_code == 503
    assert down.get("/v1/items").status_code == 503


def test_api_missing_index_is_404(es: Any, loaded: Settings) -> None:
    missing = loaded.model_copy(update={"items_index": f"{loaded.items_index}-missing"})
    response = TestClient(create_api(missing, es=es)).get("/v1/items")
    assert response.status_code == 404
    assert "not found" in response.json()["detail"]


# --- CLI ------------------------------------------------------------------------------


def run_cli(settings: Settings, *args: str) -> Any:
    from finsentry.cli import app

    env = {"FINSENTRY_ITEMS_INDEX": settings.items_index, "FINSENTRY_ES_URL": settings.es_url}
    return CliRunner().invoke(app, ["query", *args], env=env)


def test_cli_timeline_json_and_plot(loaded: Settings, tmp_path: Path) -> None:
    png = tmp_path / "timeline.png"
    args = ["--from", WINDOW["from"], "--to", WINDOW["to"], "--interval", "1d"]
    result = run_cli(loaded, "timeline", *args, "--format", "json", "--plot", str(png))
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [b["net_sentiment"] for b in data["buckets"]] == pytest.approx([0.25, -1 / 3, -0.5])
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_cli_tickers_csv_and_items_table(loaded: Settings) -> None:
    args = ["--from", WINDOW["from"], "--to", WINDOW["to"]]
    result = run_cli(loaded, "tickers", *args, "--rank-by", "negative_share", "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [(r["key"], r["volume"], r["negative_share"]) for r in rows] == [
        ("JPM", "2", "1.0000"),
        ("NVDA", "4", "0.5000"),
        ("AMD", "2", "0.5000"),
        ("BAC", "2", "0.5000"),
    ]
    table = run_cli(loaded, "items", "-t", "jpm,bac", "--sort", "most_negative")
    assert table.exit_code == 0, table.output
    assert "3 items" in table.stdout and "a5" in table.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["items", "--from", "2025-02-30"], "--from:"),
        (["items", "--since", "6h", "--from", "2025-03-01"], "either since or from/to"),
        (["items", "--size", "501"], "--size:"),
        (["items", "--interval", "1h"], "--interval does not apply to `query items`"),
        (["items", "--text", "topic:Macro"], "unsupported query syntax"),
        (["timeline", "--since", "200d"], "at most 90 days"),
        (["tickers", "--plot", "x.png"], "--plot needs `query timeline`"),
    ],
)
def test_cli_bad_parameters(loaded: Settings, args: list[str], message: str) -> None:
    result = run_cli(loaded, *args)
    assert result.exit_code == 2
    assert message in result.stderr
