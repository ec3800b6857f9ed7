"""The whole streaming path on the real broker and node: file -> Kafka -> worker -> index."""

from __future__ import annotations

import base64
import json
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer

from finsentry.feeds.replay import read_records, replay
from finsentry.messages import DeadLetter
from finsentry.settings import Settings
from tests.conftest import unique_settings
from tests.support.worker_process import WorkerProcess, wait_until

pytestmark = pytest.mark.integration

SENTIMENTS = {"bearish", "neutral", "bullish"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _count(es, index: str, query: dict | None = None) -> int:  # type: ignore[no-untyped-def]
    es.indices.refresh(index=index, ignore_unavailable=True)
    body = {"query": query} if query else {}
    return es.options(ignore_status=404).count(index=index, **body).get("count", 0)


def _read_topic(settings: Settings, topic: str, expected: int, timeout_ms: int = 20_000) -> list:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=timeout_ms,
    )
    messages = []
    for message in consumer:
        messages.append(message)
        if len(messages) >= expected:
            break
    consumer.close()
    return messages


@pytest.fixture(scope="module")
def stream(services: Settings, es, tiny_artifact: Path, tmp_path_factory) -> Iterator[Settings]:  # type: ignore[no-untyped-def]
    """One worker for the module, on its own topics and indices."""
    settings = unique_settings(services, max_batch=32, max_wait=0.2, metrics_port=_free_port())
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    worker = WorkerProcess(settings, tiny_artifact, log)
    yield settings
    worker.terminate()
    for index in (settings.items_index, settings.dead_letters_index):
        es.options(ignore_status=404).indices.delete(index=index)


def test_500_dataset_items_are_searchable_with_scores_and_tickers(stream, es, services):  # type: ignore[no-untyped-def]
    data = services.data_dir / "tfns_sentiment" / "train.csv"
    assert replay(stream, data, limit=500, progress=False) == 500
    wait_until(lambda: _count(es, stream.items_index) >= 500, 180, "500 indexed items")
    assert _count(es, stream.items_index) == 500

    hits = es.search(index=stream.items_index, size=500)["hits"]["hits"]
    for hit in hits:
        doc = hit["_source"]
        assert doc["sentiment"] in SENTIMENTS
        assert -1.0 <= doc["sentiment_score"] <= 1.0
        assert abs(sum(doc["sentiment_probs"].values()) - 1.0) < 1e-3
        assert doc["topic"] and 0.0 <= doc["topic_confidence"] <= 1.0
        assert doc["model_version"]
        assert hit["_id"] == doc["id"]
    with_tickers = [h for h in hits if h["_source"]["tickers"]]
    # Over half of these tweets name a company or carry a cashtag.
    assert len(with_tickers) > 250
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{stream.metrics_port}/metrics").read()
    scored = next(
        float(line.split()[1])
        for line in metrics.decode().splitlines()
        if line.startswith("finsentry_items_scored_total ")
    )
    assert scored >= 500
    byn = [h["_source"] for h in hits if h["_source"]["text"].startswith("$BYND")]
    assert byn and "BYND" in byn[0]["tickers"]
    assert _count(es, stream.items_index, {"term": {"tickers": "BYND"}}) >= 1


def test_replaying_the_same_file_twice_makes_no_duplicates(stream, es, services):  # type: ignore[no-untyped-def]
    data = services.data_dir / "tfns_sentiment" / "train.csv"
    before = _count(es, stream.items_index)
    replay(stream, data, limit=500, progress=False)
    # The second replay's items arrive on the scored topic once they are indexed.
    scored = _read_topic(stream, stream.topic_scored, expected=before + 500, timeout_ms=120_000)
    assert len(scored) >= before + 500
    assert _count(es, stream.items_index) == before


def test_malformed_messages_go_to_the_dead_letter_topic_and_valid_ones_are_indexed(
    stream, es, tmp_path
):  # type: ignore[no-untyped-def]
    malformed = [
        b"\xff\xfe not utf-8",
        b"{not json",
        b"null",
        b"[1, 2, 3]",
        b"42",
        b'"just a string"',
        b"{}",
        b'{"id": "m8"}',
        b'{"id": "m9", "text": ""}',
        b'{"id": "m10", "text": "   "}',
        b'{"id": "m11", "text": 12345}',
        b'{"id": "m12", "text": "ok", "kind": "rumour"}',
        b'{"id": "m13", "text": "ok", "published_at": "yesterday-ish"}',
        b'{"id": "", "text": "no id"}',
        b'{"id": ["a"], "text": "list id"}',
        json.dumps({"id": "m16", "text": "x" * (stream.max_text_chars + 1)}).encode(),
        b'{"id": "m17", "text": "\\u0000\\u0001\\u0002"}',
        b'{"id": "m18", "text": "fine", "extra": "not-a-dict"}',
        b"",
        b'{"id": "m20", "text": "ok", "title": {"nested": true}}',
    ]
    valid = [
        json.dumps({"id": f"v{i}", "text": f"$AAPL shares rise {i}% after earnings beat"}).encode()
        for i in range(40)
    ]
    producer = KafkaProducer(bootstrap_servers=stream.kafka_bootstrap, acks="all")
    for i, value in enumerate(valid):
        producer.send(stream.topic_raw, value=value)
        if i % 2 == 0 and i // 2 < len(malformed):
            producer.send(stream.topic_raw, value=malformed[i // 2])
    producer.flush()

    query = {"prefix": {"id": "v"}}
    wait_until(lambda: _count(es, stream.items_index, query) >= 40, 120, "40 valid items")
    letters = [
        DeadLetter.model_validate_json(m.value)
        for m in _read_topic(stream, stream.topic_dead_letters, expected=len(malformed))
    ]
    assert sorted(letter.original() for letter in letters) == sorted(malformed)
    assert all(letter.reason and letter.error for letter in letters)
    assert {letter.source_topic for letter in letters} == {stream.topic_raw}
    errors = {letter.original(): letter.error for letter in letters}
    assert errors[b"\xff\xfe not utf-8"] == "invalid_utf8"
    assert errors[b"{not json"] == "invalid_json"
    assert errors[b"null"] == "not_an_object"
    assert errors[malformed[15]] == "text_too_long"
    # Dead letters are indexed too, for the dashboards.
    wait_until(
        lambda: _count(es, stream.dead_letters_index) >= len(malformed), 30, "indexed dead letters"
    )
    sample = es.search(index=stream.dead_letters_index, size=1)["hits"]["hits"][0]["_source"]
    assert base64.b64decode(sample["original_b64"]) in malformed


def test_csv_rows_get_stable_ids_so_replays_are_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("text,label\nfirst,0\nsecond,1\n")
    first = [json.loads(v)["id"] for _, v in read_records(path)]
    second = [json.loads(v)["id"] for _, v in read_records(path)]
    assert first == second and len(set(first)) == 2
