"""How far a consumer group is behind on a topic: end offsets minus committed offsets.

The worker's group (`Settings.app_id`) on the raw topic is the live pipeline's backlog. A
rescore (index/rescore.py) pauses while it is over `FINSENTRY_RESCORE_YIELD_LAG`, so that
backfill never takes the CPU from live items that are already waiting; the soak benchmark
samples it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from kafka import KafkaAdminClient, TopicPartition
from kafka.admin import OffsetSpec

from finsentry.settings import Settings

log = logging.getLogger(__name__)


def lag_of(ends: Mapping[int, int], committed: Mapping[int, int]) -> int:
    """Items between each partition's committed offset (nothing committed: 0) and its end."""
    return sum(max(0, end - committed.get(partition, 0)) for partition, end in ends.items())


def consumer_lag(admin: KafkaAdminClient, group: str, topic: str, partitions: int) -> int:
    """The group's lag on `topic` (its first `partitions` partitions); 0 while the topic does
    not exist yet (it is created with the first message)."""
    specs = {TopicPartition(topic, p): OffsetSpec.LATEST for p in range(partitions)}
    try:
        ends = {tp.partition: o.offset for tp, o in admin.list_partition_offsets(specs).items()}
    except Exception:
        return 0
    committed = {
        tp.partition: meta.offset
        for tp, meta in admin.list_group_offsets({group: None}).get(group, {}).items()
        if tp.topic == topic and meta.offset >= 0
    }
    return lag_of(ends, committed)


class LiveBacklog:
    """Callable: whether the live worker has more than `limit` items waiting on the raw
    topic. Kafka unreachable counts as not behind (then there is no live traffic to protect),
    so a rescore never hangs on the broker."""

    def __init__(self, settings: Settings, limit: int) -> None:
        self.settings = settings
        self.limit = limit
        self._admin: KafkaAdminClient | None = None

    def lag(self) -> int:
        settings = self.settings
        if self._admin is None:
            self._admin = KafkaAdminClient(
                bootstrap_servers=settings.kafka_bootstrap.split(","),
                client_id=f"{settings.app_id}-rescore",
                **settings.kafka_client_options(),
            )
        return consumer_lag(
            self._admin, settings.app_id, settings.topic_raw, settings.topic_partitions
        )

    def __call__(self) -> bool:
        try:
            return self.lag() > self.limit
        except Exception as exc:
            log.debug("cannot read the live worker's lag (%s); not yielding", exc)
            return False

    def close(self) -> None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None


def live_backlog(settings: Settings) -> tuple[Callable[[], bool] | None, Callable[[], None]]:
    """(is the live worker behind?, close) for a rescore; (None, no-op) when yielding is off
    (`rescore_yield_lag` 0)."""
    if settings.rescore_yield_lag <= 0:
        return None, lambda: None
    backlog = LiveBacklog(settings, settings.rescore_yield_lag)
    return backlog, backlog.close
