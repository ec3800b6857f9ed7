"""Analyst feedback on the real Elasticsearch: labels through the HTTP API under the
analyst's token identity, stored with the model's original answer; listing with filters;
bad labels are a 4xx that says what is wrong and store nothing; the export is a file
`finsentry train` reads (sentiment rows and FinEntity per-company rows)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from finsentry.cli import app
from finsentry.feedback.export import read_examples
from finsentry.index.template import apply_items_template
from finsentry.messages import CompanyScores, Mention, ScoredItem
from finsentry.models.labels import SENTIMENT
from finsentry.models.text import preprocessor
from finsentry.queries.api import create_api
from finsentry.queries.errors import ErrorBody
from finsentry.settings import Settings
from finsentry.training.config import DataSpec
from finsentry.training.data import clean_examples, read_table
from finsentry.training.entity_data import read_finentity
from tests.conftest import unique_settings
from tests.support.crafted import crafted_item

pytestmark = pytest.mark.integration

ALICE = {"Authorization": "Bearer tok-alice"}
BOB = {"Authorization": "Bearer tok-bob"}
SHARED = {"Authorization": "Bearer tok-shared"}
TEXT = "Apple beats estimates while Tesla falls on weak deliveries"


def two_company_item(item_id: str, when: datetime) -> ScoredItem:
    """The model said bullish, Earnings; AAPL bullish, TSLA bullish (the head got TSLA wrong)."""
    base = crafted_item(item_id, when, "bullish", ["AAPL", "TSLA"], text=TEXT, topic="Earnings")
    spans = {"AAPL": (0, 5), "TSLA": (28, 33)}
    companies = [
        CompanyScores(
            ticker=t,
            name={"AAPL": "Apple", "TSLA": "Tesla"}[t],
            sentiment="bullish",
            confidence=0.7,
            score=0.5,
            mentions=[Mention(start=spans[t][0], end=spans[t][1])],
        )
        for t in ("AAPL", "TSLA")
    ]
    return base.model_copy(update={"companies": companies})


@pytest.fixture(scope="module")
def items(services: Settings, es: Elasticsearch) -> Iterator[Settings]:
    """An items index with two scored items, for the module."""
    ours = unique_settings(
        services,
        api_token="tok-shared",
        api_analyst_tokens={"alice": "tok-alice", "bob": "tok-bob"},
        api_rate_limit=0,
    )
    ours = Settings.model_validate(ours.model_dump())  # tokens become SecretStr
    apply_items_template(es, ours.items_index)
    now = datetime.now(UTC)
    for item in (two_company_item("news-1", now), crafted_item("news-2", now, "bearish", [])):
        es.index(index=ours.items_index, id=item.id, document=item.model_dump(mode="json"))
    es.indices.refresh(index=ours.items_index)
    yield ours
    es.options(ignore_status=404).indices.delete(index=ours.items_index)
    es.options(ignore_status=404).indices.delete_index_template(name=ours.items_index)


@pytest.fixture
def api(items: Settings, es: Elasticsearch) -> Iterator[tuple[TestClient, Settings]]:
    """The API with a feedback index of its own."""
    ours = items.model_copy(update={"feedback_index": f"t{uuid.uuid4().hex[:10]}-feedback"})
    with TestClient(create_api(ours, es)) as client:
        yield client, ours
    es.options(ignore_status=404).indices.delete(index=ours.feedback_index)


def stored(es: Elasticsearch, settings: Settings) -> list[dict]:
    if not es.indices.exists(index=settings.feedback_index):
        return []
    es.indices.refresh(index=settings.feedback_index)
    hits = es.search(index=settings.feedback_index, size=100)["hits"]["hits"]
    return [h["_source"] for h in hits]


def test_labels_are_stored_under_the_analyst_with_the_models_answer(
    api: tuple[TestClient, Settings], es: Elasticsearch
) -> None:
    client, settings = api
    body = {
        "sentiment": "bearish",
        "companies": [{"ticker": "tsla", "sentiment": "bearish"}],
        "note": "Tesla is the story",
    }
    answer = client.post("/v1/items/news-1/labels", json=body, headers=ALICE)
    assert answer.status_code == 201, answer.text
    (doc,) = stored(es, settings)
    assert doc["analyst"] == "alice" and doc["item_id"] == "news-1"
    assert doc["labels"]["sentiment"] == "bearish" and doc["labels"]["topic"] is None
    (tesla,) = doc["labels"]["companies"]
    assert (tesla["ticker"], tesla["sentiment"]) == ("TSLA", "bearish")
    assert TEXT[tesla["mentions"][0]["start"] : tesla["mentions"][0]["end"]] == "Tesla"
    assert doc["model"]["version"] == "v1" and doc["model"]["sentiment"] == "bullish"
    assert [c["sentiment"] for c in doc["model"]["companies"]] == ["bullish", "bullish"]
    assert doc["disagrees"] == ["sentiment", "company:TSLA"]
    assert doc["text"] == TEXT

    # Labelling again replaces alice's labels; bob's are his own.
    again = client.post("/v1/items/news-1/labels", json={"topic": "Earnings"}, headers=ALICE)
    assert again.status_code == 201
    assert (
        client.post(
            "/v1/items/news-2/labels", json={"sentiment": "bearish"}, headers=BOB
        ).status_code
        == 201
    )
    docs = stored(es, settings)
    assert sorted((d["analyst"], d["item_id"]) for d in docs) == [
        ("alice", "news-1"),
        ("bob", "news-2"),
    ]
    alice = next(d for d in docs if d["analyst"] == "alice")
    assert alice["labels"]["topic"] == "Earnings" and alice["disagrees"] == []

    listed = client.get("/v1/labels", headers=SHARED).json()  # the shared token may read
    assert listed["total"] == 2
    assert (
        client.get("/v1/labels?analyst=bob", headers=ALICE).json()["labels"][0]["item_id"]
        == "news-2"
    )
    assert client.get("/v1/labels?disagrees=true", headers=ALICE).json()["total"] == 0
    assert client.get("/v1/labels?disagrees=false", headers=ALICE).json()["total"] == 2
    of_item = client.get("/v1/items/news-1/labels", headers=BOB).json()
    assert [d["analyst"] for d in of_item["labels"]] == ["alice"]


BAD = [
    # Refused by the schema (it lists the classes): 422.
    ("news-1", {"sentiment": "very bad"}, ALICE, 422,
     "sentiment: Input should be 'bearish', 'neutral' or 'bullish'"),
    ("news-1", {"topic": "Gossip"}, ALICE, 422, "topic: Input should be 'Analyst Update'"),
    ("news-1", {"companies": [{"ticker": "AAPL", "sentiment": "up"}]}, ALICE, 422,
     "companies.0.sentiment: Input should be 'bearish', 'neutral' or 'bullish'"),
    ("news-1", {"sentiment": "bearish", "score": 3}, ALICE, 422, "score: Extra inputs"),
    # Valid by the schema, not for this item: 400.
    ("news-1", {"companies": [{"ticker": "MSFT", "sentiment": "bullish"}]}, ALICE, 400,
     "company 'MSFT' is not one of the item's companies ['AAPL', 'TSLA']"),
    ("news-1", {"companies": [{"ticker": "AAPL", "sentiment": "bullish"}] * 2}, ALICE, 400,
     "company 'AAPL' is labelled twice"),
    ("news-1", {}, ALICE, 400, "give at least one label"),
    # No such item, no analyst.
    ("nope", {"sentiment": "bearish"}, ALICE, 404, "no item 'nope'"),
    ("é" * 300, {"sentiment": "bearish"}, ALICE, 404, "no item"),  # over ES's 512 bytes
    ("news-1", {"sentiment": "bearish"}, SHARED, 403, "labels need an analyst's token"),
    ("news-1", {"sentiment": "bearish"}, {}, 401, "missing or invalid bearer token"),
    ("news-1", {"sentiment": "bearish"}, {"Authorization": "Bearer x"}, 401, "invalid"),
]  # fmt: skip


def test_bad_labels_are_refused_and_nothing_is_stored(
    api: tuple[TestClient, Settings], es: Elasticsearch
) -> None:
    client, settings = api
    for item, body, headers, status, says in BAD:
        answer = client.post(f"/v1/items/{item}/labels", json=body, headers=headers)
        assert answer.status_code == status, (body, answer.text)
        assert says in answer.json()["detail"], body
        ErrorBody.model_validate(answer.json())  # the body the OpenAPI schema declares
    assert stored(es, settings) == []


def test_openapi_declares_the_error_bodies(api: tuple[TestClient, Settings]) -> None:
    client, _ = api
    schema = client.get("/openapi.json").json()
    post = schema["paths"]["/v1/items/{item_id}/labels"]["post"]
    assert {"201", "400", "401", "403", "404", "422", "429"} <= set(post["responses"])
    for status in ("400", "404", "422"):
        body = post["responses"][status]["content"]["application/json"]["schema"]["$ref"]
        assert body == "#/components/schemas/ErrorBody", status
    created = post["responses"]["201"]["content"]["application/json"]["schema"]["$ref"]
    assert created == "#/components/schemas/FeedbackDocument"
    # The classes are in the schema, so schema-valid labels are never refused as unknown.
    body = schema["components"]["schemas"]["FeedbackIn"]["properties"]
    (topics,) = [t["enum"] for t in body["topic"]["anyOf"] if "enum" in t]
    (sentiments,) = [t["enum"] for t in body["sentiment"]["anyOf"] if "enum" in t]
    assert len(topics) == 20 and "Earnings" in topics
    assert sentiments == ["bearish", "neutral", "bullish"]


def test_feedback_is_off_without_analyst_tokens(items: Settings, es: Elasticsearch) -> None:
    ours = items.model_copy(update={"api_analyst_tokens": {}, "api_token": None})
    with TestClient(create_api(ours, es)) as client:
        answer = client.post("/v1/items/news-1/labels", json={"sentiment": "bearish"})
    assert answer.status_code == 403
    assert "FINSENTRY_API_ANALYST_TOKENS" in answer.json()["detail"]


def test_export_is_a_training_file(
    api: tuple[TestClient, Settings], es: Elasticsearch, tmp_path: Path
) -> None:
    client, settings = api
    first = {"sentiment": "bullish", "companies": [{"ticker": "TSLA", "sentiment": "bearish"}]}
    assert client.post("/v1/items/news-1/labels", json=first, headers=BOB).status_code == 201
    # alice's later label of the same item wins for sentiment; bob's per-company label stays.
    newer = {"sentiment": "bearish", "topic": "Earnings"}
    assert client.post("/v1/items/news-1/labels", json=newer, headers=ALICE).status_code == 201
    assert (
        client.post("/v1/items/news-2/labels", json={"topic": "Macro"}, headers=BOB).status_code
        == 201
    )
    out = tmp_path / "feedback.jsonl"
    env = {"FINSENTRY_FEEDBACK_INDEX": settings.feedback_index, "FINSENTRY_ES_URL": settings.es_url}
    result = CliRunner().invoke(app, ["feedback", "export", "--out", str(out)], env=env)
    assert result.exit_code == 0, result.output
    assert "wrote 2 labelled item(s)" in result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["item_id"], r.get("sentiment"), r.get("topic")) for r in rows] == [
        ("news-1", "bearish", "Earnings"),
        ("news-2", None, "Macro"),
    ]
    assert rows[0]["entities"] == [{"start": 28, "end": 33, "value": "Tesla", "label": "bearish"}]
    assert [e.item_id for e in read_examples(out)] == ["news-1", "news-2"]

    # What `finsentry train --task sentiment --data F --label-col sentiment` reads:
    spec = DataSpec(source=str(out), label_col="sentiment")
    frame, labels = clean_examples(read_table(str(out)), spec, SENTIMENT, origin=str(out))
    assert frame["text"].tolist() == [TEXT]
    assert [labels[i] for i in frame["label"]] == ["bearish"]
    # ... and `--entity-data F` (FinEntity format) for the per-company head:
    (news,) = read_finentity(out, ["bearish", "bullish", "neutral"], preprocessor("tweet-v1"))
    (tesla,) = news.entities
    assert (news.text[slice(*tesla.spans[0])], tesla.label) == ("Tesla", 0)


def test_labels_newer_than_filter(api: tuple[TestClient, Settings]) -> None:
    client, _ = api
    assert (
        client.post(
            "/v1/items/news-2/labels", json={"sentiment": "bullish"}, headers=BOB
        ).status_code
        == 201
    )
    later = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    assert client.get("/v1/labels", params={"since": later}, headers=BOB).json()["total"] == 0
    bad = client.get("/v1/labels", params={"size": 0}, headers=BOB)
    assert bad.status_code == 422 and "size" in bad.json()["detail"]
