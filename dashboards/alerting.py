"""Grafana unified alerting, generated from the same AlertRules the stream alerter uses.

Per rule and key type (ticker -> `tickers` field, topic -> `topic` field), Elasticsearch
queries count items per key over the rule window (bucketed by the rule's bucket size), server
side expressions sum them per key, and a math expression is the rule's condition:

- negative_share:  A = bearish, B = all items over the window; C = sum(A), D = sum(B);
                   E = ($D >= min_volume) && ($C >= threshold * $D)
- negative_spike:  A = bearish over the window, B = bearish over window + baseline;
                   C = sum(A), D = sum(B), so baseline = ($D - $C) / N;
                   E = ($C >= min_negative) && ($C * N >= factor * ($D - $C))

F (threshold E > 0) fires per key, labelled by the key (`tickers=AAPL`).
"""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.builders import alerting, expr
from grafana_foundation_sdk.models import alerting as am

from finsentry.alerts.rules import KeyType, NegativeShareRule, NegativeSpikeRule
from finsentry.dashboards.config import (
    CONTACT_POINT,
    FOLDER_TITLE,
    FOLDER_UID,
    ITEMS_DS_UID,
    ITEMS_TIME_FIELD,
    MARKET_UID,
    RULE_GROUP,
    WEBHOOK_URL_ENV,
    GrafanaConfig,
)
from finsentry.dashboards.queries import (
    EXPR,
    count,
    histogram,
    math,
    reduce_sum,
    target,
    terms,
    to_plain,
)

KEY_FIELDS: dict[KeyType, str] = {"ticker": "tickers", "topic": "topic"}
ORG_ID = 1


def _es_query(ref: str, query: str, field: str, interval: str, seconds: int) -> alerting.Query:
    model = target(
        ref,
        datasource=ITEMS_DS_UID,
        time_field=ITEMS_TIME_FIELD,
        query=query,
        metrics=[count("1")],
        buckets=[terms("2", field, size=500), histogram("3", ITEMS_TIME_FIELD, interval)],
    )
    return (
        alerting.Query(ref)
        .datasource_uid(ITEMS_DS_UID)
        .model(model)
        .relative_time_range(am.RelativeTimeRange(from_val=seconds, to=0))
    )


def _sum(ref: str, of: str) -> alerting.Query:
    return alerting.Query(ref).datasource_uid("__expr__").model(reduce_sum(ref, of))


def _math(ref: str, expression: str) -> alerting.Query:
    return alerting.Query(ref).datasource_uid("__expr__").model(math(ref, expression))


def _fires_when_positive(ref: str, of: str) -> alerting.Query:
    evaluator = expr.ExprTypeThresholdConditionsEvaluator().type("gt").params([0.0])
    model = (
        expr.TypeThreshold()
        .ref_id(ref)
        .datasource(EXPR)
        .expression(of)
        .conditions([expr.ExprTypeThresholdConditions().evaluator(evaluator)])
    )
    return alerting.Query(ref).datasource_uid("__expr__").model(model)


def _number(value: float) -> str:
    return f"{value:g}"


def grafana_rule(
    rule: NegativeShareRule | NegativeSpikeRule, key_type: KeyType, cfg: GrafanaConfig
) -> alerting.Rule:
    rules = cfg.rules
    field = KEY_FIELDS[key_type]
    interval = f"{rules.bucket_s}s"
    label = f"{{{{ $labels.{field} }}}}"
    if isinstance(rule, NegativeShareRule):
        queries = [
            _es_query("A", "sentiment:bearish", field, interval, rules.window_s),
            _es_query("B", "*", field, interval, rules.window_s),
        ]
        condition = f"($D >= {rule.min_volume}) && ($C >= {_number(rule.threshold)} * $D)"
        title = f"Negative share per {key_type}"
        summary = (
            f"{label}: {{{{ $values.C.Value }}}} of {{{{ $values.D.Value }}}} items bearish in "
            f"{rules.window_s // 60} min (threshold {rule.threshold:.0%})"
        )
    else:
        n = rules.baseline_windows
        queries = [
            _es_query("A", "sentiment:bearish", field, interval, rules.window_s),
            _es_query("B", "sentiment:bearish", field, interval, rules.horizon_s),
        ]
        condition = (
            f"($C >= {rule.min_negative}) && ($C * {n} >= {_number(rule.factor)} * ($D - $C))"
        )
        title = f"Negative spike per {key_type}"
        summary = (
            f"{label}: {{{{ $values.C.Value }}}} bearish items in {rules.window_s // 60} min, "
            f"over {_number(rule.factor)}x the mean of the {n} windows before"
        )
    queries += [
        _sum("C", "A"),
        _sum("D", "B"),
        _math("E", condition),
        _fires_when_positive("F", "E"),
    ]
    return (
        alerting.Rule(title)
        .uid(f"finsentry-{rule.name}-{key_type}".replace("_", "-"))
        .org_id(ORG_ID)
        .folder_uid(FOLDER_UID)
        .rule_group(RULE_GROUP)
        .condition("F")
        .queries(queries)
        .for_val("0s")
        .no_data_state("OK")
        .exec_err_state("Error")
        .labels({"team": "finsentry", "rule": rule.name, "key_type": key_type})
        .annotations(
            {
                "summary": summary,
                "description": f"finsentry rule {rule.name} on {key_type}s.",
                "__dashboardUid__": MARKET_UID,
            }
        )
    )


def _quoted(values: list[str]) -> str:
    return "(" + " OR ".join(f'"{v}"' for v in values) + ")"


