"""The Faust app: raw topic -> micro-batches -> BatchProcessor -> scored / dead-letter topics.

Offsets: the agent reads without automatic acks (`batcher.adaptive_batches`) and acks a
batch's events only once the batch is indexed (the sink retries until Elasticsearch takes
it) and its dead letters and scored items are delivered to Kafka. A worker killed mid-batch
therefore commits nothing for that batch and the batch is read again on restart; document
ids make the second write idempotent. The next batch is scored while the last one is
written (`pipeline.score_while_writing`); writes and acks stay one batch at a time, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import faust
from faust.types import EventT

from finsentry import metrics
from finsentry.index.bulk_sink import SinkStopped
from finsentry.models.scorer import Scorer
from finsentry.settings import Settings
from finsentry.streams.batch_processor import (
    BatchProcessor,
    BatchResult,
    RawRecord,
    ScoredBatch,
    dead_letter,
)
from finsentry.streams.batcher import BatchWindow, ack_batch, adaptive_batches
from finsentry.streams.pipeline import score_while_writing

log = logging.getLogger(__name__)


@dataclass
class Topics:
    raw: faust.TopicT
    scored: faust.TopicT
    dead_letters: faust.TopicT


def broker_credentials(settings: Settings) -> Any:
    """SASL / SSL settings for Faust (aiokafka), from the same settings kafka-python uses."""
    protocol = settings.kafka_security_protocol.upper()
    context = None
    if "SSL" in protocol:
        context = ssl.create_default_context(
            cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
        )
    if "SASL" in protocol:
        password = settings.kafka_sasl_password
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=password.get_secret_value() if password else None,
            mechanism=settings.kafka_sasl_mechanism or "PLAIN",
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def create_app(settings: Settings, app_id: str | None = None, **options: Any) -> faust.App:
    """A Faust app on the configured brokers; `options` override or add Faust settings."""
    app_id = app_id or settings.app_id
    datadir = settings.state_dir / "faust" / f"{app_id}-data"
    datadir.parent.mkdir(parents=True, exist_ok=True)  # Faust creates only the last level
    defaults: dict[str, Any] = dict(
        datadir=str(datadir),
        broker=[f"kafka://{host.strip()}" for host in settings.kafka_bootstrap.split(",")],
        broker_credentials=broker_credentials(settings),
        store="memory://",
        web_enabled=False,
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        broker_commit_every=1000,
        broker_commit_interval=1.0,
        broker_session_timeout=settings.kafka_session_timeout,
        producer_acks=-1,
        stream_buffer_maxsize=max(4 * settings.max_batch, 256),
        value_serializer="raw",
        key_serializer="raw",
    )
    return faust.App(app_id, **{**defaults, **options})


def declare_topics(app: faust.App, settings: Settings) -> Topics:
    def topic(name: str) -> faust.TopicT:
        return app.topic(
            name, value_type=bytes, key_type=bytes, partitions=settings.topic_partitions
        )

    return Topics(
        raw=topic(settings.topic_raw),
        scored=topic(settings.topic_scored),
        dead_letters=topic(settings.topic_dead_letters),
    )


def to_record(event: EventT) -> RawRecord:
    message = event.message
    return RawRecord(
        value=message.value,
        key=message.key,
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        timestamp=message.timestamp,
    )


async def publish(result: BatchResult, topics: Topics) -> None:
    """Deliver dead letters and scored items to Kafka, waiting for the broker's ack."""
    pending = []
    for letter in result.dead_letters:
        log.warning(
            "dead letter %s/%d@%d: %s",
            letter.source_topic,
            letter.partition,
            letter.offset,
            letter.reason,
        )
        pending.append(
            await topics.dead_letters.send(
                key=letter.key.encode() if letter.key else None,
                value=letter.model_dump_json().encode(),
            )
        )
    for item in result.indexed:
        pending.append(
            await topics.scored.send(key=item.id.encode(), value=item.model_dump_json().encode())
        )
    await asyncio.gather(*pending)


PROCESSING_ATTEMPTS = 3


async def process_isolating_failures(
    processor: BatchProcessor, records: list[RawRecord], settings: Settings
) -> BatchResult:
    """Process a batch; one that fails again and again holds a bad record (outages are
    ridden out inside the sink), so split it until that record is isolated, then
    dead-letter it. The partition never stalls on one poisonous message."""
    backoff = settings.bulk_initial_backoff
    for attempt in range(1, PROCESSING_ATTEMPTS + 1):
        try:
            return await processor.process(records)
        except (asyncio.CancelledError, SinkStopped):
            raise
        except Exception as exc:
            log.exception("batch of %d failed (attempt %d)", len(records), attempt)
            failure = exc
            if attempt < PROCESSING_ATTEMPTS:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, settings.bulk_max_backoff)
    if len(records) == 1:
        reason = f"processing failed: {type(failure).__name__}: {failure}"[:500]
        letters = [dead_letter(records[0], "processing_error", reason)]
        await processor.index_dead_letters(letters)
        return BatchResult(dead_letters=letters)
    middle = len(records) // 2
    first = await process_isolating_failures(processor, records[:middle], settings)
    second = await process_isolating_failures(processor, records[middle:], settings)
    return BatchResult(
        indexed=first.indexed + second.indexed,
        dead_letters=first.dead_letters + second.dead_letters,
    )


async def publish_until_done(result: BatchResult, topics: Topics, settings: Settings) -> None:
    """Publishing fails only while Kafka is unreachable: retry, with backoff, until it works."""
    backoff = settings.bulk_initial_backoff
    while True:
        try:
            await publish(result, topics)
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("publishing a batch failed; retrying in %.1fs", backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, settings.bulk_max_backoff)


