"""Per-company verdicts as flat documents: one per (scored item, company).

The items index keeps each item's companies as a nested list, which queries that know about
nested fields (`finsentry query tickers`, the API) read directly. Grafana's Elasticsearch
data source cannot query nested fields, and a flat list of tickers beside the item's own
sentiment would count "Macy's up, Palo Alto down" as bearish for both. So every scored item
also writes one flat document per company it names, with that company's own verdict; the
per-ticker panels and Grafana rules read those.

The document id is `<item id>:<ticker>`, so a replayed or re-scored item rewrites its
verdicts in place.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from finsentry.messages import CompanyScores, ItemScores, ScoredItem, Sentiment


class CompanyVerdict(BaseModel):
    """One company of one scored item, with the models' verdict about that company."""

    item_id: str
    ticker: str
    name: str | None = None
    sentiment: Sentiment
    confidence: float = Field(ge=0.0, le=1.0)
    score: float = Field(ge=-1.0, le=1.0, description="P(bullish) - P(bearish)")
    verdict_from: Literal["entity_head", "text"] = Field(
        description="entity_head: the per-company head; text: the item's own verdict."
    )
    item_sentiment: Sentiment
    topic: str
    title: str | None = None
    source: str
    url: str | None = None
    published_at: datetime | None = None
    scored_at: datetime
    model_version: str


def verdict_id(item_id: str, ticker: str) -> str:
    return f"{item_id}:{ticker}"


def _verdicts(companies: Iterable[CompanyScores], item: Mapping[str, Any]) -> list[CompanyVerdict]:
    """One verdict per company; `item` holds the item's own fields of a verdict (item_id,
    item_sentiment, topic, title, source, url, published_at, scored_at, model_version)."""
    return [
        CompanyVerdict(
            ticker=company.ticker,
            name=company.name,
            sentiment=company.sentiment,
            confidence=company.confidence,
            score=company.score,
            verdict_from=company.source,
            **item,
        )
        for company in companies
    ]


def company_verdicts(item: ScoredItem) -> list[CompanyVerdict]:
    """The flat per-company documents of one scored item (none if it names no company)."""
    return _verdicts(
        item.companies,
        {
            "item_id": item.id,
            "item_sentiment": item.sentiment,
            "topic": item.topic,
            "title": item.title,
            "source": item.source,
            "url": item.url,
            "published_at": item.published_at,
            "scored_at": item.scored_at,
            "model_version": item.model_version,
        },
    )


def verdict_docs(items: Iterable[ScoredItem]) -> dict[str, dict[str, Any]]:
    """Bulk-ready documents (id -> source) for the verdicts of `items`."""
    return {
        verdict_id(v.item_id, v.ticker): v.model_dump(mode="json")
        for item in items
        for v in company_verdicts(item)
    }


# What a re-scored item's verdicts need from its indexed document besides the new scores.
RESCORE_SOURCE_FIELDS = ["id", "title", "source", "url", "published_at", "scored_at"]


def rescored_verdict_docs(
    source: Mapping[str, Any], scores: ItemScores, model_version: str
) -> dict[str, dict[str, Any]]:
    """The verdict documents of an indexed item (`source`) re-scored as `scores`; they keep
    the item's `scored_at`, so the item stays where it was on the timelines."""
    verdicts = _verdicts(
        scores.companies,
        {
            "item_id": source["id"],
            "item_sentiment": scores.sentiment.label,
            "topic": scores.topic.label,
            "title": source.get("title"),
            "source": source.get("source") or "unknown",
            "url": source.get("url"),
            "published_at": source.get("published_at"),
            "scored_at": source["scored_at"],
            "model_version": model_version,
        },
    )
    return {verdict_id(v.item_id, v.ticker): v.model_dump(mode="json") for v in verdicts}
