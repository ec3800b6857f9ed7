"""Bad input (issue 7, part 3): every kind of poison ends scored or dead-lettered with a reason,
and the worker never stops.

The real worker runs on the shared Kafka and Elasticsearch with topics and indices of its own.
Every case of tests/support/poison.py goes, in order, to a one-partition raw topic, then one
valid message; the worker takes batches of one, so each message's outcome is its own. A
message the worker cannot get past (it retries the batch forever) is a *stall*: the test
notes it, kills the worker, commits the offset after it for a new consumer group (what an
operator would do) and starts the worker again, so that every case still gets an outcome and
the table is complete. Progress is read from the worker's outputs (scored and dead-letter
topics), since publishing them is the last step of a batch.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError, MessageSizeTooLargeError
from kafka.structs import OffsetAndMetadata

from finsentry.messages import DeadLetter, NewsItem
from finsentry.settings import Settings
from finsentry.streams.parser import ParseError, parse_raw
from tests.conftest import unique_settings
from tests.support.counting import deliveries, write_counts
from tests.support.outcomes import record
from tests.support.poison import MiB, Poison, final_valid, poison_cases
from tests.support.streams import documents, kafka_admin
from tests.support.worker_process import WorkerProcess

AREA = "bad input"
STALL_SECONDS = 8.0
TOPIC_LIMIT = 16 * MiB
MAX_REQUEST = TOPIC_LIMIT - 64 * 1024
TEN_MB = json.dumps({"id": "ten-mb", "text": "D" * (10 * MiB)}).encode()


@dataclass
class Stall:
    offset: int
    error: str


# --- producer side: what the broker lets in ---------------------------------------------------


@pytest.mark.integration
def test_a_10mb_message_is_refused_at_produce_time_with_default_limits(services: Settings) -> None:
    """With the broker's default limits (max.message.bytes ~1 MB) a 10 MB message never
    reaches the worker: the producer refuses it, or the broker does once the producer's own
    limit is raised. Either way the sender gets a clear error."""
    settings = unique_settings(services)
    topic = f"{settings.topic_raw}-limits"
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    try:
        with pytest.raises(MessageSizeTooLargeError) as client_side:
            producer.send(topic, value=TEN_MB).get(timeout=30)
    finally:
        producer.close()
    record(
        AREA,
        "10 MB message, producer defaults (max_request_size 1 MiB)",
        "refused at produce time with a clear error",
        f"producer raised {client_side.type.__name__}: {client_side.value}",
        True,
    )

    big_producer = KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", max_request_size=MAX_REQUEST
    )
    try:
        with pytest.raises(KafkaError) as broker_side:
            big_producer.send(topic, value=TEN_MB).get(timeout=60)
    finally:
        big_producer.close()
    assert "too large" in str(broker_side.value).lower() or isinstance(
        broker_side.value, MessageSizeTooLargeError
    )
    record(
        AREA,
        "10 MB message, producer max_request_size raised, topic at broker default",
        "refused by the broker with a clear error",
        f"broker refused: {broker_side.type.__name__}: {broker_side.value}",
        True,
    )
    with kafka_admin(settings) as admin:
        admin.delete_topics([topic], raise_errors=False)


# --- the worker: every poison, one batch each ---------------------------------------------------


# What the worker logs today when it retries: a batch that raised (streams/app.py, before
# it splits the batch), a publish to Kafka that failed, a bulk write Elasticsearch refused.
RETRY_LOGGED = re.compile(
    r"batch of \d+ failed \(attempt \d+\)"
    r"|publishing a batch failed; retrying"
    r"|retrying \d+ documents in"
)


def _last_failure(log: str) -> str:
    """The last retry the worker logged: its line, and the exception a traceback ends with."""
    found = list(RETRY_LOGGED.finditer(log))
    if not found:
        return "no failure logged"
    start = found[-1].start()
    lines = log[start:].splitlines()
    summary = lines[0]
    for line in lines[1:]:
        if line.startswith("[20"):
            break
        if (
            line
            and not line[0].isspace()
            and not line.startswith(("Traceback", "During handling", "The above exception"))
        ):
            summary = line
    return summary[:300]


def _failures(worker: WorkerProcess) -> int:
    return len(RETRY_LOGGED.findall(worker.log_text()))


class Outputs:
    """What the worker has published: dead letters by source offset, scored items by id.
    Publishing is the last step of a batch, so a message with output is done."""

    def __init__(self, settings: Settings) -> None:
        self.consumer = KafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            enable_auto_commit=False,
            fetch_max_bytes=64 * MiB,
            max_partition_fetch_bytes=32 * MiB,
        )
        self.dead_topic = settings.topic_dead_letters
        self.consumer.assign(
            [TopicPartition(settings.topic_scored, 0), TopicPartition(self.dead_topic, 0)]
        )
        self.consumer.seek_to_beginning()
        self.letters: dict[int, DeadLetter] = {}
        self.scored: Counter[str] = Counter()

    def poll(self) -> None:
        for tp, messages in self.consumer.poll(timeout_ms=500).items():
            for message in messages:
                if tp.topic == self.dead_topic:
                    letter = DeadLetter.model_validate_json(message.value)
                    self.letters[letter.offset] = letter
                else:
                    self.scored[message.key.decode()] += 1

    def done(self, cases: list[Poison], final_id: str, skipped: set[int]) -> int:
        """How many messages from the start are done or skipped (the first one not done)."""
        ids = [c.item_id for c in cases] + [final_id]
        for offset, item_id in enumerate(ids):
            if offset in skipped or offset in self.letters:
                continue
            if item_id is None or not self.scored[item_id]:
                return offset
        return len(ids)

    def close(self) -> None:
        self.consumer.close()


def _watch(
    worker: WorkerProcess,
    outputs: Outputs,
    cases: list[Poison],
    final_id: str,
    skipped: set[int],
) -> int | None:
    """Follow the outputs until every message is done (None) or one stalls (its offset)."""
    done = -1
    progress_at = time.monotonic()
    failures_at_progress = _failures(worker)
    while True:
        if worker.proc.poll() is not None:
            raise AssertionError(f"the worker exited:\n{worker.log_text()[-4000:]}")
        outputs.poll()
        now = outputs.done(cases, final_id, skipped)
        if now > len(cases):
            return None
        if now != done:
            done, progress_at, failures_at_progress = now, time.monotonic(), _failures(worker)
        idle = time.monotonic() - progress_at
        if idle > STALL_SECONDS and _failures(worker) > failures_at_progress:
            return done
        if idle > 180:
            raise AssertionError(f"no progress, no failure for 180s:\n{worker.log_text()[-4000:]}")


def _start_after(settings: Settings, offset: int) -> Settings:
    """Settings for a new consumer group whose committed offset is `offset` (an operator
    skipping a poison pill; a new group because the killed worker's one is not empty yet)."""
    fresh = settings.model_copy(update={"app_id": f"{settings.app_id}-after{offset}"})
    tp = TopicPartition(settings.topic_raw, 0)
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=fresh.app_id, enable_auto_commit=False
    )
    consumer.assign([tp])
    consumer.commit({tp: OffsetAndMetadata(offset, "", -1)})
    consumer.close()
    return fresh


