"""Workers that die mid-stream: nothing lost, and only what they had in flight done again.

One stream of items, three workers in turn: the first dies between processing a batch and
acknowledging it (tests/support/crash_before_ack.py: `adaptive_batches` reads without acks
and `ack_batch` acks after processing, so none of that batch may be committed), the second
is SIGKILLed at an arbitrary point, the third finishes.

Writes are counted (each item's Elasticsearch `_version`, and its messages on the scored
topic), not just listed: documents are written by id, so a list of ids cannot show a
second write. What a restart may legitimately do again is what the dead worker had indexed
but not committed; `tests/support/counting.py` computes that set from the committed
offsets at the crash.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from finsentry.settings import Settings
from tests.conftest import unique_settings
from tests.support.counting import Tally, deliveries, in_flight, write_counts
from tests.support.crash_before_ack import CRASH_EXIT
from tests.support.feed import send_all
from tests.support.outcomes import record
from tests.support.streams import committed_offsets, count, index_ids, kafka_admin
from tests.support.worker_process import WorkerProcess, wait_until

pytestmark = pytest.mark.integration

AREA = "worker crash"
TOTAL = 600
CRASH_AFTER = 100  # the first worker dies before acking the batch that passes this count
KILL_AT = 300  # the second is SIGKILLed once this many items are indexed
SESSION_TIMEOUT = 10.0  # the group hands a dead worker's partitions on after this


def _settings(services: Settings) -> Settings:
    return unique_settings(
        services, max_batch=16, max_wait=0.1, kafka_session_timeout=SESSION_TIMEOUT
    )


def _committed(settings: Settings) -> dict[int, int]:
    with kafka_admin(settings) as admin:
        return committed_offsets(admin, settings.app_id, settings.topic_raw)


def _finish(settings: Settings, es: Any, artifact: Path, log: Path, total: int) -> None:
    """A fresh worker until every item is indexed and every offset committed (so every
    scored message is published)."""
    worker = WorkerProcess(settings, artifact, log)
    try:
        wait_until(
            lambda: (
                count(es, settings.items_index) >= total
                and sum(_committed(settings).values()) >= total
            ),
            240,
            "every item indexed and committed",
            worker,
        )
    finally:
        worker.terminate()


def _cleanup(es: Any, settings: Settings) -> None:
    for index in (settings.items_index, settings.dead_letters_index):
        es.options(ignore_status=404).indices.delete(index=index)


def _in_flight_after(
    settings: Settings, es: Any, placed: dict[tuple[int, int], str]
) -> tuple[dict[int, int], set[str], set[str]]:
    """Once the worker is dead: committed offsets, indexed ids, and what is in flight
    (indexed, not committed). A bulk request it had sent still lands: wait a moment first."""
    time.sleep(1.5)
    committed = _committed(settings)
    indexed = set(index_ids(es, settings.items_index))
    return committed, indexed, in_flight(placed, committed, indexed)


def test_crashes_before_ack_and_by_sigkill_lose_nothing_and_redo_only_the_uncommitted(
    services: Settings, es: Any, tiny_artifact: Path, tmp_path: Path
) -> None:
    settings = _settings(services)
    placed = send_all(settings, TOTAL, "k")
    crash_file = tmp_path / "crashed-batch.json"
    first = WorkerProcess(
        settings,
        tiny_artifact,
        tmp_path / "first.log",
        command=["-m", "tests.support.crash_before_ack", str(crash_file), str(CRASH_AFTER)],
    )
    try:
        first.proc.wait(timeout=240)
    finally:
        first.terminate()
    try:
        assert first.proc.returncode == CRASH_EXIT, first.log_text()[-3000:]
        crashed = json.loads(crash_file.read_text())
        batch = {placed[(p, o)] for p, o in crashed["batch"]}
        committed_1, indexed_1, in_flight_1 = _in_flight_after(settings, es, placed)
        committed_of_batch = {
            placed[(p, o)] for p, o in crashed["batch"] if o < committed_1.get(p, 0)
        }
        published_1 = set(deliveries(settings, settings.topic_scored))
        writes_1 = write_counts(es, settings.items_index)

        second = WorkerProcess(settings, tiny_artifact, tmp_path / "second.log")
        try:
            # Polled often: the worker catches up on the backlog at several hundred items a
            # second, and a kill that lands after the last item is not mid-stream.
            wait_until(
                lambda: count(es, settings.items_index) >= KILL_AT,
                240,
                f"{KILL_AT} items",
                second,
                interval=0.02,
            )
            second.kill()
        finally:
            second.terminate()
        committed_2, indexed_2, in_flight_2 = _in_flight_after(settings, es, placed)
        assert len(indexed_2) < TOTAL, "the kill should land mid-stream"
        # In flight at the crash and not yet read again when the second worker was killed
        # (it had not reached that partition's offset): one write owed for both faults.
        writes_2 = write_counts(es, settings.items_index)
        owed_once = {i for i in in_flight_1 & in_flight_2 if writes_2.get(i) == writes_1.get(i)}

        _finish(settings, es, tiny_artifact, tmp_path / "third.log", TOTAL)
        tally = Tally(
            set(placed.values()),
            write_counts(es, settings.items_index),
            deliveries(settings, settings.topic_scored),
            in_flight_1 | in_flight_2,
            max_writes=3,
        )
    finally:
        _cleanup(es, settings)

    processed = batch <= indexed_1 and batch <= published_1
    redone = batch <= tally.reprocessed and batch <= tally.delivered_twice
    # Each item written once, plus once for each crash it was in flight at (once for both
    # if no worker read it between them).
    expected = {
        i: 1 + (i in in_flight_1) + (i in in_flight_2) - (i in owed_once) for i in placed.values()
    }
    inexact = {
        i: (tally.writes.get(i, 0), n) for i, n in expected.items() if tally.writes.get(i, 0) != n
    }  # item: (writes, expected)
    exact = not inexact
    acked_after = processed and not committed_of_batch and sum(committed_1.values()) > 0
    record(
        AREA,
        f"worker dies after indexing and publishing a batch of {len(batch)} (after "
        f"{crashed['processed']} items) but before acking it, having waited 3 commit intervals",
        "none of the batch's offsets committed (earlier batches were); the next worker indexes "
        "and delivers the batch again",
        f"batch indexed and published before the crash: {processed}; of its offsets "
        f"committed: {len(committed_of_batch)} ({sum(committed_1.values())} offsets committed "
        f"in all); batch processed again: {redone}",
        acked_after and redone,
    )
    record(
        AREA,
        f"next worker SIGKILLed mid-stream ({len(indexed_2)} of {TOTAL} items indexed, "
        f"{sum(committed_2.values())} offsets committed), a third one finishes",
        "nothing lost; indexed again: exactly the items indexed but not committed at a crash, "
        "once for each such crash; delivered twice downstream: only those",
        tally.describe(),
        tally.complete and tally.bounded and exact,
    )
    assert processed, (batch - indexed_1, batch - published_1)
    assert not committed_of_batch, f"committed before the ack: {sorted(committed_of_batch)}"
    assert sum(committed_1.values()) > 0, "earlier, acknowledged batches should be committed"
    assert redone, tally.problems()
    assert tally.complete and tally.bounded, tally.problems()
    assert exact, f"{tally.problems()}; writes, expected: {sorted(inexact.items())[:10]}"