async def score_ahead(processor: BatchProcessor, records: list[RawRecord]) -> ScoredBatch | None:
    """Score a batch before its turn to be written; None if that failed, and then
    `process_until_done` processes the batch again from its records, isolating failures."""
    try:
        return await processor.score(records)
    except (asyncio.CancelledError, SinkStopped):
        raise
    except Exception:
        log.exception("scoring a batch of %d failed; processing it again", len(records))
        return None


async def process_until_done(
    processor: BatchProcessor,
    topics: Topics,
    records: list[RawRecord],
    settings: Settings,
    scored: ScoredBatch | None = None,
) -> BatchResult:
    """Index (`scored`, if the batch was scored ahead) and publish a batch. A batch that
    fails is processed again from its records, isolating failures. Every step is idempotent
    (document ids, dead letters keyed by source offset)."""
    result = None
    if scored is not None:
        try:
            result = await processor.index(scored)
        except (asyncio.CancelledError, SinkStopped):
            raise
        except Exception:
            log.exception("indexing a batch of %d failed; processing it again", len(records))
    if result is None:
        result = await process_isolating_failures(processor, records, settings)
    await publish_until_done(result, topics, settings)
    return result


@dataclass
class ModelSwapper:
    """Follows the live model (`finsentry models promote` / `rollback`) and swaps it in.

    `poll` (a Faust timer) checks which artifact should be served and loads a new one in
    its own thread while the old one keeps scoring; `swap_if_ready` (the agent, between
    two batches) replaces the processor's scorer. A batch is therefore scored by one model
    from start to end and its documents record that model's version; offsets and acks are
    untouched, so nothing is lost or scored twice. An artifact that fails to load or to
    validate is refused (logged once) and the old model keeps serving."""

    settings: Settings
    processor: BatchProcessor
    pending: Scorer | None = None
    refused: tuple[str, str] | None = None
    last_error: str | None = None
    _task: asyncio.Future[None] | None = None
    _pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="model-load")
    )

    def _load_if_changed(self) -> Scorer | None:
        """Runs in the loader thread: file reads and the model load never block the loop."""
        from finsentry.models.artifact import ArtifactError, read_manifest
        from finsentry.models.registry import serving_artifact
        from finsentry.models.scorer import load_scorer

        current = self.processor.scorer.version
        try:
            path = serving_artifact(self.settings)
            version = read_manifest(path).version
        except ArtifactError as exc:
            if str(exc) != self.last_error:
                log.error("live model unusable (%s); still serving %s", exc, current)
                self.last_error = str(exc)
            return None
        self.last_error = None
        key = (str(path), version)
        if version == current or key == self.refused:
            return None
        log.warning("loading model %s from %s (serving %s meanwhile)", version, path, current)
        try:  # pinned to the path chosen above, wrapped as at start-up (e.g. chunking)
            return load_scorer(self.settings.model_copy(update={"model_path": path}))
        except Exception as exc:
            self.refused = key
            log.error("refused model %s from %s: %s; still serving %s", version, path, exc, current)
            return None

    async def poll(self) -> None:
        """Start a check (and maybe a load) unless one runs or a model waits to go live;
        returns at once, so the timer never waits for a model load."""
        if self.pending is not None or self._task is not None:
            return
        self._task = asyncio.ensure_future(self._check())

    async def _check(self) -> None:
        try:
            loop = asyncio.get_running_loop()
            scorer = await loop.run_in_executor(self._pool, self._load_if_changed)
            if scorer is not None:
                self.pending = scorer
        finally:
            self._task = None

    def swap_if_ready(self) -> None:
        if self.pending is None:
            return
        old, self.processor.scorer, self.pending = self.processor.scorer, self.pending, None
        log.warning("now serving model %s (was %s)", self.processor.scorer.version, old.version)


def add_scoring_agent(
    app: faust.App,
    topics: Topics,
    processor: BatchProcessor,
    settings: Settings,
    swapper: ModelSwapper | None = None,
) -> None:
    @app.task
    async def declare_output_topics() -> None:
        await topics.scored.maybe_declare()
        await topics.dead_letters.maybe_declare()

    if swapper is not None:

        @app.timer(interval=settings.model_poll_interval)
        async def follow_live_model() -> None:
            await swapper.poll()

    @app.agent(topics.raw, name="score")
    async def score(stream: faust.StreamT) -> None:
        window = BatchWindow(settings.max_batch, settings.min_wait, settings.max_wait)

        async def score_batch(events: list[EventT]) -> tuple[list[RawRecord], ScoredBatch | None]:
            if swapper is not None:
                swapper.swap_if_ready()  # only here: between batches
            metrics.BATCH_WAIT.set(window.wait)
            records = [to_record(e) for e in events]
            return records, await score_ahead(processor, records)

        async def write_batch(
            events: list[EventT], scored: tuple[list[RawRecord], ScoredBatch | None]
        ) -> None:
            records, batch = scored
            await process_until_done(processor, topics, records, settings, batch)

        async def ack(events: list[EventT]) -> None:
            await ack_batch(stream, events)

        try:
            async with contextlib.aclosing(adaptive_batches(stream, window)) as batches:
                await score_while_writing(
                    batches, score_batch, write_batch, ack, overlap=settings.overlap_writes
                )
        except SinkStopped:  # shutting down: the batches in hand stay unacknowledged
            log.warning("stopping with a batch not indexed; read again on restart")
