"""Prometheus metrics shared by the worker and the API (one registry a process)."""

from prometheus_client import Counter, Gauge, Histogram

ITEMS_SCORED = Counter("finsentry_items_scored_total", "Items scored and indexed")
DEAD_LETTERS = Counter(
    "finsentry_dead_letters_total", "Raw messages sent to the dead-letter topic", ["error"]
)
ALERTS = Counter("finsentry_alerts_total", "Alerts emitted", ["rule"])
SCORING_LATENCY = Histogram(
    "finsentry_scoring_latency_seconds",
    "Model time per batch",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
BATCH_SIZE = Histogram(
    "finsentry_batch_size", "Items per scored batch", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256)
)
BATCH_WAIT = Gauge(
    "finsentry_batch_wait_seconds", "How long the next batch may wait to fill (adapts to load)"
)
