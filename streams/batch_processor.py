"""One micro-batch, end to end: parse -> link companies -> score, then index.

This is the body of the Faust agent without Faust: it takes raw Kafka records and returns
what was indexed and what must go to the dead-letter topic. Blocking work (the models, the
Elasticsearch client) runs in executor threads so the event loop keeps serving Kafka.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from finsentry import metrics
from finsentry.index.bulk_sink import BulkOutcome, BulkSink
from finsentry.index.company_verdicts import verdict_docs
from finsentry.messages import (
    CompanyMention,
    CompanyScores,
    DeadLetter,
    ItemScores,
    NewsItem,
    ScoredItem,
    utcnow,
)
from finsentry.models.scorer import Scorer
from finsentry.streams.entity_linking import CompanyIndex, find_mentions
from finsentry.streams.parser import ParseError, parse_raw

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RawRecord:
    """A Kafka record as it came off the raw topic."""

    value: bytes | None
    key: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp: float | None = None  # seconds since the epoch, from the broker


@dataclass
class BatchResult:
    indexed: list[ScoredItem] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)


def text_for_model(item: NewsItem) -> str:
    """Headline and body together, without repeating a headline the body starts with."""
    if item.title and not item.text.startswith(item.title):
        return f"{item.title}. {item.text}"
    return item.text


def score_isolating_failures(
    scorer: Scorer, texts: list[str], companies: list[list[CompanyMention]] | None = None
) -> list[ItemScores | Exception]:
    """Score a batch; if the model fails on it, split the batch in halves until the
    offending items are isolated, so one poisonous text cannot stop the rest."""
    if companies is None:
        companies = [[] for _ in texts]
    try:
        return list(scorer.score(texts, companies))
    except Exception as exc:
        if len(texts) == 1:
            return [exc]
        log.warning("model failed on a batch of %d (%s); splitting", len(texts), exc)
        middle = len(texts) // 2
        return score_isolating_failures(
            scorer, texts[:middle], companies[:middle]
        ) + score_isolating_failures(scorer, texts[middle:], companies[middle:])


def company_verdicts(scores: ItemScores, companies: list[CompanyMention]) -> list[CompanyScores]:
    """The scorer's per-company verdicts; where it gave none (a model without the
    per-company head that does not fill them in), the text's verdict for each company."""
    if scores.companies or not companies:
        return scores.companies
    return [
        CompanyScores(
            ticker=c.ticker,
            name=c.name,
            sentiment=scores.sentiment.label,  # type: ignore[arg-type]
            confidence=scores.sentiment.confidence,
            probs=scores.sentiment.probs,
            score=scores.sentiment_score,
            source="text",
            mentions=c.mentions,
        )
        for c in companies
    ]


def to_scored_item(
    item: NewsItem,
    scores: ItemScores,
    companies: list[CompanyMention],
    model_version: str,
    ingested_at: datetime,
    scored_at: datetime,
) -> ScoredItem:
    return ScoredItem(
        **item.model_dump(),
        tickers=[c.ticker for c in companies],
        companies=company_verdicts(scores, companies),
        evidence=scores.evidence,
        chunks=scores.chunks,
        topic=scores.topic.label,
        topic_confidence=scores.topic.confidence,
        topic_probs=scores.topic.probs,
        sentiment=scores.sentiment.label,  # type: ignore[arg-type]
        sentiment_confidence=scores.sentiment.confidence,
        sentiment_probs=scores.sentiment.probs,
        sentiment_score=scores.sentiment_score,
        model_version=model_version,
        ingested_at=ingested_at,
        scored_at=scored_at,
        latency_ms=max(0.0, (scored_at - ingested_at).total_seconds() * 1000),
    )


# A dead letter keeps at most this much of the original message, so that it always fits
# in a Kafka message (producer and topic limits are ~1 MB by default; base64 adds a third).
MAX_DEAD_LETTER_ORIGINAL = 256 * 1024


def dead_letter(record: RawRecord, error: str, reason: str) -> DeadLetter:
    original = record.value or b""
    if len(original) > MAX_DEAD_LETTER_ORIGINAL:
        reason = f"{reason} (original: {len(original)} bytes, only the start kept)"
        original = original[:MAX_DEAD_LETTER_ORIGINAL]
    return DeadLetter.from_raw(
        original,
        reason=reason,
        error=error,
        source_topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
    )


@dataclass
class ScoredBatch:
    """A batch after the model, before the index: its documents and what went wrong so far."""

    docs: dict[str, ScoredItem] = field(default_factory=dict)
    records: dict[str, RawRecord] = field(default_factory=dict)  # by document id
    dead_letters: list[DeadLetter] = field(default_factory=list)


