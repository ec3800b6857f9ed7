"""Grafana Elasticsearch queries -> Elasticsearch `_search` bodies, the way Grafana's
Elasticsearch data source builds them (pkg/tsdb/elasticsearch): a bool filter of the time
range and the Lucene query string, bucket aggregations nested in order, metrics at the leaf.

It lets tests execute the exact query strings, field names and settings of the generated
dashboards and alert rules against a real Elasticsearch, and lets a person see what a panel
asks for. Supported: count/avg/sum/min/max/cardinality/percentiles/extended_stats metrics
(with inline scripts), bucket_script/derivative/cumulative_sum pipelines, raw_data and
raw_document; terms/date_histogram/histogram/filters buckets; template variables with
Grafana's Lucene formatting; `{"find": "terms"}` variable queries; annotation queries.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

DEFAULT_SIZE = 500
_PIPELINE_SINGLE = {"derivative", "cumulative_sum", "moving_fn", "serial_diff"}
_PIPELINE_MULTI = {"bucket_script"}
_METRICS = {"avg", "sum", "min", "max", "cardinality", "percentiles", "extended_stats"}
_DOCUMENTS = {"raw_data", "raw_document"}
_AUTO_STEPS_MS = [
    10_000,
    15_000,
    30_000,
    60_000,
    300_000,
    600_000,
    900_000,
    1_800_000,
    3_600_000,
    10_800_000,
    21_600_000,
    43_200_000,
    86_400_000,
    604_800_000,
    2_592_000_000,
]


class Raw(str):
    """A variable value inserted as is (Grafana does not format a custom "All" value)."""


VariableValue = str | Sequence[str]
_LUCENE_SPECIAL = re.compile(r'([!*+\-=<>\s&|()\[\]{}^~?:\\/"])')
_VARIABLE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\[\[(\w+)\]\]|\$(\w+)")


def lucene_escape(value: str) -> str:
    try:
        float(value)
    except ValueError:
        return _LUCENE_SPECIAL.sub(r"\\\1", value)
    return value


def format_value(value: VariableValue, fmt: str = "lucene") -> str:
    if isinstance(value, Raw):
        return str(value)
    if fmt == "raw":
        return value if isinstance(value, str) else ",".join(value)
    if fmt == "csv":
        return value if isinstance(value, str) else ",".join(value)
    if isinstance(value, str):
        return lucene_escape(value)
    if not value:
        return "__empty__"
    return "(" + " OR ".join(f'"{lucene_escape(v)}"' for v in value) + ")"


def interpolate(text: str, variables: Mapping[str, VariableValue] | None) -> str:
    """Replace $var, ${var}, ${var:fmt} and [[var]]; unknown names stay as they are."""
    if not variables:
        return text

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(3) or match.group(4)
        if name not in variables:
            return match.group(0)
        return format_value(variables[name], match.group(2) or "lucene")

    return _VARIABLE.sub(replace, text)


def resolve_variables(
    dashboard: Mapping[str, Any], selected: Mapping[str, VariableValue | None]
) -> dict[str, VariableValue]:
    """Variable values for a dashboard: `None` (or "$__all") means "All", which becomes the
    variable's custom all value, unformatted, as in Grafana."""
    values: dict[str, VariableValue] = {}
    for variable in dashboard.get("templating", {}).get("list", []):
        name = variable["name"]
        if name not in selected:
            continue
        value = selected[name]
        if value is None or value == "$__all":
            if variable.get("allValue") is None:
                raise ValueError(f"variable {name} has no custom all value")
            values[name] = Raw(variable["allValue"])
        else:
            values[name] = value
    return values


def auto_interval_ms(time_from_ms: int, time_to_ms: int, max_points: int = 1000) -> int:
    """A round interval giving at most about `max_points` buckets (at least 10 s)."""
    wanted = (time_to_ms - time_from_ms) / max_points
    return next((step for step in _AUTO_STEPS_MS if step >= wanted), _AUTO_STEPS_MS[-1])


def _int(value: Any, default: int) -> int:
    try:
        result = int(value)
    except (TypeError, ValueError):
        return default
    return result or default


def _time_filter(field: str, time_from_ms: int, time_to_ms: int) -> dict[str, Any]:
    return {"range": {field: {"gte": time_from_ms, "lte": time_to_ms, "format": "epoch_millis"}}}


def _filters(
    time_field: str, time_from_ms: int, time_to_ms: int, query: str
) -> list[dict[str, Any]]:
    filters = [_time_filter(time_field, time_from_ms, time_to_ms)]
    if query.strip():
        filters.append({"query_string": {"analyze_wildcard": True, "query": query}})
    return filters


