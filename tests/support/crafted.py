"""Scored items made by hand, for tests that need documents with known labels."""

from __future__ import annotations

from datetime import datetime, timedelta

from finsentry.messages import CompanyScores, ScoredItem


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
    company_sentiment: dict[str, str] | None = None,
) -> ScoredItem:
    """An item the model called `sentiment` with probability 0.8. Each ticker gets its own
    verdict from `company_sentiment` (the per-company head's), else the item's (copied)."""
    probs = {"bearish": 0.1, "neutral": 0.1, "bullish": 0.1} | {sentiment: 0.8}
    own = company_sentiment or {}

    def verdict(ticker: str) -> CompanyScores:
        label = own.get(ticker, sentiment)
        p = {"bearish": 0.1, "neutral": 0.1, "bullish": 0.1} | {label: 0.8}
        return CompanyScores(
            ticker=ticker,
            sentiment=label,  # type: ignore[arg-type]
            confidence=0.8,
            probs=p,
            score=p["bullish"] - p["bearish"],
            source="entity_head" if ticker in own else "text",
        )

    return ScoredItem(
        id=item_id,
        source="test",
        title=title,
        text=text,
        url=url,
        tickers=tickers,
        companies=[verdict(t) for t in tickers],
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
