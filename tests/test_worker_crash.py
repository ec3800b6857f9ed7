"""A worker killed with SIGKILL mid-stream loses nothing and duplicates nothing."""

from __future__ import annotations

import json

import pytest
from kafka import KafkaProducer

from tests.conftest import unique_settings
from tests.support.worker_process import WorkerProcess, wait_until

pytestmark = pytest.mark.integration

TOTAL = 1500


def _count(es, index: str) -> int:  # type: ignore[no-untyped-def]
    es.indices.refresh(index=index, ignore_unavailable=True)
    return es.options(ignore_status=404).count(index=index).get("count", 0)


def test_sigkill_mid_stream_then_restart_indexes_every_item_exactly_once(
    services, es, tiny_artifact, tmp_path
):  # type: ignore[no-untyped-def]
    settings = unique_settings(services, max_batch=16, max_wait=0.1)
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    for i in range(TOTAL):
        item = {"id": f"k{i}", "text": f"$MSFT item {i}: shares move on cloud news"}
        producer.send(settings.topic_raw, key=item["id"].encode(), value=json.dumps(item).encode())
    producer.flush()

    first = WorkerProcess(settings, tiny_artifact, tmp_path / "first.log")
    try:
        wait_until(lambda: _count(es, settings.items_index) >= 200, 180, "200 items", first)
        first.kill()
    finally:
        first.terminate()
    indexed_before_restart = _count(es, settings.items_index)
    assert indexed_before_restart < TOTAL, "the kill should land mid-stream"

    second = WorkerProcess(settings, tiny_artifact, tmp_path / "second.log")
    try:
        wait_until(lambda: _count(es, settings.items_index) >= TOTAL, 240, "all items", second)
    finally:
        second.terminate()
    assert _count(es, settings.items_index) == TOTAL
    ids = {
        hit["_id"]
        for hit in es.search(index=settings.items_index, size=TOTAL, source=False)["hits"]["hits"]
    }
    assert ids == {f"k{i}" for i in range(TOTAL)}
    es.options(ignore_status=404).indices.delete(index=settings.items_index)
