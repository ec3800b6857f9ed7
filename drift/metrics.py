"""Prometheus metrics of the drift watcher (served on FINSENTRY_DRIFT_METRICS_PORT)."""

from prometheus_client import Counter, Gauge

PSI = Gauge(
    "finsentry_drift_psi",
    "Population stability index of the newest hour with enough items, per measure",
    ["measure"],
)
DRIFTED = Gauge("finsentry_drift_drifted", "1 when that hour's largest PSI is over the threshold")
HOUR_ITEMS = Gauge("finsentry_drift_hour_items", "Items scored in the current hour")
MEAN_CONFIDENCE = Gauge(
    "finsentry_drift_mean_confidence", "Mean sentiment confidence of the newest hour"
)
CLASS_SHARE = Gauge(
    "finsentry_drift_class_share", "Predicted class mix of the newest hour", ["task", "label"]
)
UPDATES = Counter("finsentry_drift_updates_total", "Drift updates written")
