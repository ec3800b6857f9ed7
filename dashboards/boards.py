"""The dashboards, built with grafana-foundation-sdk: "Market sentiment", "Pipeline health" and
"Alerts". Each function returns the dashboard JSON as plain data.

Panels come from a few helpers (`_timeseries`, `_table`, `_panel`) that give every panel of a
kind the same legend, tooltip and stacking, so a board reads as its list of panels."""

from __future__ import annotations

import json
from typing import Any, Literal, TypeVar

from grafana_foundation_sdk.builders import bargauge, common, piechart, table, timeseries
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders.elasticsearch import Dataquery
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models.elasticsearch import TermsOrder

from finsentry.alerts.rules import NegativeShareRule
from finsentry.dashboards.config import (
    ALERTS_DS_UID,
    ALERTS_TIME_FIELD,
    ALERTS_UID,
    DEAD_LETTERS_DS_UID,
    DEAD_LETTERS_TIME_FIELD,
    DRIFT_DS_UID,
    DRIFT_TIME_FIELD,
    ITEMS_DS_UID,
    ITEMS_TIME_FIELD,
    MARKET_UID,
    PIPELINE_UID,
    VERDICTS_DS_UID,
    GrafanaConfig,
)
from finsentry.dashboards.queries import (
    avg,
    count,
    ds_ref,
    histogram,
    math,
    max_,
    percentiles,
    raw_data,
    reduce_sum,
    target,
    terms,
    to_plain,
)
from finsentry.drift.measure import MEASURES
from finsentry.settings import Settings

TICKER_VAR = "ticker"
# With "All" selected the variable becomes `*`, so `tickers:$ticker` matches every item that
# has a ticker; a selection becomes ("AAPL" OR "MSFT").
TICKER_FILTER = f"tickers:${TICKER_VAR}"
# Per-ticker panels read the per-company verdicts (index/company_verdicts.py): one document
# per company of an item with that company's own sentiment, so "Macy's up, Palo Alto down"
# counts bullish for M and bearish for PANW.
VERDICT_FILTER = f"ticker:${TICKER_VAR}"
BEARISH_VERDICTS = f"sentiment:bearish AND {VERDICT_FILTER}"
BULLISH_VERDICTS = f"sentiment:bullish AND {VERDICT_FILTER}"
SENTIMENT_COLORS = {"bearish": "red", "neutral": "yellow", "bullish": "green"}

WATCHLIST_VAR = "watchlist"
# Alerts of the selected watchlists; with "All", every alert that has a watchlist.
WATCHLIST_FILTER = f"watchlist:${WATCHLIST_VAR}"

# The time field of each datasource's index.
TIME_FIELDS = {
    ITEMS_DS_UID: ITEMS_TIME_FIELD,
    VERDICTS_DS_UID: ITEMS_TIME_FIELD,
    ALERTS_DS_UID: ALERTS_TIME_FIELD,
    DEAD_LETTERS_DS_UID: DEAD_LETTERS_TIME_FIELD,
    DRIFT_DS_UID: DRIFT_TIME_FIELD,
}

Panel = TypeVar("Panel", timeseries.Panel, table.Panel, bargauge.Panel, piechart.Panel)
Override = tuple[str, list[dm.DynamicConfigValue]]


def dashboard_thresholds(steps: list[tuple[float | None, str]]) -> db.ThresholdsConfig:
    return (
        db.ThresholdsConfig()
        .mode(dm.ThresholdsMode.ABSOLUTE)
        .steps([dm.Threshold(value=value, color=color) for value, color in steps])
    )


def _grid(h: int, w: int, x: int, y: int) -> dm.GridPos:
    return dm.GridPos(h=h, w=w, x=x, y=y)


def _legend() -> common.VizLegendOptions:
    return (
        common.VizLegendOptions()
        .show_legend(True)
        .display_mode(cm.LegendDisplayMode.LIST)
        .placement(cm.LegendPlacement.BOTTOM)
    )


