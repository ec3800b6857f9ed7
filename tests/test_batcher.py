"""The adaptive batch window (no Kafka: an asyncio queue stands in for the stream)."""

from __future__ import annotations

import asyncio
import time

import pytest

from finsentry.settings import Settings
from finsentry.streams.batcher import BatchWindow, fill_batch


def test_wait_follows_the_time_the_last_batch_took() -> None:
    window = BatchWindow(max_batch=64, min_wait=0.02, max_wait=0.5)
    assert window.wait == 0.02
    assert window.update(0.12) == pytest.approx(0.12)
    assert window.update(3.0) == 0.5
    assert window.update(0.001) == 0.02


def test_window_and_settings_refuse_a_minimum_above_the_maximum() -> None:
    with pytest.raises(ValueError):
        BatchWindow(max_batch=8, min_wait=1.0, max_wait=0.5)
    with pytest.raises(ValueError, match="MIN_WAIT"):
        Settings(min_wait=1.0, max_wait=0.5)


async def _queue_of(n: int) -> asyncio.Queue[int]:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)
    return queue


def test_a_backlog_fills_a_batch_at_once() -> None:
    async def scenario() -> tuple[list[int], float, int]:
        queue = await _queue_of(100)
        window = BatchWindow(max_batch=64, min_wait=5.0, max_wait=5.0)
        started = time.monotonic()
        batch = await fill_batch(queue, window)
        return batch, time.monotonic() - started, queue.qsize()

    batch, took, left = asyncio.run(scenario())
    assert batch == list(range(64)) and left == 36
    assert took < 1.0  # did not sit out the 5 s window


def test_a_sparse_stream_waits_one_window_then_goes() -> None:
    async def scenario() -> tuple[list[int], float]:
        queue = await _queue_of(3)
        window = BatchWindow(max_batch=64, min_wait=0.3, max_wait=0.3)

        async def late_arrival() -> None:
            await asyncio.sleep(0.1)
            queue.put_nowait(99)

        arrival = asyncio.ensure_future(late_arrival())
        started = time.monotonic()
        batch = await fill_batch(queue, window)
        await arrival
        return batch, time.monotonic() - started

    batch, took = asyncio.run(scenario())
    assert batch == [0, 1, 2, 99]  # the item that came within the window rode along
    assert 0.25 <= took < 2.0


def test_an_idle_stream_waits_for_its_first_item() -> None:
    async def scenario() -> list[int]:
        queue: asyncio.Queue[int] = asyncio.Queue()
        window = BatchWindow(max_batch=8, min_wait=0.0, max_wait=0.0)
        getting = asyncio.ensure_future(fill_batch(queue, window))
        await asyncio.sleep(0.2)
        assert not getting.done()
        queue.put_nowait(7)
        return await getting

    assert asyncio.run(scenario()) == [7]