def _metric_body(metric: Mapping[str, Any]) -> dict[str, Any]:
    settings = dict(metric.get("settings") or {})
    script = settings.get("script")
    if isinstance(script, Mapping):
        settings["script"] = script.get("inline")
    body = {"field": metric["field"]} if metric.get("field") else {}
    body.update({k: v for k, v in settings.items() if k and v is not None})
    return body


def _metric_aggs(metrics: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    by_id = {m["id"]: m for m in metrics}

    def path(metric_id: str) -> str:
        return "_count" if by_id.get(metric_id, {}).get("type") == "count" else metric_id

    aggs: dict[str, Any] = {}
    for metric in metrics:
        kind = metric["type"]
        if kind == "count":
            continue
        if kind in _METRICS:
            aggs[metric["id"]] = {kind: _metric_body(metric)}
        elif kind in _PIPELINE_MULTI:
            paths = {v["name"]: path(v["pipelineAgg"]) for v in metric.get("pipelineVariables", [])}
            aggs[metric["id"]] = {kind: {"buckets_path": paths, **_metric_body(metric)}}
        elif kind in _PIPELINE_SINGLE:
            source = metric.get("field") or metric.get("pipelineAgg")
            body = {k: v for k, v in _metric_body(metric).items() if k != "field"}
            aggs[metric["id"]] = {kind: {"buckets_path": path(str(source)), **body}}
        else:
            raise ValueError(f"unsupported metric type {kind!r}")
    return aggs


def _bucket_agg(
    bucket: Mapping[str, Any],
    metrics: Sequence[Mapping[str, Any]],
    *,
    time_field: str,
    time_from_ms: int,
    time_to_ms: int,
    interval_ms: int | None,
    variables: Mapping[str, VariableValue] | None,
) -> dict[str, Any]:
    kind = bucket["type"]
    settings = bucket.get("settings") or {}
    if kind == "date_histogram":
        interval = settings.get("interval", "auto")
        if interval == "auto":
            ms = interval_ms or auto_interval_ms(time_from_ms, time_to_ms)
            interval = f"{ms}ms"
        body: dict[str, Any] = {
            "field": bucket.get("field") or time_field,
            "fixed_interval": interval,
            "min_doc_count": _int(settings.get("min_doc_count"), 0),
            "extended_bounds": {"min": time_from_ms, "max": time_to_ms},
            "format": "epoch_millis",
        }
        if settings.get("offset"):
            body["offset"] = settings["offset"]
        return {"date_histogram": body}
    if kind == "terms":
        body = {
            "field": bucket["field"],
            "size": _int(settings.get("size"), DEFAULT_SIZE),
            "order": {},
        }
        if "min_doc_count" in settings:
            body["min_doc_count"] = _int(settings["min_doc_count"], 0)
        if settings.get("missing") is not None:
            body["missing"] = settings["missing"]
        order_by = settings.get("orderBy")
        if order_by:
            direction = settings.get("order", "desc")
            metric_id = re.match(r"^(\d+)", order_by)
            if metric_id:
                metric = next((m for m in metrics if m["id"] == metric_id.group(1)), None)
                if metric is not None and metric["type"] == "count":
                    body["order"] = {"_count": direction}
                elif metric is not None:
                    body["order"] = {order_by: direction}
            else:
                body["order"] = {"_key" if order_by == "_term" else order_by: direction}
        return {"terms": body}
    if kind == "histogram":
        return {
            "histogram": {
                "field": bucket["field"],
                "interval": _int(settings.get("interval"), 1000),
                "min_doc_count": _int(settings.get("min_doc_count"), 0),
            }
        }
    if kind == "filters":
        filters = {}
        for item in settings.get("filters", []):
            query = interpolate(item.get("query", ""), variables)
            label = item.get("label") or query
            filters[label] = {"query_string": {"query": query, "analyze_wildcard": True}}
        return {"filters": {"filters": filters}}
    raise ValueError(f"unsupported bucket aggregation {kind!r}")


def search_body(
    target: Mapping[str, Any],
    *,
    time_field: str,
    time_from_ms: int,
    time_to_ms: int,
    variables: Mapping[str, VariableValue] | None = None,
    interval_ms: int | None = None,
) -> dict[str, Any]:
    """The `_search` body Grafana sends for one Elasticsearch target. `time_field` is the
    datasource's time field (Grafana filters on it whatever the query says)."""
    metrics = list(target.get("metrics") or [{"type": "count", "id": "1"}])
    query = interpolate(target.get("query") or "", variables)
    body: dict[str, Any] = {
        "size": 0,
        "query": {"bool": {"filter": _filters(time_field, time_from_ms, time_to_ms, query)}},
    }
    if metrics[0]["type"] in _DOCUMENTS:
        body["size"] = _int((metrics[0].get("settings") or {}).get("size"), DEFAULT_SIZE)
        body["sort"] = [
            {time_field: {"order": "desc", "unmapped_type": "boolean"}},
            {"_doc": {"order": "desc"}},
        ]
        body["docvalue_fields"] = [time_field]
        return body
    buckets = list(target.get("bucketAggs") or [])
    if not buckets:
        raise ValueError("a metric query needs at least one bucket aggregation")
    leaf = _metric_aggs(metrics)
    aggs: dict[str, Any] = leaf
    for bucket in reversed(buckets):
        agg = _bucket_agg(
            bucket,
            metrics,
            time_field=time_field,
            time_from_ms=time_from_ms,
            time_to_ms=time_to_ms,
            interval_ms=interval_ms,
            variables=variables,
        )
        order = agg.get("terms", {}).get("order", {})
        extra = {k: v for k, v in _metric_aggs(metrics).items() if k in order and k not in aggs}
        if aggs or extra:
            agg["aggs"] = {**extra, **aggs}
        aggs = {bucket["id"]: agg}
    body["aggs"] = aggs
    return body


def terms_variable_body(
    query: str,
    *,
    time_field: str,
    time_from_ms: int,
    time_to_ms: int,
    variables: Mapping[str, VariableValue] | None = None,
) -> dict[str, Any]:
    """The `_search` body of a `{"find": "terms", ...}` variable query."""
    spec = json.loads(interpolate(query, variables))
    if spec.get("find") != "terms":
        raise ValueError(f"unsupported variable query {spec.get('find')!r}")
    order_by = "_count" if spec.get("orderBy") == "doc_count" else "_key"
    default_order = "desc" if order_by == "_count" else "asc"
    return {
        "size": 0,
        "query": {
            "bool": {
                "filter": _filters(time_field, time_from_ms, time_to_ms, spec.get("query", ""))
            }
        },
        "aggs": {
            "1": {
                "terms": {
                    "field": spec["field"],
                    "size": _int(spec.get("size"), DEFAULT_SIZE),
                    "order": {order_by: spec.get("order", default_order)},
                }
            }
        },
    }


def annotation_body(
    annotation: Mapping[str, Any],
    *,
    time_field: str,
    time_from_ms: int,
    time_to_ms: int,
    variables: Mapping[str, VariableValue] | None = None,
) -> dict[str, Any]:
    """The `_search` body of an Elasticsearch annotation query: events whose start or end
    falls in the time range, matching the Lucene query."""
    start = annotation.get("timeField") or time_field
    ranges = [_time_filter(start, time_from_ms, time_to_ms)]
    if annotation.get("timeEndField"):
        ranges.append(_time_filter(annotation["timeEndField"], time_from_ms, time_to_ms))
    target = annotation.get("target") or {}
    query = interpolate(target.get("query") or annotation.get("query") or "", variables)
    filters: list[dict[str, Any]] = [{"bool": {"should": ranges, "minimum_should_match": 1}}]
    if query.strip():
        filters.append({"query_string": {"query": query}})
    return {"query": {"bool": {"filter": filters}}, "size": _int(target.get("limit"), 10000)}


def rows(response: Mapping[str, Any], target: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Flatten a metric response into one row per leaf bucket: the bucket keys by bucket
    field (date histograms as `time`), `doc_count`, and each metric's value by id."""
    buckets = list(target.get("bucketAggs") or [])

    def walk(aggs: Mapping[str, Any], depth: int, labels: dict[str, Any]) -> Iterator[dict]:
        spec = buckets[depth]
        raw = aggs[spec["id"]]["buckets"]
        items = raw.items() if isinstance(raw, Mapping) else ((b["key"], b) for b in raw)
        for key, bucket in items:
            name = "time" if spec["type"] == "date_histogram" else spec.get("field", spec["id"])
            here = {**labels, name: key}
            if depth + 1 < len(buckets):
                yield from walk(bucket, depth + 1, here)
                continue
            row = {**here, "doc_count": bucket["doc_count"]}
            for metric in target.get("metrics") or []:
                if metric["id"] in bucket:
                    value = bucket[metric["id"]]
                    row[metric["id"]] = value.get("values", value.get("value"))
            yield row

    yield from walk(response["aggregations"], 0, {})
