"""The alerts index: one document per Alert, which is also the webhook outbox.

A document is the Alert plus what Grafana annotations show (`summary`, `tags`) and the
delivery state (`delivered`, `pending_targets`, `attempts`, `next_attempt_at`, ...). An alert
is indexed before any webhook is tried, so it survives webhooks being down and the alerter
restarting; the outbox retries until every target has it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from elasticsearch import AsyncElasticsearch, BadRequestError, Elasticsearch, NotFoundError
from pydantic import BaseModel, ConfigDict, Field

from finsentry.alerts.rules import summary
from finsentry.index.date_range import date_range_filters
from finsentry.messages import Alert
from finsentry.queries.params import IsoDateTime

_KEYWORD = {"type": "keyword"}
_DATE = {"type": "date"}

ALERT_MAPPINGS: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "id": _KEYWORD,
        "rule": _KEYWORD,
        "key_type": _KEYWORD,
        "key": _KEYWORD,
        "window_start": _DATE,
        "window_end": _DATE,
        "total": {"type": "integer"},
        "negative": {"type": "integer"},
        "negative_share": {"type": "float"},
        "baseline": {"type": "float"},
        "threshold": {"type": "float"},
        "sample_items": {"type": "object", "enabled": False},
        "created_at": _DATE,
        "summary": {"type": "text"},
        "tags": _KEYWORD,
        "delivered": {"type": "boolean"},
        "pending_targets": _KEYWORD,
        "attempts": {"type": "integer"},
        "next_attempt_at": _DATE,
        "last_error": {"type": "keyword", "ignore_above": 1024},
        "delivered_at": _DATE,
        "watchlist": _KEYWORD,
        "company": _KEYWORD,
        "story_id": _KEYWORD,
        "mean_score": {"type": "float"},
        "baseline_score": {"type": "float"},
        "acknowledged": {"type": "boolean"},
        "acknowledged_at": _DATE,
        "acknowledged_by": _KEYWORD,
    },
}


class AlertDocument(Alert):
    """An Alert as stored in the alerts index."""

    summary: str
    tags: list[str]
    delivered: bool = False
    pending_targets: list[str] = Field(default_factory=list)
    attempts: int = 0
    next_attempt_at: datetime
    last_error: str | None = None
    delivered_at: datetime | None = None
    acknowledged: bool = False
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None

    @classmethod
    def new(cls, alert: Alert, targets: list[str], now: datetime) -> AlertDocument:
        return cls(
            **alert.model_dump(),
            summary=summary(alert),
            tags=[alert.rule, f"{alert.key_type}:{alert.key}"]
            + ([f"watchlist:{alert.watchlist}"] if alert.watchlist else []),
            delivered=not targets,
            pending_targets=targets,
            next_attempt_at=now,
            delivered_at=None if targets else now,
        )

    def to_alert(self) -> Alert:
        return Alert.model_validate(self.model_dump(include=set(Alert.model_fields)))


def alerts_template(index: str) -> dict[str, Any]:
    return {
        "index_patterns": [index, f"{index}-*"],
        "priority": 200,
        "template": {
            "settings": {"number_of_shards": 1, "number_of_replicas": 0},
            "mappings": ALERT_MAPPINGS,
        },
        "_meta": {"managed_by": "finsentry"},
    }


def _already_exists(error: BadRequestError) -> bool:
    return error.error == "resource_already_exists_exception"


def apply_alerts_template(es: Elasticsearch, index: str) -> None:
    """Install the template and create the index if missing. Safe to call at every start."""
    es.indices.put_index_template(name=index, **alerts_template(index))
    try:
        if not es.indices.exists(index=index):
            es.indices.create(index=index)
        else:
            es.indices.put_mapping(index=index, properties=ALERT_MAPPINGS["properties"])
    except BadRequestError as error:
        if not _already_exists(error):
            raise


async def apply_alerts_template_async(es: AsyncElasticsearch, index: str) -> None:
    """The same, for the alerter's async client."""
    await es.indices.put_index_template(name=index, **alerts_template(index))
    try:
        if not await es.indices.exists(index=index):
            await es.indices.create(index=index)
        else:
            # Fields added since the index was made (watchlists, acknowledgements).
            await es.indices.put_mapping(index=index, properties=ALERT_MAPPINGS["properties"])
    except BadRequestError as error:
        if not _already_exists(error):
            raise


class AlertFilter(BaseModel):
    """Which alerts to list (API query parameters and CLI options)."""

    model_config = ConfigDict(extra="forbid")

    watchlist: str | None = Field(None, max_length=64)
    company: str | None = Field(None, max_length=100, description="Ticker or company name.")
    rule: str | None = Field(None, max_length=64)
    since: IsoDateTime | None = Field(None, description="Window ends at or after (ISO 8601).")
    until: IsoDateTime | None = Field(None, description="Window ends before (ISO 8601).")
    acknowledged: bool | None = None
    size: int = Field(50, ge=1, le=500)

    def query(self) -> dict[str, Any]:
        filters: list[dict[str, Any]] = []
        if self.watchlist:
            filters.append({"term": {"watchlist": self.watchlist}})
        if self.company:
            filters.append(
                {
                    "bool": {
                        "should": [
                            {"term": {"key": self.company.upper()}},
                            {"term": {"company": self.company}},
                        ]
                    }
                }
            )
        if self.rule:
            filters.append({"term": {"rule": self.rule}})
        filters.extend(date_range_filters("window_end", self.since, self.until))
        if self.acknowledged is not None:
            if self.acknowledged:
                filters.append({"term": {"acknowledged": True}})
            else:
                filters.append({"bool": {"must_not": {"term": {"acknowledged": True}}}})
        return {"bool": {"filter": filters}}


def search_alerts(es: Elasticsearch, index: str, where: AlertFilter) -> list[AlertDocument]:
    """Matching alerts, newest first."""
    try:
        found = es.search(
            index=index,
            query=where.query(),
            sort=[{"window_end": "desc"}, {"created_at": "desc"}],
            size=where.size,
        )
    except NotFoundError:
        return []
    return [AlertDocument.model_validate(hit["_source"]) for hit in found["hits"]["hits"]]


def acknowledge(
    es: Elasticsearch, index: str, alert_id: str, by: str | None, now: datetime
) -> AlertDocument | None:
    """Mark one alert acknowledged (idempotent); None when there is no such alert."""
    try:
        es.update(
            index=index,
            id=alert_id,
            doc={"acknowledged": True, "acknowledged_at": now.isoformat(), "acknowledged_by": by},
            refresh="wait_for",
        )
        found = es.get(index=index, id=alert_id)
    except NotFoundError:
        return None
    return AlertDocument.model_validate(found["_source"])
