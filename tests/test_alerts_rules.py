"""Alert rules as pure functions: crafted traffic, no Kafka, no Elasticsearch.

`scenario()` is also used by the Grafana alert-rule tests (test_dashboards_es.py), so the
stream rules and the Grafana rules are checked against the same traffic."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from finsentry.alerts.outbox import Target, after_attempt, backoff_s
from finsentry.alerts.rules import (
    AlertRules,
    Counts,
    DeliveryPolicy,
    NegativeShareRule,
    NegativeSpikeRule,
    WindowStats,
    add_sample,
    alert_id,
    bucket_start,
    decide,
    evaluate,
    keyed_items,
    load_rules,
    slack_body,
    summary,
    webhook_body,
    window_stats,
)
from finsentry.alerts.store import AlertDocument
from finsentry.messages import ScoredItem
from tests.support.crafted import crafted_item

TOPICS = ("Earnings", "Macro", "M&A")
FIRING = {"BURST"}


def item(
    n: int,
    ts: float,
    sentiment: str,
    tickers: list[str],
    *,
    topic: str | None = None,
    latency_ms: float = 50.0,
    model_version: str = "v1",
) -> ScoredItem:
    return crafted_item(
        f"item-{n}",
        datetime.fromtimestamp(ts, UTC),
        sentiment,
        tickers,
        title=f"{sentiment} news {n} on {','.join(tickers) or 'nothing'}",
        url=f"https://example.com/items/{n}",
        topic=topic or TOPICS[n % len(TOPICS)],
        latency_ms=latency_ms,
        model_version=model_version,
    )


def scenario(now: float, *, with_steady: bool = True) -> list[ScoredItem]:
    """Traffic for the default rules (15 min windows, 8 windows of baseline), in time order:

    NORM    4 items (1 bearish) in the window, sparse before: nothing trips
    BURST   1 bearish + 1 neutral per window before, then 24 items (20 bearish): both trip
    LOWVOL  5 bearish in the window: too few for either rule
    STEADY  12 bearish of 40 in every window: a high but steady count, no spike
    """
    items: list[ScoredItem] = []
    for k in range(30):
        items.append(
            item(len(items), now - 240 * k - 30, "bearish" if k % 5 == 0 else "bullish", ["NORM"])
        )
    for j in range(8):
        t = now - 1200 - 900 * j
        items.append(item(len(items), t, "bearish", ["BURST"]))
        items.append(item(len(items), t + 60, "neutral", ["BURST"]))
    for i in range(24):
        sentiment = "neutral" if i % 6 == 5 else "bearish"
        items.append(item(len(items), now - 30 - 25 * i, sentiment, ["BURST"]))
    for i in range(5):
        items.append(item(len(items), now - 60 * i - 45, "bearish", ["LOWVOL"]))
    if with_steady:
        for w in range(9):
            for m in range(40):
                t = now - 900 * w - 20 - 21 * m
                items.append(item(len(items), t, "bearish" if m < 12 else "neutral", ["STEADY"]))
    return sorted(items, key=lambda i: i.scored_at)


def bucket_counts(items: list[ScoredItem], rules: AlertRules) -> dict[str, dict[int, Counts]]:
    counts: dict[str, dict[int, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for it in items:
        for ticker in it.tickers:
            cell = counts[ticker][bucket_start(it.scored_at.timestamp(), rules.bucket_s)]
            cell[0] += 1
            cell[1] += it.sentiment == "bearish"
    return {k: {b: Counts(*v) for b, v in per.items()} for k, per in counts.items()}


def stats(negative: int, total: int, baseline: float = 0.0, complete: bool = True) -> WindowStats:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    return WindowStats(
        key_type="ticker",
        key="AAPL",
        window_start=start,
        window_end=start + timedelta(minutes=15),
        total=total,
        negative=negative,
        baseline=baseline,
        baseline_complete=complete,
    )


def test_scenario_trips_only_the_burst() -> None:
    rules = AlertRules()
    now = 1_750_000_000.0
    counts = bucket_counts(scenario(now), rules)
    tripped: dict[str, set[str]] = {rule.name: set() for rule in rules.rules}
    for ticker, per_bucket in counts.items():
        s = window_stats("ticker", ticker, now, per_bucket, rules)
        for rule in rules.rules:
            if evaluate(rule, s):
                tripped[rule.name].add(ticker)
    assert tripped == {"negative_share": FIRING, "negative_spike": FIRING}
    burst = window_stats("ticker", "BURST", now, counts["BURST"], rules)
    assert (burst.total, burst.negative, burst.baseline) == (24, 20, 1.0)
    steady = window_stats("ticker", "STEADY", now, counts["STEADY"], rules)
    assert (steady.total, steady.negative, steady.baseline) == (40, 12, 12.0)


def test_share_rule_needs_volume_and_share() -> None:
    rule = NegativeShareRule(threshold=0.6, min_volume=20)
    assert evaluate(rule, stats(12, 20)) is not None
    assert evaluate(rule, stats(11, 20)) is None
    assert evaluate(rule, stats(19, 19)) is None
    assert evaluate(NegativeShareRule(key_types=["topic"]), stats(20, 20)) is None


def test_spike_rule_against_baseline() -> None:
    rule = NegativeSpikeRule(factor=3.0, min_negative=10)
    assert evaluate(rule, stats(10, 50, baseline=0.0)) is not None
    assert evaluate(rule, stats(9, 50, baseline=0.0)) is None
    assert evaluate(rule, stats(14, 50, baseline=5.0)) is None
    trip = evaluate(rule, stats(15, 50, baseline=5.0))
    assert trip is not None and trip.threshold == 15.0 and trip.baseline == 5.0
    assert evaluate(rule, stats(50, 50, baseline=0.0, complete=False)) is None


def test_baseline_incomplete_until_history_covers_it() -> None:
    rules = AlertRules()
    now = 1_750_000_000.0
    counts = bucket_counts(scenario(now, with_steady=False), rules)["BURST"]
    recent = window_stats("ticker", "BURST", now, counts, rules, first_seen=now - 3600)
    old = window_stats("ticker", "BURST", now, counts, rules, first_seen=now - 3 * 3600)
    assert not recent.baseline_complete and old.baseline_complete


def test_decide_applies_cooldown_per_key_and_first_rule_wins() -> None:
    rules = AlertRules(cooldown_s=600)
    s = stats(20, 24, baseline=1.0)
    samples = [{"id": f"s{i}"} for i in range(9)]
    alert = decide(rules, s, last_alert_at=None, now=1000.0, samples=samples)
    assert alert is not None and alert.rule == "negative_share"
    assert alert.negative_share == pytest.approx(20 / 24) and alert.baseline is None
    assert len(alert.sample_items) == rules.sample_size
    assert alert.id == alert_id("negative_share", "ticker", "AAPL", s.window_start)
    assert decide(rules, s, last_alert_at=500.0, now=1000.0) is None
    assert decide(rules, s, last_alert_at=400.0, now=1000.0) is not None
    spike_first = AlertRules(rules=[NegativeSpikeRule(), NegativeShareRule()])
    spike = decide(spike_first, s, last_alert_at=None, now=1000.0)
    assert spike is not None and spike.rule == "negative_spike" and spike.baseline == 1.0


def test_keyed_items_fan_out_dedupe_and_drop_stale() -> None:
    rules = AlertRules(rules=[NegativeShareRule(key_types=["ticker", "topic"])])
    now = 1_750_000_000.0
    it = item(1, now - 10, "bearish", ["AAPL", "AAPL", "MSFT"], topic="Earnings")
    keys = [(k.key_type, k.key, k.negative) for k in keyed_items(it, rules, now)]
    assert keys == [("ticker", "AAPL", True), ("ticker", "MSFT", True), ("topic", "Earnings", True)]
    assert keyed_items(item(2, now - rules.horizon_s - 1, "bearish", ["AAPL"]), rules, now) == []
    only_tickers = AlertRules()
    assert [k.key for k in keyed_items(it, only_tickers, now)] == ["AAPL", "MSFT"]


def test_add_sample_newest_first_without_duplicates() -> None:
    samples: list[dict] = []
    for n in (1, 2, 3, 2):
        samples = add_sample(samples, {"id": n}, 2)
    assert [s["id"] for s in samples] == [2, 3]


def test_rules_file_yaml_and_json(tmp_path) -> None:
    yaml_file = tmp_path / "rules.yaml"
    yaml_file.write_text(
        "bucket_s: 30\nwindow_buckets: 4\nrules:\n"
        "  - kind: negative_share\n    threshold: 0.5\n    min_volume: 3\n"
        "  - kind: negative_spike\n    name: spike\n    key_types: [ticker, topic]\n"
    )
    rules = load_rules(yaml_file)
    assert rules.window_s == 120 and rules.rules[0].threshold == 0.5
    assert rules.key_types() == {"ticker", "topic"}
    json_file = tmp_path / "rules.json"
    json_file.write_text(rules.model_dump_json())
    assert load_rules(json_file) == rules
    assert load_rules(None) == AlertRules()
    with pytest.raises(ValidationError):
        AlertRules(rules=[NegativeShareRule(), NegativeShareRule()])
    with pytest.raises(ValidationError):
        AlertRules.model_validate({"rules": [{"kind": "nope"}]})


def test_bodies_and_summary() -> None:
    alert = decide(
        AlertRules(),
        stats(20, 24, baseline=1.0),
        last_alert_at=None,
        now=0.0,
        samples=[{"id": "x", "title": "Bad news", "url": "https://e.com/x"}],
    )
    assert alert is not None
    body = webhook_body(alert)
    assert body["id"] == alert.id and body["key"] == "AAPL" and "83%" in body["summary"]
    json.dumps(body)
    text = slack_body(alert)["text"]
    assert "AAPL" in text and "<https://e.com/x|Bad news>" in text
    assert "baseline" in summary(alert.model_copy(update={"baseline": 1.0, "rule": "spike"}))


def test_outbox_backoff_and_attempt_bookkeeping() -> None:
    policy = DeliveryPolicy(initial_backoff_s=1.0, max_backoff_s=5.0)
    assert [backoff_s(n, policy) for n in (1, 2, 3, 4, 5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    alert = decide(AlertRules(), stats(20, 24), last_alert_at=None, now=0.0)
    assert alert is not None
    now = datetime(2025, 1, 1, tzinfo=UTC)
    a, b = Target.of("generic", "http://a/hook"), Target.of("slack", "http://b/hook")
    assert a.id.startswith("generic-") and "http" not in a.id
    doc = AlertDocument.new(alert, [a.id, b.id], now)
    assert not doc.delivered and doc.to_alert() == alert
    failed = after_attempt(doc, {b.id: "ConnectError"}, now, policy)
    assert failed["pending_targets"] == [b.id] and failed["delivered"] is False
    assert failed["next_attempt_at"] == (now + timedelta(seconds=1)).isoformat()
    assert "http" not in failed["last_error"]
    done = after_attempt(doc.model_copy(update=failed | {"attempts": 1}), {}, now, policy)
    assert done["delivered"] is True and done["attempts"] == 2
    assert AlertDocument.new(alert, [], now).delivered
