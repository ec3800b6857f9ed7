"""Pydantic models for everything that crosses a boundary: Kafka messages and index documents."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Kind = Literal["news", "comment", "post"]
Sentiment = Literal["bearish", "neutral", "bullish"]


_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def utcnow() -> datetime:
    return datetime.now(UTC)


class NewsItem(BaseModel):
    """One piece of financial text as it arrives on the raw topic."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @model_validator(mode="before")
    @classmethod
    def _unknown_keys_into_extra(cls, data: Any) -> Any:
        """Producers may send fields we do not know: keep them under `extra`, lose nothing."""
        if not isinstance(data, dict):
            return data
        unknown = {k: v for k, v in data.items() if k not in cls.model_fields}
        if not unknown:
            return data
        known = {k: v for k, v in data.items() if k in cls.model_fields}
        extra = known.get("extra")
        known["extra"] = {**unknown, **extra} if isinstance(extra, dict) else unknown
        return known

    @field_validator("text", "title")
    @classmethod
    def _no_control_chars(cls, value: str | None) -> str | None:
        return _CONTROL_CHARS.sub(" ", value).strip() if value is not None else None

    id: str = Field(min_length=1, max_length=512)
    source: str = Field("unknown", min_length=1, max_length=256)
    kind: Kind = "news"
    title: str | None = Field(None, max_length=4096)
    text: str = Field(min_length=1)
    url: str | None = Field(None, max_length=4096)
    author: str | None = Field(None, max_length=512)
    published_at: datetime | None = None
    lang: str | None = Field(None, max_length=16)
    extra: dict[str, Any] = Field(default_factory=dict)

    @field_validator("published_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class LabelScores(BaseModel):
    """One classifier's answer for one text."""

    label: str
    confidence: float = Field(ge=0.0, le=1.0)
    probs: dict[str, float]


class Mention(BaseModel):
    """Where a company is named in the text the model read: character offsets."""

    start: int = Field(ge=0)
    end: int = Field(ge=0)


class CompanyMention(BaseModel):
    """A company the entity linker found, with every place it is named."""

    ticker: str
    name: str | None = None
    mentions: list[Mention] = Field(default_factory=list)


class CompanyScores(BaseModel):
    """The models' verdict about one company of a text.

    `source` says where it comes from: `entity_head` (the per-company head read the
    mentions) or `text` (no per-company head, or no mention offsets: the text's own verdict)."""

    ticker: str
    name: str | None = None
    sentiment: Sentiment
    confidence: float = Field(ge=0.0, le=1.0)
    probs: dict[str, float] = Field(default_factory=dict)
    score: float = Field(ge=-1.0, le=1.0, description="P(bullish) - P(bearish)")
    source: Literal["entity_head", "text"] = "entity_head"
    mentions: list[Mention] = Field(default_factory=list)


class ItemScores(BaseModel):
    """Every classifier's answer for one text, as the models stage returns them."""

    topic: LabelScores
    sentiment: LabelScores
    sentiment_score: float = Field(ge=-1.0, le=1.0, description="P(bullish) - P(bearish)")
    companies: list[CompanyScores] = Field(default_factory=list)
    evidence: str | None = Field(
        None, description="The most negative chunk of a text scored in chunks."
    )
    chunks: int = Field(1, ge=1, description="How many model windows the text was cut into.")


class ScoredItem(NewsItem):
    """A NewsItem with what the models and the entity linker found: the index document."""

    tickers: list[str] = Field(default_factory=list)
    topic: str
    topic_confidence: float = Field(ge=0.0, le=1.0)
    topic_probs: dict[str, float] = Field(default_factory=dict)
    sentiment: Sentiment
    sentiment_confidence: float = Field(ge=0.0, le=1.0)
    sentiment_probs: dict[str, float] = Field(default_factory=dict)
    sentiment_score: float = Field(ge=-1.0, le=1.0, description="P(bullish) - P(bearish)")
    companies: list[CompanyScores] = Field(
        default_factory=list, description="Each company of `tickers` with its own verdict."
    )
    evidence: str | None = None
    chunks: int = Field(1, ge=1)
    model_version: str
    ingested_at: datetime = Field(description="When the raw message reached Kafka.")
    scored_at: datetime
    latency_ms: float = Field(ge=0.0, description="From ingested_at to scored_at.")


class DeadLetter(BaseModel):
    """A raw message that could not be scored, with why, and where it came from."""

    reason: str
    error: str = Field(description="Short machine-readable error kind, e.g. 'invalid_json'.")
    source_topic: str
    partition: int
    offset: int
    key: str | None = None
    original_b64: str = Field(description="The original bytes, base64-encoded.")
    failed_at: datetime = Field(default_factory=utcnow)

    @classmethod
    def from_raw(
        cls,
        raw: bytes,
        *,
        reason: str,
        error: str,
        source_topic: str,
        partition: int,
        offset: int,
        key: bytes | None = None,
    ) -> DeadLetter:
        return cls(
            reason=reason,
            error=error,
            source_topic=source_topic,
            partition=partition,
            offset=offset,
            key=key.decode("utf-8", "replace") if key is not None else None,
            original_b64=base64.b64encode(raw).decode("ascii"),
        )

    def original(self) -> bytes:
        return base64.b64decode(self.original_b64)


class Alert(BaseModel):
    """A tripped rule: emitted to the alerts topic, indexed, and posted to webhooks."""

    id: str
    rule: str
    key_type: Literal["ticker", "topic"]
    key: str
    window_start: datetime
    window_end: datetime
    total: int
    negative: int
    negative_share: float
    baseline: float | None = None
    threshold: float
    sample_items: list[dict[str, Any]] = Field(default_factory=list)
    created_at: datetime = Field(default_factory=utcnow)
    watchlist: str | None = Field(None, description="The watchlist it is routed by, if any.")
    company: str | None = Field(None, description="The company's name, for ticker alerts.")
    story_id: str | None = Field(None, description="severe_item: the story (near-duplicates).")
    mean_score: float | None = Field(None, description="sentiment_shift: the window's mean.")
    baseline_score: float | None = Field(None, description="sentiment_shift: the baseline mean.")
