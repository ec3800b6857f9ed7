"""The alerts index: one document per Alert, which is also the webhook outbox.

A document is the Alert plus what Grafana annotations show (`summary`, `tags`) and the
delivery state (`delivered`, `pending_targets`, `attempts`, `next_attempt_at`, ...). An alert
is indexed before any webhook is tried, so it survives webhooks being down and the alerter
restarting; the outbox retries until every target has it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from elasticsearch import AsyncElasticsearch, BadRequestError, Elasticsearch
from pydantic import Field

from finsentry.alerts.rules import summary
from finsentry.messages import Alert

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

    @classmethod
    def new(cls, alert: Alert, targets: list[str], now: datetime) -> AlertDocument:
        return cls(
            **alert.model_dump(),
            summary=summary(alert),
            tags=[alert.rule, f"{alert.key_type}:{alert.key}"],
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
    except BadRequestError as error:
        if not _already_exists(error):
            raise


async def apply_alerts_template_async(es: AsyncElasticsearch, index: str) -> None:
    """The same, for the alerter's async client."""
    await es.indices.put_index_template(name=index, **alerts_template(index))
    try:
        if not await es.indices.exists(index=index):
            await es.indices.create(index=index)
    except BadRequestError as error:
        if not _already_exists(error):
            raise