def _run_worker_through(
    settings: Settings, artifact: Path, logs: Path, cases: list[Poison], final_id: str
) -> tuple[list[Stall], Outputs]:
    """Run workers until every message is done, skipping stalls; returns the stalls."""
    stalls: list[Stall] = []
    outputs = Outputs(settings)
    current = settings
    for attempt in range(1, 30):
        worker = WorkerProcess(current, artifact, logs / f"worker-{attempt}.log")
        try:
            stalled_at = _watch(worker, outputs, cases, final_id, {s.offset for s in stalls})
        finally:
            worker.kill()
            worker.terminate()
        if stalled_at is None:
            return stalls, outputs
        stalls.append(Stall(stalled_at, _last_failure(worker.log_text())))
        current = _start_after(settings, stalled_at + 1)
    raise AssertionError(f"too many stalls: {stalls}")


def _observe(
    case: Poison,
    offset: int,
    stalls: dict[int, Stall],
    letters: dict[int, dict[str, Any]],
    published: dict[int, DeadLetter],
    items: dict[str, dict[str, Any]],
) -> tuple[str, bool]:
    letter = letters.get(offset)
    doc = items.get(case.item_id) if case.item_id else None
    if offset in stalls:
        where = " (it was indexed first)" if doc or letter else ""
        return (
            f"STALLED: the worker retried its batch forever{where}: {stalls[offset].error}; "
            f"skipped by committing offset {offset + 1}",
            False,
        )
    if letter is not None:
        on_topic = offset in published
        ok = ("dead_letter" in case.expect or letter["error"] in case.expect) and on_topic
        topic_note = "" if on_topic else " (MISSING from the dead-letter topic)"
        return f"dead letter `{letter['error']}`: {letter['reason']}{topic_note}", ok
    if doc is not None:
        summary = f"scored: sentiment {doc['sentiment']}, tickers {doc['tickers']}"
        return summary, "scored" in case.expect
    return "LOST: neither indexed nor dead-lettered", False


