"""`score_while_writing`: the next batch is scored while the last is written; writes and
acks stay one at a time, in order, and a batch is acked only after its own write.

Plain asyncio with stand-in steps that log when they start and end (the real worker's
steps, on real Kafka and Elasticsearch, run in test_pipeline_e2e.py, test_worker_crash.py
and the reliability tests)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from finsentry.streams.pipeline import score_while_writing


class Steps:
    def __init__(self, fail_write: int | None = None) -> None:
        self.log: list[tuple[str, int]] = []
        self.fail_write = fail_write

    async def batches(self, count: int, then_wait: bool = False) -> AsyncIterator[int]:
        for n in range(1, count + 1):
            self.log.append(("read", n))
            yield n
        if then_wait:  # a topic that goes quiet: no next batch, no end
            await asyncio.Event().wait()

    async def score(self, n: int) -> str:
        self.log.append(("score", n))
        await asyncio.sleep(0.02)
        self.log.append(("scored", n))
        return f"scores of {n}"

    async def write(self, n: int, scored: str) -> None:
        assert scored == f"scores of {n}"
        self.log.append(("write", n))
        await asyncio.sleep(0.05)
        if n == self.fail_write:
            raise ConnectionError("Elasticsearch went away")
        self.log.append(("written", n))

    async def ack(self, n: int) -> None:
        self.log.append(("ack", n))

    def at(self, step: str, n: int) -> int:
        return self.log.index((step, n))

    def run(self, count: int, overlap: bool) -> None:
        asyncio.run(
            score_while_writing(
                self.batches(count), self.score, self.write, self.ack, overlap=overlap
            )
        )


def test_the_next_batch_is_scored_while_the_last_is_written() -> None:
    steps = Steps()
    steps.run(4, overlap=True)
    for n in (1, 2, 3):  # batch n+1 is scored while batch n is being written
        assert steps.at("write", n) < steps.at("scored", n + 1) < steps.at("written", n)
    writes = [(s, n) for s, n in steps.log if s in ("write", "written")]
    assert writes == [(s, n) for n in (1, 2, 3, 4) for s in ("write", "written")]  # never two
    assert [n for s, n in steps.log if s == "ack"] == [1, 2, 3, 4]  # each once, in order
    for n in (1, 2, 3, 4):
        assert steps.at("written", n) < steps.at("ack", n)


def test_without_overlap_a_batch_is_acked_before_the_next_is_read() -> None:
    steps = Steps()
    steps.run(3, overlap=False)
    for n in (1, 2):
        assert steps.at("ack", n) < steps.at("read", n + 1)
    assert [n for s, n in steps.log if s == "ack"] == [1, 2, 3]


def test_a_failed_write_is_not_acked_nor_is_the_batch_scored_behind_it() -> None:
    steps = Steps(fail_write=2)
    with pytest.raises(ConnectionError):
        steps.run(4, overlap=True)
    assert [n for s, n in steps.log if s == "ack"] == [1]
    assert ("scored", 3) in steps.log  # scored meanwhile, then neither written nor acked
    assert ("write", 3) not in steps.log and ("read", 4) not in steps.log


def test_the_last_batch_is_acked_though_no_next_batch_comes() -> None:
    steps = Steps()

    async def scenario() -> None:
        task = asyncio.ensure_future(
            score_while_writing(
                steps.batches(2, then_wait=True), steps.score, steps.write, steps.ack
            )
        )
        await asyncio.sleep(0.5)  # both batches written long ago; the topic is quiet since
        task.cancel()

    asyncio.run(scenario())
    assert [n for s, n in steps.log if s == "ack"] == [1, 2]


def test_a_write_in_flight_is_cancelled_when_the_loop_stops() -> None:
    steps = Steps()

    async def scenario() -> None:
        task = asyncio.ensure_future(
            score_while_writing(steps.batches(3), steps.score, steps.write, steps.ack)
        )
        while ("write", 1) not in steps.log:
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.1)  # a write left running would log "written" by now

    asyncio.run(scenario())
    assert ("written", 1) not in steps.log and not [s for s, _ in steps.log if s == "ack"]
