"""Score the next batch while the previous one is being written.

The worker's two steps wait on different things: scoring on the model (CPU, in its own
thread), writing on Elasticsearch and Kafka. One after the other, each idles while the other
runs; here batch N+1 is scored while batch N is written. What does not change: batches are
written one at a time and in the order they were read, and a batch is acknowledged only
once its write is done (offsets are still committed after the index). At most two batches
are in hand, one being scored and one being written; a worker that stops or dies loses
neither, since neither is acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

B = TypeVar("B")  # a batch as read
S = TypeVar("S")  # a batch as scored


async def score_while_writing(
    batches: AsyncIterator[B],
    score: Callable[[B], Awaitable[S]],
    write: Callable[[B, S], Awaitable[object]],
    ack: Callable[[B], Awaitable[None]],
    *,
    overlap: bool = True,
) -> None:
    """`score` each batch, then `write` it and `ack` it, in order. With `overlap` the next
    batch is scored while the last one is written; without, each batch is written and
    acknowledged before the next is read. An exception from `write` ends the loop with the
    batch unacknowledged (and the batch scored meanwhile unwritten)."""

    async def write_then_ack(batch: B, scored: S) -> None:
        await write(batch, scored)
        await ack(batch)  # now, not when the next batch comes: the stream may go quiet

    writing: asyncio.Future[None] | None = None
    try:
        async for batch in batches:
            scored = await score(batch)
            if writing is not None:
                await writing  # the last batch is written and acked before this one starts
            writing = asyncio.ensure_future(write_then_ack(batch, scored))
            if not overlap:
                await writing
        if writing is not None:
            await writing
    finally:
        if writing is not None and not writing.done():
            writing.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writing