@pytest.mark.integration
def test_every_poison_is_scored_or_dead_lettered_and_the_worker_keeps_going(
    services: Settings,
    es: Any,
    tiny_artifact: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = unique_settings(
        services,
        max_batch=1,
        max_wait=0.05,
        bulk_initial_backoff=0.2,
        bulk_max_backoff=1.0,
        topic_partitions=1,
    )
    cases = poison_cases(settings.max_text_chars)
    with kafka_admin(settings) as admin:
        one_partition = {"num_partitions": 1, "replication_factor": 1}
        admin.create_topics(
            {
                settings.topic_raw: {
                    **one_partition,
                    "configs": {"max.message.bytes": str(TOPIC_LIMIT)},
                },
                settings.topic_scored: one_partition,
                settings.topic_dead_letters: one_partition,
            }
        )
    producer = KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", max_request_size=MAX_REQUEST
    )
    offsets: list[int] = []
    for case in cases:
        sent = producer.send(settings.topic_raw, key=case.key, value=case.value).get(timeout=60)
        offsets.append(sent.offset)
    final_id, final_value = final_valid()
    producer.send(settings.topic_raw, value=final_value).get(timeout=30)
    producer.close()
    assert offsets == list(range(len(cases)))

    outputs: Outputs | None = None
    try:
        stalls, outputs = _run_worker_through(settings, tiny_artifact, tmp_path, cases, final_id)
        stalled = {s.offset: s for s in stalls}
        letters = {
            d["offset"]: d
            for d in documents(es, settings.dead_letters_index)
            if d["source_topic"] == settings.topic_raw
        }
        ids = [c.item_id for c in cases if c.item_id] + [final_id]
        found = es.mget(index=settings.items_index, ids=ids)["docs"]
        items = {d["_id"]: d["_source"] for d in found if d.get("found")}
        writes = write_counts(es, settings.items_index)
        delivered = deliveries(settings, settings.topic_scored)
    finally:
        if outputs is not None:
            outputs.close()
        for index in (settings.items_index, settings.dead_letters_index):
            es.options(ignore_status=404).indices.delete(index=index)
            es.options(ignore_status=404).indices.delete_index_template(name=index)
        with kafka_admin(settings) as admin:
            admin.delete_topics(
                [settings.topic_raw, settings.topic_scored, settings.topic_dead_letters],
                raise_errors=False,
            )

    results = []
    for case, offset in zip(cases, offsets, strict=True):
        observed, ok = _observe(case, offset, stalled, letters, outputs.letters, items)
        if case.name == "same_id_second":
            text = items.get("p-same-id", {}).get("text", "")
            ok = ok and text == "second version $AAPL"
            observed += f"; the index holds one document, text {text!r}"
        record(AREA, case.describe(), " or ".join(case.expect), observed, ok)
        results.append((case.name, ok, observed))
    for offset, letter in letters.items():
        original = base64.b64decode(letter["original_b64"])
        assert letter["reason"] and letter["error"], letter
        assert (cases[offset].value or b"").startswith(original), cases[offset].name

    final_ok = final_id in items
    record(
        AREA,
        "a valid message after all the poison",
        "indexed",
        "indexed" if final_ok else "NOT indexed",
        final_ok,
    )
    record(
        AREA,
        f"the worker through {len(cases)} poison messages",
        "keeps running: one worker process, never stuck",
        f"{len(stalls) + 1} worker process(es); stalled at offsets {sorted(stalled)} "
        f"({', '.join(cases[o].name for o in sorted(stalled)) or 'none'})",
        not stalls,
    )
    # Each message that was not dead-lettered is one write and one scored message, no more
    # (max_batch 1, no fault: nothing may be processed twice; p-same-id comes twice).
    expected_writes = Counter(
        [c.item_id for o, c in enumerate(cases) if c.item_id and o not in letters] + [final_id]
    )
    counted = writes == dict(expected_writes) and delivered == expected_writes
    twice = sorted(i for i, n in writes.items() if n > expected_writes[i])
    record(
        AREA,
        "writes and deliveries counted per item (document _version, scored-topic messages)",
        "one write and one scored message per valid message: nothing processed twice",
        f"{sum(writes.values())} writes and {sum(delivered.values())} scored messages for "
        f"{sum(expected_writes.values())} valid messages ({len(writes)} ids); written more "
        f"often than sent: {twice or 'none'}",
        counted,
    )
    assert counted, (writes, delivered, expected_writes)
    failed = [f"{name}: {observed}" for name, ok, observed in results if not ok]
    assert not failed, "poison not handled:\n" + "\n".join(failed)
    assert final_ok and not stalls


