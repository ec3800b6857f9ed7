"""Micro-batches whose size and wait follow the load.

Faust's `take(max, within)` always waits the same `within` for a batch to fill. Here the
wait follows the work: under light load a batch waits about as long as the previous one
took to process (the model would have been busy that long anyway), so an item is held only
briefly; as arrivals rise, more items land within that window and batches grow; with a
backlog a batch fills to `max_batch` at once. Nothing is acknowledged here: the caller acks
a batch's events once they are indexed, so a crash re-reads them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TypeVar

import faust
from faust.types import EventT

T = TypeVar("T")


@dataclass
class BatchWindow:
    """How many items a batch may hold and how long it may wait for them."""

    max_batch: int
    min_wait: float
    max_wait: float
    wait: float = field(init=False)

    def __post_init__(self) -> None:
        if not 0 <= self.min_wait <= self.max_wait:
            raise ValueError("need 0 <= min_wait <= max_wait")
        self.wait = self.min_wait

    def update(self, busy_seconds: float) -> float:
        """The wait for the next batch, after the last one kept the worker busy this long."""
        self.wait = min(self.max_wait, max(self.min_wait, busy_seconds))
        return self.wait


async def fill_batch(queue: asyncio.Queue[T], window: BatchWindow) -> list[T]:
    """Wait for a first event, then take more until the batch is full or the window closes."""
    batch = [await queue.get()]
    deadline = time.monotonic() + window.wait
    while len(batch) < window.max_batch:
        if not queue.empty():
            batch.append(queue.get_nowait())
            continue
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            batch.append(await asyncio.wait_for(queue.get(), remaining))
        except TimeoutError:
            break
    return batch


async def adaptive_batches(
    stream: faust.StreamT, window: BatchWindow
) -> AsyncIterator[list[EventT]]:
    """Batches of events from `stream`, read with manual acks (see `ack_batch`).

    A reader task keeps up to one batch of events queued while the previous batch is being
    processed; the time the caller spends on a batch sets the next window's wait."""
    queue: asyncio.Queue[EventT] = asyncio.Queue(maxsize=window.max_batch)

    async def read() -> None:
        async for event in stream.noack().events():
            await queue.put(event)

    reader = asyncio.ensure_future(read())
    try:
        while True:
            getting = asyncio.ensure_future(fill_batch(queue, window))
            await asyncio.wait({getting, reader}, return_when=asyncio.FIRST_COMPLETED)
            if not getting.done():
                getting.cancel()
                reader.result()  # the reader failed: raise its error here
                return  # the stream ended
            started = time.monotonic()
            yield getting.result()
            window.update(time.monotonic() - started)
    finally:
        reader.cancel()


async def ack_batch(stream: faust.StreamT, events: list[EventT]) -> None:
    """Mark a processed batch's offsets safe to commit."""
    for event in events:
        await stream.ack(event)
