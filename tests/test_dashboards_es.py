"""Every panel, variable, annotation and alert query of the generated provisioning files runs
against the real Elasticsearch, loaded with crafted items, and returns the expected numbers.

The queries are read from the generated files and translated to `_search` bodies the way
Grafana does (finsentry.dashboards.esquery), so the exact query strings and field names in
the JSON are what gets executed. The expected numbers are computed from the crafted items in
Python, independently of Elasticsearch."""

from __future__ import annotations

import ast
import json
import math as math_
import re
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml
from elasticsearch import Elasticsearch, helpers

from finsentry.alerts.rules import AlertRules, NegativeShareRule, decide
from finsentry.alerts.store import AlertDocument, apply_alerts_template
from finsentry.dashboards.config import GrafanaConfig
from finsentry.dashboards.esquery import (
    annotation_body,
    resolve_variables,
    rows,
    search_body,
    terms_variable_body,
)
from finsentry.dashboards.provisioning import render_tree
from finsentry.index.company_verdicts import CompanyVerdict, company_verdicts, verdict_docs
from finsentry.index.template import (
    apply_company_verdicts_template,
    apply_dead_letters_template,
    apply_items_template,
)
from finsentry.messages import DeadLetter, ScoredItem
from tests.test_alerts_rules import FIRING, WindowStats, item, scenario

pytestmark = pytest.mark.integration

HOUR_MS = 3_600_000
SELECTIONS: dict[str, list[str] | None] = {
    "all": None,
    "aapl": ["AAPL"],
    "aapl+msft": ["AAPL", "MSFT"],
}


@pytest.fixture(scope="module")
def tree() -> dict[str, Any]:
    files = render_tree(GrafanaConfig())
    return {
        p: json.loads(t) if p.endswith(".json") else yaml.safe_load(t) for p, t in files.items()
    }


@pytest.fixture(scope="module")
def now_ms() -> int:
    return int(time.time() * 1000)


def crafted_items(now: float) -> list[ScoredItem]:
    """Panel data: tickers with known sentiment mixes, items without tickers, one too old."""
    spec = (
        [(["AAPL"], s) for s in ["bearish"] * 6 + ["bullish"] * 3 + ["neutral"]]
        + [(["MSFT"], s) for s in ["bearish"] + ["bullish"] * 4 + ["neutral"]]
        + [(["AAPL", "TSLA"], "bearish")] * 2
        + [(["TSLA"], "neutral"), ([], "neutral"), ([], "neutral"), ([], "bearish")]
    )
    # Mixed items: the text reads bearish, but its per-company verdict for TSLA is bullish.
    # A per-ticker panel that counted the text's sentiment would call them bearish for TSLA.
    mixed = {len(spec) - 5, len(spec) - 6}
    items = [
        item(
            n,
            now - 60 - 290 * n,
            sentiment,
            tickers,
            latency_ms=5.0 + 10 * n,
            model_version="v1" if n % 2 else "v2",
        )
        for n, (tickers, sentiment) in enumerate(spec)
    ]
    for n in mixed:
        companies = [
            c.model_copy(update={"sentiment": "bullish", "score": 0.7, "source": "entity_head"})
            if c.ticker == "TSLA"
            else c
            for c in items[n].companies
        ]
        items[n] = items[n].model_copy(update={"companies": companies})
    items.append(item(len(items), now - 3 * 86400, "bearish", ["AAPL"]))
    return items


def dead_letters(now: float) -> list[DeadLetter]:
    errors = ["invalid_json"] * 3 + ["too_long"] * 2
    return [
        DeadLetter.from_raw(
            b"{not json",
            reason="could not parse",
            error=error,
            source_topic="finsentry.raw",
            partition=0,
            offset=n,
        ).model_copy(update={"failed_at": datetime.fromtimestamp(now - 120 * (n + 1), UTC)})
        for n, error in enumerate(errors)
    ]