def severe_item_rule(watchlist: str, tickers: list[str], cfg: GrafanaConfig) -> alerting.Rule:
    """The severe-item rule for one watchlist of the rules file, on the item's own verdict
    (Grafana's Elasticsearch queries cannot reach the nested per-company verdicts; the
    stream alerter uses those): any bearish item about a watched ticker with at least the
    rule's confidence in the last two buckets fires, labelled by ticker. An item that names
    a watched and an unwatched company fires for both labels."""
    rule = cfg.rules.severe_item
    assert rule is not None
    query = (
        f"sentiment:bearish AND sentiment_confidence:>={_number(rule.min_confidence)} "
        f"AND tickers:{_quoted(tickers)}"
    )
    if rule.topics:
        query += f" AND topic:{_quoted(rule.topics)}"
    span = 2 * cfg.rules.bucket_s
    queries = [
        _es_query("A", query, "tickers", f"{cfg.rules.bucket_s}s", span),
        _sum("C", "A"),
        _math("E", "$C >= 1"),
        _fires_when_positive("F", "E"),
    ]
    return (
        alerting.Rule(f"Severe item on watchlist {watchlist}")
        .uid(f"finsentry-severe-item-{watchlist}".replace("_", "-")[:40])
        .org_id(ORG_ID)
        .folder_uid(FOLDER_UID)
        .rule_group(RULE_GROUP)
        .condition("F")
        .queries(queries)
        .for_val("0s")
        .no_data_state("OK")
        .exec_err_state("Error")
        .labels({"team": "finsentry", "rule": rule.name, "watchlist": watchlist})
        .annotations(
            {
                "summary": (
                    "{{ $labels.tickers }}: {{ $values.C.Value }} bearish item(s) with "
                    f"confidence >= {rule.min_confidence:.0%} (watchlist {watchlist})"
                ),
                "description": f"finsentry rule {rule.name} on watchlist {watchlist}.",
                "__dashboardUid__": MARKET_UID,
            }
        )
    )


def watchlist_tickers(cfg: GrafanaConfig) -> dict[str, list[str]]:
    """The rules file's watchlists, resolved to tickers with the vendored company lists."""
    if not cfg.rules.watchlists:
        return {}
    from finsentry.alerts.watchlists import CompanyDirectory, resolve_watchlist
    from finsentry.settings import Settings, default_company_files

    data_dir = Settings.model_fields["data_dir"].default
    directory = CompanyDirectory.from_files(default_company_files(data_dir))
    return {
        spec.name: sorted(resolve_watchlist(spec.name, spec, directory).tickers)
        for spec in cfg.rules.watchlists
    }


def grafana_rules(cfg: GrafanaConfig) -> list[dict[str, Any]]:
    """The rules in Grafana's HTTP API shape (ProvisionedAlertRule)."""
    built = [
        grafana_rule(rule, key_type, cfg) for rule in cfg.rules.rules for key_type in rule.key_types
    ]
    if cfg.rules.severe_item is not None:
        built += [
            severe_item_rule(name, tickers, cfg) for name, tickers in watchlist_tickers(cfg).items()
        ]
    return [to_plain(rule.build()) for rule in built]


def rule_group(cfg: GrafanaConfig) -> dict[str, Any]:
    """The rule group in the HTTP API shape (interval in seconds)."""
    return {
        "title": RULE_GROUP,
        "folderUid": FOLDER_UID,
        "interval": cfg.rules.bucket_s,
        "rules": grafana_rules(cfg),
    }


def contact_point(url: str) -> dict[str, Any]:
    built = (
        alerting.ContactPoint()
        .uid(CONTACT_POINT)
        .name(CONTACT_POINT)
        .type("webhook")
        .settings({"url": url, "httpMethod": "POST"})
        .disable_resolve_message(False)
    )
    return to_plain(built.build())


def notification_policy() -> dict[str, Any]:
    built = (
        alerting.NotificationPolicy()
        .receiver(CONTACT_POINT)
        .group_by(["grafana_folder", "alertname", "watchlist", "tickers", "topic"])
        .group_wait("30s")
        .group_interval("5m")
        .repeat_interval("4h")
    )
    return to_plain(built.build())


_FILE_RULE_KEYS = (
    "uid",
    "title",
    "condition",
    "data",
    "noDataState",
    "execErrState",
    "for",
    "annotations",
    "labels",
)


def alerting_files(cfg: GrafanaConfig) -> dict[str, dict[str, Any]]:
    """Grafana's file-provisioning documents for alerting, by file name. Rules (model and
    annotations) are not env-expanded by Grafana; the contact point URL is."""
    rules = [{k: r[k] for k in _FILE_RULE_KEYS if k in r} for r in grafana_rules(cfg)]
    point = contact_point(f"${{{WEBHOOK_URL_ENV}}}")
    receiver = {k: point[k] for k in ("uid", "type", "settings", "disableResolveMessage")}
    return {
        "rules.yaml": {
            "apiVersion": 1,
            "groups": [
                {
                    "orgId": ORG_ID,
                    "name": RULE_GROUP,
                    "folder": FOLDER_TITLE,
                    "interval": f"{cfg.rules.bucket_s}s",
                    "rules": rules,
                }
            ],
        },
        "contact-points.yaml": {
            "apiVersion": 1,
            "contactPoints": [{"orgId": ORG_ID, "name": point["name"], "receivers": [receiver]}],
        },
        "policies.yaml": {
            "apiVersion": 1,
            "policies": [{"orgId": ORG_ID, **notification_policy()}],
        },
    }
