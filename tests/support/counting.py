"""Counting writes and deliveries per item, so that a fault test can see work done twice.

Documents are written by id, so listing a fault test's ids can only show that nothing was
lost. Elasticsearch counts the writes itself: every index operation on an id raises its
`_version` by one (internal versioning; nothing in finsentry deletes or updates items), so
`_version - 1` is how often an item was indexed again. On the scored topic every delivery is
a message, so a Counter of keys shows what downstream consumers got twice.

A fault may legitimately cause re-processing: what a worker had indexed (or published) but
not yet committed when it died is read again. `in_flight` computes that set from the feed's
placements and the committed offsets at the fault; `Tally.bounded` checks that re-processing
stays inside it, which a needless second write of every batch would break. An item the
producer put on the raw topic twice (a re-sent record after a broker fault; `sent`, the raw
topic's messages per item) is two inputs: each copy may be processed once more.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from finsentry.settings import Settings


def write_counts(es: Any, index: str) -> dict[str, int]:
    """Item id -> how many times it was indexed (its `_version`)."""
    from elasticsearch import helpers

    es.indices.refresh(index=index, ignore_unavailable=True)
    return {
        hit["_id"]: int(hit["_version"])
        for hit in helpers.scan(es, index=index, query={"_source": False}, version=True)
    }


def deliveries(settings: Settings, topic: str) -> Counter[str]:
    """Item id (message key) -> how many messages `topic` holds for it, read to its end."""
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap.split(","),
        enable_auto_commit=False,
        **settings.kafka_client_options(),
    )
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        counts: Counter[str] = Counter()
        while any(consumer.position(tp) < end[tp] for tp in tps):
            for messages in consumer.poll(timeout_ms=1000).values():
                for message in messages:
                    counts[message.key.decode()] += 1
        return counts
    finally:
        consumer.close()


def in_flight(
    placed: Mapping[tuple[int, int], str], committed: Mapping[int, int], done: Iterable[str]
) -> set[str]:
    """The items in `done` (indexed, or published) at offsets not yet committed: what a
    restart from the committed offsets may legitimately process again."""
    done = set(done)
    return {
        item_id
        for (partition, offset), item_id in placed.items()
        if item_id in done and offset >= committed.get(partition, 0)
    }


@dataclass
class Tally:
    """Per fault: what was lost, what was indexed again, what was delivered twice."""

    expected: set[str]
    writes: dict[str, int]
    delivered: Counter[str]
    allowed: set[str]  # in flight at the fault(s): may be processed again
    # Items outside `allowed` that may be processed again: partitions moved between live
    # workers in a rebalance take what their old owner had processed but not committed.
    slack: int = 0
    max_writes: int = 2  # per item; one more per fault the item was in flight at
    # Raw-topic messages per item (`deliveries(settings, settings.topic_raw)`); empty: one each.
    sent: Counter[str] = field(default_factory=Counter)

    @property
    def sent_twice(self) -> set[str]:
        """Items the producer put on the raw topic more than once."""
        return {i for i, n in self.sent.items() if n > 1}

    def _limit(self, item_id: str) -> int:
        return self.max_writes + max(self.sent.get(item_id, 1), 1) - 1

    @property
    def lost(self) -> set[str]:
        return self.expected - set(self.writes)

    @property
    def unexpected(self) -> set[str]:
        return set(self.writes) - self.expected

    @property
    def reprocessed(self) -> set[str]:
        return {i for i, n in self.writes.items() if n > 1}

    @property
    def extra_writes(self) -> int:
        return sum(n - 1 for n in self.writes.values())

    @property
    def undelivered(self) -> set[str]:
        return self.expected - set(self.delivered)

    @property
    def delivered_twice(self) -> set[str]:
        return {i for i, n in self.delivered.items() if n > 1}

    @property
    def extra_deliveries(self) -> int:
        return sum(n - 1 for n in self.delivered.values())

    @property
    def complete(self) -> bool:
        return not self.lost and not self.unexpected and not self.undelivered

    @property
    def bounded(self) -> bool:
        """Nothing processed again that was not in flight (beyond `slack`), each at most once
        more."""
        excused = self.allowed | self.sent_twice
        return (
            len(self.reprocessed - excused) <= self.slack
            and len(self.delivered_twice - excused) <= self.slack
            and all(n <= self._limit(i) for i, n in self.writes.items())
            and all(n <= self._limit(i) for i, n in self.delivered.items())
        )

    def describe(self) -> str:
        return (
            f"lost {len(self.lost)}; re-processed {len(self.reprocessed)} "
            f"({self.extra_writes} extra writes; {len(self.reprocessed & self.allowed)} of "
            f"{len(self.allowed)} in flight at the fault, {len(self.reprocessed - self.allowed)} "
            f"others{f' of at most {self.slack}' if self.slack else ''}); "
            f"delivered twice downstream {len(self.delivered_twice)} "
            f"({self.extra_deliveries} extra deliveries); {len(self.writes)} documents, "
            f"{sum(self.delivered.values())} scored messages"
            + (
                f"; {len(self.sent_twice)} items on the raw topic twice (re-sent by the producer)"
                if self.sent
                else ""
            )
        )

    def problems(self) -> str:
        """What went wrong, for an assertion message."""
        outside = (self.reprocessed | self.delivered_twice) - self.allowed - self.sent_twice
        return (
            f"{self.describe()}; lost {sorted(self.lost)[:10]}; unexpected "
            f"{sorted(self.unexpected)[:10]}; not delivered {sorted(self.undelivered)[:10]}; "
            f"processed again though not in flight {sorted(outside)[:10]}"
        )
