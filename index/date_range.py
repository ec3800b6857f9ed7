"""The since/until filter of the stores' searches, as Elasticsearch query DSL."""

from __future__ import annotations

from datetime import datetime
from typing import Any


def date_range_filters(
    field: str, since: datetime | None, until: datetime | None
) -> list[dict[str, Any]]:
    """Filters for a bool query's `filter`: `field` at or after `since` and before `until`
    (half-open, so consecutive ranges do not overlap). Empty when neither bound is given."""
    bounds: dict[str, str] = {}
    if since is not None:
        bounds["gte"] = since.isoformat()
    if until is not None:
        bounds["lt"] = until.isoformat()
    return [{"range": {field: bounds}}] if bounds else []
