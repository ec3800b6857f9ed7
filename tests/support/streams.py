"""Observing a running pipeline from outside: index contents, committed and end offsets."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from kafka import KafkaAdminClient, TopicPartition
from kafka.admin import OffsetSpec

from finsentry.settings import Settings


def count(es: Any, index: str) -> int:
    es.indices.refresh(index=index, ignore_unavailable=True)
    # 503: the index exists but its shard has not started yet.
    return int(es.options(ignore_status=(404, 503)).count(index=index).get("count", 0))


def index_ids(es: Any, index: str) -> list[str]:
    """Every document id in `index` (a list: duplicates would show)."""
    from elasticsearch import helpers

    es.indices.refresh(index=index, ignore_unavailable=True)
    return [hit["_id"] for hit in helpers.scan(es, index=index, query={"_source": False})]


def documents(es: Any, index: str) -> list[dict[str, Any]]:
    from elasticsearch import helpers

    es.indices.refresh(index=index, ignore_unavailable=True)
    return [hit["_source"] for hit in helpers.scan(es, index=index)]


@contextlib.contextmanager
def kafka_admin(settings: Settings) -> Iterator[KafkaAdminClient]:
    admin = KafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap.split(","),
        client_id="finsentry-reliability-tests",
        request_timeout_ms=10_000,
        **settings.kafka_client_options(),
    )
    try:
        yield admin
    finally:
        admin.close()


def committed_offsets(admin: KafkaAdminClient, group: str, topic: str) -> dict[int, int]:
    """Partition -> the group's committed offset on `topic` (absent: nothing committed)."""
    found = admin.list_group_offsets({group: None}).get(group, {})
    return {
        tp.partition: meta.offset
        for tp, meta in found.items()
        if tp.topic == topic and meta.offset >= 0
    }


def end_offsets(admin: KafkaAdminClient, topic: str, partitions: int) -> dict[int, int]:
    specs = {TopicPartition(topic, p): OffsetSpec.LATEST for p in range(partitions)}
    return {tp.partition: o.offset for tp, o in admin.list_partition_offsets(specs).items()}