# --- the parser, by property ---------------------------------------------------------------

_FIELDS = ["id", "text", "title", "kind", "published_at", "extra", "source", "url", "note"]


def _fragment() -> st.SearchStrategy[str]:
    """JSON text for one value, including what json.loads accepts but JSON writers refuse."""
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(st.characters(codec="utf-8"), max_size=30),
    ).map(json.dumps)
    odd = st.one_of(
        st.integers(4290, 4400).map(lambda n: "7" * n),  # around int-from-string's limit
        st.integers(1, 400).map(lambda d: "[" * d + "]" * d),  # nesting near the limits
        st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400"]),
        st.sampled_from(['"\\ud800"', '"a\\udfffb"', '"\\u0000"']),  # surrogates, NUL
        st.integers(1, 300).map(lambda n: json.dumps("€" * n)),  # multi-byte, long
    )
    return st.one_of(scalars, odd)


@st.composite
def _raw_messages(draw: st.DrawFn) -> bytes:
    keys = draw(st.lists(st.sampled_from(_FIELDS), min_size=1, max_size=6, unique=True))
    parts = [f"{json.dumps(k)}: {draw(_fragment())}" for k in keys]
    if draw(st.booleans()):
        parts.append('"text": "plain text $AAPL"')
    return ("{" + ", ".join(parts) + "}").encode("utf-8", "surrogatepass")


@hypothesis_settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_raw_messages())
def test_the_parser_never_raises_and_what_it_accepts_can_be_written(raw: bytes) -> None:
    """Stronger than tests/test_parser.py: odd JSON (huge numbers, deep nesting, lone
    surrogates, NaN, multi-byte ids) must give a ParseError or an item that the worker can
    write to Kafka (model_dump_json) and to Elasticsearch (an _id of at most 512 bytes)."""
    outcome = parse_raw(raw, 20_000)
    if isinstance(outcome, ParseError):
        assert outcome.reason and outcome.error
        return
    assert isinstance(outcome, NewsItem)
    outcome.model_dump_json()
    assert len(outcome.id.encode("utf-8")) <= 512
