"""Scaling out: three workers in one consumer group over six partitions; one is SIGKILLed
mid-stream and another started. Nothing may be lost, and what is done again is bounded.

At the kill the two survivors are frozen (SIGSTOP) for a moment, so that the committed
offsets and the index are read at one instant for the whole group; `in_flight` of that
instant is what the dead worker's successors may legitimately process again
(tests/support/counting.py). The two rebalances that follow (the dead member evicted, the
newcomer joining) also move partitions between live workers, and a worker that loses a
partition while a batch of it is indexed but not acked leaves that batch to the new owner:
at most one batch per worker per rebalance (`REBALANCE_SLACK`), each item at most once more.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from finsentry.settings import Settings
from tests.conftest import unique_settings
from tests.support.counting import Tally, deliveries, in_flight, write_counts
from tests.support.feed import Feed
from tests.support.outcomes import record
from tests.support.streams import committed_offsets, count, index_ids, kafka_admin
from tests.support.worker_process import WorkerProcess, wait_until

pytestmark = pytest.mark.integration

AREA = "worker group"
PARTITIONS = 6
TOTAL = 600
RATE = 40.0
MAX_BATCH = 16
REBALANCES = 2  # the dead member evicted, the newcomer joining
REBALANCE_SLACK = REBALANCES * 3 * MAX_BATCH


def _members(settings: Settings) -> int:
    with kafka_admin(settings) as admin:
        group = admin.describe_groups([settings.app_id]).get(settings.app_id, {})
    return len(group.get("members", [])) if group.get("group_state") == "Stable" else 0


def _committed(settings: Settings) -> dict[int, int]:
    with kafka_admin(settings) as admin:
        return committed_offsets(admin, settings.app_id, settings.topic_raw)


def test_three_workers_one_killed_one_started_lose_nothing_and_redo_only_the_in_flight(
    services: Settings, es: Any, tiny_artifact: Path, tmp_path: Path
) -> None:
    settings = unique_settings(
        services,
        max_batch=MAX_BATCH,
        max_wait=0.1,
        topic_partitions=PARTITIONS,
        kafka_session_timeout=10.0,
    )
    with kafka_admin(settings) as admin:
        admin.create_topics(
            {settings.topic_raw: {"num_partitions": PARTITIONS, "replication_factor": 1}}
        )
    workers = [
        WorkerProcess(settings, tiny_artifact, tmp_path / f"worker-{n}.log") for n in range(3)
    ]
    feed = Feed(settings, TOTAL, RATE, prefix="g")
    try:
        wait_until(lambda: _members(settings) == 3, 240, "a group of three", workers[0])
        feed.start()
        wait_until(lambda: count(es, settings.items_index) >= 150, 120, "150 items", workers[0])

        victim, survivors = workers[1], [workers[0], workers[2]]
        for worker in survivors:
            os.kill(worker.proc.pid, signal.SIGSTOP)
        try:
            victim.kill()
            time.sleep(1.5)  # a bulk request the victim had sent still lands
            committed = _committed(settings)
            indexed_at_kill = set(index_ids(es, settings.items_index))
        finally:
            for worker in survivors:
                os.kill(worker.proc.pid, signal.SIGCONT)
        allowed = in_flight(feed.placed, committed, indexed_at_kill)
        workers.append(WorkerProcess(settings, tiny_artifact, tmp_path / "worker-3.log"))

        feed.join(timeout=TOTAL / RATE + 60)
        assert feed.error is None and not feed.is_alive()
        wait_until(
            lambda: (
                count(es, settings.items_index) >= TOTAL
                and sum(_committed(settings).values()) >= TOTAL
            ),
            240,
            "every item indexed and committed",
            workers[3],
        )
        members_after = _members(settings)
        alive = [w.proc.poll() is None for w in (*survivors, workers[3])]
        tally = Tally(
            feed.ids(),
            write_counts(es, settings.items_index),
            deliveries(settings, settings.topic_scored),
            allowed,
            slack=REBALANCE_SLACK,
            sent=deliveries(settings, settings.topic_raw),
        )
    finally:
        for worker in workers:
            worker.terminate()
        for index in (settings.items_index, settings.dead_letters_index):
            es.options(ignore_status=404).indices.delete(index=index)

    record(
        AREA,
        f"3 workers, one group, {PARTITIONS} partitions, feed of {TOTAL} at {RATE:.0f}/s; "
        f"one SIGKILLed after {len(indexed_at_kill)} items indexed "
        f"({sum(committed.values())} offsets committed), a fourth started",
        "nothing lost; indexed again or delivered twice: items in flight at the kill "
        f"(indexed, not committed) and at most {REBALANCE_SLACK} others (a batch per worker per "
        "rebalance), each at most once more; the group carries on",
        f"{tally.describe()}; group of {members_after} after, survivors and newcomer "
        f"alive: {all(alive)}",
        tally.complete and tally.bounded and all(alive),
    )
    assert tally.complete, tally.problems()
    assert tally.bounded, tally.problems()
    assert all(alive)
