"""The dead-letters index the "Pipeline health" dashboard reads.

The worker indexes each `finsentry.messages.DeadLetter` as is (`DeadLetter.model_dump(mode=
"json")`) into `Settings.dead_letters_index`, besides sending it to the dead-letter topic:

    reason        text (+ .keyword)  why the message could not be scored
    error         keyword            short machine-readable kind, e.g. "invalid_json"
    source_topic  keyword
    partition     integer
    offset        long
    key           keyword            message key, if any
    original_b64  keyword, not indexed  the original bytes, base64
    failed_at     date               time field of the Grafana datasource

Call `apply_dead_letters_template(es, settings.dead_letters_index)` at start-up, before the
first write, so `error` is a keyword (the dashboard's terms aggregation needs that).
"""

from __future__ import annotations

from typing import Any

from elasticsearch import BadRequestError, Elasticsearch

DEAD_LETTER_MAPPINGS: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "reason": {
            "type": "text",
            "fields": {"keyword": {"type": "keyword", "ignore_above": 1024}},
        },
        "error": {"type": "keyword"},
        "source_topic": {"type": "keyword"},
        "partition": {"type": "integer"},
        "offset": {"type": "long"},
        "key": {"type": "keyword", "ignore_above": 1024},
        "original_b64": {"type": "keyword", "index": False, "doc_values": False},
        "failed_at": {"type": "date"},
    },
}


def dead_letters_template(index: str) -> dict[str, Any]:
    return {
        "index_patterns": [index, f"{index}-*"],
        "priority": 200,
        "template": {
            "settings": {"number_of_shards": 1, "number_of_replicas": 0},
            "mappings": DEAD_LETTER_MAPPINGS,
        },
        "_meta": {"managed_by": "finsentry"},
    }


def apply_dead_letters_template(es: Elasticsearch, index: str) -> None:
    """Install the template and create the index if missing. Safe to call at every start."""
    es.indices.put_index_template(name=index, **dead_letters_template(index))
    try:
        if not es.indices.exists(index=index):
            es.indices.create(index=index)
    except BadRequestError as error:
        if error.error != "resource_already_exists_exception":
            raise
