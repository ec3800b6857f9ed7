"""The Kafka broker restarted, then killed, mid-stream (issue 7, part 2).

A private single-node broker (same class as `finsentry services`, other ports and state dir;
the shared one is never touched) carries the worker's topics while a feed keeps sending. The
broker is first restarted cleanly (SIGTERM), later killed (SIGKILL) and started again on its
data. Nothing may be lost, and writes are counted per item (the document's `_version`, the
scored topic's messages): only what the worker had in flight at a fault may be done twice.
The worker killed mid-batch is covered by tests/test_worker_crash.py.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from finsentry.services import process
from finsentry.services.kafka import LocalKafka
from finsentry.settings import Settings
from tests.conftest import unique_settings
from tests.support.counting import Tally, deliveries, in_flight, write_counts
from tests.support.feed import Feed
from tests.support.outcomes import record
from tests.support.private_services import private_kafka, running
from tests.support.streams import committed_offsets, count, index_ids, kafka_admin
from tests.support.worker_process import WorkerProcess, wait_until

pytestmark = pytest.mark.integration

AREA = "Kafka broker restart"
RATE = 30.0
TOTAL = 2400
DOWN_SECONDS = 8.0


@pytest.fixture(scope="module")
def broker(services: Settings) -> Iterator[LocalKafka]:
    with running(private_kafka(services)) as started:
        assert isinstance(started, LocalKafka)
        yield started


def _kill(broker: LocalKafka) -> None:
    pid = broker.pid()
    assert pid is not None
    os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while process.port_open(broker.settings.kafka_port) or broker.pid() is not None:
        assert time.monotonic() < deadline, "the broker did not die"
        time.sleep(0.2)


def _snapshot(settings: Settings, es: Any) -> tuple[dict[int, int], int]:
    """The group's committed offsets and the number of indexed items."""
    with kafka_admin(settings) as admin:
        return committed_offsets(admin, settings.app_id, settings.topic_raw), count(
            es, settings.items_index
        )


def test_broker_restart_and_crash_mid_stream_lose_and_duplicate_nothing(
    broker: LocalKafka, es: Any, tiny_artifact: Path, tmp_path: Path
) -> None:
    settings = unique_settings(broker.settings, max_batch=16, max_wait=0.2)
    feed = Feed(settings, TOTAL, RATE, prefix="b")
    feed.start()
    worker = WorkerProcess(settings, tiny_artifact, tmp_path / "worker.log")
    timings: dict[str, float] = {}
    try:
        wait_until(lambda: count(es, settings.items_index) >= 150, 240, "150 items", worker)
        # Each fault: the worker frozen while the committed offsets are read and the broker
        # goes down, so that what it had in flight is known; the index read again once the
        # broker is back (while it was down the worker could index only its current batch).
        os.kill(worker.proc.pid, signal.SIGSTOP)
        try:
            committed, before_restart = _snapshot(settings, es)
            started = time.monotonic()
            broker.down()
        finally:
            os.kill(worker.proc.pid, signal.SIGCONT)
        time.sleep(DOWN_SECONDS)
        broker.up()
        timings["restart"] = time.monotonic() - started
        allowed = in_flight(feed.placed, committed, index_ids(es, settings.items_index))
        wait_until(
            lambda: count(es, settings.items_index) >= before_restart + 300,
            180,
            "progress after the restart",
            worker,
        )
        os.kill(worker.proc.pid, signal.SIGSTOP)
        try:
            committed, before_crash = _snapshot(settings, es)
            started = time.monotonic()
            _kill(broker)
        finally:
            os.kill(worker.proc.pid, signal.SIGCONT)
        time.sleep(DOWN_SECONDS)
        broker.up()
        timings["crash"] = time.monotonic() - started
        allowed |= in_flight(feed.placed, committed, index_ids(es, settings.items_index))
        feed.join(timeout=TOTAL / RATE + 180)
        assert feed.error is None and not feed.is_alive()
        wait_until(
            lambda: (
                count(es, settings.items_index) >= TOTAL
                and sum(_snapshot(settings, es)[0].values()) >= TOTAL
            ),
            300,
            "every item indexed and committed",
            worker,
        )
        ids = index_ids(es, settings.items_index)
        alive = worker.proc.poll() is None
        tally = Tally(
            feed.ids(),
            write_counts(es, settings.items_index),
            deliveries(settings, settings.topic_scored),
            allowed,
            sent=deliveries(settings, settings.topic_raw),
        )
    finally:
        worker.terminate()
        es.options(ignore_status=404).indices.delete(index=settings.items_index)
        es.options(ignore_status=404).indices.delete(index=settings.dead_letters_index)

    exact = sorted(ids) == sorted(feed.ids())
    record(
        AREA,
        f"clean broker restart ({DOWN_SECONDS:.0f}s down, {timings['restart']:.0f}s in all) "
        f"after {before_restart} items indexed",
        "the worker carries on by itself",
        f"progress resumed: {before_crash - before_restart} more items indexed before the "
        "next fault; worker alive",
        before_crash >= before_restart + 300,
    )
    record(
        AREA,
        f"broker SIGKILLed ({DOWN_SECONDS:.0f}s down, {timings['crash']:.0f}s in all) after "
        f"{before_crash} items indexed; feed of {TOTAL} at {RATE:.0f}/s throughout",
        f"all {TOTAL} indexed, ids exact; worker keeps running",
        f"{len(ids)} documents, ids exact: {exact}; worker alive: {alive}; "
        f"{feed.send_failures} producer sends retried by the feed",
        exact and len(ids) == TOTAL and alive,
    )
    record(
        AREA,
        "writes counted per item across both faults (document _version, scored-topic "
        "messages; at-least-once delivery)",
        "nothing lost; indexed again or delivered twice only items in flight at a fault "
        "(indexed, not committed), at most once more each; an item the feed's producer put on "
        "the raw topic twice is two inputs",
        tally.describe(),
        tally.complete and tally.bounded,
    )
    assert exact and len(ids) == TOTAL
    assert alive
    assert before_crash >= before_restart + 300
    assert tally.complete and tally.bounded, tally.problems()
