"""Bulk writes on the real Elasticsearch node: idempotent, rejections reported, retries."""

from __future__ import annotations

import threading

import pytest
from elasticsearch import Elasticsearch

from finsentry.index.bulk_sink import BulkSink, SinkStopped
from finsentry.index.template import apply_items_template, items_template

pytestmark = pytest.mark.integration


def test_writing_the_same_ids_twice_keeps_one_document_each(settings, es) -> None:  # type: ignore[no-untyped-def]
    es.indices.create(index=settings.items_index)
    sink = BulkSink(es, settings.items_index)
    docs = {f"id{i}": {"n": i} for i in range(50)}
    assert len(sink.write(docs).indexed) == 50
    assert len(sink.write(docs).indexed) == 50
    es.indices.refresh(index=settings.items_index)
    assert es.count(index=settings.items_index)["count"] == 50


def test_a_document_the_mapping_refuses_is_rejected_with_a_reason(settings, es) -> None:  # type: ignore[no-untyped-def]
    apply_items_template(es, settings.items_index)
    sink = BulkSink(es, settings.items_index)
    outcome = sink.write({"good": {"id": "good", "text": "fine"}, "bad": {"id": "bad", "nope": 1}})
    assert outcome.indexed == ["good"]
    assert [doc_id for doc_id, _ in outcome.rejected] == ["bad"]
    assert "strict" in outcome.rejected[0][1]


def test_the_template_applies_to_the_index(settings, es) -> None:  # type: ignore[no-untyped-def]
    apply_items_template(es, settings.items_index)
    mapping = es.indices.get_mapping(index=settings.items_index)[settings.items_index]["mappings"]
    expected = items_template(settings.items_index)["template"]["mappings"]["properties"]
    assert mapping["properties"]["tickers"] == {"type": "keyword"}
    assert mapping["properties"]["title"] == expected["title"]
    assert mapping["properties"]["sentiment_score"] == {"type": "float"}


def test_the_refresh_interval_reaches_a_new_and_an_existing_index(settings, es) -> None:  # type: ignore[no-untyped-def]
    def interval() -> str | None:
        index = es.indices.get_settings(index=settings.items_index)[settings.items_index]
        return index["settings"]["index"].get("refresh_interval")

    apply_items_template(es, settings.items_index, "250ms")
    assert interval() == "250ms"
    apply_items_template(es, settings.items_index, "2s")  # the index exists: changed in place
    assert interval() == "2s"
    template = es.indices.get_index_template(name=settings.items_index)["index_templates"][0]
    assert template["index_template"]["template"]["settings"]["index"]["refresh_interval"] == "2s"


def test_an_unreachable_node_is_retried_until_stopped() -> None:
    es = Elasticsearch("http://127.0.0.1:9", request_timeout=1, max_retries=0)
    retries: list[int] = []
    stop = threading.Event()

    def on_retry(attempt: int, reason: str) -> None:
        retries.append(attempt)
        if attempt >= 3:
            stop.set()

    sink = BulkSink(es, "x", initial_backoff=0.01, stop=stop, on_retry=on_retry)
    with pytest.raises(SinkStopped):
        sink.write({"a": {"n": 1}})
    assert retries == [1, 2, 3]