def alert_docs(now: float) -> list[AlertDocument]:
    rules = AlertRules(rules=[NegativeShareRule(key_types=["ticker", "topic"])])
    docs = []
    for key_type, key, minutes_ago in (
        ("ticker", "AAPL", 30),
        ("ticker", "MSFT", 50),
        ("topic", "Earnings", 40),
        ("ticker", "AAPL", 60 * 30),
    ):
        end = datetime.fromtimestamp(now, UTC) - timedelta(minutes=minutes_ago)
        stats = WindowStats(
            key_type=key_type,
            key=key,
            window_start=end - timedelta(minutes=15),
            window_end=end,
            total=25,
            negative=20,
            baseline=1.0,
        )
        alert = decide(rules, stats, last_alert_at=None, now=now)
        assert alert is not None
        docs.append(AlertDocument.new(alert, [], datetime.fromtimestamp(now, UTC)))
    return docs


@pytest.fixture(scope="module")
def indices(es: Elasticsearch, now_ms: int) -> Iterator[dict[str, Any]]:
    suffix = uuid.uuid4().hex[:10]
    names = {
        "finsentry-items": f"fs-test-items-{suffix}",
        "finsentry-company-verdicts": f"fs-test-verdicts-{suffix}",
        "finsentry-alerts": f"fs-test-alerts-{suffix}",
        "finsentry-dead-letters": f"fs-test-dead-{suffix}",
        "rules": f"fs-test-rules-{suffix}",
    }
    now = now_ms / 1000
    data = {
        "items": crafted_items(now),
        "dead": dead_letters(now),
        "alerts": alert_docs(now),
        "scenario": scenario(now),
    }
    try:
        apply_items_template(es, names["finsentry-items"])
        apply_items_template(es, names["rules"])
        apply_alerts_template(es, names["finsentry-alerts"])
        apply_dead_letters_template(es, names["finsentry-dead-letters"])
        apply_company_verdicts_template(es, names["finsentry-company-verdicts"])
        actions = [
            *(
                {"_index": names["finsentry-company-verdicts"], "_id": doc_id, "_source": doc}
                for doc_id, doc in verdict_docs(data["items"]).items()
            ),
            *(
                {
                    "_index": names["finsentry-items"],
                    "_id": i.id,
                    "_source": i.model_dump(mode="json"),
                }
                for i in data["items"]
            ),
            *(
                {"_index": names["rules"], "_id": i.id, "_source": i.model_dump(mode="json")}
                for i in data["scenario"]
            ),
            *(
                {"_index": names["finsentry-dead-letters"], "_source": d.model_dump(mode="json")}
                for d in data["dead"]
            ),
            *(
                {
                    "_index": names["finsentry-alerts"],
                    "_id": a.id,
                    "_source": a.model_dump(mode="json"),
                }
                for a in data["alerts"]
            ),
        ]
        helpers.bulk(es, actions, refresh="wait_for")
        yield {"names": names, **data}
    finally:
        for name in names.values():
            es.indices.delete(index=name, ignore_unavailable=True)
            es.options(ignore_status=404).indices.delete_index_template(name=name)


# --- helpers ----------------------------------------------------------------------------


def datasources(tree: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["uid"]: d for d in tree["datasources/finsentry.yaml"]["datasources"]}


def run_target(
    es: Elasticsearch,
    tree: dict[str, Any],
    indices: dict[str, Any],
    target: dict[str, Any],
    time_from_ms: int,
    time_to_ms: int,
    variables: dict[str, Any] | None = None,
    index: str | None = None,
) -> dict[str, Any]:
    source = datasources(tree)[target["datasource"]["uid"]]
    body = search_body(
        target,
        time_field=source["jsonData"]["timeField"],
        time_from_ms=time_from_ms,
        time_to_ms=time_to_ms,
        variables=variables,
    )
    return es.search(index=index or indices["names"][source["uid"]], **body).body


def selected(items: list[ScoredItem], now_ms: int, tickers: list[str] | None) -> list[ScoredItem]:
    """The items a ticker-filtered panel sees: in range, with a ticker (or a chosen one)."""
    in_range = [i for i in items if i.scored_at.timestamp() * 1000 >= now_ms - 24 * HOUR_MS]
    if tickers is None:
        return [i for i in in_range if i.tickers]
    return [i for i in in_range if set(i.tickers) & set(tickers)]


