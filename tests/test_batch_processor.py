"""The agent's body without Faust: parse, score (isolating model failures), link, index."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from finsentry.index.bulk_sink import BulkSink
from finsentry.index.template import apply_dead_letters_template, apply_items_template
from finsentry.messages import ItemScores, LabelScores
from finsentry.streams.batch_processor import (
    BatchProcessor,
    RawRecord,
    score_isolating_failures,
    text_for_model,
)
from finsentry.streams.entity_linking import CompanyIndex


class PoisonSensitiveScorer:
    """A scorer that fails on any batch containing the word 'poison', like a model that
    runs out of memory on one pathological input."""

    version = "test-1"

    def __init__(self) -> None:
        self.calls: list[int] = []

    def score(self, texts: list[str], companies: Any = None) -> list[ItemScores]:
        self.calls.append(len(texts))
        if any("poison" in t for t in texts):
            raise RuntimeError("CUDA out of memory (simulated)")
        bearish = LabelScores(
            label="bearish", confidence=0.8, probs={"bearish": 0.8, "neutral": 0.1, "bullish": 0.1}
        )
        topic = LabelScores(label="Earnings", confidence=1.0, probs={"Earnings": 1.0})
        return [ItemScores(topic=topic, sentiment=bearish, sentiment_score=-0.7) for _ in texts]


def test_a_failing_item_is_isolated_and_the_rest_scored() -> None:
    scorer = PoisonSensitiveScorer()
    texts = [f"item {i}" for i in range(16)]
    texts[11] = "poison pill"
    results = score_isolating_failures(scorer, texts)
    assert len(results) == 16
    assert isinstance(results[11], RuntimeError)
    assert all(isinstance(r, ItemScores) for i, r in enumerate(results) if i != 11)
    # Bisection, not one call per item: log2(16) levels of splitting.
    assert len(scorer.calls) < 16


def test_title_and_text_are_scored_together_without_repeating() -> None:
    from finsentry.messages import NewsItem

    assert text_for_model(NewsItem(id="1", title="Big news", text="Details")) == "Big news. Details"
    assert text_for_model(NewsItem(id="1", title="Big news", text="Big news: more")) == (
        "Big news: more"
    )


def _record(offset: int, payload: object) -> RawRecord:
    value = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return RawRecord(
        value=value, key=None, topic="raw", partition=0, offset=offset, timestamp=1.7e9
    )


@pytest.mark.integration
def test_a_batch_is_indexed_and_bad_items_become_dead_letters(settings, es) -> None:  # type: ignore[no-untyped-def]
    apply_items_template(es, settings.items_index)
    apply_dead_letters_template(es, settings.dead_letters_index)
    companies = CompanyIndex()
    companies.add("AAPL", "Apple Inc.")
    processor = BatchProcessor(
        scorer=PoisonSensitiveScorer(),
        companies=companies,
        sink=BulkSink(es, settings.items_index),
        executor=ThreadPoolExecutor(1),
        max_text_chars=1000,
        dead_letter_sink=BulkSink(es, settings.dead_letters_index),
    )
    records = [
        _record(0, {"id": "a", "text": "$AAPL misses estimates"}),
        _record(1, b"not json"),
        _record(2, {"id": "b", "text": "poison pill"}),
        _record(3, {"id": "c", "text": "Apple shares slide", "title": "Apple"}),
        _record(4, {"id": "a", "text": "$AAPL misses estimates, updated"}),
    ]
    result = asyncio.run(processor.process(records))

    assert sorted(item.id for item in result.indexed) == ["a", "c"]
    assert {(x.offset, x.error) for x in result.dead_letters} == {
        (1, "invalid_json"),
        (2, "model_error"),
    }
    es.indices.refresh(index=[settings.items_index, settings.dead_letters_index])
    assert es.count(index=settings.items_index)["count"] == 2
    doc = es.get(index=settings.items_index, id="a")["_source"]
    assert doc["text"].endswith("updated")  # the later record with the same id wins
    assert doc["tickers"] == ["AAPL"] and doc["sentiment"] == "bearish"
    assert doc["model_version"] == "test-1" and doc["latency_ms"] >= 0
    assert es.count(index=settings.dead_letters_index)["count"] == 2


class ExplodingProcessor:
    """Fails on any batch holding the record b'boom', whatever the attempt."""

    def __init__(self) -> None:
        self.indexed_letters: list = []

    async def process(self, records: list[RawRecord]):  # type: ignore[no-untyped-def]
        from finsentry.streams.batch_processor import BatchResult

        if any(r.value == b"boom" for r in records):
            raise ValueError("cannot serialise this record")
        return BatchResult()

    async def index_dead_letters(self, letters: list) -> None:  # type: ignore[type-arg]
        self.indexed_letters.extend(letters)


def test_a_record_that_always_fails_is_isolated_not_retried_forever() -> None:
    from finsentry.settings import Settings
    from finsentry.streams.app import process_isolating_failures

    records = [_record(i, {"id": str(i), "text": "fine"}) for i in range(8)]
    records[5] = _record(5, b"boom")
    processor = ExplodingProcessor()
    settings = Settings(bulk_initial_backoff=0.001)
    result = asyncio.run(process_isolating_failures(processor, records, settings))  # type: ignore[arg-type]
    assert [(x.offset, x.error) for x in result.dead_letters] == [(5, "processing_error")]
    assert "cannot serialise" in result.dead_letters[0].reason
    assert processor.indexed_letters == result.dead_letters
