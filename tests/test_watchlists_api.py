"""The watchlist and alert routes of the HTTP API on the real Elasticsearch: bad input is a
4xx with a clear message and stores nothing (not even half a list); alerts can be listed
with filters and acknowledged."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from elasticsearch import Elasticsearch
from fastapi.testclient import TestClient

from finsentry.alerts.store import AlertDocument, apply_alerts_template
from finsentry.messages import Alert
from finsentry.queries.api import create_api
from finsentry.settings import Settings

pytestmark = pytest.mark.integration

GOOD = {
    "companies": ["AAPL", "Tesla"],
    "channels": [{"kind": "email", "to": ["desk@example.com"]}],
    "description": "tech desk",
}


@pytest.fixture
def api(settings: Settings, es: Elasticsearch) -> Iterator[tuple[TestClient, Settings]]:
    ours = settings.model_copy(
        update={
            "watchlists_index": f"{settings.app_id}-watchlists",
            "alert_channel_urls": {"desk-hook": "http://127.0.0.1:9/hook"},
            "api_rate_limit": 0,
        }
    )
    with TestClient(create_api(ours, es)) as client:
        yield client, ours
    es.options(ignore_status=404).indices.delete(index=ours.watchlists_index)


def test_watchlist_lifecycle(api: tuple[TestClient, Settings], es: Elasticsearch) -> None:
    client, settings = api
    assert client.get("/v1/watchlists").json() == {"watchlists": []}
    assert client.get("/v1/watchlists/desk").status_code == 404

    stored = client.put("/v1/watchlists/desk", json=GOOD)
    assert stored.status_code == 200, stored.text
    body = stored.json()
    assert body["companies"] == [
        {"ticker": "AAPL", "name": "Apple"},
        {"ticker": "TSLA", "name": "Tesla"},
    ]
    assert body["entries"] == ["AAPL", "Tesla"]
    # Stored in Elasticsearch, so it survives restarts of the API and the alerter.
    doc = es.get(index=settings.watchlists_index, id="desk")["_source"]
    assert [c["ticker"] for c in doc["companies"]] == ["AAPL", "TSLA"]
    assert client.get("/v1/watchlists/desk").json()["description"] == "tech desk"

    replaced = client.put(
        "/v1/watchlists/desk",
        json={"companies": ["MSFT"], "channels": [{"kind": "webhook", "name": "desk-hook"}]},
    )
    assert replaced.status_code == 200
    assert [w["name"] for w in client.get("/v1/watchlists").json()["watchlists"]] == ["desk"]
    assert client.get("/v1/watchlists/desk").json()["entries"] == ["MSFT"]

    assert client.delete("/v1/watchlists/desk").status_code == 204
    assert client.delete("/v1/watchlists/desk").status_code == 404
    assert client.get("/v1/watchlists").json() == {"watchlists": []}


@pytest.mark.parametrize(
    ("name", "body", "status", "message"),
    [
        ("desk", {"companies": ["AAPL", "ZZZZQX", "Nosuchco Widgets"]}, 422, "unknown companies"),
        ("desk", {"companies": []}, 422, "companies: List should have at least 1 item"),
        ("desk", {"companies": ["AAPL"] * 10_000}, 422, "at most 1000 items"),
        ("Desk Team!", {"companies": ["AAPL"]}, 422, "invalid watchlist name"),
        ("x" * 80, {"companies": ["AAPL"]}, 422, "invalid watchlist name"),
        ("desk", {"companies": ["AAPL", "<script>"]}, 422, "companies.1: String should match"),
        ("desk", {"companies": ["AAPL", ""]}, 422, "companies.1"),
        ("desk", {"companies": "AAPL"}, 422, "companies: Input should be a valid list"),
        ("desk", {"companies": ["AAPL"], "owner": "me"}, 422, "owner: Extra inputs"),
        (
            "desk",
            {"companies": ["AAPL"], "channels": [{"kind": "webhook", "name": "nope"}]},
            422,
            "unknown channels ['nope']",
        ),
        (
            "desk",
            {"companies": ["AAPL"], "channels": [{"kind": "email", "to": ["nobody"]}]},
            422,
            "not e-mail addresses",
        ),
    ],
)
def test_bad_watchlists_are_refused_and_nothing_is_stored(
    api: tuple[TestClient, Settings],
    es: Elasticsearch,
    name: str,
    body: object,
    status: int,
    message: str,
) -> None:
    client, settings = api
    assert client.put("/v1/watchlists/keep", json=GOOD).status_code == 200
    answer = client.put(f"/v1/watchlists/{name}", json=body)
    assert answer.status_code == status, answer.text
    assert message in answer.json()["detail"], answer.json()["detail"]
    es.indices.refresh(index=settings.watchlists_index)
    ids = [h["_id"] for h in es.search(index=settings.watchlists_index)["hits"]["hits"]]
    assert ids == ["keep"]
    # A refused replacement leaves the stored list as it was.
    if name == "desk":
        assert client.put("/v1/watchlists/keep", json=body).status_code == status
        assert client.get("/v1/watchlists/keep").json()["entries"] == GOOD["companies"]


def _alert(n: int, watchlist: str | None, key: str, rule: str, end: datetime) -> AlertDocument:
    alert = Alert(
        id=f"{n:032x}",
        rule=rule,
        key_type="ticker",
        key=key,
        window_start=end - timedelta(minutes=15),
        window_end=end,
        total=1,
        negative=1,
        negative_share=1.0,
        threshold=0.8,
        watchlist=watchlist,
        company={"AAPL": "Apple", "TSLA": "Tesla"}.get(key),
    )
    return AlertDocument.new(alert, [], end)


def test_list_and_acknowledge_alerts(api: tuple[TestClient, Settings], es: Elasticsearch) -> None:
    client, settings = api
    apply_alerts_template(es, settings.alerts_index)
    now = datetime.now(UTC).replace(microsecond=0)
    docs = [
        _alert(1, "desk", "AAPL", "severe_item", now - timedelta(minutes=5)),
        _alert(2, "desk", "TSLA", "negative_share", now - timedelta(minutes=50)),
        _alert(3, "energy", "XOM", "severe_item", now - timedelta(minutes=20)),
        _alert(4, None, "AAPL", "negative_share", now - timedelta(days=2)),
    ]
    for doc in docs:
        es.index(index=settings.alerts_index, id=doc.id, document=doc.model_dump(mode="json"))
    es.indices.refresh(index=settings.alerts_index)

    def ids(**params: str) -> list[int]:
        answer = client.get("/v1/alerts", params=params)
        assert answer.status_code == 200, answer.text
        return [int(a["id"], 16) for a in answer.json()["alerts"]]

    assert ids() == [1, 3, 2, 4]
    assert ids(watchlist="desk") == [1, 2]
    assert ids(company="AAPL") == [1, 4]
    assert ids(company="Tesla") == [2]
    assert ids(rule="severe_item") == [1, 3]
    assert ids(since=(now - timedelta(hours=1)).isoformat(), rule="negative_share") == [2]
    assert client.get("/v1/alerts", params={"size": 0}).status_code == 422

    acked = client.post(f"/v1/alerts/{1:032x}/ack", json={"by": "ana"})
    assert acked.status_code == 200, acked.text
    assert acked.json()["acknowledged"] and acked.json()["acknowledged_by"] == "ana"
    assert ids(acknowledged="false") == [3, 2, 4]
    assert ids(acknowledged="true") == [1]
    assert client.post(f"/v1/alerts/{99:032x}/ack").status_code == 404
    assert client.post("/v1/alerts/not-an-id/ack").status_code == 422