def totals(found: Iterator[dict[str, Any]], label: str) -> dict[str, int]:
    out: Counter[str] = Counter()
    for row in found:
        out[row[label]] += row["doc_count"]
    return {k: v for k, v in out.items() if v}


# --- Market sentiment -------------------------------------------------------------------

Check = Callable[[dict[str, Any], dict[str, Any], list[ScoredItem], list[CompanyVerdict]], None]


def verdicts_of(items: list[ScoredItem], tickers: list[str] | None) -> list[CompanyVerdict]:
    """The per-company verdicts a ticker-filtered verdict panel sees."""
    found = [v for i in items for v in company_verdicts(i)]
    return found if tickers is None else [v for v in found if v.ticker in tickers]


def check_by_sentiment(panel: dict, results: dict, items: list, verdicts: list) -> None:
    (target,) = panel["targets"]
    found = totals(rows(results[target["refId"]], target), "sentiment")
    assert found == dict(Counter(v.sentiment for v in verdicts))


def check_net_index(panel: dict, results: dict, items: list, verdicts: list) -> None:
    shown = [t for t in panel["targets"] if not t.get("hide")]
    assert [t["type"] for t in shown] == ["math"]
    (series,) = results[shown[0]["refId"]].values()
    totals_ = results["C"][""]
    assert len(series) == len(totals_) and sum(totals_) == len(verdicts)
    values = [v for v in series if not math_.isnan(v)]
    assert values and all(-1 <= v <= 1 for v in values)
    net = sum(v * n for v, n in zip(series, totals_, strict=True) if n)
    expected = sum((v.sentiment == "bullish") - (v.sentiment == "bearish") for v in verdicts)
    assert net == pytest.approx(expected)


def check_negative_share(panel: dict, results: dict, items: list, verdicts: list) -> None:
    per: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for v in verdicts:
        per[v.ticker][0] += 1
        per[v.ticker][1] += v.sentiment == "bearish"
    (shown,) = [t for t in panel["targets"] if not t.get("hide")]
    expected = {t: neg / total for t, (total, neg) in per.items() if neg}
    assert results[shown["refId"]] == pytest.approx(expected)


def check_topic_mix(panel: dict, results: dict, items: list, verdicts: list) -> None:
    (target,) = panel["targets"]
    found = totals(rows(results[target["refId"]], target), "topic")
    assert found == dict(Counter(i.topic for i in items))


def check_newest_bearish(panel: dict, results: dict, items: list, verdicts: list) -> None:
    (target,) = panel["targets"]
    hits = [h["_source"] for h in results[target["refId"]]["hits"]["hits"]]
    bearish = [v for v in verdicts if v.sentiment == "bearish"]
    assert len(bearish) < 50 and len(hits) == len(bearish)
    assert sorted((h["item_id"], h["ticker"]) for h in hits) == sorted(
        (v.item_id, v.ticker) for v in bearish
    )
    times = [h["scored_at"] for h in hits]
    assert times == sorted(times, reverse=True)
    assert all(h["url"] and h["title"] for h in hits)


MARKET_CHECKS: dict[str, Check] = {
    "Verdicts by sentiment": check_by_sentiment,
    "Net sentiment index": check_net_index,
    "Negative share by ticker": check_negative_share,
    "Topic mix": check_topic_mix,
    "Newest bearish verdicts": check_newest_bearish,
}


