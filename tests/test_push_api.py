"""`POST /v1/items` on the real broker: auth, size cap, partial acceptance, NDJSON, and
exactly the valid items on the raw topic, acknowledged before the answer. (That pushed
items become searchable through the worker is in tests/test_sources_kafka.py.)"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from kafka import KafkaConsumer
from pydantic import SecretStr

from finsentry.messages import NewsItem
from finsentry.queries.api import create_api
from finsentry.settings import Settings
from finsentry.sources.push_api import split_body
from tests.conftest import unique_settings

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "sources"
TOKEN = "push-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def push_settings(base: Settings) -> Settings:
    return unique_settings(base, api_token=SecretStr(TOKEN), push_max_bytes=64 * 1024)


def read_raw(settings: Settings, expected: int) -> list[NewsItem]:
    consumer = KafkaConsumer(
        settings.topic_raw,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=3000,
    )
    items = [NewsItem.model_validate_json(m.value) for m in consumer]
    consumer.close()
    assert len(items) == expected, [i.id for i in items]
    return items


@pytest.fixture
def api(services: Settings, es) -> Iterator[tuple[TestClient, Settings]]:  # type: ignore[no-untyped-def]
    settings = push_settings(services)
    with TestClient(create_api(settings, es)) as client:
        yield client, settings


def test_split_body_reads_one_item_arrays_and_ndjson() -> None:
    assert split_body(b'{"id": "a", "text": "x"}', "application/json") == [
        b'{"id": "a", "text": "x"}'
    ]
    assert len(split_body(b'[{"id": "a"}, {"id": "b"}, 3]', "application/json")) == 3
    ndjson = b'{"id": "a", "text": "x"}\n\n{"id": "b", "text": "y"}\n'
    assert len(split_body(ndjson, "application/x-ndjson")) == 2
    assert len(split_body(ndjson, "application/json")) == 2  # NDJSON under a JSON label
    assert split_body(b"  ", "application/json") == "body is empty"
    assert split_body(b"\xff\xfe", "application/json").startswith("body is not UTF-8")
    assert split_body(b"{nope", "application/json").startswith("body is not JSON")


@pytest.mark.integration
def test_push_needs_the_token(api) -> None:  # type: ignore[no-untyped-def]
    client, settings = api
    item = {"id": "p-1", "text": "Shares of $AAPL rose."}
    assert client.post("/v1/items", json=item).status_code == 401
    wrong = client.post("/v1/items", json=item, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    off = unique_settings(settings, api_token=None)
    with TestClient(create_api(off, client.app.state.es)) as open_client:
        response = open_client.post("/v1/items", json=item)
        assert response.status_code == 403 and "FINSENTRY_API_TOKEN" in response.json()["detail"]


@pytest.mark.integration
def test_push_over_the_size_cap_is_413_and_sends_nothing(api) -> None:  # type: ignore[no-untyped-def]
    client, settings = api
    big = {"id": "p-big", "text": "word " * 20_000}  # ~100 KB, cap 64 KB
    response = client.post("/v1/items", json=big, headers=AUTH)
    assert response.status_code == 413
    assert response.json()["detail"] == f"body is over {settings.push_max_bytes} bytes"
    small = client.post("/v1/items", json={"id": "p-ok", "text": "ok"}, headers=AUTH)
    assert small.status_code == 202
    read_raw(settings, 1)  # only the small one


@pytest.mark.integration
def test_partial_acceptance_lists_each_bad_item(api) -> None:  # type: ignore[no-untyped-def]
    client, settings = api
    batch = json.loads((FIXTURES / "push_mixed.json").read_text())
    response = client.post("/v1/items", json=batch, headers=AUTH)
    assert response.status_code == 422
    body = response.json()
    assert body["accepted"] == 3
    assert body["ids"] == ["push-ok-1", "push-ok-2", "push-ok-3"]
    assert [(e["index"], e["error"]) for e in body["errors"]] == [
        (1, "invalid_fields"),
        (3, "not_an_object"),
        (4, "no_content"),
    ]
    assert "text" in body["errors"][0]["reason"]
    items = read_raw(settings, 3)
    assert sorted(i.id for i in items) == ["push-ok-1", "push-ok-2", "push-ok-3"]
    assert next(i for i in items if i.id == "push-ok-2").extra == {"desk": "rates"}


@pytest.mark.integration
def test_ndjson_and_single_items_are_accepted_with_202(api) -> None:  # type: ignore[no-untyped-def]
    client, settings = api
    ndjson = (FIXTURES / "push_items.ndjson").read_bytes()
    response = client.post(
        "/v1/items", content=ndjson, headers={**AUTH, "Content-Type": "application/x-ndjson"}
    )
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 4
    one = client.post(
        "/v1/items", json={"id": "push-single", "text": "Gold hits a record."}, headers=AUTH
    )
    assert one.status_code == 202 and one.json() == {"accepted": 1, "ids": ["push-single"]}
    ids = sorted(i.id for i in read_raw(settings, 5))
    assert ids == ["push-nd-1", "push-nd-2", "push-nd-3", "push-nd-4", "push-single"]
