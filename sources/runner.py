"""`finsentry sources run`: poll every source independently and send new items to the raw
topic.

Each source is one asyncio task: fetch (conditional GET) -> extract (in a worker thread) ->
drop what it has sent before -> produce to Kafka (acks=all, in a worker thread) -> persist
what it sent, its validators and its health -> wait its interval (jittered) or, after an
error, a capped exponential backoff that honours `Retry-After`. An error in one source,
even an unexpected one, is logged and counted, and only that source waits and tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol

import httpx

from finsentry.messages import NewsItem, utcnow
from finsentry.settings import Settings
from finsentry.sources import metrics
from finsentry.sources.config import ResolvedSource, SourcesFile, resolve
from finsentry.sources.edgar import CompanyDirectory, enrich_record, load_directory
from finsentry.sources.extract import Extracted, ExtractError, extract_feed, extract_json
from finsentry.sources.fetch import Fetched, FetchError, Validators, fetch, make_client
from finsentry.sources.state import SourceState, load_state, save_state

log = logging.getLogger(__name__)

_SENTENCE_END = (". ", "! ", "? ", ".\n", "!\n", "?\n", "\n\n")


class ItemSink(Protocol):
    """Where new items go. `send` blocks until every item is acknowledged, or raises."""

    def send(self, items: list[NewsItem]) -> None: ...


class KafkaSink:
    """The raw topic, key = item id, acknowledged by all in-sync replicas."""

    def __init__(self, settings: Settings, timeout: float = 30.0) -> None:
        from finsentry.feeds.producer import make_producer

        self.topic = settings.topic_raw
        self.timeout = timeout
        self.producer = make_producer(settings)

    def send(self, items: list[NewsItem]) -> None:
        futures = [
            self.producer.send(
                self.topic,
                key=item.id.encode(),
                value=item.model_dump_json(exclude_none=True).encode(),
            )
            for item in items
        ]
        self.producer.flush(timeout=self.timeout)
        for future in futures:
            future.get(timeout=self.timeout)  # raises the delivery error, if any

    def close(self) -> None:
        self.producer.close(timeout=10)


def truncate(item: NewsItem, max_chars: int) -> NewsItem:
    """An item whose text fits the worker's cap (else it would be dead-lettered): cut at the
    last sentence end before the cap, the original length noted in `extra`."""
    if len(item.text) <= max_chars:
        return item
    head = item.text[:max_chars]
    cut = max(head.rfind(end) for end in _SENTENCE_END)
    text = head[: cut + 1] if cut > max_chars // 2 else head
    extra = {**item.extra, "truncated_from_chars": len(item.text)}
    return item.model_copy(update={"text": text.strip(), "extra": extra})


def next_delay(
    interval: float,
    jitter: float,
    consecutive_errors: int,
    retry_after: float | None,
    max_backoff: float,
    rng: random.Random,
) -> float:
    """Seconds until the next poll: the interval +/- jitter; after errors a backoff doubling
    from the interval up to `max_backoff`, and never less than the server's Retry-After."""
    base = interval
    if consecutive_errors > 0:
        cap = max(max_backoff, interval)
        base = min(cap, interval * 2 ** min(consecutive_errors - 1, 30))
    delay = base * (1 + rng.uniform(-jitter, jitter))
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


@dataclass
class PollResult:
    status: str  # ok | not_modified | error
    sent: int = 0
    error_kind: str | None = None
    error: str | None = None
    retry_after: float | None = None
    rejected: list[str] = field(default_factory=list)