def run_panel(
    es: Elasticsearch,
    tree: dict[str, Any],
    indices: dict[str, Any],
    panel: dict[str, Any],
    time_from_ms: int,
    time_to_ms: int,
    variables: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Raw responses of the Elasticsearch targets, by refId; when the panel has server-side
    expressions, also the per-label series of the ES targets and the expressions' results."""
    results: dict[str, Any] = {}
    expressions = [t for t in panel["targets"] if t["datasource"]["uid"] == "__expr__"]
    for target in panel["targets"]:
        if target in expressions:
            continue
        response = run_target(es, tree, indices, target, time_from_ms, time_to_ms, variables)
        results[target["refId"]] = series_by_label(target, response) if expressions else response
    run_expressions(expressions, results)
    return results


@pytest.mark.parametrize("selection", list(SELECTIONS))
def test_market_panels(es, tree, indices, now_ms, selection: str) -> None:
    board = tree["dashboards/market-sentiment.json"]
    tickers = SELECTIONS[selection]
    variables = resolve_variables(board, {"ticker": tickers})
    items = selected(indices["items"], now_ms, tickers)
    verdicts = verdicts_of(items, tickers)
    # With all tickers shown, the mixed items' TSLA verdicts (bullish in a bearish text) count.
    assert items and ("bullish" in {v.sentiment for v in verdicts if v.ticker == "TSLA"}) == (
        tickers is None
    )
    assert {p["title"] for p in board["panels"]} == set(MARKET_CHECKS)
    for panel in board["panels"]:
        results = run_panel(es, tree, indices, panel, now_ms - 24 * HOUR_MS, now_ms, variables)
        MARKET_CHECKS[panel["title"]](panel, results, items, verdicts)


def test_ticker_variable_lists_tickers_in_range(es, tree, indices, now_ms) -> None:
    board = tree["dashboards/market-sentiment.json"]
    (variable,) = board["templating"]["list"]
    source = datasources(tree)[variable["datasource"]["uid"]]
    body = terms_variable_body(
        variable["query"],
        time_field=source["jsonData"]["timeField"],
        time_from_ms=now_ms - 24 * HOUR_MS,
        time_to_ms=now_ms,
    )
    response = es.search(index=indices["names"][source["uid"]], **body)
    keys = [b["key"] for b in response["aggregations"]["1"]["buckets"]]
    assert keys == ["AAPL", "MSFT", "TSLA"]


@pytest.mark.parametrize(("tickers", "expected"), [(None, {"AAPL", "MSFT"}), (["AAPL"], {"AAPL"})])
def test_alert_annotations(es, tree, indices, now_ms, tickers, expected) -> None:
    board = tree["dashboards/market-sentiment.json"]
    (annotation,) = board["annotations"]["list"]
    source = datasources(tree)[annotation["datasource"]["uid"]]
    body = annotation_body(
        annotation,
        time_field=source["jsonData"]["timeField"],
        time_from_ms=now_ms - 24 * HOUR_MS,
        time_to_ms=now_ms,
        variables=resolve_variables(board, {"ticker": tickers}),
    )
    hits = es.search(index=indices["names"][source["uid"]], **body)["hits"]["hits"]
    assert {h["_source"]["key"] for h in hits} == expected
    for hit in hits:
        doc = hit["_source"]
        assert doc[annotation["textField"]] and doc[annotation["tagsField"]]
        assert doc[annotation["timeEndField"]] > doc[annotation["timeField"]]


# --- Pipeline health --------------------------------------------------------------------


def check_ingest(target: dict, response: dict, data: dict) -> None:
    assert sum(r["doc_count"] for r in rows(response, target)) == len(data["items"])


def check_latency(target: dict, response: dict, data: dict) -> None:
    found = [r for r in rows(response, target) if r["doc_count"]]
    latencies = [i.latency_ms for i in data["items"]]
    mean = sum(r["1"] * r["doc_count"] for r in found) / sum(r["doc_count"] for r in found)
    assert mean == pytest.approx(sum(latencies) / len(latencies))
    assert max(r["3"] for r in found) == pytest.approx(max(latencies))
    assert all(set(r["2"]) == {"50.0", "95.0", "99.0"} for r in found)


def check_per_version(target: dict, response: dict, data: dict) -> None:
    expected = Counter(i.model_version for i in data["items"])
    assert totals(rows(response, target), "model_version") == dict(expected)


def check_versions_table(target: dict, response: dict, data: dict) -> None:
    found = list(rows(response, target))
    by_version: dict[str, list[ScoredItem]] = defaultdict(list)
    for i in data["items"]:
        by_version[i.model_version].append(i)
    newest_first = sorted(
        by_version, key=lambda v: max(i.scored_at for i in by_version[v]), reverse=True
    )
    assert [r["model_version"] for r in found] == newest_first
    for row in found:
        group = by_version[row["model_version"]]
        assert row["doc_count"] == len(group)
        assert row["2"] == pytest.approx(sum(i.latency_ms for i in group) / len(group))
        assert row["3"] == max(i.scored_at for i in group).timestamp() * 1000


def check_dead_by_error(target: dict, response: dict, data: dict) -> None:
    assert totals(rows(response, target), "error") == dict(Counter(d.error for d in data["dead"]))


def check_newest_dead(target: dict, response: dict, data: dict) -> None:
    hits = [h["_source"] for h in response["hits"]["hits"]]
    assert [h["offset"] for h in hits] == sorted(d.offset for d in data["dead"])
    assert all(h["error"] and h["reason"] for h in hits)


def check_by_source(target: dict, response: dict, data: dict) -> None:
    assert totals(rows(response, target), "source") == dict(
        Counter(i.source for i in data["items"])
    )


def check_sources_table(target: dict, response: dict, data: dict) -> None:
    found = {r["source"]: r for r in rows(response, target)}
    expected = Counter(i.source for i in data["items"])
    assert {k: r["doc_count"] for k, r in found.items()} == dict(expected)
    for source, row in found.items():
        newest = max(i.ingested_at for i in data["items"] if i.source == source)
        assert row["2"] == newest.timestamp() * 1000


PIPELINE_CHECKS: dict[str, Callable[[dict, dict, dict], None]] = {
    "Ingest rate": check_ingest,
    "Scoring latency": check_latency,
    "Items per model version": check_per_version,
    "Model versions": check_versions_table,
    "Dead letters by error": check_dead_by_error,
    "Newest dead letters": check_newest_dead,
    "Items by source": check_by_source,
    "Sources": check_sources_table,
}
# The drift panel and rule read the drift index: tests/test_drift.py runs them on drift rows.
DRIFT_PANEL = "Drift vs training data (PSI per hour)"
DRIFT_RULE = "finsentry-drift"


def test_pipeline_panels(es, tree, indices, now_ms) -> None:
    board = tree["dashboards/pipeline-health.json"]
    assert {p["title"] for p in board["panels"]} == set(PIPELINE_CHECKS) | {DRIFT_PANEL}
    in_range = [
        i for i in indices["items"] if i.scored_at.timestamp() * 1000 >= now_ms - 24 * HOUR_MS
    ]
    data = {"items": in_range, "dead": indices["dead"]}
    for panel in (p for p in board["panels"] if p["title"] != DRIFT_PANEL):
        for target in panel["targets"]:
            response = run_target(es, tree, indices, target, now_ms - 24 * HOUR_MS, now_ms)
            PIPELINE_CHECKS[panel["title"]](target, response, data)


# --- Server-side expressions and Grafana alert rules --------------------------------------


def series_by_label(target: dict[str, Any], response: dict[str, Any]) -> dict[str, list[float]]:
    """An ES response as Grafana hands it to expressions: one series per label set (the terms
    keys), values per date-histogram bucket."""
    series: dict[str, list[float]] = defaultdict(list)
    fields = [b.get("field") for b in target["bucketAggs"] if b["type"] != "date_histogram"]
    for row in rows(response, target):
        series[",".join(str(row[f]) for f in fields)].append(float(row["doc_count"]))
    return dict(series)


def math(expression: str, values: dict[str, float]) -> float:
    """Evaluate a server-side-expression math formula over numbers ($A, &&, ||, + - * /,
    comparisons), as Grafana does for one label set; x / 0 is NaN."""
    source = expression.replace("&&", " and ").replace("||", " or ").replace("$", "")

    def divide(a: float, b: float) -> float:
        return a / b if b else math_.nan

    binary = {
        ast.Add: float.__add__,
        ast.Sub: float.__sub__,
        ast.Mult: float.__mul__,
        ast.Div: divide,
    }
    compare = {
        ast.GtE: float.__ge__,
        ast.Gt: float.__gt__,
        ast.LtE: float.__le__,
        ast.Lt: float.__lt__,
        ast.Eq: float.__eq__,
    }

    def ev(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant):
            return float(node.value)
        if isinstance(node, ast.Name):
            return values[node.id]
        if isinstance(node, ast.BinOp):
            return binary[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.Compare) and len(node.ops) == 1:
            return float(compare[type(node.ops[0])](ev(node.left), ev(node.comparators[0])))
        if isinstance(node, ast.BoolOp):
            results = [ev(v) != 0 for v in node.values]
            return float(all(results) if isinstance(node.op, ast.And) else any(results))
        raise ValueError(f"unsupported expression node {ast.dump(node)}")

    return ev(ast.parse(source, mode="eval"))


def run_expressions(models: list[dict[str, Any]], results: dict[str, Any]) -> None:
    """reduce (sum), math and threshold (gt) over `results` (refId -> label -> series or
    number), in order, like Grafana's server-side expressions. Math joins inputs on labels
    and works pointwise on series."""
    for model in models:
        kind = model["type"]
        ref = model["refId"]
        if kind == "reduce":
            assert model["reducer"] == "sum"
            results[ref] = {k: float(sum(v)) for k, v in results[model["expression"]].items()}
        elif kind == "math":
            names = sorted({n for n in re.findall(r"\$(\w+)", model["expression"])})
            labels = set.intersection(*(set(results[n]) for n in names))
            out: dict[str, Any] = {}
            for label in labels:
                inputs = {n: results[n][label] for n in names}
                if any(isinstance(v, list) for v in inputs.values()):
                    length = len(next(v for v in inputs.values() if isinstance(v, list)))
                    out[label] = [
                        math(
                            model["expression"],
                            {n: v[i] if isinstance(v, list) else v for n, v in inputs.items()},
                        )
                        for i in range(length)
                    ]
                else:
                    out[label] = math(model["expression"], inputs)
            results[ref] = out
        elif kind == "threshold":
            (condition,) = model["conditions"]
            assert condition["evaluator"]["type"] == "gt"
            limit = condition["evaluator"]["params"][0]
            results[ref] = {k: float(v > limit) for k, v in results[model["expression"]].items()}
        else:
            raise ValueError(f"unsupported expression type {kind!r}")


def test_grafana_alert_rules_fire_on_the_burst_only(es, tree, indices, now_ms) -> None:
    (group,) = tree["alerting/rules.yaml"]["groups"]
    assert group["rules"]
    for rule in (r for r in group["rules"] if r["uid"] != DRIFT_RULE):
        results: dict[str, Any] = {}
        for query in rule["data"]:
            if query["datasourceUid"] == "__expr__":
                continue
            span = query["relativeTimeRange"]
            target = query["model"]
            response = run_target(
                es,
                tree,
                indices,
                target,
                now_ms - span["from"] * 1000,
                now_ms - span["to"] * 1000,
                index=indices["names"]["rules"],
            )
            results[query["refId"]] = series_by_label(target, response)
        run_expressions(
            [q["model"] for q in rule["data"] if q["datasourceUid"] == "__expr__"], results
        )
        fired = {label for label, value in results[rule["condition"]].items() if value}
        assert fired == FIRING, rule["uid"]


def test_expression_evaluator() -> None:
    assert math("($D >= 20) && ($C >= 0.6 * $D)", {"C": 12.0, "D": 20.0}) == 1.0
    assert math("($D >= 20) && ($C >= 0.6 * $D)", {"C": 11.0, "D": 20.0}) == 0.0
    assert math("$C * 8 >= 3 * ($D - $C)", {"C": 3.0, "D": 11.0}) == 1.0
    assert math_.isnan(math("$A / $B", {"A": 1.0, "B": 0.0}))
    results: dict[str, Any] = {"A": {"x": [1.0, 2.0], "y": [3.0]}, "B": {"x": [2.0, 2.0]}}
    run_expressions([{"refId": "C", "type": "math", "expression": "$A / $B"}], results)
    assert results["C"] == {"x": [0.5, 1.0]}
