"""The drift watcher: every FINSENTRY_DRIFT_INTERVAL seconds, the current and the previous
hour against the reference, written to the drift index and to Prometheus gauges."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

from elasticsearch import Elasticsearch

from finsentry.drift import metrics
from finsentry.drift.measure import DriftRow, Reference, hour_row
from finsentry.drift.store import HOUR, hour_observations, put_rows
from finsentry.settings import Settings

log = logging.getLogger(__name__)


def floor_hour(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def hours(since: datetime, until: datetime) -> list[datetime]:
    """The hour starts from `since`'s hour to `until`'s, both included."""
    first, last = floor_hour(since), floor_hour(until)
    count = int((last - first) / HOUR) + 1
    return [first + i * HOUR for i in range(max(count, 0))]


def compute(
    es: Elasticsearch,
    settings: Settings,
    reference: Reference,
    since: datetime,
    until: datetime,
) -> list[DriftRow]:
    """The rows of the hours from `since` to `until` (hours without items are left out)."""
    rows = []
    for hour in hours(since, until):
        total, observed = hour_observations(es, settings.items_index, hour, settings.drift_sample)
        if observed:
            rows.append(
                hour_row(
                    hour,
                    total,
                    observed,
                    reference,
                    threshold=settings.drift_threshold,
                    min_items=settings.drift_min_items,
                )
            )
    return rows


def publish(rows: list[DriftRow], now: datetime) -> None:
    """Gauges from the newest hour with enough items; the current hour's item count."""
    current = [r for r in rows if r.hour == floor_hour(now)]
    metrics.HOUR_ITEMS.set(current[0].items if current else 0)
    judged = [r for r in rows if r.enough]
    if not judged:
        return
    newest = judged[-1]
    for measure, value in newest.psi_by_measure().items():
        metrics.PSI.labels(measure).set(value)
    metrics.DRIFTED.set(1 if newest.drifted else 0)
    metrics.MEAN_CONFIDENCE.set(newest.mean_confidence)
    for task, shares in (("sentiment", newest.sentiment_mix), ("topic", newest.topic_mix)):
        for label, share in shares.items():
            metrics.CLASS_SHARE.labels(task, label).set(share)


def update(
    es: Elasticsearch, settings: Settings, reference: Reference, now: datetime
) -> list[DriftRow]:
    """Recompute the previous and the current hour, store them, publish them."""
    rows = compute(es, settings, reference, now - HOUR, now)
    if rows:
        put_rows(es, settings.drift_index, rows)
    publish(rows, now)
    metrics.UPDATES.inc()
    return rows


def history(
    es: Elasticsearch, settings: Settings, reference: Reference, since: datetime, now: datetime
) -> list[DriftRow]:
    """Every hour from `since` to `now` recomputed (one query an hour) and stored."""
    rows = compute(es, settings, reference, since, now)
    if rows:
        put_rows(es, settings.drift_index, rows)
    publish(rows, now)
    return rows


def watch(settings: Settings, stop: threading.Event) -> None:
    """Update every `drift_interval` seconds until `stop` is set, against the live model's
    reference (a newly promoted model brings its own)."""
    from finsentry.drift.reference import live_reference
    from finsentry.es_client import make_es_client

    es = make_es_client(settings)
    while not stop.is_set():
        try:
            for row in update(es, settings, live_reference(settings), datetime.now(UTC)):
                if row.drifted:
                    log.warning(
                        "drift in %s: %s PSI %.3f >= %.2f",
                        row.hour.isoformat(),
                        row.worst,
                        row.max_psi,
                        row.threshold,
                    )
        except Exception:  # a failed update is logged; the next one tries again
            log.exception("drift update failed")
        stop.wait(settings.drift_interval)