def _tooltip() -> common.VizTooltipOptions:
    return common.VizTooltipOptions().mode(cm.TooltipDisplayMode.MULTI).sort(cm.SortOrder.NONE)


def _each_count() -> common.ReduceDataOptions:
    """One value per row of the `Count` column (terms buckets), not one per series."""
    return common.ReduceDataOptions().values(True).calcs([]).fields("/^Count$/")


def _fixed_color(name: str, color: str) -> Override:
    value = {"mode": "fixed", "fixedColor": color}
    return name, [dm.DynamicConfigValue(id_val="color", value=value)]


def _date_column(name: str, display_name: str) -> Override:
    """Column `name` (epoch milliseconds) as an ISO date under `display_name`."""
    return name, [
        dm.DynamicConfigValue(id_val="unit", value="dateTimeAsIso"),
        dm.DynamicConfigValue(id_val="displayName", value=display_name),
    ]


def _query(
    datasource: str, query: str, metrics: list[Any], buckets: list[Any], ref: str = "A"
) -> Dataquery:
    """A query on one of the Elasticsearch datasources, over its index's time field."""
    return target(
        ref,
        datasource=datasource,
        time_field=TIME_FIELDS[datasource],
        query=query,
        metrics=metrics,
        buckets=buckets,
    )


def _organize(show: list[str], rename: dict[str, str] | None = None) -> dm.DataTransformerConfig:
    """Keep and order the `show` columns of a raw-data table; hide the rest."""
    return dm.DataTransformerConfig(
        id_val="organize",
        options={
            "indexByName": {name: i for i, name in enumerate(show)},
            "renameByName": rename or {},
            "excludeByName": {},
            "includeByName": dict.fromkeys(show, True),
        },
    )


def _panel(
    panel: Panel,
    title: str,
    description: str,
    datasource: str,
    targets: list[Any],
    grid: dm.GridPos,
) -> Panel:
    """What every panel has: a title, a description (none when empty), its datasource and
    queries, and its place on the grid."""
    panel = panel.title(title).datasource(ds_ref(datasource)).targets(targets).grid_pos(grid)
    return panel.description(description) if description else panel


def _timeseries(
    title: str,
    description: str,
    datasource: str,
    targets: list[Any],
    grid: dm.GridPos,
    stack: Literal["bars", "areas"] | None = None,
) -> timeseries.Panel:
    """A time series panel with the boards' legend and tooltip; `stack` stacks the series as
    bars (counts per interval) or as filled areas."""
    panel = _panel(timeseries.Panel(), title, description, datasource, targets, grid)
    panel = panel.legend(_legend()).tooltip(_tooltip())
    if stack is None:
        return panel
    panel = panel.stacking(common.StackingConfig().mode(cm.StackingMode.NORMAL))
    if stack == "bars":
        return panel.draw_style(cm.GraphDrawStyle.BARS).fill_opacity(80)
    return panel.fill_opacity(40)


def _stacked_counts(
    title: str,
    description: str,
    datasource: str,
    query: str,
    split: Any,
    grid: dm.GridPos,
    stack: Literal["bars", "areas"],
    time_field: str | None = None,
) -> timeseries.Panel:
    """Documents matching `query` per interval of `time_field` (default: the index's time
    field), one stacked series per bucket of `split` (a terms aggregation)."""
    per_interval = histogram("3", time_field or TIME_FIELDS[datasource])
    counts = _query(datasource, query, [count("1")], [split, per_interval])
    return _timeseries(title, description, datasource, [counts], grid, stack)


def _table(
    title: str,
    description: str,
    datasource: str,
    targets: list[Any],
    grid: dm.GridPos,
    columns: list[str] | None = None,
) -> table.Panel:
    """A table with a header row; `columns` keeps only those columns of a raw-data query,
    in that order."""
    panel = _panel(table.Panel().show_header(True), title, description, datasource, targets, grid)
    return panel.with_transformation(_organize(columns)) if columns else panel