@dataclass
class BatchProcessor:
    """`score` (parse, link companies, run the model) then `index` (bulk writes, retried):
    two steps, so that the agent can score one batch while the previous one is written.
    The model runs in `executor`, the writes in `write_executor` (the same one if unset)."""

    scorer: Scorer
    companies: CompanyIndex
    sink: BulkSink
    executor: Executor
    max_text_chars: int
    dead_letter_sink: BulkSink | None = None
    # One flat document per company of each indexed item (index/company_verdicts.py).
    verdict_sink: BulkSink | None = None
    write_executor: Executor | None = None

    async def process(self, records: Sequence[RawRecord]) -> BatchResult:
        return await self.index(await self.score(records))

    async def score(self, records: Sequence[RawRecord]) -> ScoredBatch:
        batch = ScoredBatch()
        parsed: dict[str, tuple[NewsItem, RawRecord]] = {}
        for record in records:
            outcome = parse_raw(record.value, self.max_text_chars)
            if isinstance(outcome, ParseError):
                batch.dead_letters.append(dead_letter(record, outcome.error, outcome.reason))
            else:
                # The same id twice in one batch: the later record wins, as it would in the index.
                parsed[outcome.id] = (outcome, record)
        if parsed:
            await self._score(list(parsed.values()), batch)
        return batch

    async def index(self, batch: ScoredBatch) -> BatchResult:
        """Write a scored batch (retrying through outages); what Elasticsearch refuses
        becomes a dead letter, and the dead letters are indexed too."""
        result = BatchResult(dead_letters=list(batch.dead_letters))
        if batch.docs:
            await self._index(batch, result)
        if result.dead_letters:
            await self.index_dead_letters(result.dead_letters)
        return result

    async def _write(self, sink: BulkSink, docs: dict[str, Any]) -> BulkOutcome:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.write_executor or self.executor, sink.write, docs)

    async def index_dead_letters(self, letters: list[DeadLetter]) -> None:
        for letter in letters:
            metrics.DEAD_LETTERS.labels(error=letter.error).inc()
        if self.dead_letter_sink is None:
            return
        docs = {
            f"{x.source_topic}-{x.partition}-{x.offset}": x.model_dump(mode="json") for x in letters
        }
        await self._write(self.dead_letter_sink, docs)

    def _link_and_score(
        self, scorer: Scorer, texts: list[str]
    ) -> tuple[list[ItemScores | Exception], list[list[CompanyMention]]]:
        """Find each text's companies, then score texts and companies in one model pass."""
        mentions = [find_mentions(text, self.companies) for text in texts]
        return score_isolating_failures(scorer, texts, mentions), mentions

    async def _score(self, items: list[tuple[NewsItem, RawRecord]], batch: ScoredBatch) -> None:
        loop = asyncio.get_running_loop()
        texts = [text_for_model(item) for item, _ in items]
        scorer = self.scorer  # one model for the whole batch, even if a swap is pending
        started = time.perf_counter()
        scores, mentions = await loop.run_in_executor(
            self.executor, self._link_and_score, scorer, texts
        )
        metrics.SCORING_LATENCY.observe(time.perf_counter() - started)
        metrics.BATCH_SIZE.observe(len(texts))
        scored_at = utcnow()
        for (item, record), score, companies in zip(items, scores, mentions, strict=True):
            if isinstance(score, Exception):
                reason = f"model failed on this item: {type(score).__name__}: {score}"[:500]
                batch.dead_letters.append(dead_letter(record, "model_error", reason))
                continue
            ingested_at = (
                datetime.fromtimestamp(record.timestamp, UTC) if record.timestamp else scored_at
            )
            batch.docs[item.id] = to_scored_item(
                item, score, companies, scorer.version, ingested_at, scored_at
            )
            batch.records[item.id] = record

    async def _index(self, batch: ScoredBatch, result: BatchResult) -> None:
        sources = {doc_id: doc.model_dump(mode="json") for doc_id, doc in batch.docs.items()}
        outcome = await self._write(self.sink, sources)
        for doc_id, reason in outcome.rejected:
            result.dead_letters.append(
                dead_letter(
                    batch.records[doc_id],
                    "index_rejected",
                    f"Elasticsearch refused it: {reason}",
                )
            )
        indexed = [batch.docs[doc_id] for doc_id in outcome.indexed]
        await self._index_verdicts(indexed)
        result.indexed.extend(indexed)
        metrics.ITEMS_SCORED.inc(len(outcome.indexed))

    async def _index_verdicts(self, items: list[ScoredItem]) -> None:
        """The per-company documents of the indexed items, written (and retried) before the
        batch is acknowledged, like the items themselves."""
        verdicts = verdict_docs(items)
        if self.verdict_sink is None or not verdicts:
            return
        outcome = await self._write(self.verdict_sink, verdicts)
        for doc_id, reason in outcome.rejected:
            # The item itself is indexed (with its nested companies): only the flat copy for
            # Grafana is missing, which a rescore rewrites. Loud, not a dead letter.
            log.error("company verdict %s refused by Elasticsearch: %s", doc_id, reason)
