"""A background feed for fault tests: paced items on the raw topic, each placement noted,
each send retried until the broker takes it (so a broker outage delays items, never drops
them).

The producer is idempotent and retries by itself for up to two minutes, so a send whose
acknowledgement was lost at a broker fault is retried with its sequence number and the broker
drops the copy. Only when that gives up does the feed send the item again, as a new record
that may then sit on the topic twice (`send_failures` counts those; the fault tests read the
raw topic's copies per item, `tests.support.counting.Tally.sent`)."""

from __future__ import annotations

import json
import threading
import time

from kafka import KafkaProducer
from kafka.errors import KafkaError

from finsentry.feeds.producer import Pacer
from finsentry.settings import Settings


class Feed(threading.Thread):
    def __init__(self, settings: Settings, total: int, rate: float, prefix: str = "f") -> None:
        super().__init__(name="reliability-feed", daemon=True)
        self.settings = settings
        self.total = total
        self.rate = rate
        self.prefix = prefix
        self.lock = threading.Lock()
        self.placed: dict[tuple[int, int], str] = {}  # (partition, offset) -> item id
        self.send_failures = 0
        self.error: BaseException | None = None

    def ids(self) -> set[str]:
        return {f"{self.prefix}{i}" for i in range(self.total)}

    def ids_below(self, committed: dict[int, int]) -> set[str]:
        """The items at offsets a consumer group with these committed offsets has passed."""
        with self.lock:
            return {
                item_id
                for (partition, offset), item_id in self.placed.items()
                if offset < committed.get(partition, 0)
            }

    def run(self) -> None:
        producer = KafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap.split(","),
            acks="all",
            linger_ms=5,
            enable_idempotence=True,
            request_timeout_ms=10_000,
            delivery_timeout_ms=120_000,
            **self.settings.kafka_client_options(),
        )
        pacer = Pacer(self.rate)
        try:
            for i in range(self.total):
                pacer.wait()
                item_id = f"{self.prefix}{i}"
                value = json.dumps(
                    {"id": item_id, "text": f"$NVDA item {i}: chip demand lifts shares"}
                ).encode()
                while True:
                    try:
                        meta = producer.send(
                            self.settings.topic_raw, key=item_id.encode(), value=value
                        ).get(timeout=150)
                        break
                    except KafkaError:
                        self.send_failures += 1
                        time.sleep(1.0)
                with self.lock:
                    self.placed[(meta.partition, meta.offset)] = item_id
        except BaseException as exc:  # surfaced by the test through `error`
            self.error = exc
        finally:
            producer.close(timeout=10)


def send_all(settings: Settings, total: int, prefix: str) -> dict[tuple[int, int], str]:
    """Put `total` items on the raw topic at once; returns (partition, offset) -> item id."""
    producer = KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap.split(","),
        acks="all",
        linger_ms=5,
        **settings.kafka_client_options(),
    )
    try:
        sent = {}
        for i in range(total):
            item_id = f"{prefix}{i}"
            value = json.dumps({"id": item_id, "text": f"$MSFT item {i}: shares move"}).encode()
            sent[item_id] = producer.send(settings.topic_raw, key=item_id.encode(), value=value)
        producer.flush()
        placed = {}
        for item_id, future in sent.items():
            meta = future.get(timeout=30)
            placed[(meta.partition, meta.offset)] = item_id
        return placed
    finally:
        producer.close(timeout=10)