def _multi_select(
    name: str, label: str, datasource: str, field: str, size: int
) -> db.QueryVariable:
    """A variable over the values of `field`: any of them, or "All" (which becomes `*`)."""
    return (
        db.QueryVariable(name)
        .label(label)
        .datasource(ds_ref(datasource))
        .query(json.dumps({"find": "terms", "field": field, "size": size}))
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dm.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value("*")
        .current(dm.VariableOption(selected=True, text="All", value="$__all"))
    )


def _ticker_variable() -> db.QueryVariable:
    return _multi_select(TICKER_VAR, "Ticker", ITEMS_DS_UID, "tickers", 500)


def _alert_annotations() -> db.AnnotationQuery:
    return (
        db.AnnotationQuery()
        .name("Sentiment alerts")
        .datasource(ds_ref(ALERTS_DS_UID))
        .enable(True)
        .icon_color("red")
    )


def _alert_annotation_fields(query: str, limit: int) -> dict[str, Any]:
    """Elasticsearch annotation settings the SDK has no builder for (Grafana reads them from
    the annotation object itself): the alerts matching `query`, over their windows."""
    return {
        "target": {"refId": "Anno", "query": query, "limit": limit},
        "timeField": "window_start",
        "timeEndField": "window_end",
        "textField": "summary",
        "tagsField": "tags",
    }


ALERT_ANNOTATION_QUERY = f"key_type:ticker AND key:${TICKER_VAR}"
ALERT_ANNOTATION_FIELDS = _alert_annotation_fields(ALERT_ANNOTATION_QUERY, 100)
# The alerts of the shown watchlists as annotations on the sentiment timeline.
WATCHLIST_ANNOTATION_FIELDS = _alert_annotation_fields(WATCHLIST_FILTER, 200)


def _dashboard(title: str, uid: str, description: str, since: str) -> db.Dashboard:
    """A finsentry dashboard showing `since` to now, refreshed every 30 s."""
    return (
        db.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["finsentry"])
        .editable()
        .timezone("browser")
        .time(since, "now")
        .refresh("30s")
    )


