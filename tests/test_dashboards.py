"""Grafana as code without servers: the committed tree is fresh, the documents hang together,
secrets come from the environment, and `push` upserts against a tiny fake Grafana."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import yaml
from grafana_client import GrafanaApi

from finsentry.dashboards.config import (
    CONTACT_POINT,
    ES_PASSWORD_ENV,
    ES_USER_ENV,
    WEBHOOK_URL_ENV,
    GrafanaConfig,
)
from finsentry.dashboards.esquery import Raw, interpolate, resolve_variables, search_body
from finsentry.dashboards.provisioning import (
    DEFAULT_ROOT,
    expand_env,
    render_tree,
    stale_files,
    write_tree,
)
from finsentry.dashboards.push import push, push_env
from finsentry.settings import Settings


def load(files: dict[str, str], path: str) -> Any:
    text = files[path]
    return json.loads(text) if path.endswith(".json") else yaml.safe_load(text)


@pytest.fixture(scope="module")
def files() -> dict[str, str]:
    return render_tree(GrafanaConfig())


def test_committed_tree_is_fresh(files: dict[str, str]) -> None:
    stale = stale_files(DEFAULT_ROOT, files)
    assert not stale, f"run `finsentry dashboards generate`; stale: {stale}"


def test_write_tree_writes_and_prunes(tmp_path, files: dict[str, str]) -> None:
    (tmp_path / "dashboards").mkdir()
    (tmp_path / "dashboards" / "old.json").write_text("{}")
    assert set(write_tree(tmp_path, files)) == set(files) | {"dashboards/old.json"}
    assert stale_files(tmp_path, files) == []
    assert write_tree(tmp_path, files) == []


def test_datasources_use_env_for_credentials(files: dict[str, str]) -> None:
    sources = {d["uid"]: d for d in load(files, "datasources/finsentry.yaml")["datasources"]}
    assert set(sources) == {
        "finsentry-items",
        "finsentry-company-verdicts",
        "finsentry-alerts",
        "finsentry-dead-letters",
        "finsentry-drift",
    }
    for source in sources.values():
        assert source["url"] == "http://elasticsearch:9200"
        assert source["jsonData"]["esVersion"] == "9.5.4"
        assert source["basicAuthUser"] == f"${{{ES_USER_ENV}}}"
        assert source["secureJsonData"] == {"basicAuthPassword": f"${{{ES_PASSWORD_ENV}}}"}
    assert sources["finsentry-items"]["jsonData"]["index"] == "finsentry-items"
    assert sources["finsentry-dead-letters"]["jsonData"]["index"] == "finsentry-dead-letters"
    verdicts = sources["finsentry-company-verdicts"]["jsonData"]
    assert (verdicts["index"], verdicts["timeField"]) == ("finsentry-company-verdicts", "scored_at")
    point = load(files, "alerting/contact-points.yaml")["contactPoints"][0]["receivers"][0]
    assert point["settings"]["url"] == f"${{{WEBHOOK_URL_ENV}}}"
    provider = load(files, "dashboards/finsentry.yaml")["providers"][0]
    assert provider["options"]["path"] == "/etc/grafana/provisioning/dashboards"


def _targets(board: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for panel in board["panels"]:
        for target in panel["targets"]:
            yield panel["title"], target


def _panel(board: dict[str, Any], title: str) -> dict[str, Any]:
    return next(p for p in board["panels"] if p["title"] == title)


def test_dashboards_reference_provisioned_datasources(files: dict[str, str]) -> None:
    uids = {d["uid"] for d in load(files, "datasources/finsentry.yaml")["datasources"]}
    market = load(files, "dashboards/market-sentiment.json")
    pipeline = load(files, "dashboards/pipeline-health.json")
    assert {market["uid"], pipeline["uid"]} == {"finsentry-market", "finsentry-pipeline"}
    titles = {p["title"] for p in market["panels"]}
    assert titles == {
        "Verdicts by sentiment",
        "Net sentiment index",
        "Negative share by ticker",
        "Topic mix",
        "Newest bearish verdicts",
    }
    for board in (market, pipeline):
        for title, target in _targets(board):
            assert target["datasource"]["uid"] in uids | {"__expr__"}, title
            if target["datasource"]["uid"] == "__expr__":
                refs = {t["refId"] for t in _panel(board, title)["targets"]}
                used = set(re.findall(r"\$(\w+)", target["expression"]))
                assert (used or {target["expression"]}) <= refs, title
    (variable,) = market["templating"]["list"]
    assert variable["name"] == "ticker" and variable["allValue"] == "*" and variable["multi"]
    (annotation,) = market["annotations"]["list"]
    assert annotation["datasource"]["uid"] == "finsentry-alerts"
    assert annotation["target"]["query"] == "key_type:ticker AND key:$ticker"


def test_alert_rules_hang_together(files: dict[str, str]) -> None:
    (group,) = load(files, "alerting/rules.yaml")["groups"]
    assert group["interval"] == "60s"
    uids = [r["uid"] for r in group["rules"]]
    assert uids == [
        "finsentry-negative-share-ticker",
        "finsentry-negative-spike-ticker",
        "finsentry-drift",
    ]
    for rule in group["rules"]:
        refs = {q["refId"]: q for q in rule["data"]}
        assert rule["condition"] in refs
        for query in rule["data"]:
            model = query["model"]
            used = re.findall(r"\$(\w+)", model.get("expression", ""))
            if model.get("type") in ("reduce", "threshold"):
                used = [model["expression"]]
            assert set(used) <= set(refs), rule["uid"]
            if query["datasourceUid"] != "__expr__":
                assert query["relativeTimeRange"]["from"] > 0
        assert "$labels" not in json.dumps(rule["labels"])
    policy = load(files, "alerting/policies.yaml")["policies"][0]
    assert policy["receiver"] == CONTACT_POINT and "tickers" in policy["group_by"]


def test_expand_env_like_grafana() -> None:
    env = {"A": "x", "B": "y"}
    assert expand_env({"k": ["$A-${B}", "$$A", "$MISSING."]}, env) == {"k": ["x-y", "$A", "."]}


def test_lucene_interpolation() -> None:
    assert interpolate("tickers:$ticker", {"ticker": "BRK/B"}) == r"tickers:BRK\/B"
    assert interpolate("tickers:${ticker}", {"ticker": ["A", "B"]}) == 'tickers:("A" OR "B")'
    assert interpolate("tickers:[[ticker]]", {"ticker": Raw("*")}) == "tickers:*"
    assert interpolate("x:$other", {"ticker": "A"}) == "x:$other"
    board = {"templating": {"list": [{"name": "ticker", "allValue": "*"}]}}
    assert resolve_variables(board, {"ticker": None}) == {"ticker": "*"}


def test_search_body_orders_terms_by_metric() -> None:
    target = {
        "query": "",
        "metrics": [{"id": "1", "type": "count"}, {"id": "3", "type": "max", "field": "t"}],
        "bucketAggs": [
            {"id": "4", "type": "terms", "field": "v", "settings": {"orderBy": "3", "size": "0"}},
            {"id": "5", "type": "date_histogram", "field": "t", "settings": {"interval": "1m"}},
        ],
    }
    body = search_body(target, time_field="t", time_from_ms=0, time_to_ms=1000)
    terms = body["aggs"]["4"]
    assert terms["terms"]["order"] == {"3": "desc"} and terms["terms"]["size"] == 500
    assert terms["aggs"]["3"] == {"max": {"field": "t"}}
    assert terms["aggs"]["5"]["aggs"]["3"] == {"max": {"field": "t"}}
    assert len(body["query"]["bool"]["filter"]) == 1


class FakeGrafana(BaseHTTPRequestHandler):
    """Just enough of Grafana's HTTP API for `push`: objects by uid, requests recorded."""

    state: dict[str, dict[str, Any]]
    calls: list[tuple[str, str]]
    auth: set[str]

    def log_message(self, format: str, *args: Any) -> None:
        del format, args

    def _reply(self, status: int, body: Any = None) -> None:
        data = json.dumps(body if body is not None else {}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def _handle(self, method: str) -> None:
        url = urlparse(self.path)
        path = url.path.removeprefix("/api")
        self.calls.append((method, path))
        self.auth.add(self.headers.get("Authorization", ""))
        routes = [
            (r"/folders/([\w-]+)", "folder", "uid"),
            (r"/folders", "folder", "uid"),
            (r"/datasources/uid/([\w-]+)", "datasource", "uid"),
            (r"/datasources", "datasource", "uid"),
            (r"/v1/provisioning/alert-rules/([\w-]+)", "rule", "uid"),
            (r"/v1/provisioning/alert-rules", "rule", "uid"),
            (r"/v1/provisioning/contact-points/([\w-]+)", "contact", "uid"),
            (r"/v1/provisioning/contact-points", "contact", "uid"),
            (r"/v1/provisioning/folder/([\w-]+)/rule-groups/([\w-]+)", "group", "title"),
            (r"/v1/provisioning/policies", "policy", "receiver"),
            (r"/dashboards/db", "dashboard", "uid"),
        ]
        for pattern, kind, key in routes:
            match = re.fullmatch(pattern, path)
            if match is None:
                continue
            store = self.state.setdefault(kind, {})
            uid = match.group(match.lastindex or 0) if match.lastindex else None
            if method == "GET" and kind == "contact":
                name = parse_qs(url.query).get("name", [None])[0]
                return self._reply(200, [c for c in store.values() if c["name"] == name])
            if method == "GET":
                return self._reply(200, store[uid]) if uid in store else self._reply(404)
            body = self._body()
            if kind == "dashboard":
                body = body["dashboard"]
            obj_id = body.get(key) if uid is None or kind == "group" else uid
            if method == "PUT" and kind not in ("group", "policy") and obj_id not in store:
                return self._reply(404)
            if method == "POST" and obj_id in store and kind != "dashboard":
                return self._reply(409)
            store[obj_id] = body
            return self._reply(200, {"uid": obj_id})
        return self._reply(404)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")


@pytest.fixture
def fake_grafana() -> Iterator[tuple[str, type[FakeGrafana]]]:
    handler = type("Handler", (FakeGrafana,), {"state": {}, "calls": [], "auth": set()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def test_push_is_an_idempotent_upsert(fake_grafana) -> None:
    url, handler = fake_grafana
    settings = Settings.model_construct(
        es_username="grafana-reader",
        es_password=None,
        grafana_webhook_url=None,
    )
    env = push_env(settings, {ES_PASSWORD_ENV: "s3cret", WEBHOOK_URL_ENV: "http://hook/x"})
    api = GrafanaApi.from_url(url, credential="token-123")
    cfg = GrafanaConfig()

    first = push(api, cfg, env)
    state = json.loads(json.dumps(handler.state))
    second = push(api, cfg, env)

    assert json.loads(json.dumps(handler.state)) == state
    created = {(p.kind, p.uid) for p in first if p.action == "created"}
    assert ("datasource", "finsentry-items") in created
    assert ("alert-rule", "finsentry-negative-share-ticker") in created
    assert ("contact-point", CONTACT_POINT) in created
    assert all(p.action != "created" for p in second)
    assert handler.auth == {"Bearer token-123"}
    items = state["datasource"]["finsentry-items"]
    assert items["basicAuthUser"] == "grafana-reader"
    assert items["secureJsonData"] == {"basicAuthPassword": "s3cret"}
    assert state["contact"][CONTACT_POINT]["settings"]["url"] == "http://hook/x"
    assert set(state["dashboard"]) == {
        "finsentry-market",
        "finsentry-pipeline",
        "finsentry-alerts-board",
    }
    assert len(state["group"]["finsentry-sentiment"]["rules"]) == 3  # 2 rules + drift
    assert state["policy"]["finsentry-webhook"]["receiver"] == CONTACT_POINT


def test_push_skips_contact_point_without_webhook_url(fake_grafana) -> None:
    url, handler = fake_grafana
    api = GrafanaApi.from_url(url, credential="t")
    done = push(api, GrafanaConfig(), {})
    assert done[-1].kind == "contact-point" and done[-1].action == "skipped"
    assert "contact" not in handler.state
    assert handler.state["datasource"]["finsentry-items"]["basicAuthUser"] == ""


def test_alerts_board(files: dict[str, str]) -> None:
    board = load(files, "dashboards/alerts.json")
    assert board["uid"] == "finsentry-alerts-board"
    titles = [p["title"] for p in board["panels"]]
    assert titles == [
        "Alerts per watchlist",
        "Alerts per company",
        "Alerts per rule",
        "Newest alerts",
        "Net sentiment of alerted companies",
    ]
    names = [v["name"] for v in board["templating"]["list"]]
    assert names == ["watchlist", "ticker"]
    (annotation,) = board["annotations"]["list"]
    assert annotation["datasource"]["uid"] == "finsentry-alerts"
    assert annotation["target"]["query"] == "watchlist:$watchlist"
    newest = next(p for p in board["panels"] if p["title"] == "Newest alerts")
    shown = newest["transformations"][0]["options"]["includeByName"]
    assert {"watchlist", "company", "rule", "summary", "acknowledged"} <= set(shown)


def test_severe_item_rules_per_rules_file_watchlist() -> None:
    from finsentry.alerts.rules import AlertRules, SevereItemRule
    from finsentry.alerts.watchlists import WatchlistSpec

    rules = AlertRules(
        severe_item=SevereItemRule(min_confidence=0.85, topics=["Company | Legal"]),
        watchlists=[WatchlistSpec(name="desk", companies=["Apple", "TSLA"])],
    )
    tree = render_tree(GrafanaConfig(rules=rules))
    (group,) = load(tree, "alerting/rules.yaml")["groups"]
    severe = [r for r in group["rules"] if r["labels"]["rule"] == "severe_item"]
    (rule,) = severe
    assert rule["uid"] == "finsentry-severe-item-desk"
    assert rule["labels"]["watchlist"] == "desk"
    query = rule["data"][0]["model"]["query"]
    assert query == (
        'sentiment:bearish AND confidence:>=0.85 AND ticker:("AAPL" OR "TSLA") '
        'AND topic:("Company | Legal")'
    )
    assert rule["data"][0]["datasourceUid"] == "finsentry-company-verdicts"
    assert rule["data"][0]["relativeTimeRange"]["from"] == 120
    assert [q["refId"] for q in rule["data"]] == ["A", "C", "E", "F"]
    assert rule["condition"] == "F"
    # The default rules have no watchlists: no severe-item rule in the committed tree.
    default = load(render_tree(GrafanaConfig()), "alerting/rules.yaml")["groups"][0]["rules"]
    assert all(r["labels"]["rule"] != "severe_item" for r in default)
