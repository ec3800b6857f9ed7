"""The Grafana rules per watchlist (severe item, share, spike, sentiment shift;
dashboards/alerting.py) run
against the real Elasticsearch: the provisioning is rendered for a rules file with one
watchlist, every query of those rules is translated the way Grafana does
(finsentry.dashboards.esquery) and runs on a per-company verdicts index loaded with crafted
items, and the server-side expressions are evaluated on the answers.

The crafted companies, over the rule window (the last 15 min) and its baseline (the 2 hours
before), with the per-company verdicts the models would give:
- AAPL (watched): 10 of 12 window items bearish for it (the newest too), none before, a
  neutral baseline: severe item, share, spike and shift fire;
- TSLA (watched): bullish before, neutral in the window, nothing bearish: only the shift;
- MSFT (watched): the same mildly positive items throughout: nothing;
- XOM (not watched): AAPL's pattern, but not on the watchlist: nothing;
- JPM (watched): items that read bearish but are bullish for JPM (per-company verdict):
  nothing, not even the severe item (a rule on the item's own verdict would fire).
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml
from elasticsearch import Elasticsearch, helpers

from finsentry.alerts.rules import (
    AlertRules,
    NegativeShareRule,
    NegativeSpikeRule,
    SentimentShiftRule,
)
from finsentry.alerts.watchlists import WatchlistSpec
from finsentry.dashboards.config import GrafanaConfig
from finsentry.dashboards.esquery import rows, search_body
from finsentry.dashboards.provisioning import render_tree
from finsentry.index.company_verdicts import verdict_docs
from finsentry.index.template import apply_company_verdicts_template
from finsentry.messages import ScoredItem
from tests.support.alerts import scored, verdict
from tests.test_dashboards_es import run_expressions

pytestmark = pytest.mark.integration

RULES = AlertRules(
    rules=[NegativeShareRule(threshold=0.6, min_volume=10), NegativeSpikeRule(min_negative=5)],
    sentiment_shift=SentimentShiftRule(drop=0.5, min_volume=5, min_baseline_volume=10),
    watchlists=[WatchlistSpec(name="desk", companies=["AAPL", "TSLA", "MSFT", "JPM"])],
)
EXPECTED = {
    "finsentry-severe-item-desk": {"AAPL"},
    "finsentry-negative-share-desk": {"AAPL"},
    "finsentry-negative-spike-desk": {"AAPL"},
    "finsentry-sentiment-shift-desk": {"AAPL", "TSLA"},
}
SCORES = {"bearish": -0.8, "neutral": 0.1, "bullish": 0.8}


def items(now: datetime) -> list[ScoredItem]:
    """(ticker, minutes ago, the company's sentiment, the text's sentiment) per item."""
    window = [m * 0.5 + 1 for m in range(12)]  # 1 to 6.5 min ago
    before = [30 + 5 * m for m in range(12)]  # 30 to 85 min ago
    spec = (
        [("AAPL", m, "bearish" if i < 10 else "neutral", None) for i, m in enumerate(window)]
        + [("AAPL", m, "neutral", None) for m in before]
        + [("TSLA", m, "bullish", None) for m in before]
        + [("TSLA", m, "neutral", None) for m in window[:6]]
        + [("MSFT", m, "neutral", None) for m in before + window[:6]]
        + [("XOM", m, "bearish" if i < 10 else "neutral", None) for i, m in enumerate(window)]
        + [("XOM", m, "bullish", None) for m in before]
        + [("JPM", m, "bullish", "bearish") for m in window]
    )
    out = []
    for n, (ticker, minutes, sentiment, text) in enumerate(spec):
        company = verdict(ticker, sentiment, 0.9, ticker).model_copy(
            update={"score": SCORES[sentiment]}
        )
        at = now - timedelta(minutes=minutes)
        item = scored(f"g{n}", f"{ticker} item {n}", text or sentiment, [company])
        out.append(item.model_copy(update={"scored_at": at, "ingested_at": at}))
    return out


@pytest.fixture(scope="module")
def loaded(es: Elasticsearch) -> Iterator[tuple[str, int]]:
    index = f"fs-test-wl-verdicts-{uuid.uuid4().hex[:10]}"
    now_ms = int(time.time() * 1000)
    now = datetime.fromtimestamp(now_ms / 1000, UTC)
    try:
        apply_company_verdicts_template(es, index)
        docs = verdict_docs(items(now))
        actions = [{"_index": index, "_id": k, "_source": v} for k, v in docs.items()]
        helpers.bulk(es, actions, refresh="wait_for")
        yield index, now_ms
    finally:
        es.indices.delete(index=index, ignore_unavailable=True)
        es.options(ignore_status=404).indices.delete_index_template(name=index)


def series(target: dict[str, Any], response: dict[str, Any]) -> dict[str, list[float]]:
    """One series per ticker, a value per time bucket: the count, or the metric's value."""
    (metric,) = target["metrics"]
    key = "doc_count" if metric["type"] == "count" else metric["id"]
    out: dict[str, list[float]] = defaultdict(list)
    for row in rows(response, target):
        out[str(row["ticker"])].append(float(row.get(key) or 0.0))
    return dict(out)


def test_watchlist_rules_fire_for_the_right_companies(es: Elasticsearch, loaded) -> None:  # type: ignore[no-untyped-def]
    index, now_ms = loaded
    tree = render_tree(GrafanaConfig(rules=RULES))
    (group,) = yaml.safe_load(tree["alerting/rules.yaml"])["groups"]
    ours = {r["uid"]: r for r in group["rules"] if r["labels"].get("watchlist") == "desk"}
    assert set(EXPECTED) <= set(ours)
    for uid, expected in EXPECTED.items():
        rule = ours[uid]
        results: dict[str, Any] = {}
        for query in rule["data"]:
            if query["datasourceUid"] == "__expr__":
                continue
            assert query["datasourceUid"] == "finsentry-company-verdicts", uid
            target = query["model"]
            span = query["relativeTimeRange"]
            body = search_body(
                target,
                time_field="scored_at",
                time_from_ms=now_ms - span["from"] * 1000,
                time_to_ms=now_ms - span["to"] * 1000,
            )
            results[query["refId"]] = series(target, es.search(index=index, **body).body)
        run_expressions(
            [q["model"] for q in rule["data"] if q["datasourceUid"] == "__expr__"], results
        )
        fired = {label for label, value in results[rule["condition"]].items() if value}
        assert fired == expected, uid
