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

The drift rule (`drift_rule`) reads the drift index instead: an hour of the last two that
the drift watcher (drift/) marked `drifted` fires, labelled by the measure that moved most.
"""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.builders import alerting, expr
from grafana_foundation_sdk.models import alerting as am

from finsentry.alerts.rules import AlertRules, KeyType, NegativeShareRule, NegativeSpikeRule
from finsentry.dashboards.config import (
    CONTACT_POINT,
    DRIFT_DS_UID,
    DRIFT_TIME_FIELD,
    FOLDER_TITLE,
    FOLDER_UID,
    ITEMS_DS_UID,
    ITEMS_TIME_FIELD,
    MARKET_UID,
    PIPELINE_UID,
    RULE_GROUP,
    VERDICTS_DS_UID,
    WEBHOOK_URL_ENV,
    GrafanaConfig,
)
from finsentry.dashboards.queries import (
    EXPR,
    count,
    histogram,
    math,
    reduce_sum,
    sum_,
    target,
    terms,
    to_plain,
)

KEY_FIELDS: dict[KeyType, str] = {"ticker": "tickers", "topic": "topic"}
ORG_ID = 1


def _es_query(
    ref: str,
    query: str,
    field: str,
    interval: str,
    seconds: int,
    *,
    datasource: str = ITEMS_DS_UID,
    metric: Any = None,
) -> alerting.Query:
    """Per `field` value and time bucket: a count (default) or `metric`, over `seconds`."""
    model = target(
        ref,
        datasource=datasource,
        time_field=ITEMS_TIME_FIELD,
        query=query,
        metrics=[metric if metric is not None else count("1")],
        buckets=[terms("2", field, size=500), histogram("3", ITEMS_TIME_FIELD, interval)],
    )
    return (
        alerting.Query(ref)
        .datasource_uid(datasource)
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


def _counting(
    rule: NegativeShareRule | NegativeSpikeRule, rules: AlertRules, label: str
) -> tuple[bool, int, str, str]:
    """What a counting rule needs from Elasticsearch and expressions: whether B counts only
    bearish items, B's span (A is always the bearish items of the window), the condition
    over C = sum(A) and D = sum(B), and the summary."""
    minutes = rules.window_s // 60
    if isinstance(rule, NegativeShareRule):
        condition = f"($D >= {rule.min_volume}) && ($C >= {_number(rule.threshold)} * $D)"
        summary = (
            f"{label}: {{{{ $values.C.Value }}}} of {{{{ $values.D.Value }}}} items bearish in "
            f"{minutes} min (threshold {rule.threshold:.0%})"
        )
        return False, rules.window_s, condition, summary
    n = rules.baseline_windows
    condition = f"($C >= {rule.min_negative}) && ($C * {n} >= {_number(rule.factor)} * ($D - $C))"
    summary = (
        f"{label}: {{{{ $values.C.Value }}}} bearish items in {minutes} min, "
        f"over {_number(rule.factor)}x the mean of the {n} windows before"
    )
    return True, rules.horizon_s, condition, summary


def grafana_rule(
    rule: NegativeShareRule | NegativeSpikeRule, key_type: KeyType, cfg: GrafanaConfig
) -> alerting.Rule:
    rules = cfg.rules
    field = KEY_FIELDS[key_type]
    interval = f"{rules.bucket_s}s"
    bearish_only, span, condition, summary = _counting(rule, rules, f"{{{{ $labels.{field} }}}}")
    queries = [
        _es_query("A", "sentiment:bearish", field, interval, rules.window_s),
        _es_query("B", "sentiment:bearish" if bearish_only else "*", field, interval, span),
        _sum("C", "A"),
        _sum("D", "B"),
        _math("E", condition),
        _fires_when_positive("F", "E"),
    ]
    kind = "share" if isinstance(rule, NegativeShareRule) else "spike"
    return _rule(
        uid=f"finsentry-{rule.name}-{key_type}".replace("_", "-"),
        title=f"Negative {kind} per {key_type}",
        queries=queries,
        condition="F",
        labels={"rule": rule.name, "key_type": key_type},
        summary=summary,
        description=f"finsentry rule {rule.name} on {key_type}s.",
    )


def _quoted(values: list[str]) -> str:
    return "(" + " OR ".join(f'"{v}"' for v in values) + ")"


def severe_item_rule(watchlist: str, tickers: list[str], cfg: GrafanaConfig) -> alerting.Rule:
    """The severe-item rule for one watchlist of the rules file, on the flat per-company
    verdicts (as the stream alerter judges it: bearish *for the company*): any verdict
    about a watched ticker that is bearish with at least the rule's confidence in the last
    two buckets fires, labelled by ticker."""
    rule = cfg.rules.severe_item
    assert rule is not None
    query = (
        f"sentiment:bearish AND confidence:>={_number(rule.min_confidence)} "
        f"AND ticker:{_quoted(tickers)}"
    )
    if rule.topics:
        query += f" AND topic:{_quoted(rule.topics)}"
    span = 2 * cfg.rules.bucket_s
    interval = f"{cfg.rules.bucket_s}s"
    queries = [
        _es_query("A", query, "ticker", interval, span, datasource=VERDICTS_DS_UID),
        _sum("C", "A"),
        _math("E", "$C >= 1"),
        _fires_when_positive("F", "E"),
    ]
    summary = (
        "{{ $labels.ticker }}: {{ $values.C.Value }} item(s) bearish for it with "
        f"confidence >= {rule.min_confidence:.0%} (watchlist {watchlist})"
    )
    title = f"Severe item on watchlist {watchlist}"
    return _watchlist_rule(rule.name, title, watchlist, queries, "F", summary)


def _rule(
    *,
    uid: str,
    title: str,
    queries: list[alerting.Query],
    condition: str,
    labels: dict[str, str],
    summary: str,
    description: str,
    dashboard: str = MARKET_UID,
) -> alerting.Rule:
    """A rule of the finsentry group that fires at once and is OK without data."""
    return (
        alerting.Rule(title)
        .uid(uid)
        .org_id(ORG_ID)
        .folder_uid(FOLDER_UID)
        .rule_group(RULE_GROUP)
        .condition(condition)
        .queries(queries)
        .for_val("0s")
        .no_data_state("OK")
        .exec_err_state("Error")
        .labels({"team": "finsentry", **labels})
        .annotations(
            {"summary": summary, "description": description, "__dashboardUid__": dashboard}
        )
    )


def _watchlist_rule(
    rule_name: str,
    title: str,
    watchlist: str,
    queries: list[alerting.Query],
    condition: str,
    summary: str,
) -> alerting.Rule:
    return _rule(
        uid=f"finsentry-{rule_name}-{watchlist}".replace("_", "-")[:40],
        title=title,
        queries=queries,
        condition=condition,
        labels={"rule": rule_name, "watchlist": watchlist},
        summary=summary,
        description=f"finsentry rule {rule_name} on watchlist {watchlist}.",
    )


def watchlist_counting_rule(
    rule: NegativeShareRule | NegativeSpikeRule,
    watchlist: str,
    tickers: list[str],
    cfg: GrafanaConfig,
) -> alerting.Rule:
    """The share or spike rule for one watchlist, per watched company, on the flat
    per-company verdicts: an item counts as bearish for a company by that company's own
    verdict, as the stream alerter counts it."""
    rules = cfg.rules
    watched = f"ticker:{_quoted(tickers)}"
    bearish = f"sentiment:bearish AND {watched}"
    bearish_only, span, condition, summary = _counting(rule, rules, "{{ $labels.ticker }}")
    interval = f"{rules.bucket_s}s"
    queries = [
        _es_query("A", bearish, "ticker", interval, rules.window_s, datasource=VERDICTS_DS_UID),
        _es_query(
            "B", bearish if bearish_only else watched, "ticker", interval, span,
            datasource=VERDICTS_DS_UID,
        ),
        _sum("C", "A"),
        _sum("D", "B"),
        _math("E", condition),
        _fires_when_positive("F", "E"),
    ]  # fmt: skip
    title = f"{rule.name.replace('_', ' ').capitalize()} on watchlist {watchlist}"
    return _watchlist_rule(rule.name, title, watchlist, queries, "F", f"{summary} ({watchlist})")


def sentiment_shift_rule(watchlist: str, tickers: list[str], cfg: GrafanaConfig) -> alerting.Rule:
    """The sentiment shift for one watchlist, per watched company, on the per-company
    verdicts. With A = sum of scores and B = verdicts in the window, C and D the same over
    window + baseline: mean = A/B, baseline mean = (C-A)/(D-B), and `baseline - mean >= drop`
    is written without division (both counts are checked positive first)."""
    rules = cfg.rules
    rule = rules.sentiment_shift
    assert rule is not None
    watched = f"ticker:{_quoted(tickers)}"
    interval = f"{rules.bucket_s}s"

    def query(ref: str, metric: Any, seconds: int) -> alerting.Query:
        return _es_query(
            ref, watched, "ticker", interval, seconds, datasource=VERDICTS_DS_UID, metric=metric
        )

    condition = (
        f"($F >= {rule.min_volume}) && ($H - $F >= {rule.min_baseline_volume}) && "
        f"(($G - $E) * $F - $E * ($H - $F) >= {_number(rule.drop)} * $F * ($H - $F))"
    )
    queries = [
        query("A", sum_("1", "score"), rules.window_s),
        query("B", count("1"), rules.window_s),
        query("C", sum_("1", "score"), rules.horizon_s),
        query("D", count("1"), rules.horizon_s),
        _sum("E", "A"),
        _sum("F", "B"),
        _sum("G", "C"),
        _sum("H", "D"),
        _math("I", condition),
        _fires_when_positive("J", "I"),
    ]
    summary = (
        "{{ $labels.ticker }}: mean sentiment over {{ $values.F.Value }} items in "
        f"{rules.window_s // 60} min at least {_number(rule.drop)} below its baseline "
        f"({watchlist})"
    )
    title = f"Sentiment shift on watchlist {watchlist}"
    return _watchlist_rule(rule.name, title, watchlist, queries, "J", summary)


def drift_rule() -> alerting.Rule:
    """Drift (drift/): an hour of the last two that the drift watcher marked `drifted` (enough
    items, and a population stability index against the training data over
    FINSENTRY_DRIFT_THRESHOLD) fires, labelled by the measure that moved most (`worst`)."""
    two_hours = 2 * 3600
    model = target(
        "A",
        datasource=DRIFT_DS_UID,
        time_field=DRIFT_TIME_FIELD,
        query="drifted:true",
        metrics=[count("1")],
        buckets=[terms("2", "worst", size=10), histogram("3", DRIFT_TIME_FIELD, "1h")],
    )
    queries = [
        alerting.Query("A")
        .datasource_uid(DRIFT_DS_UID)
        .model(model)
        .relative_time_range(am.RelativeTimeRange(from_val=two_hours, to=0)),
        _sum("C", "A"),
        _math("E", "$C >= 1"),
        _fires_when_positive("F", "E"),
    ]
    return (
        alerting.Rule("Model input drift")
        .uid("finsentry-drift")
        .org_id(ORG_ID)
        .folder_uid(FOLDER_UID)
        .rule_group(RULE_GROUP)
        .condition("F")
        .queries(queries)
        .for_val("0s")
        .no_data_state("OK")
        .exec_err_state("Error")
        .labels({"team": "finsentry", "rule": "drift"})
        .annotations(
            {
                "summary": (
                    "{{ $labels.worst }} drifted from the training data (PSI over the "
                    "threshold) in {{ $values.C.Value }} of the last 2 hours"
                ),
                "description": "finsentry drift watch: `finsentry drift` shows the table.",
                "__dashboardUid__": PIPELINE_UID,
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
    for name, tickers in watchlist_tickers(cfg).items():
        if cfg.rules.severe_item is not None:
            built.append(severe_item_rule(name, tickers, cfg))
        built += [watchlist_counting_rule(rule, name, tickers, cfg) for rule in cfg.rules.rules]
        if cfg.rules.sentiment_shift is not None:
            built.append(sentiment_shift_rule(name, tickers, cfg))
    built.append(drift_rule())
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
