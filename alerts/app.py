"""The stream alerter: a Faust app (id `<app_id>-alerts`) that turns scored items into alerts.

    scored topic --fan_out--> <app_id>-alerts-keyed (key "ticker:AAPL" / "topic:Earnings")
                 --count----> windowed tables (tumbling buckets, memory store + changelog)
                           -> rules.decide() -> Alert -> alerts topic
                                                      -> alerts index (outbox) -> webhooks

Fanning out through a keyed internal topic puts every key on one partition, so counts are
right with any number of alerter instances. Event time is the item's `scored_at`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import faust
import httpx
from elasticsearch import ApiError, AsyncElasticsearch, TransportError
from pydantic import ValidationError

from finsentry.alerts.outbox import Outbox, targets_from_settings
from finsentry.alerts.rules import (
    AlertRules,
    Counts,
    KeyedItem,
    add_sample,
    baseline_buckets,
    decide,
    keyed_items,
    window_buckets,
    window_stats,
)
from finsentry.alerts.store import apply_alerts_template_async
from finsentry.es_client import make_async_es_client
from finsentry.messages import Alert, ScoredItem
from finsentry.metrics import ALERTS
from finsentry.settings import Settings
from finsentry.streams.app import create_app as create_faust_app

log = logging.getLogger(__name__)


@dataclass
class Alerter:
    """The Faust app and what its agents share."""

    app: faust.App
    settings: Settings
    rules: AlertRules
    outbox: Outbox
    es: AsyncElasticsearch
    http: httpx.AsyncClient
    due: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    index_ready: asyncio.Event = field(default_factory=asyncio.Event)

    async def publish(self, alert: Alert, alerts_topic: faust.TopicT) -> None:
        """Emit to the alerts topic, store in the outbox, and deliver right away."""
        await alerts_topic.send(
            key=f"{alert.key_type}:{alert.key}".encode(), value=alert.model_dump_json().encode()
        )
        ALERTS.labels(rule=alert.rule).inc()
        log.info("alert %s: %s %s:%s", alert.id, alert.rule, alert.key_type, alert.key)
        await self.index_ready.wait()
        delay = self.rules.delivery.initial_backoff_s
        while True:
            try:
                stored = await self.outbox.put(alert)
                break
            except (ApiError, TransportError):
                log.exception("cannot store alert %s; retrying in %.1fs", alert.id, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.rules.delivery.max_backoff_s)
        if stored:
            self.due.put_nowait(alert.id)

    async def deliver_forever(self) -> None:
        """Install the alerts index template, then deliver new alerts as they come and sweep
        for due retries every sweep interval."""
        interval = self.rules.delivery.sweep_interval_s
        while True:
            try:
                await apply_alerts_template_async(self.es, self.settings.alerts_index)
                self.index_ready.set()
                break
            except Exception:
                log.exception("cannot prepare the alerts index; retrying in %.1fs", interval)
                await asyncio.sleep(interval)
        last_sweep = 0.0
        while True:
            try:
                if time.monotonic() - last_sweep >= interval:
                    last_sweep = time.monotonic()
                    await self.outbox.sweep()
                with contextlib.suppress(TimeoutError):
                    doc_id = await asyncio.wait_for(self.due.get(), timeout=interval)
                    await self.outbox.deliver(doc_id)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("alert delivery failed; retrying in %.1fs", interval)
                await asyncio.sleep(interval)


def create_app(settings: Settings, rules: AlertRules) -> Alerter:
    """Build the alerter; run it with `faust.Worker(alerter.app).execute_from_commandline()`."""
    app_id = f"{settings.app_id}-alerts"
    app = create_faust_app(
        settings,
        app_id,
        table_cleanup_interval=float(min(30, rules.bucket_s)),
        # Do not wait for buffered events at shutdown (it can hang); they are re-read on
        # restart, and replayed alerts are deduplicated by their deterministic ids.
        stream_wait_empty=False,
        autodiscover=False,
    )
    es = make_async_es_client(settings)
    http = httpx.AsyncClient()
    outbox = Outbox(
        es, settings.alerts_index, targets_from_settings(settings), rules.delivery, http
    )
    alerter = Alerter(app=app, settings=settings, rules=rules, outbox=outbox, es=es, http=http)

    raw = {"key_serializer": "raw", "value_serializer": "raw"}
    scored = app.topic(settings.topic_scored, **raw)
    keyed = app.topic(f"{app_id}-keyed", internal=True, partitions=settings.topic_partitions, **raw)
    alerts_topic = app.topic(settings.topic_alerts, **raw)

    expires = rules.horizon_s + 2 * rules.bucket_s
    totals = app.Table("totals", default=int).tumbling(rules.bucket_s, expires=expires)
    negatives = app.Table("negatives", default=int).tumbling(rules.bucket_s, expires=expires)
    samples = app.Table("samples", default=list)
    last_alert = app.Table("last-alert", default=None)
    first_seen = app.Table("first-seen", default=None)
    window = totals.table.window
    assert window is not None

    def counts_for(key: str, ts: float) -> dict[int, Counts]:
        starts = baseline_buckets(ts, rules) + window_buckets(ts, rules)
        return {
            b: Counts(
                totals.table[(key, window.current(float(b)))],
                negatives.table[(key, window.current(float(b)))],
            )
            for b in starts
        }

    @app.agent(scored)
    async def fan_out(stream: faust.StreamT[bytes]) -> None:
        async for value in stream:
            try:
                item = ScoredItem.model_validate_json(value)
            except ValidationError as error:
                log.warning("skipping a scored message that is not a ScoredItem: %s", error)
                continue
            for entry in keyed_items(item, rules, now=time.time()):
                await keyed.send(
                    key=entry.table_key.encode(), value=entry.model_dump_json().encode()
                )

    @app.agent(keyed)
    async def count(stream: faust.StreamT[bytes]) -> None:
        async for value in stream:
            entry = KeyedItem.model_validate_json(value)
            key = entry.table_key
            seen = first_seen.get(key)
            if seen is None or entry.ts < seen:
                first_seen[key] = seen = entry.ts
            totals.relative_to(entry.ts)[key] += 1
            if entry.negative:
                negatives.relative_to(entry.ts)[key] += 1
                samples[key] = add_sample(samples[key], entry.sample, rules.sample_size)
            stats = window_stats(
                entry.key_type, entry.key, entry.ts, counts_for(key, entry.ts), rules, seen
            )
            alert = decide(
                rules,
                stats,
                last_alert_at=last_alert.get(key),
                now=entry.ts,
                samples=samples[key],
            )
            if alert is not None:
                last_alert[key] = entry.ts
                await alerter.publish(alert, alerts_topic)

    @app.task
    async def deliver() -> None:
        await alerts_topic.maybe_declare()
        await alerter.deliver_forever()

    @app.on_before_shutdown.connect
    async def close_clients(app: faust.App, **kwargs: Any) -> None:
        await http.aclose()
        await es.close()

    return alerter
