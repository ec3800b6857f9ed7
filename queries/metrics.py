"""Prometheus metrics of the query API (same process registry as finsentry.metrics)."""

from prometheus_client import Counter, Histogram

API_REQUESTS = Counter(
    "finsentry_api_requests_total", "HTTP API requests", ["method", "route", "status"]
)
API_LATENCY = Histogram(
    "finsentry_api_request_seconds",
    "HTTP API request latency",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
API_RATE_LIMITED = Counter("finsentry_api_rate_limited_total", "Requests refused by the rate limit")
