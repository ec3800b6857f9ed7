"""Analysts' labels: the request body, the stored document, and the pure check between them.

The request schema names the classes (the three sentiments; the router narrows `topic` to
the model's topics, `topic_body`), so an unknown class is refused by validation. What the
schema cannot say is checked against the item before anything is stored: each company must
be one the item names, once. The stored document keeps the text the
model read, the companies' mention offsets in it (for the per-company head), the analyst's
labels and the model's original answer with its version.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from finsentry.messages import ScoredItem, Sentiment
from finsentry.streams.batch_processor import text_for_model


class FeedbackError(ValueError):
    """A label that cannot be stored; the message says which and why."""


class CompanyLabelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ticker: str = Field(min_length=1, max_length=32, description="A company the item names.")
    sentiment: Sentiment


class FeedbackIn(BaseModel):
    """`POST /v1/items/{id}/labels`: at least one corrected (or confirmed) label."""

    model_config = ConfigDict(extra="forbid")

    sentiment: Sentiment | None = None
    topic: str | None = Field(None, min_length=1, max_length=128, examples=["Earnings"])
    companies: list[CompanyLabelIn] = Field(default_factory=list, max_length=100)
    note: str | None = Field(None, max_length=2000)

    @model_validator(mode="after")
    def _some_label(self) -> Self:
        if self.sentiment is None and self.topic is None and not self.companies:
            raise ValueError("give at least one label: sentiment, topic or companies")
        return self


class Span(BaseModel):
    start: int = Field(ge=0)
    end: int = Field(ge=0)


class CompanyLabel(BaseModel):
    ticker: str
    name: str | None = None
    sentiment: Sentiment
    mentions: list[Span] = Field(
        default_factory=list, description="Where the text names it (character offsets)."
    )


class LabelSet(BaseModel):
    sentiment: Sentiment | None = None
    topic: str | None = None
    companies: list[CompanyLabel] = Field(default_factory=list)


class CompanyAnswer(BaseModel):
    ticker: str
    sentiment: Sentiment
    confidence: float


class ModelAnswer(BaseModel):
    """What the model said about the item when the analyst labelled it."""

    version: str
    sentiment: Sentiment
    sentiment_confidence: float
    topic: str
    topic_confidence: float
    companies: list[CompanyAnswer] = Field(default_factory=list)


class FeedbackDocument(BaseModel):
    """One analyst's labels of one item (a newer labelling by the same analyst replaces it)."""

    id: str
    item_id: str
    analyst: str
    labelled_at: datetime
    text: str = Field(description="The text the model read (headline and body).")
    source: str
    labels: LabelSet
    model: ModelAnswer
    disagrees: list[str] = Field(
        default_factory=list,
        description="Labels that differ from the model's: sentiment, topic, company:<TICKER>.",
    )
    note: str | None = None


def topic_body(topics: list[str]) -> type[FeedbackIn]:
    """`FeedbackIn` whose `topic` is one of `topics` (an enum in the OpenAPI schema)."""
    topic = Literal[tuple(topics)]  # type: ignore[valid-type]
    return create_model(
        "FeedbackIn",
        __base__=FeedbackIn,
        topic=(topic | None, Field(None, examples=[topics[0]] if topics else None)),
    )


def feedback_id(item_id: str, analyst: str) -> str:
    return hashlib.sha256(f"{item_id}\x00{analyst}".encode()).hexdigest()[:32]


def check_feedback(
    body: FeedbackIn,
    item: ScoredItem,
    *,
    analyst: str,
    topics: list[str],
    now: datetime,
) -> FeedbackDocument:
    """The document to store, or FeedbackError saying what is wrong (nothing is stored)."""
    labels = LabelSet(sentiment=body.sentiment)
    if body.topic is not None:
        if body.topic not in topics:
            raise FeedbackError(f"unknown topic {body.topic[:80]!r}: expected one of {topics}")
        labels.topic = body.topic
    known = {c.ticker.upper(): c for c in item.companies}
    seen: set[str] = set()
    for given in body.companies:
        ticker = given.ticker.strip().upper()
        if ticker not in known:
            raise FeedbackError(
                f"company {given.ticker[:32]!r} is not one of the item's companies "
                f"{sorted(known) or '(none)'}"
            )
        if ticker in seen:
            raise FeedbackError(f"company {ticker!r} is labelled twice")
        seen.add(ticker)
        company = known[ticker]
        labels.companies.append(
            CompanyLabel(
                ticker=company.ticker,
                name=company.name,
                sentiment=given.sentiment,
                mentions=[Span(start=m.start, end=m.end) for m in company.mentions],
            )
        )
    answer = ModelAnswer(
        version=item.model_version,
        sentiment=item.sentiment,
        sentiment_confidence=item.sentiment_confidence,
        topic=item.topic,
        topic_confidence=item.topic_confidence,
        companies=[
            CompanyAnswer(ticker=c.ticker, sentiment=c.sentiment, confidence=c.confidence)
            for c in item.companies
        ],
    )
    return FeedbackDocument(
        id=feedback_id(item.id, analyst),
        item_id=item.id,
        analyst=analyst,
        labelled_at=now,
        text=text_for_model(item),
        source=item.source,
        labels=labels,
        model=answer,
        disagrees=disagreements(labels, answer),
        note=body.note,
    )


def disagreements(labels: LabelSet, answer: ModelAnswer) -> list[str]:
    out = []
    if labels.sentiment is not None and labels.sentiment != answer.sentiment:
        out.append("sentiment")
    if labels.topic is not None and labels.topic != answer.topic:
        out.append("topic")
    said = {c.ticker: c.sentiment for c in answer.companies}
    out += [f"company:{c.ticker}" for c in labels.companies if said.get(c.ticker) != c.sentiment]
    return out