def _plain(
    board: db.Dashboard, panels: list[Any], alert_annotation: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The board with its panels as plain data; `alert_annotation` completes the alerts
    annotation (see `_alert_annotation_fields`)."""
    for panel in panels:
        board = board.with_panel(panel)
    data = to_plain(board.build())
    if alert_annotation:
        for annotation in data["annotations"]["list"]:
            if annotation.get("datasource", {}).get("uid") == ALERTS_DS_UID:
                annotation.update(alert_annotation)
    return data


def _net_sentiment(title: str, description: str, grid: dm.GridPos) -> timeseries.Panel:
    """(bullish - bearish) / total per interval over the chosen tickers' own verdicts;
    a server-side expression over hidden count queries."""
    per_interval = [histogram("2", ITEMS_TIME_FIELD)]
    queries = [
        _query(VERDICTS_DS_UID, BULLISH_VERDICTS, [count("1")], per_interval, "A").hide(True),
        _query(VERDICTS_DS_UID, BEARISH_VERDICTS, [count("1")], per_interval, "B").hide(True),
        _query(VERDICTS_DS_UID, VERDICT_FILTER, [count("1")], per_interval, "C").hide(True),
        math("D", "($A - $B) / $C"),
    ]
    return (
        _timeseries(title, description, VERDICTS_DS_UID, queries, grid)
        .display_name("net sentiment")
        .min(-1)
        .max(1)
        .decimals(2)
        .line_width(2)
        .span_nulls(True)
    )


def _negative_share(cfg: GrafanaConfig, grid: dm.GridPos) -> bargauge.Panel:
    """Bearish share of each ticker's verdicts, coloured by the negative-share alert rule's
    threshold (half of it: yellow)."""
    per_ticker = [terms("2", "ticker", size=20), histogram("3", ITEMS_TIME_FIELD)]
    share_rules = [r for r in cfg.rules.rules if isinstance(r, NegativeShareRule)]
    share_alert = share_rules[0].threshold if share_rules else 0.6
    queries = [
        _query(VERDICTS_DS_UID, BEARISH_VERDICTS, [count("1")], per_ticker, "A").hide(True),
        _query(VERDICTS_DS_UID, VERDICT_FILTER, [count("1")], per_ticker, "B").hide(True),
        reduce_sum("C", "A").hide(True),
        reduce_sum("D", "B").hide(True),
        math("E", "$C / $D"),
    ]
    return (
        _panel(
            bargauge.Panel(),
            "Negative share by ticker",
            "Share of each ticker's verdicts that are bearish (the 20 busiest tickers with any).",
            VERDICTS_DS_UID,
            queries,
            grid,
        )
        .display_name("${__field.labels.ticker}")
        .unit("percentunit")
        .min(0)
        .max(1)
        .orientation(cm.VizOrientation.HORIZONTAL)
        .display_mode(cm.BarGaugeDisplayMode.GRADIENT)
        .reduce_options(common.ReduceDataOptions().values(False).calcs(["lastNotNull"]))
        .thresholds(
            dashboard_thresholds(
                [(None, "green"), (share_alert / 2, "yellow"), (share_alert, "red")]
            )
        )
    )


def market_dashboard(cfg: GrafanaConfig) -> dict[str, Any]:
    by_sentiment = _stacked_counts(
        "Verdicts by sentiment",
        "Per-company verdicts per interval, stacked by sentiment: an item that names two "
        "companies counts once for each, with that company's own sentiment.",
        VERDICTS_DS_UID,
        VERDICT_FILTER,
        terms("2", "sentiment", size=3, order_by="_key", order=TermsOrder.ASC),
        _grid(9, 12, 0, 0),
        "bars",
    )
    for label, color in SENTIMENT_COLORS.items():
        by_sentiment = by_sentiment.override_by_name(*_fixed_color(label, color))

    topic_mix = (
        _panel(
            piechart.Panel(),
            "Topic mix",
            "Items per topic.",
            ITEMS_DS_UID,
            [_query(ITEMS_DS_UID, TICKER_FILTER, [count("1")], [terms("2", "topic", size=20)])],
            _grid(10, 12, 12, 9),
        )
        .pie_type("donut")
        .reduce_options(_each_count())
        .legend(
            piechart.PieChartLegendOptions()
            .show_legend(True)
            .display_mode(cm.LegendDisplayMode.TABLE)
            .placement(cm.LegendPlacement.RIGHT)
            .values(["value", "percent"])
        )
    )

    link = {"title": "Open item", "url": "${__data.fields.url}", "targetBlank": True}
    newest_negative = (
        _table(
            "Newest bearish verdicts",
            "The 50 newest items with a bearish verdict about a company, one row per company; "
            "click a title to open the item.",
            VERDICTS_DS_UID,
            [_query(VERDICTS_DS_UID, BEARISH_VERDICTS, [raw_data("1", 50)], [])],
            _grid(12, 24, 0, 19),
            columns=[ITEMS_TIME_FIELD, "ticker", "title", "source", "confidence", "url"],
        )
        .override_by_name("title", [dm.DynamicConfigValue(id_val="links", value=[link])])
        .override_by_name("url", [dm.DynamicConfigValue(id_val="custom.hidden", value=True)])
        .override_by_name("confidence", [dm.DynamicConfigValue(id_val="unit", value="percentunit")])
    )

    board = (
        _dashboard(
            "Market sentiment",
            MARKET_UID,
            "What the market says, by ticker and topic, from the finsentry stream.",
            "now-24h",
        )
        .with_variable(_ticker_variable())
        .annotation(_alert_annotations())
    )
    panels = [
        by_sentiment,
        _net_sentiment(
            "Net sentiment index",
            "(bullish - bearish) / total of the companies' own verdicts per interval, -1 to 1.",
            _grid(9, 12, 12, 0),
        ),
        _negative_share(cfg, _grid(10, 12, 0, 9)),
        topic_mix,
        newest_negative,
    ]
    return _plain(board, panels, ALERT_ANNOTATION_FIELDS)


def pipeline_dashboard(cfg: GrafanaConfig) -> dict[str, Any]:
    del cfg
    ingest = _timeseries(
        "Ingest rate",
        "Items per minute by the time they reached Kafka (ingested_at).",
        ITEMS_DS_UID,
        [
            _query(ITEMS_DS_UID, "*", [count("1")], [histogram("2", "ingested_at", "1m")]).alias(
                "items / min"
            )
        ],
        _grid(8, 12, 0, 0),
    ).unit("short")
    latency_metrics = [
        avg("1", "latency_ms"),
        percentiles("2", "latency_ms", ["50", "95", "99"]),
        max_("3", "latency_ms"),
    ]
    latency = _timeseries(
        "Scoring latency",
        "latency_ms: from ingested_at to scored_at.",
        ITEMS_DS_UID,
        [_query(ITEMS_DS_UID, "*", latency_metrics, [histogram("4", ITEMS_TIME_FIELD)])],
        _grid(8, 12, 12, 0),
    ).unit("ms")
    per_version = _stacked_counts(
        "Items per model version",
        "",
        ITEMS_DS_UID,
        "*",
        terms("2", "model_version", size=10),
        _grid(8, 12, 0, 8),
        "areas",
    )
    versions = _table(
        "Model versions",
        "Versions serving in the time range: items, mean latency, last seen.",
        ITEMS_DS_UID,
        [
            _query(
                ITEMS_DS_UID,
                "*",
                [count("1"), avg("2", "latency_ms"), max_("3", ITEMS_TIME_FIELD)],
                [terms("4", "model_version", size=10, order_by="3")],
            )
        ],
        _grid(8, 12, 12, 8),
    ).override_by_name(*_date_column(f"Max {ITEMS_TIME_FIELD}", "Last seen"))
    dead_letters = _stacked_counts(
        "Dead letters by error",
        "Raw messages that could not be scored, per interval, by error kind.",
        DEAD_LETTERS_DS_UID,
        "*",
        terms("2", "error", size=10),
        _grid(8, 12, 0, 16),
        "bars",
    )
    newest_dead = _table(
        "Newest dead letters",
        "",
        DEAD_LETTERS_DS_UID,
        [_query(DEAD_LETTERS_DS_UID, "*", [raw_data("1", 50)], [])],
        _grid(8, 12, 12, 16),
        columns=[
            DEAD_LETTERS_TIME_FIELD,
            "error",
            "reason",
            "source_topic",
            "partition",
            "offset",
        ],
    )
    board = _dashboard(
        "Pipeline health",
        PIPELINE_UID,
        "Is finsentry keeping up: throughput, latency, models, dead letters.",
        "now-6h",
    )
    panels = [ingest, latency, per_version, versions, dead_letters, newest_dead]
    return _plain(board, [*panels, *source_health_panels(y=24), drift_panel(y=32)])


def drift_panel(y: int) -> timeseries.Panel:
    """The drift watcher's hourly population stability index per measure (drift/), with
    the default threshold (FINSENTRY_DRIFT_THRESHOLD) as a line."""
    threshold = float(Settings.model_fields["drift_threshold"].default)
    metrics = [max_(str(i), f"psi_{m}") for i, m in enumerate(MEASURES, start=1)]
    hourly = [histogram(str(len(metrics) + 1), DRIFT_TIME_FIELD, "1h")]
    return (
        _timeseries(
            "Drift vs training data (PSI per hour)",
            "Population stability index of each hour's predicted sentiment and topic mix, "
            "confidence, text length and unknown-word share against the live model's "
            "training data (`finsentry drift`). 0.1-0.25: moderate; above the line: drifted.",
            DRIFT_DS_UID,
            [_query(DRIFT_DS_UID, "*", metrics, hourly)],
            _grid(8, 24, 0, y),
        )
        .thresholds(dashboard_thresholds([(None, "green"), (threshold, "red")]))
        .thresholds_style(
            common.GraphThresholdsStyleConfig().mode(cm.GraphTresholdsStyleMode.DASHED)
        )
    )


def source_health_panels(y: int) -> list[Any]:
    """Pipeline health rows for the sources stage (sources/): items per source over time and
    each source's volume and last item. Poll status and errors per source are Prometheus
    metrics of the runner (`finsentry_source_*`) and `finsentry sources health`."""
    per_source = _stacked_counts(
        "Items by source",
        "Items per interval by NewsItem.source (feeds, filings, APIs, push).",
        ITEMS_DS_UID,
        "*",
        terms("2", "source", size=20),
        _grid(8, 12, 0, y),
        "areas",
        time_field="ingested_at",
    )
    sources = _table(
        "Sources",
        "Items per source in the time range and when its newest item arrived.",
        ITEMS_DS_UID,
        [
            _query(
                ITEMS_DS_UID,
                "*",
                [count("1"), max_("2", "ingested_at")],
                [terms("3", "source", size=50, order_by="2")],
            )
        ],
        _grid(8, 12, 12, y),
    ).override_by_name(*_date_column("Max ingested_at", "Newest item"))
    return [per_source, sources]


def alerts_dashboard(cfg: GrafanaConfig) -> dict[str, Any]:
    """Alerts per watchlist and company, what tripped, the newest alerts, and the net
    sentiment of the alerted companies with the alerts as annotations."""
    del cfg
    per_watchlist = _stacked_counts(
        "Alerts per watchlist",
        "Alerts per interval (by window end), stacked by watchlist.",
        ALERTS_DS_UID,
        WATCHLIST_FILTER,
        terms("2", "watchlist", size=20),
        _grid(8, 12, 0, 0),
        "bars",
    )
    per_company = (
        _panel(
            bargauge.Panel(),
            "Alerts per company",
            "Alerts in the time range per ticker (the 20 most alerted).",
            ALERTS_DS_UID,
            [
                _query(
                    ALERTS_DS_UID,
                    f"key_type:ticker AND {WATCHLIST_FILTER}",
                    [count("1")],
                    [terms("2", "key", size=20)],
                )
            ],
            _grid(8, 6, 12, 0),
        )
        .orientation(cm.VizOrientation.HORIZONTAL)
        .display_mode(cm.BarGaugeDisplayMode.GRADIENT)
        .reduce_options(_each_count())
    )
    per_rule = (
        _panel(
            piechart.Panel(),
            "Alerts per rule",
            "",
            ALERTS_DS_UID,
            [_query(ALERTS_DS_UID, WATCHLIST_FILTER, [count("1")], [terms("2", "rule", size=10)])],
            _grid(8, 6, 18, 0),
        )
        .pie_type("donut")
        .reduce_options(_each_count())
    )
    newest = _table(
        "Newest alerts",
        "The 100 newest alerts of the shown watchlists; acknowledge with the API.",
        ALERTS_DS_UID,
        [_query(ALERTS_DS_UID, WATCHLIST_FILTER, [raw_data("1", 100)], [])],
        _grid(10, 24, 0, 8),
        columns=[
            ALERTS_TIME_FIELD,
            "watchlist",
            "key",
            "company",
            "rule",
            "summary",
            "delivered",
            "acknowledged",
        ],
    )
    sentiment = _net_sentiment(
        "Net sentiment of alerted companies",
        "(bullish - bearish) / total of the chosen tickers' own verdicts per interval, with "
        "the watchlist alerts as annotations.",
        _grid(9, 24, 0, 18),
    )
    board = (
        _dashboard(
            "Alerts",
            ALERTS_UID,
            "What finsentry alerted on, per watchlist and company.",
            "now-24h",
        )
        .with_variable(_multi_select(WATCHLIST_VAR, "Watchlist", ALERTS_DS_UID, "watchlist", 200))
        .with_variable(_ticker_variable())
        .annotation(_alert_annotations())
    )
    panels = [per_watchlist, per_company, per_rule, newest, sentiment]
    return _plain(board, panels, WATCHLIST_ANNOTATION_FIELDS)
