"""The stream alerter: a Faust app (id `<app_id>-alerts`) that turns scored items into alerts.

    scored topic --fan_out--> <app_id>-alerts-keyed (key "ticker:AAPL" / "topic:Earnings")
                 --count----> windowed tables (tumbling buckets, memory store + changelog)
                           -> rules.decide() -> Alert -> alerts topic
                                                      -> alerts index (outbox) -> webhooks

Fanning out through a keyed internal topic puts every key on one partition, so counts are
right with any number of alerter instances. Event time is the item's `scored_at`.

Watchlists (alerts/watchlists.py) are read from Elasticsearch every few seconds. The
severe-item rule runs in `fan_out`, on each item as it arrives: near-duplicates of a story
(alerts/stories.py) alert once and count once, and `Episodes` (alerts/episodes.py, restored
from the alerts index at start) keeps one notification per watchlist + company + rule +
episode. Ticker alerts of the counting rules go to the default targets and, per watchlist
that holds the ticker, to that watchlist's channels.

Restarts: the alerter is a static member of its consumer group (`alerter_instance_id`, default
the host name), so a restarted alerter, even one that was killed, gets its partitions back at
once rather than after the dead member's session timeout; and its tables recover with
`GaplessRecovery` (alerts/recovery.py), which keeps Faust from dropping the items that wait in
the topic while the tables are restored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import faust
import httpx
from elasticsearch import ApiError, AsyncElasticsearch, TransportError
from pydantic import ValidationError

from finsentry.alerts.digest import send_due_digests
from finsentry.alerts.email import SmtpConfig
from finsentry.alerts.episodes import Episodes, recent_watchlist_alerts
from finsentry.alerts.outbox import Outbox, targets_from_settings, watchlist_targets
from finsentry.alerts.recovery import GaplessTableManager
from finsentry.alerts.rules import (
    AlertRules,
    Counts,
    KeyedItem,
    add_sample,
    baseline_buckets,
    bucket_start,
    decide,
    for_watchlists,
    keyed_items,
    severe_alert,
    severe_trips,
    shift_alert,
    window_buckets,
    window_stats,
)
from finsentry.alerts.store import apply_alerts_template_async
from finsentry.alerts.stories import StoryTracker, story_text
from finsentry.alerts.watchlists import (
    CompanyDirectory,
    Watchlist,
    WatchlistError,
    ensure_watchlists_index_async,
    list_watchlists_async,
    put_watchlist_async,
    resolve_watchlist,
)
from finsentry.es_client import make_async_es_client
from finsentry.messages import Alert, ScoredItem, utcnow
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
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    watchlists: list[Watchlist] = field(default_factory=list)
    routes: dict[str, list[str]] = field(default_factory=dict)

    def use_watchlists(self, watchlists: list[Watchlist]) -> None:
        """Adopt the watchlists now stored, with their channels' targets."""
        routes = {}
        for watchlist in watchlists:
            targets = watchlist_targets(watchlist, self.settings)
            self.outbox.add_targets(targets)
            routes[watchlist.name] = [t.id for t in targets]
        self.watchlists, self.routes = watchlists, routes

    @property
    def watched(self) -> set[str]:
        return {t for w in self.watchlists for t in w.tickers}

    async def publish(
        self, alert: Alert, alerts_topic: faust.TopicT, targets: list[str] | None = None
    ) -> None:
        """Emit to the alerts topic, store in the outbox (for `targets`, default: the default
        targets), and deliver right away."""
        await alerts_topic.send(
            key=f"{alert.key_type}:{alert.key}".encode(), value=alert.model_dump_json().encode()
        )
        ALERTS.labels(rule=alert.rule).inc()
        log.info("alert %s: %s %s:%s", alert.id, alert.rule, alert.key_type, alert.key)
        await self.index_ready.wait()
        delay = self.rules.delivery.initial_backoff_s
        while True:
            try:
                stored = await self.outbox.put(alert, targets)
                break
            except (ApiError, TransportError):
                log.exception("cannot store alert %s; retrying in %.1fs", alert.id, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.rules.delivery.max_backoff_s)
        if stored:
            self.due.put_nowait(alert.id)

    async def publish_routed(self, alert: Alert, alerts_topic: faust.TopicT) -> None:
        """A counting rule's alert: to the default targets (not for watchlist-only rules)
        and to every watchlist that holds its ticker."""
        if alert.watchlist is None and alert.mean_score is None:
            await self.publish(alert, alerts_topic)
        for routed in for_watchlists(alert, self.watchlists):
            await self.publish(routed, alerts_topic, self.routes.get(routed.watchlist or "", []))

    async def keep_watchlists(self, episodes: Episodes, stories: StoryTracker) -> None:
        """Write the rules file's watchlists, restore the episodes, then re-read the
        watchlists every `watchlist_refresh_s`."""
        index = self.settings.watchlists_index
        interval = self.rules.watchlist_refresh_s
        await self.index_ready.wait()
        while not self.ready.is_set():
            try:
                await ensure_watchlists_index_async(self.es, index)
                if self.rules.watchlists:
                    directory = await asyncio.to_thread(
                        CompanyDirectory.from_files, self.settings.company_files
                    )
                    for spec in self.rules.watchlists:
                        try:
                            watchlist = resolve_watchlist(spec.name, spec, directory, source="file")
                        except WatchlistError as error:
                            log.error("rules file: watchlist %s not loaded: %s", spec.name, error)
                            continue
                        await put_watchlist_async(self.es, index, watchlist)
                since = utcnow() - timedelta(
                    seconds=max(self.rules.cooldown_s, self.rules.stories.window_s)
                )
                docs = await recent_watchlist_alerts(self.es, self.settings.alerts_index, since)
                log.info("restored %d recent watchlist alerts", episodes.restore(docs, stories))
                self.use_watchlists(await list_watchlists_async(self.es, index))
                self.ready.set()
            except Exception:
                log.exception("cannot read the watchlists; retrying in %.1fs", interval)
                await asyncio.sleep(interval)
        while True:
            await asyncio.sleep(interval)
            try:
                self.use_watchlists(await list_watchlists_async(self.es, index))
            except Exception:
                log.exception("cannot re-read the watchlists; keeping the last ones")

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
        await self.ready.wait()  # every watchlist channel is known before retries
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
        # Static membership: a restarted alerter rejoins as the same member and gets its
        # partitions back at once, not after the killed one's session timeout (60 s).
        consumer_group_instance_id=settings.alerter_instance_id or socket.gethostname(),
        # Table recovery that does not drop the events waiting at a restart (recovery.py).
        TableManager=GaplessTableManager,
        # Keyed entries and table changelogs go out in batches, not a request each.
        producer_linger_ms=10,
    )
    es = make_async_es_client(settings)
    http = httpx.AsyncClient()
    outbox = Outbox(
        es,
        settings.alerts_index,
        targets_from_settings(settings),
        rules.delivery,
        http,
        smtp=SmtpConfig.from_settings(settings),
    )
    alerter = Alerter(app=app, settings=settings, rules=rules, outbox=outbox, es=es, http=http)

    raw = {"key_serializer": "raw", "value_serializer": "raw"}
    scored = app.topic(settings.topic_scored, **raw)
    keyed = app.topic(f"{app_id}-keyed", internal=True, partitions=settings.topic_partitions, **raw)
    alerts_topic = app.topic(settings.topic_alerts, **raw)

    expires = rules.horizon_s + 2 * rules.bucket_s
    totals = app.Table("totals", default=int).tumbling(rules.bucket_s, expires=expires)
    negatives = app.Table("negatives", default=int).tumbling(rules.bucket_s, expires=expires)
    scores = app.Table("scores", default=float).tumbling(rules.bucket_s, expires=expires)
    samples = app.Table("samples", default=list)
    last_alert = app.Table("last-alert", default=None)
    last_shift = app.Table("last-shift", default=None)
    stories = StoryTracker(rules.stories)
    episodes = Episodes(rules.cooldown_s)
    first_seen = app.Table("first-seen", default=None)
    window = totals.table.window
    assert window is not None

    # Each key's buckets as this alerter last read or wrote them: counts and score sums per
    # bucket start. A rule looks at ~135 buckets per entry, far too many for table reads; the
    # tables stay the record (changelogs, recovery) and these are a cache in front of them.
    # This agent is the only writer of its partitions' keys, so the cache is exact until the
    # assignment changes: it is dropped at every rebalance and refilled from the tables.
    cached_counts: dict[str, dict[int, Counts]] = {}
    cached_sums: dict[str, dict[int, float]] = {}

    def window_of(key: str, ts: float) -> tuple[dict[int, Counts], dict[int, float]]:
        """The key's counts and score sums per bucket, every baseline + window bucket at
        `ts` present (and older ones dropped)."""
        starts = baseline_buckets(ts, rules) + window_buckets(ts, rules)
        counts = cached_counts.setdefault(key, {})
        sums = cached_sums.setdefault(key, {})
        if len(counts) > len(starts) + 2:
            for old in [b for b in counts if b < starts[0]]:
                del counts[old]
                sums.pop(old, None)
        for b in starts:
            if b not in counts:
                span = window.current(float(b))
                counts[b] = Counts(totals.table[(key, span)], negatives.table[(key, span)])
                sums[b] = scores.table[(key, span)]
        return counts, sums

    async def forget_buckets(sender: faust.App, *args: Any, **kwargs: Any) -> None:
        cached_counts.clear()
        cached_sums.clear()

    # Also once the tables are restored (before the streams resume), so nothing read from a
    # table while it was being recovered is kept.
    for signal in (
        app.on_partitions_revoked,
        app.on_partitions_assigned,
        app.on_rebalance_complete,
    ):
        signal.connect(forget_buckets)

    async def severe(item: ScoredItem, story: str) -> None:
        rule = rules.severe_item
        if rule is None:
            return
        ts = item.scored_at.timestamp()
        for trip in severe_trips(item, alerter.watchlists, rule):
            if episodes.admit((trip.watchlist.name, trip.ticker, rule.name), story, ts):
                alert = severe_alert(rule, trip, item, story)
                await alerter.publish(alert, alerts_topic, alerter.routes.get(trip.watchlist.name))

    @app.agent(scored)
    async def fan_out(stream: faust.StreamT[bytes]) -> None:
        async for value in stream:
            try:
                item = ScoredItem.model_validate_json(value)
            except ValidationError as error:
                log.warning("skipping a scored message that is not a ScoredItem: %s", error)
                continue
            await alerter.ready.wait()
            ts = item.scored_at.timestamp()
            story = stories.observe(item.id, story_text(item.title, item.text), ts, item.tickers)
            await severe(item, story)
            if story != item.id and rules.stories.count_once:
                continue  # the same story again: it counts once
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
            counts, sums = window_of(key, entry.ts)
            # Written straight to the bucket (what `relative_to(entry.ts)[key] += ...` does,
            # without reading the table again): the cache holds the table's value.
            start = bucket_start(entry.ts, rules.bucket_s)
            span = window.current(float(start))
            before = counts[start]
            counts[start] = now = Counts(before.total + 1, before.negative + int(entry.negative))
            sums[start] += entry.score
            totals.table[(key, span)] = now.total
            scores.table[(key, span)] = sums[start]
            if entry.negative:
                negatives.table[(key, span)] = now.negative
                samples[key] = add_sample(samples[key], entry.sample, rules.sample_size)
            stats = window_stats(entry.key_type, entry.key, entry.ts, counts, rules, seen)
            alert = decide(
                rules,
                stats,
                last_alert_at=last_alert.get(key),
                now=entry.ts,
                samples=samples[key],
            )
            if alert is not None:
                last_alert[key] = entry.ts
                await alerter.publish_routed(alert, alerts_topic)
            if entry.key_type == "ticker" and entry.key in alerter.watched:
                shift = shift_alert(
                    rules,
                    entry.key,
                    entry.ts,
                    counts,
                    sums,
                    last_alert_at=last_shift.get(key),
                    samples=samples[key],
                )
                if shift is not None:
                    last_shift[key] = entry.ts
                    await alerter.publish_routed(shift, alerts_topic)

    @app.task
    async def deliver() -> None:
        await alerts_topic.maybe_declare()
        await alerter.deliver_forever()

    @app.task
    async def watchlists() -> None:
        await alerter.keep_watchlists(episodes, stories)

    @app.task
    async def digests() -> None:
        smtp = SmtpConfig.from_settings(settings)
        if smtp is None or not settings.digest_at:
            return
        await alerter.ready.wait()
        while True:
            try:
                await send_due_digests(settings, es, alerter.watchlists, smtp, utcnow())
            except Exception:
                log.exception("digest round failed")
            await asyncio.sleep(60)

    @app.on_before_shutdown.connect
    async def close_clients(app: faust.App, **kwargs: Any) -> None:
        await http.aclose()
        await es.close()

    return alerter
