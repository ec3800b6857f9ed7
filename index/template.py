"""The indices (items, per-company verdicts, dead letters): explicit mappings in composable
index templates, applied at start-up."""

from __future__ import annotations

from typing import Any

from elasticsearch import Elasticsearch

_KEYWORD = {"type": "keyword"}
_FLOAT = {"type": "float"}
_DATE = {"type": "date"}


def _text_with_keyword(ignore_above: int) -> dict[str, Any]:
    return {
        "type": "text",
        "fields": {"keyword": {"type": "keyword", "ignore_above": ignore_above}},
    }


ITEM_MAPPINGS: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "id": _KEYWORD,
        "source": _KEYWORD,
        "kind": _KEYWORD,
        "title": _text_with_keyword(512),
        "text": _text_with_keyword(1024),
        "url": {"type": "keyword", "index": False},
        "author": _KEYWORD,
        "lang": _KEYWORD,
        "extra": {"type": "object", "enabled": False},
        "published_at": _DATE,
        "ingested_at": _DATE,
        "scored_at": _DATE,
        "latency_ms": _FLOAT,
        "tickers": _KEYWORD,
        "topic": _KEYWORD,
        "topic_confidence": _FLOAT,
        "topic_probs": {"type": "object", "dynamic": True},
        "sentiment": _KEYWORD,
        "sentiment_confidence": _FLOAT,
        "sentiment_probs": {
            "properties": {"bearish": _FLOAT, "neutral": _FLOAT, "bullish": _FLOAT}
        },
        "sentiment_score": _FLOAT,
        # One entry per company with its own verdict; nested so that a query can ask for
        # "ticker X and bearish" about the same company, not any company of the item.
        "companies": {
            "type": "nested",
            "properties": {
                "ticker": _KEYWORD,
                "name": _KEYWORD,
                "sentiment": _KEYWORD,
                "confidence": _FLOAT,
                "probs": {"properties": {"bearish": _FLOAT, "neutral": _FLOAT, "bullish": _FLOAT}},
                "score": _FLOAT,
                "source": _KEYWORD,
                "mentions": {
                    "properties": {"start": {"type": "integer"}, "end": {"type": "integer"}}
                },
            },
        },
        "evidence": {"type": "text"},
        "chunks": {"type": "integer"},
        "model_version": _KEYWORD,
        # Written by `finsentry rescore` (index/rescore.py) when a newer model re-scores.
        "rescored_at": _DATE,
        "previous_model_version": _KEYWORD,
    },
    # Topic names are data (20 of them, with spaces): map whatever arrives as floats.
    "dynamic_templates": [
        {"probabilities": {"path_match": "topic_probs.*", "mapping": _FLOAT}},
    ],
}


# index/company_verdicts.py: one flat document per (item, company), for Grafana.
COMPANY_VERDICT_MAPPINGS: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "item_id": _KEYWORD,
        "ticker": _KEYWORD,
        "name": _KEYWORD,
        "sentiment": _KEYWORD,
        "confidence": _FLOAT,
        "score": _FLOAT,
        "verdict_from": _KEYWORD,
        "item_sentiment": _KEYWORD,
        "topic": _KEYWORD,
        "title": _text_with_keyword(512),
        "source": _KEYWORD,
        "url": {"type": "keyword", "index": False},
        "published_at": _DATE,
        "scored_at": _DATE,
        "model_version": _KEYWORD,
    },
}


DEAD_LETTER_MAPPINGS: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "reason": _text_with_keyword(1024),
        "error": _KEYWORD,
        "source_topic": _KEYWORD,
        "partition": {"type": "integer"},
        "offset": {"type": "long"},
        "key": {"type": "keyword", "ignore_above": 1024},
        "original_b64": {"type": "keyword", "index": False, "doc_values": False},
        "failed_at": _DATE,
    },
}


def _template(
    index: str,
    mappings: dict[str, Any],
    shards: int,
    replicas: int,
    refresh_interval: str | None = None,
) -> dict[str, Any]:
    settings: dict[str, Any] = {"number_of_shards": shards, "number_of_replicas": replicas}
    if refresh_interval is not None:
        settings["refresh_interval"] = refresh_interval
    return {
        "index_patterns": [index, f"{index}-*"],
        "priority": 200,
        "template": {
            "settings": settings,
            "mappings": mappings,
        },
        "_meta": {"managed_by": "finsentry"},
    }


def items_template(
    index: str, shards: int = 1, replicas: int = 0, refresh_interval: str | None = None
) -> dict[str, Any]:
    """The body of the composable index template for `index` (and `index-*`)."""
    return _template(index, ITEM_MAPPINGS, shards, replicas, refresh_interval)


def _apply(es: Elasticsearch, index: str, body: dict[str, Any]) -> None:
    """Install the template and create the index if it is missing. Safe at every start."""
    es.indices.put_index_template(name=index, **body)
    if not es.indices.exists(index=index):
        # Several processes start at once: the index may appear between check and create.
        es.options(ignore_status=400).indices.create(index=index)


def ensure_index(es: Elasticsearch, index: str, mappings: dict[str, Any]) -> None:
    """Create a one-shard index with `mappings` when it is missing (safe at every start, and
    when several processes start at once)."""
    if es.indices.exists(index=index):
        return
    es.options(ignore_status=400).indices.create(
        index=index,
        settings={"number_of_shards": 1, "number_of_replicas": 0},
        mappings=mappings,
    )
    if not es.indices.exists(index=index):
        raise RuntimeError(f"could not create the index {index}")


def apply_items_template(
    es: Elasticsearch, index: str, refresh_interval: str | None = None
) -> None:
    """The items template and index; `refresh_interval` (Settings.items_refresh_interval)
    also goes to an index that exists already (a dynamic setting), so a changed value takes
    effect at the worker's next start."""
    _apply(es, index, items_template(index, refresh_interval=refresh_interval))
    if refresh_interval is not None:
        es.indices.put_settings(
            index=index, settings={"index": {"refresh_interval": refresh_interval}}
        )


def apply_company_verdicts_template(es: Elasticsearch, index: str) -> None:
    _apply(es, index, _template(index, COMPANY_VERDICT_MAPPINGS, 1, 0))


def apply_dead_letters_template(es: Elasticsearch, index: str) -> None:
    """Dead letters are also indexed, so dashboards can count and show them."""
    _apply(es, index, _template(index, DEAD_LETTER_MAPPINGS, 1, 0))
