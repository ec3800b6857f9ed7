"""Drift's Elasticsearch edges: an hour's items (sampled) from the items index, and the
drift index (one document per hour, id = the hour, rewritten while the hour fills)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from elasticsearch import Elasticsearch, NotFoundError, helpers

from finsentry.drift.measure import DriftRow, Observation
from finsentry.index.date_range import date_range_filters
from finsentry.index.template import ensure_index

HOUR = timedelta(hours=1)
_FLOAT = {"type": "float"}

DRIFT_MAPPINGS: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "hour": {"type": "date"},
        "items": {"type": "integer"},
        "sampled": {"type": "integer"},
        "reference_version": {"type": "keyword"},
        "sentiment_mix": {"type": "object", "enabled": False},
        "topic_mix": {"type": "object", "enabled": False},
        "mean_confidence": _FLOAT,
        "mean_text_length": _FLOAT,
        "unknown_share": _FLOAT,
        "psi_sentiment": _FLOAT,
        "psi_topic": _FLOAT,
        "psi_confidence": _FLOAT,
        "psi_text_length": _FLOAT,
        "psi_unknown_words": _FLOAT,
        "max_psi": _FLOAT,
        "worst": {"type": "keyword"},
        "enough": {"type": "boolean"},
        "drifted": {"type": "boolean"},
        "threshold": _FLOAT,
    },
}


def hour_observations(
    es: Elasticsearch, index: str, hour: datetime, sample: int
) -> tuple[int, list[Observation]]:
    """How many items were scored in [hour, hour + 1 h), and a random sample of them
    (seeded by the hour, so the same hour gives the same sample)."""
    in_hour = date_range_filters("scored_at", hour, hour + HOUR)
    try:
        found = es.search(
            index=index,
            query={
                "function_score": {
                    "query": {"bool": {"filter": in_hour}},
                    "random_score": {"seed": int(hour.timestamp()), "field": "_seq_no"},
                    "boost_mode": "replace",
                }
            },
            source=["title", "text", "sentiment", "sentiment_confidence", "topic"],
            size=sample,
            track_total_hits=True,
        )
    except NotFoundError:
        return 0, []
    out = []
    for hit in found["hits"]["hits"]:
        doc = hit["_source"]
        title, text = doc.get("title"), doc["text"]
        out.append(
            Observation(
                text=f"{title}. {text}" if title and not text.startswith(title) else text,
                sentiment=doc["sentiment"],
                sentiment_confidence=doc["sentiment_confidence"],
                topic=doc["topic"],
            )
        )
    return int(found["hits"]["total"]["value"]), out


def ensure_drift_index(es: Elasticsearch, index: str) -> None:
    """Create the index with its mappings when missing (safe at every start)."""
    ensure_index(es, index, DRIFT_MAPPINGS)


def put_rows(es: Elasticsearch, index: str, rows: list[DriftRow]) -> None:
    ensure_drift_index(es, index)
    actions = (
        {"_index": index, "_id": row.hour.isoformat(), "_source": row.model_dump(mode="json")}
        for row in rows
    )
    helpers.bulk(es, actions, refresh="wait_for")
