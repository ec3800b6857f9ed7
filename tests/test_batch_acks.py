"""`adaptive_batches` reads without acking; only `ack_batch`, after processing, acks.

A stand-in for the Faust stream records acks (its real counterpart, on real Kafka, is in
tests/test_worker_crash.py: a worker that dies between processing and ack commits nothing of
that batch). Here the unit: what the batcher yields is never acked by the batcher itself,
a batch whose processing fails is not acked, and events read ahead are not acked either.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from finsentry.streams.batcher import BatchWindow, ack_batch, adaptive_batches


@dataclass
class RecordingStream:
    """`noack().events()` yields `total` events, then waits for more, as a topic does;
    `ack` records what was acked."""

    total: int
    acked: list[int] = field(default_factory=list)
    noack_called: bool = False

    def noack(self) -> RecordingStream:
        self.noack_called = True
        return self

    async def events(self) -> AsyncIterator[int]:
        for i in range(self.total):
            yield i
            await asyncio.sleep(0)
        await asyncio.Event().wait()

    async def ack(self, event: int) -> bool:
        self.acked.append(event)
        return True


class ProcessingFailed(RuntimeError):
    pass


def _window() -> BatchWindow:
    return BatchWindow(max_batch=8, min_wait=0.01, max_wait=0.01)


def test_events_are_acked_only_by_ack_batch_after_their_batch() -> None:
    async def scenario() -> tuple[list[list[int]], list[list[int]], RecordingStream]:
        stream = RecordingStream(total=30)
        batches: list[list[int]] = []
        acked_before_processing: list[list[int]] = []
        async for events in adaptive_batches(stream, _window()):  # type: ignore[arg-type]
            acked_before_processing.append(list(stream.acked))
            batches.append(list(events))
            await ack_batch(stream, events)  # type: ignore[arg-type]
            if sum(map(len, batches)) == stream.total:
                break
        return batches, acked_before_processing, stream

    batches, acked_before, stream = asyncio.run(scenario())
    assert stream.noack_called
    assert [e for b in batches for e in b] == list(range(30))
    assert all(len(b) <= 8 for b in batches) and len(batches) >= 4
    # When batch k is handed out, exactly the events of batches 0..k-1 are acked.
    for k, acked in enumerate(acked_before):
        assert acked == [e for b in batches[:k] for e in b]
    assert stream.acked == list(range(30))


def test_a_batch_whose_processing_fails_is_not_acked_nor_is_anything_read_ahead() -> None:
    async def scenario() -> tuple[list[list[int]], list[int]]:
        stream = RecordingStream(total=40)
        batches: list[list[int]] = []
        with pytest.raises(ProcessingFailed):
            async for events in adaptive_batches(stream, _window()):  # type: ignore[arg-type]
                batches.append(list(events))
                if sum(map(len, batches)) > 16:
                    raise ProcessingFailed("crash between processing and ack")
                await ack_batch(stream, events)  # type: ignore[arg-type]
        await asyncio.sleep(0.05)  # the reader task is cancelled: nothing more is acked
        return batches, stream.acked

    batches, acked = asyncio.run(scenario())
    # Acked: the batches processed before the failure; nothing of the failed batch, nothing
    # the reader had queued ahead, though it had read on.
    assert acked == [e for b in batches[:-1] for e in b]
    assert batches[-1] and not set(batches[-1]) & set(acked)