@dataclass
class SourcePoller:
    source: ResolvedSource
    settings: Settings
    client: httpx.AsyncClient
    sink: ItemSink
    executor: Executor
    directory: CompanyDirectory | None = None
    rng: random.Random = field(default_factory=random.Random)
    state: SourceState = field(init=False)

    def __post_init__(self) -> None:
        self.state = load_state(self.settings.state_dir, self.name, self.source.config.kind)
        self.state.health.kind = self.source.config.kind

    @property
    def name(self) -> str:
        return self.source.name

    def _extract(self, fetched: Fetched) -> Extracted:
        config = self.source.config
        if config.kind == "json":
            return extract_json(config, fetched.body, fetched.content_type)
        enrich = None
        if config.kind == "edgar" and self.directory is not None:
            directory = self.directory

            def enrich(record: dict) -> None:  # type: ignore[type-arg]
                enrich_record(record, directory)

        return extract_feed(config, fetched.body, fetched.content_type, fetched.url, enrich)

    def _new_items(self, extracted: Extracted) -> list[NewsItem]:
        sent = set(self.state.sent)
        cap = self.settings.max_text_chars
        return [truncate(item, cap) for item in extracted.items if item.id not in sent]

    async def poll_once(self) -> PollResult:
        """One poll, its items sent and its state persisted. Never raises (but for
        cancellation): every failure is a counted, logged error of this source."""
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        validators = Validators(self.state.etag, self.state.last_modified)
        try:
            fetched = await fetch(
                self.client,
                self.source,
                validators,
                user_agent=self.settings.sources_user_agent,
                timeout=self.settings.sources_timeout,
                max_bytes=self.settings.sources_max_bytes,
            )
            if fetched.status == 304:
                result = PollResult("not_modified")
            else:
                extracted = await loop.run_in_executor(self.executor, self._extract, fetched)
                new = self._new_items(extracted)
                if new:
                    await loop.run_in_executor(self.executor, self.sink.send, new)
                self.state.remember([i.id for i in new], self.settings.sources_remember)
                self.state.etag = fetched.validators.etag
                self.state.last_modified = fetched.validators.last_modified
                result = PollResult("ok", sent=len(new), rejected=extracted.rejected)
        except FetchError as exc:
            result = PollResult("error", error_kind=exc.kind, error=str(exc))
            result.retry_after = exc.retry_after
        except ExtractError as exc:
            result = PollResult("error", error_kind=exc.kind, error=str(exc))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            kind = "kafka" if type(exc).__module__.startswith("kafka") else "internal"
            result = PollResult("error", error_kind=kind, error=f"{type(exc).__name__}: {exc}")
        self._record(result, time.perf_counter() - started)
        try:
            await loop.run_in_executor(
                self.executor, save_state, self.settings.state_dir, self.name, self.state
            )
        except OSError as exc:
            log.error("source %s: cannot save its state: %s", self.name, exc)
        return result

    def _record(self, result: PollResult, seconds: float) -> None:
        health = self.state.health
        now = utcnow()
        health.last_poll_at = now
        health.polls += 1
        metrics.POLLS.labels(self.name, result.status).inc()
        metrics.LAST_POLL.labels(self.name).set(now.timestamp())
        metrics.POLL_SECONDS.labels(self.name).observe(seconds)
        if result.status == "error":
            health.last_status = f"error:{result.error_kind}"
            health.last_error = result.error
            health.errors_total += 1
            health.consecutive_errors += 1
            health.last_items = 0
            metrics.ERRORS.labels(self.name, result.error_kind or "unknown").inc()
            metrics.UP.labels(self.name).set(0)
            metrics.LAST_ITEMS.labels(self.name).set(0)
            log.warning(
                "source %s: poll failed (%s): %s", self.name, result.error_kind, result.error
            )
            return
        health.last_status = result.status
        health.last_error = None
        health.consecutive_errors = 0
        health.last_items = result.sent
        health.items_total += result.sent
        metrics.UP.labels(self.name).set(1)
        metrics.LAST_ITEMS.labels(self.name).set(result.sent)
        metrics.ITEMS.labels(self.name).inc(result.sent)
        if result.rejected:
            metrics.REJECTED.labels(self.name).inc(len(result.rejected))
            log.warning(
                "source %s: %d entries skipped: %s",
                self.name,
                len(result.rejected),
                "; ".join(result.rejected[:3]),
            )
        log.info("source %s: %s, %d new items", self.name, result.status, result.sent)

    def delay_after(self, result: PollResult) -> float:
        config = self.source.config
        return next_delay(
            config.interval,
            config.jitter,
            self.state.health.consecutive_errors,
            result.retry_after,
            self.settings.sources_max_backoff,
            self.rng,
        )

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            result = await self.poll_once()
            delay = self.delay_after(result)
            self.state.health.next_poll_at = utcnow() + timedelta(seconds=delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)


def needs_directory(sources: SourcesFile) -> bool:
    return any(s.kind == "edgar" and s.enabled for s in sources.sources)


async def run_sources(
    settings: Settings,
    sources: SourcesFile,
    *,
    sink: ItemSink | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Poll every enabled source until `stop` is set (forever when None)."""
    stop = stop or asyncio.Event()
    # httpx logs each request's URL at INFO, and a source URL may carry a key.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger("httpx").level))
    resolved = [resolve(s, settings.source_secrets) for s in sources.sources if s.enabled]
    own_sink = sink is None
    executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="sources")
    loop = asyncio.get_running_loop()
    if sink is None:
        sink = await loop.run_in_executor(executor, KafkaSink, settings)
    directory = None
    if needs_directory(sources):
        directory = await loop.run_in_executor(executor, load_directory, settings.company_files)
    client = make_client(settings.sources_max_redirects)
    pollers = [
        SourcePoller(source, settings, client, sink, executor, directory) for source in resolved
    ]
    log.info("polling %d sources", len(pollers))
    try:
        async with asyncio.TaskGroup() as group:
            for poller in pollers:
                group.create_task(poller.run(stop), name=f"source:{poller.name}")
    finally:
        await client.aclose()
        if own_sink and isinstance(sink, KafkaSink):
            await loop.run_in_executor(executor, sink.close)
        executor.shutdown(wait=False)


def run_blocking(
    settings: Settings,
    sources: SourcesFile,
    stop_event: threading.Event | None = None,
) -> None:
    """Run the sources in this thread until `stop_event` is set (or Ctrl-C), with their
    Prometheus metrics on `settings.sources_metrics_port` (0: none)."""
    if settings.sources_metrics_port:
        from prometheus_client import start_http_server

        try:
            start_http_server(settings.sources_metrics_port)
        except OSError as exc:  # metrics are not worth stopping the sources for
            log.error("no /metrics on port %d: %s", settings.sources_metrics_port, exc)

    async def main() -> None:
        stop = asyncio.Event()
        if stop_event is not None:

            async def watch() -> None:
                while not stop_event.is_set():
                    await asyncio.sleep(0.2)
                stop.set()

            watcher = asyncio.create_task(watch())
        try:
            await run_sources(settings, sources, stop=stop)
        finally:
            if stop_event is not None:
                watcher.cancel()

    asyncio.run(main())
