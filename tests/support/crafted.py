"""Scored items made by hand, for tests that need documents with known labels."""

from __future__ import annotations

from datetime import datetime, timedelta

from finsentry.messages import ScoredItem


def crafted_item(
    item_id: str,
    scored_at: datetime,
    sentiment: str,
    tickers: list[str],
    *,
    text: str = "crafted",
    title: str | None = None,
    url: str | None = None,
    topic: str = "Company | Product News",
    latency_ms: float = 50.0,
    model_version: str = "v1",
) -> ScoredItem:
    """An item the model called `sentiment` with probability 0.8."""
    probs = {"bearish": 0.1, "neutral": 0.1, "bullish": 0.1} | {sentiment: 0.8}
    return ScoredItem(
        id=item_id,
        source="test",
        title=title,
        text=text,
        url=url,
        tickers=tickers,
        topic=topic,
        topic_confidence=0.9,
        sentiment=sentiment,  # type: ignore[arg-type]
        sentiment_confidence=0.8,
        sentiment_probs=probs,
        sentiment_score=probs["bullish"] - probs["bearish"],
        model_version=model_version,
        ingested_at=scored_at - timedelta(milliseconds=latency_ms),
        scored_at=scored_at,
        latency_ms=latency_ms,
    )
