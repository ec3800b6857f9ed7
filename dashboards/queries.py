"""Small helpers over grafana-foundation-sdk's Elasticsearch and expression builders.

Ratios (net sentiment, negative share) are server-side expressions over count queries, not
Elasticsearch scripts: they need no scripting module and read the same as the alert rules."""

from __future__ import annotations

import json
from typing import Any

from grafana_foundation_sdk.builders import elasticsearch as es
from grafana_foundation_sdk.builders import expr
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models.elasticsearch import TermsOrder

from finsentry.dashboards.config import ES_TYPE


def to_plain(obj: Any) -> Any:
    """An SDK object as plain JSON data (dicts, lists, str, numbers)."""
    return json.loads(json.dumps(obj, cls=JSONEncoder))


def ds_ref(uid: str) -> dm.DataSourceRef:
    return dm.DataSourceRef(type_val=ES_TYPE, uid=uid)


EXPR = dm.DataSourceRef(type_val="__expr__", uid="__expr__")


def math(ref_id: str, expression: str) -> expr.TypeMath:
    """A server-side expression: arithmetic over other queries ($A, $B) per label set."""
    return expr.TypeMath().ref_id(ref_id).datasource(EXPR).expression(expression)


def reduce_sum(ref_id: str, of: str) -> expr.TypeReduce:
    """A server-side expression: each series of `of` summed to one number."""
    return (
        expr.TypeReduce()
        .ref_id(ref_id)
        .datasource(EXPR)
        .expression(of)
        .reducer("sum")
        .settings(expr.ExprTypeReduceSettings().mode("dropNN"))
    )


def target(
    ref_id: str,
    *,
    datasource: str,
    time_field: str,
    query: str,
    metrics: list[Any],
    buckets: list[Any] | None = None,
    alias: str | None = None,
) -> es.Dataquery:
    built = (
        es.Dataquery()
        .ref_id(ref_id)
        .datasource(ds_ref(datasource))
        .time_field(time_field)
        .query(query)
        .metrics(metrics)
        .bucket_aggs(buckets or [])
    )
    return built.alias(alias) if alias else built


def count(id_: str = "1") -> es.Count:
    return es.Count().id(id_)


def avg(id_: str, field: str) -> es.Average:
    return es.Average().id(id_).field(field)


def sum_(id_: str, field: str) -> es.Sum:
    return es.Sum().id(id_).field(field)


def max_(id_: str, field: str) -> es.Max:
    return es.Max().id(id_).field(field)


def percentiles(id_: str, field: str, percents: list[str]) -> es.Percentiles:
    return (
        es.Percentiles()
        .id(id_)
        .field(field)
        .settings(es.ElasticsearchPercentilesSettings().percents(percents))
    )


def raw_data(id_: str, size: int) -> es.RawData:
    return es.RawData().id(id_).settings(es.ElasticsearchRawDataSettings().size(str(size)))


def terms(
    id_: str,
    field: str,
    *,
    size: int = 10,
    order_by: str = "_count",
    order: TermsOrder = TermsOrder.DESC,
    min_doc_count: int = 1,
) -> es.Terms:
    settings = (
        es.ElasticsearchTermsSettings()
        .size(str(size))
        .order(order)
        .order_by(order_by)
        .min_doc_count(str(min_doc_count))
    )
    return es.Terms().id(id_).field(field).settings(settings)


def histogram(id_: str, field: str, interval: str = "auto") -> es.DateHistogram:
    settings = es.ElasticsearchDateHistogramSettings().interval(interval).min_doc_count("0")
    return es.DateHistogram().id(id_).field(field).settings(settings)
