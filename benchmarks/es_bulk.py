"""Elasticsearch bulk indexing rate by bulk size, on the real local node, with the items
index template and realistic scored-item documents. Prints a table.

    .venv/bin/python benchmarks/es_bulk.py --docs 20000
"""

from __future__ import annotations

import argparse
import random
import time
import uuid
from datetime import UTC, datetime, timedelta

from rich.console import Console
from rich.table import Table

from finsentry.es_client import make_es_client
from finsentry.index.bulk_sink import BulkSink
from finsentry.index.template import apply_items_template
from finsentry.settings import Settings

SENTIMENTS = ("bearish", "neutral", "bullish")
TICKERS = ("AAPL", "MSFT", "NVDA", "TSLA", "JPM", "XOM", "AMZN", "META")


def make_doc(i: int, rng: random.Random, now: datetime) -> dict:
    probs = [rng.random() for _ in SENTIMENTS]
    total = sum(probs)
    sentiment_probs = {s: p / total for s, p in zip(SENTIMENTS, probs, strict=True)}
    ticker = rng.choice(TICKERS)
    at = now - timedelta(seconds=rng.randint(0, 86_400))
    return {
        "id": f"doc-{i}",
        "source": "bench",
        "kind": "news",
        "title": None,
        "text": f"${ticker} shares move after the quarterly update, item {i} " * 2,
        "url": None,
        "author": None,
        "published_at": at.isoformat(),
        "lang": "en",
        "extra": {},
        "tickers": [ticker],
        "topic": "Earnings",
        "topic_confidence": 0.9,
        "topic_probs": {"Earnings": 0.9, "Markets": 0.1},
        "sentiment": max(sentiment_probs, key=sentiment_probs.__getitem__),
        "sentiment_confidence": max(sentiment_probs.values()),
        "sentiment_probs": sentiment_probs,
        "sentiment_score": sentiment_probs["bullish"] - sentiment_probs["bearish"],
        "model_version": "bench",
        "ingested_at": at.isoformat(),
        "scored_at": at.isoformat(),
        "latency_ms": 12.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=20_000)
    parser.add_argument("--bulk-sizes", default="50,200,500,1000,5000")
    args = parser.parse_args()

    settings = Settings()
    if settings.manage_services:
        from finsentry.services import manager

        manager.up(settings)
    es = make_es_client(settings)
    rng = random.Random(0)
    now = datetime.now(UTC)
    docs = [make_doc(i, rng, now) for i in range(args.docs)]
    table = Table(title=f"bulk indexing, {args.docs} scored-item documents a run")
    for column in ("bulk size", "docs/s", "ms per bulk"):
        table.add_column(column, justify="right")
    for size in (int(s) for s in args.bulk_sizes.split(",")):
        index = f"bench-bulk-{uuid.uuid4().hex[:8]}"
        apply_items_template(es, index)
        sink = BulkSink(es, index, chunk_size=size)
        started = time.perf_counter()
        for start in range(0, len(docs), size):
            sink.write({d["id"]: d for d in docs[start : start + size]})
        elapsed = time.perf_counter() - started
        es.indices.refresh(index=index)
        assert es.count(index=index)["count"] == len(docs)
        table.add_row(
            str(size), f"{len(docs) / elapsed:,.0f}", f"{elapsed / (len(docs) / size) * 1000:.1f}"
        )
        es.indices.delete(index=index)
        es.indices.delete_index_template(name=index)
    Console().print(table)


if __name__ == "__main__":
    main()
