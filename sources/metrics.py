"""Prometheus metrics of the sources stage (the runner's `/metrics`)."""

from prometheus_client import Counter, Gauge, Histogram

POLLS = Counter("finsentry_source_polls_total", "Polls per source by outcome", ["source", "status"])
ITEMS = Counter("finsentry_source_items_total", "New items sent to Kafka per source", ["source"])
ERRORS = Counter(
    "finsentry_source_errors_total", "Failed polls per source by error kind", ["source", "error"]
)
REJECTED = Counter(
    "finsentry_source_rejected_entries_total",
    "Entries of a good response that could not become a NewsItem",
    ["source"],
)
LAST_POLL = Gauge(
    "finsentry_source_last_poll_timestamp_seconds", "When the source was last polled", ["source"]
)
LAST_ITEMS = Gauge("finsentry_source_last_poll_items", "New items of the last poll", ["source"])
UP = Gauge("finsentry_source_up", "1 when the source's last poll succeeded", ["source"])
POLL_SECONDS = Histogram(
    "finsentry_source_poll_seconds",
    "Time per poll, fetch to Kafka ack",
    ["source"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
PUSHED = Counter("finsentry_push_items_total", "Items accepted by POST /v1/items")
PUSH_REJECTED = Counter("finsentry_push_rejected_items_total", "Items refused by POST /v1/items")
