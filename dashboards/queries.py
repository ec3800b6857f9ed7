"""Small helpers over grafana-foundation-sdk's Elasticsearch query builders."""

from __future__ import annotations

import json
from typing import Any

from grafana_foundation_sdk.builders import elasticsearch as es
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models.elasticsearch import TermsOrder

from finsentry.dashboards.config import ES_TYPE

# Painless on the `sentiment` keyword. The mean of +1 (bullish) / -1 (bearish) / 0 over a
# bucket is the net sentiment index (bullish - bearish) / total; the mean of the bearish
# indicator is the negative share.
NET_SENTIMENT_SCRIPT = (
    "doc['sentiment'].size() == 0 ? 0 : "
    "(doc['sentiment'].value == 'bullish' ? 1 : (doc['sentiment'].value == 'bearish' ? -1 : 0))"
)
NEGATIVE_SCRIPT = "doc['sentiment'].size() != 0 && doc['sentiment'].value == 'bearish' ? 1 : 0"


def to_plain(obj: Any) -> Any:
    """An SDK object as plain JSON data (dicts, lists, str, numbers)."""
    return json.loads(json.dumps(obj, cls=JSONEncoder))


def ds_ref(uid: str) -> dm.DataSourceRef:
    return dm.DataSourceRef(type_val=ES_TYPE, uid=uid)


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


def avg_script(id_: str, script: str) -> es.Average:
    settings = es.ElasticsearchAverageSettings().script(
        es.ElasticsearchInlineScript().inline(script)
    )
    return es.Average().id(id_).settings(settings)


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
