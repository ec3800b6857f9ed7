"""What the live terminal view shows of alerts: the newest ones, one short row each.

`alert_rows` is pure (documents of the alerts index -> rows); `recent_alert_rows` reads the
index. streams/live_view.py calls the latter every refresh and shows the rows in its alerts
panel: time, watchlist, company, rule, the summary, and whether it was acknowledged.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from elasticsearch import ApiError, Elasticsearch, TransportError
from pydantic import BaseModel

from finsentry.settings import Settings


class AlertRow(BaseModel):
    at: datetime
    watchlist: str | None
    company: str
    rule: str
    summary: str
    delivered: bool
    acknowledged: bool


def alert_rows(docs: Iterable[dict[str, Any]]) -> list[AlertRow]:
    rows = []
    for doc in docs:
        company = doc["key"] if doc.get("key_type") == "ticker" else f"topic {doc['key']}"
        if doc.get("company"):
            company = f"{doc['key']} ({doc['company']})"
        rows.append(
            AlertRow(
                at=doc.get("created_at") or doc["window_end"],
                watchlist=doc.get("watchlist"),
                company=company,
                rule=doc["rule"],
                summary=doc.get("summary") or "",
                delivered=bool(doc.get("delivered")),
                acknowledged=bool(doc.get("acknowledged")),
            )
        )
    return rows


def recent_alert_rows(es: Elasticsearch, settings: Settings, limit: int = 8) -> list[AlertRow]:
    """The newest `limit` alerts (any watchlist, or none); [] when the index is not there yet
    or Elasticsearch does not answer (the view keeps running)."""
    try:
        found = es.search(
            index=settings.alerts_index,
            sort=[{"created_at": "desc"}],
            size=limit,
            source_excludes=["sample_items"],
        )
    except (ApiError, TransportError):
        return []
    return alert_rows(hit["_source"] for hit in found["hits"]["hits"])
