"""The feedback index: one document per analyst and item (`FeedbackDocument`).

Writes are whole documents with a deterministic id (item + analyst), so labelling an item
again replaces that analyst's earlier labels and a retried request stores nothing twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from elasticsearch import Elasticsearch, NotFoundError, helpers
from pydantic import BaseModel, ConfigDict, Field

from finsentry.feedback.labels import FeedbackDocument
from finsentry.index.date_range import date_range_filters
from finsentry.index.template import ensure_index
from finsentry.messages import ScoredItem
from finsentry.queries.params import IsoDateTime

_KEYWORD = {"type": "keyword"}
_FLOAT = {"type": "float"}
_SPANS = {"properties": {"start": {"type": "integer"}, "end": {"type": "integer"}}}

FEEDBACK_MAPPINGS: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "id": _KEYWORD,
        "item_id": _KEYWORD,
        "analyst": _KEYWORD,
        "labelled_at": {"type": "date"},
        "text": {"type": "text"},
        "source": _KEYWORD,
        "labels": {
            "properties": {
                "sentiment": _KEYWORD,
                "topic": _KEYWORD,
                "companies": {
                    "properties": {
                        "ticker": _KEYWORD,
                        "name": _KEYWORD,
                        "sentiment": _KEYWORD,
                        "mentions": _SPANS,
                    }
                },
            }
        },
        "model": {
            "properties": {
                "version": _KEYWORD,
                "sentiment": _KEYWORD,
                "sentiment_confidence": _FLOAT,
                "topic": _KEYWORD,
                "topic_confidence": _FLOAT,
                "companies": {
                    "properties": {"ticker": _KEYWORD, "sentiment": _KEYWORD, "confidence": _FLOAT}
                },
            }
        },
        "disagrees": _KEYWORD,
        "note": {"type": "text"},
    },
}


def ensure_feedback_index(es: Elasticsearch, index: str) -> None:
    """Create the index with its mappings when missing (safe at every start)."""
    ensure_index(es, index, FEEDBACK_MAPPINGS)


def get_item(es: Elasticsearch, index: str, item_id: str) -> ScoredItem | None:
    """The scored item with this id, or None."""
    try:
        found = es.get(index=index, id=item_id)
    except NotFoundError:
        return None
    return ScoredItem.model_validate(found["_source"])


def put_feedback(es: Elasticsearch, index: str, doc: FeedbackDocument) -> None:
    ensure_feedback_index(es, index)
    es.index(index=index, id=doc.id, document=doc.model_dump(mode="json"), refresh="wait_for")


class FeedbackFilter(BaseModel):
    """Which labels to list (API query parameters and CLI options)."""

    model_config = ConfigDict(extra="forbid")

    analyst: str | None = Field(None, max_length=128)
    item: str | None = Field(None, max_length=512, description="Item id.")
    ticker: str | None = Field(None, max_length=32, description="A labelled company.")
    disagrees: bool | None = Field(
        None, description="true: only labels that differ from the model's answer."
    )
    since: IsoDateTime | None = Field(None, description="Labelled at or after (ISO 8601).")
    until: IsoDateTime | None = Field(None, description="Labelled before (ISO 8601).")
    size: int = Field(100, ge=1, le=1000)

    def query(self) -> dict[str, Any]:
        filters: list[dict[str, Any]] = []
        for field, value in (
            ("analyst", self.analyst),
            ("item_id", self.item),
            ("labels.companies.ticker", self.ticker.upper() if self.ticker else None),
        ):
            if value:
                filters.append({"term": {field: value}})
        if self.disagrees is True:
            filters.append({"exists": {"field": "disagrees"}})
        elif self.disagrees is False:
            filters.append({"bool": {"must_not": {"exists": {"field": "disagrees"}}}})
        filters.extend(date_range_filters("labelled_at", self.since, self.until))
        return {"bool": {"filter": filters}}


def search_feedback(
    es: Elasticsearch, index: str, where: FeedbackFilter
) -> tuple[int, list[FeedbackDocument]]:
    """How many labels match, and the newest `where.size` of them."""
    try:
        found = es.search(
            index=index,
            query=where.query(),
            sort=[{"labelled_at": "desc"}, {"id": "asc"}],
            size=where.size,
            track_total_hits=True,
        )
    except NotFoundError:
        return 0, []
    hits = found["hits"]
    docs = [FeedbackDocument.model_validate(hit["_source"]) for hit in hits["hits"]]
    return int(hits["total"]["value"]), docs


def scan_feedback(
    es: Elasticsearch, index: str, since: datetime | None = None
) -> Iterator[FeedbackDocument]:
    """Every label (labelled at or after `since`), in no particular order."""
    if not es.indices.exists(index=index):
        return
    query: dict[str, Any] = {"match_all": {}}
    if since is not None:
        query = {"range": {"labelled_at": {"gte": since.isoformat()}}}
    for hit in helpers.scan(es, index=index, query={"query": query}):
        yield FeedbackDocument.model_validate(hit["_source"])
