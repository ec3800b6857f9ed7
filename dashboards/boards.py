"""The two dashboards, built with grafana-foundation-sdk: "Market sentiment" and
"Pipeline health". Each function returns the dashboard JSON as plain data."""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.builders import bargauge, common, piechart, table, timeseries
from grafana_foundation_sdk.builders import dashboard as db
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


def _fixed_color(name: str, color: str) -> tuple[str, list[dm.DynamicConfigValue]]:
    value = {"mode": "fixed", "fixedColor": color}
    return name, [dm.DynamicConfigValue(id_val="color", value=value)]


def _items(ref: str, query: str, metrics: list[Any], buckets: list[Any]) -> Any:
    return target(
        ref,
        datasource=ITEMS_DS_UID,
        time_field=ITEMS_TIME_FIELD,
        query=query,
        metrics=metrics,
        buckets=buckets,
    )


def _verdicts(ref: str, query: str, metrics: list[Any], buckets: list[Any]) -> Any:
    return target(
        ref,
        datasource=VERDICTS_DS_UID,
        time_field=ITEMS_TIME_FIELD,
        query=query,
        metrics=metrics,
        buckets=buckets,
    )


def _net_sentiment(title: str, description: str, grid: dm.GridPos) -> timeseries.Panel:
    """(bullish - bearish) / total per interval over the chosen tickers' own verdicts;
    a server-side expression over hidden count queries."""
    per_interval = [histogram("2", ITEMS_TIME_FIELD)]
    return (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(ds_ref(VERDICTS_DS_UID))
        .targets(
            [
                _verdicts("A", BULLISH_VERDICTS, [count("1")], per_interval).hide(True),
                _verdicts("B", BEARISH_VERDICTS, [count("1")], per_interval).hide(True),
                _verdicts("C", VERDICT_FILTER, [count("1")], per_interval).hide(True),
                math("D", "($A - $B) / $C"),
            ]
        )
        .display_name("net sentiment")
        .min(-1)
        .max(1)
        .decimals(2)
        .line_width(2)
        .span_nulls(True)
        .legend(_legend())
        .tooltip(_tooltip())
        .grid_pos(grid)
    )


def _dead_letters(ref: str, query: str, metrics: list[Any], buckets: list[Any]) -> Any:
    return target(
        ref,
        datasource=DEAD_LETTERS_DS_UID,
        time_field=DEAD_LETTERS_TIME_FIELD,
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


def _ticker_variable() -> db.QueryVariable:
    return (
        db.QueryVariable(TICKER_VAR)
        .label("Ticker")
        .datasource(ds_ref(ITEMS_DS_UID))
        .query('{"find": "terms", "field": "tickers", "size": 500}')
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dm.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value("*")
        .current(dm.VariableOption(selected=True, text="All", value="$__all"))
    )


def _alert_annotations() -> db.AnnotationQuery:
    return (
        db.AnnotationQuery()
        .name("Sentiment alerts")
        .datasource(ds_ref(ALERTS_DS_UID))
        .enable(True)
        .icon_color("red")
    )


# Elasticsearch annotation settings the SDK has no builder for (Grafana reads them from the
# annotation object itself).
ALERT_ANNOTATION_QUERY = f"key_type:ticker AND key:${TICKER_VAR}"
ALERT_ANNOTATION_FIELDS: dict[str, Any] = {
    "target": {"refId": "Anno", "query": ALERT_ANNOTATION_QUERY, "limit": 100},
    "timeField": "window_start",
    "timeEndField": "window_end",
    "textField": "summary",
    "tagsField": "tags",
}


def market_dashboard(cfg: GrafanaConfig) -> dict[str, Any]:
    by_sentiment = (
        timeseries.Panel()
        .title("Verdicts by sentiment")
        .description(
            "Per-company verdicts per interval, stacked by sentiment: an item that names two "
            "companies counts once for each, with that company's own sentiment."
        )
        .datasource(ds_ref(VERDICTS_DS_UID))
        .with_target(
            _verdicts(
                "A",
                VERDICT_FILTER,
                [count("1")],
                [
                    terms("2", "sentiment", size=3, order_by="_key", order=TermsOrder.ASC),
                    histogram("3", ITEMS_TIME_FIELD),
                ],
            )
        )
        .stacking(common.StackingConfig().mode(cm.StackingMode.NORMAL))
        .draw_style(cm.GraphDrawStyle.BARS)
        .fill_opacity(80)
        .legend(_legend())
        .tooltip(_tooltip())
        .grid_pos(_grid(9, 12, 0, 0))
    )
    for label, color in SENTIMENT_COLORS.items():
        by_sentiment = by_sentiment.override_by_name(*_fixed_color(label, color))

    net_index = _net_sentiment(
        "Net sentiment index",
        "(bullish - bearish) / total of the companies' own verdicts per interval, -1 to 1.",
        _grid(9, 12, 12, 0),
    )

    per_ticker = [terms("2", "ticker", size=20), histogram("3", ITEMS_TIME_FIELD)]
    share_rules = [r for r in cfg.rules.rules if isinstance(r, NegativeShareRule)]
    share_alert = share_rules[0].threshold if share_rules else 0.6
    negative_share = (
        bargauge.Panel()
        .title("Negative share by ticker")
        .description(
            "Share of each ticker's verdicts that are bearish (the 20 busiest tickers with any)."
        )
        .datasource(ds_ref(VERDICTS_DS_UID))
        .targets(
            [
                _verdicts("A", BEARISH_VERDICTS, [count("1")], per_ticker).hide(True),
                _verdicts("B", VERDICT_FILTER, [count("1")], per_ticker).hide(True),
                reduce_sum("C", "A").hide(True),
                reduce_sum("D", "B").hide(True),
                math("E", "$C / $D"),
            ]
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
        .grid_pos(_grid(10, 12, 0, 9))
    )

    topic_mix = (
        piechart.Panel()
        .title("Topic mix")
        .description("Items per topic.")
        .datasource(ds_ref(ITEMS_DS_UID))
        .with_target(_items("A", TICKER_FILTER, [count("1")], [terms("2", "topic", size=20)]))
        .pie_type("donut")
        .reduce_options(common.ReduceDataOptions().values(True).calcs([]).fields("/^Count$/"))
        .legend(
            piechart.PieChartLegendOptions()
            .show_legend(True)
            .display_mode(cm.LegendDisplayMode.TABLE)
            .placement(cm.LegendPlacement.RIGHT)
            .values(["value", "percent"])
        )
        .grid_pos(_grid(10, 12, 12, 9))
    )

    link = {"title": "Open item", "url": "${__data.fields.url}", "targetBlank": True}
    newest_negative = (
        table.Panel()
        .show_header(True)
        .title("Newest bearish verdicts")
        .description(
            "The 50 newest items with a bearish verdict about a company, one row per company; "
            "click a title to open the item."
        )
        .datasource(ds_ref(VERDICTS_DS_UID))
        .with_target(_verdicts("A", BEARISH_VERDICTS, [raw_data("1", 50)], []))
        .with_transformation(
            _organize([ITEMS_TIME_FIELD, "ticker", "title", "source", "confidence", "url"])
        )
        .override_by_name("title", [dm.DynamicConfigValue(id_val="links", value=[link])])
        .override_by_name("url", [dm.DynamicConfigValue(id_val="custom.hidden", value=True)])
        .override_by_name("confidence", [dm.DynamicConfigValue(id_val="unit", value="percentunit")])
        .grid_pos(_grid(12, 24, 0, 19))
    )

    board = (
        db.Dashboard("Market sentiment")
        .uid(MARKET_UID)
        .description("What the market says, by ticker and topic, from the finsentry stream.")
        .tags(["finsentry"])
        .editable()
        .timezone("browser")
        .time("now-24h", "now")
        .refresh("30s")
        .with_variable(_ticker_variable())
        .annotation(_alert_annotations())
        .with_panel(by_sentiment)
        .with_panel(net_index)
        .with_panel(negative_share)
        .with_panel(topic_mix)
        .with_panel(newest_negative)
    )
    data = to_plain(board.build())
    for annotation in data["annotations"]["list"]:
        if annotation.get("datasource", {}).get("uid") == ALERTS_DS_UID:
            annotation.update(ALERT_ANNOTATION_FIELDS)
    return data


def pipeline_dashboard(cfg: GrafanaConfig) -> dict[str, Any]:
    del cfg
    ingest = (
        timeseries.Panel()
        .title("Ingest rate")
        .description("Items per minute by the time they reached Kafka (ingested_at).")
        .datasource(ds_ref(ITEMS_DS_UID))
        .with_target(
            _items("A", "*", [count("1")], [histogram("2", "ingested_at", "1m")]).alias(
                "items / min"
            )
        )
        .unit("short")
        .legend(_legend())
        .tooltip(_tooltip())
        .grid_pos(_grid(8, 12, 0, 0))
    )
    latency = (
        timeseries.Panel()
        .title("Scoring latency")
        .description("latency_ms: from ingested_at to scored_at.")
        .datasource(ds_ref(ITEMS_DS_UID))
        .with_target(
            _items(
                "A",
                "*",
                [
                    avg("1", "latency_ms"),
                    percentiles("2", "latency_ms", ["50", "95", "99"]),
                    max_("3", "latency_ms"),
                ],
                [histogram("4", ITEMS_TIME_FIELD)],
            )
        )
        .unit("ms")
        .legend(_legend())
        .tooltip(_tooltip())
        .grid_pos(_grid(8, 12, 12, 0))
    )
    per_version = (
        timeseries.Panel()
        .title("Items per model version")
        .datasource(ds_ref(ITEMS_DS_UID))
        .with_target(
            _items(
                "A",
                "*",
                [count("1")],
                [terms("2", "model_version", size=10), histogram("3", ITEMS_TIME_FIELD)],
            )
        )
        .stacking(common.StackingConfig().mode(cm.StackingMode.NORMAL))
        .fill_opacity(40)
        .legend(_legend())
        .tooltip(_tooltip())
        .grid_pos(_grid(8, 12, 0, 8))
    )
    versions = (
        table.Panel()
        .show_header(True)
        .title("Model versions")
        .description("Versions serving in the time range: items, mean latency, last seen.")
        .datasource(ds_ref(ITEMS_DS_UID))
        .with_target(
            _items(
                "A",
                "*",
                [count("1"), avg("2", "latency_ms"), max_("3", ITEMS_TIME_FIELD)],
                [terms("4", "model_version", size=10, order_by="3")],
            )
        )
        .override_by_name(
            f"Max {ITEMS_TIME_FIELD}",
            [
                dm.DynamicConfigValue(id_val="unit", value="dateTimeAsIso"),
                dm.DynamicConfigValue(id_val="displayName", value="Last seen"),
            ],
        )
        .grid_pos(_grid(8, 12, 12, 8))
    )
    dead_letters = (
        timeseries.Panel()
        .title("Dead letters by error")
        .description("Raw messages that could not be scored, per interval, by error kind.")
        .datasource(ds_ref(DEAD_LETTERS_DS_UID))
        .with_target(
            _dead_letters(
                "A",
                "*",
                [count("1")],
                [terms("2", "error", size=10), histogram("3", DEAD_LETTERS_TIME_FIELD)],
            )
        )
        .draw_style(cm.GraphDrawStyle.BARS)
        .stacking(common.StackingConfig().mode(cm.StackingMode.NORMAL))
        .fill_opacity(80)
        .legend(_legend())
        .tooltip(_tooltip())
        .grid_pos(_grid(8, 12, 0, 16))
    )
    newest_dead = (
        table.Panel()
        .show_header(True)
        .title("Newest dead letters")
        .datasource(ds_ref(DEAD_LETTERS_DS_UID))
        .with_target(_dead_letters("A", "*", [raw_data("1", 50)], []))
        .with_transformation(
            _organize(
                [DEAD_LETTERS_TIME_FIELD, "error", "reason", "source_topic", "partition", "offset"]
            )
        )
        .grid_pos(_grid(8, 12, 12, 16))
    )
    board = (
        db.Dashboard("Pipeline health")
        .uid(PIPELINE_UID)
        .description("Is finsentry keeping up: throughput, latency, models, dead letters.")
        .tags(["finsentry"])
        .editable()
        .timezone("browser")
        .time("now-6h", "now")
        .refresh("30s")
        .with_panel(ingest)
        .with_panel(latency)
        .with_panel(per_version)
        .with_panel(versions)
        .with_panel(dead_letters)
        .with_panel(newest_dead)
    )
    for panel in source_health_panels(y=24):
        board = board.with_panel(panel)
    board = board.with_panel(drift_panel(y=32))
    return to_plain(board.build())


def drift_panel(y: int) -> Any:
    """The drift watcher's hourly population stability index per measure (drift/), with
    the default threshold (FINSENTRY_DRIFT_THRESHOLD) as a line."""
    threshold = float(Settings.model_fields["drift_threshold"].default)
    metrics = [max_(str(i), f"psi_{m}") for i, m in enumerate(MEASURES, start=1)]
    query = target(
        "A",
        datasource=DRIFT_DS_UID,
        time_field=DRIFT_TIME_FIELD,
        query="*",
        metrics=metrics,
        buckets=[histogram(str(len(metrics) + 1), DRIFT_TIME_FIELD, "1h")],
    )
    return (
        timeseries.Panel()
        .title("Drift vs training data (PSI per hour)")
        .description(
            "Population stability index of each hour's predicted sentiment and topic mix, "
            "confidence, text length and unknown-word share against the live model's "
            "training data (`finsentry drift`). 0.1-0.25: moderate; above the line: drifted."
        )
        .datasource(ds_ref(DRIFT_DS_UID))
        .with_target(query)
        .thresholds(dashboard_thresholds([(None, "green"), (threshold, "red")]))
        .thresholds_style(
            common.GraphThresholdsStyleConfig().mode(cm.GraphTresholdsStyleMode.DASHED)
        )
        .legend(_legend())
        .tooltip(_tooltip())
        .grid_pos(_grid(8, 24, 0, y))
    )


def source_health_panels(y: int) -> list[Any]:
    """Pipeline health rows for the sources stage (sources/): items per source over time and
    each source's volume and last item. Poll status and errors per source are Prometheus
    metrics of the runner (`finsentry_source_*`) and `finsentry sources health`."""
    per_source = (
        timeseries.Panel()
        .title("Items by source")
        .description("Items per interval by NewsItem.source (feeds, filings, APIs, push).")
        .datasource(ds_ref(ITEMS_DS_UID))
        .with_target(
            _items(
                "A",
                "*",
                [count("1")],
                [terms("2", "source", size=20), histogram("3", "ingested_at")],
            )
        )
        .stacking(common.StackingConfig().mode(cm.StackingMode.NORMAL))
        .fill_opacity(40)
        .legend(_legend())
        .tooltip(_tooltip())
        .grid_pos(_grid(8, 12, 0, y))
    )
    sources = (
        table.Panel()
        .show_header(True)
        .title("Sources")
        .description("Items per source in the time range and when its newest item arrived.")
        .datasource(ds_ref(ITEMS_DS_UID))
        .with_target(
            _items(
                "A",
                "*",
                [count("1"), max_("2", "ingested_at")],
                [terms("3", "source", size=50, order_by="2")],
            )
        )
        .override_by_name(
            "Max ingested_at",
            [
                dm.DynamicConfigValue(id_val="unit", value="dateTimeAsIso"),
                dm.DynamicConfigValue(id_val="displayName", value="Newest item"),
            ],
        )
        .grid_pos(_grid(8, 12, 12, y))
    )
    return [per_source, sources]


WATCHLIST_VAR = "watchlist"
# Alerts of the selected watchlists; with "All", every alert that has a watchlist.
WATCHLIST_FILTER = f"watchlist:${WATCHLIST_VAR}"


def _alerts(ref: str, query: str, metrics: list[Any], buckets: list[Any]) -> Any:
    return target(
        ref,
        datasource=ALERTS_DS_UID,
        time_field=ALERTS_TIME_FIELD,
        query=query,
        metrics=metrics,
        buckets=buckets,
    )


def _watchlist_variable() -> db.QueryVariable:
    return (
        db.QueryVariable(WATCHLIST_VAR)
        .label("Watchlist")
        .datasource(ds_ref(ALERTS_DS_UID))
        .query('{"find": "terms", "field": "watchlist", "size": 200}')
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dm.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value("*")
        .current(dm.VariableOption(selected=True, text="All", value="$__all"))
    )


# The alerts of the shown watchlists as annotations on the sentiment timeline.
WATCHLIST_ANNOTATION_FIELDS: dict[str, Any] = {
    "target": {"refId": "Anno", "query": WATCHLIST_FILTER, "limit": 200},
    "timeField": "window_start",
    "timeEndField": "window_end",
    "textField": "summary",
    "tagsField": "tags",
}


def alerts_dashboard(cfg: GrafanaConfig) -> dict[str, Any]:
    """Alerts per watchlist and company, what tripped, the newest alerts, and the net
    sentiment of the alerted companies with the alerts as annotations."""
    del cfg
    per_watchlist = (
        timeseries.Panel()
        .title("Alerts per watchlist")
        .description("Alerts per interval (by window end), stacked by watchlist.")
        .datasource(ds_ref(ALERTS_DS_UID))
        .with_target(
            _alerts(
                "A",
                WATCHLIST_FILTER,
                [count("1")],
                [terms("2", "watchlist", size=20), histogram("3", ALERTS_TIME_FIELD)],
            )
        )
        .draw_style(cm.GraphDrawStyle.BARS)
        .stacking(common.StackingConfig().mode(cm.StackingMode.NORMAL))
        .fill_opacity(80)
        .legend(_legend())
        .tooltip(_tooltip())
        .grid_pos(_grid(8, 12, 0, 0))
    )
    per_company = (
        bargauge.Panel()
        .title("Alerts per company")
        .description("Alerts in the time range per ticker (the 20 most alerted).")
        .datasource(ds_ref(ALERTS_DS_UID))
        .with_target(
            _alerts(
                "A",
                f"key_type:ticker AND {WATCHLIST_FILTER}",
                [count("1")],
                [terms("2", "key", size=20)],
            )
        )
        .orientation(cm.VizOrientation.HORIZONTAL)
        .display_mode(cm.BarGaugeDisplayMode.GRADIENT)
        .reduce_options(common.ReduceDataOptions().values(True).calcs([]).fields("/^Count$/"))
        .grid_pos(_grid(8, 6, 12, 0))
    )
    per_rule = (
        piechart.Panel()
        .title("Alerts per rule")
        .datasource(ds_ref(ALERTS_DS_UID))
        .with_target(_alerts("A", WATCHLIST_FILTER, [count("1")], [terms("2", "rule", size=10)]))
        .pie_type("donut")
        .reduce_options(common.ReduceDataOptions().values(True).calcs([]).fields("/^Count$/"))
        .grid_pos(_grid(8, 6, 18, 0))
    )
    newest = (
        table.Panel()
        .show_header(True)
        .title("Newest alerts")
        .description("The 100 newest alerts of the shown watchlists; acknowledge with the API.")
        .datasource(ds_ref(ALERTS_DS_UID))
        .with_target(_alerts("A", WATCHLIST_FILTER, [raw_data("1", 100)], []))
        .with_transformation(
            _organize(
                [
                    ALERTS_TIME_FIELD,
                    "watchlist",
                    "key",
                    "company",
                    "rule",
                    "summary",
                    "delivered",
                    "acknowledged",
                ]
            )
        )
        .grid_pos(_grid(10, 24, 0, 8))
    )
    sentiment = _net_sentiment(
        "Net sentiment of alerted companies",
        "(bullish - bearish) / total of the chosen tickers' own verdicts per interval, with "
        "the watchlist alerts as annotations.",
        _grid(9, 24, 0, 18),
    )
    board = (
        db.Dashboard("Alerts")
        .uid(ALERTS_UID)
        .description("What finsentry alerted on, per watchlist and company.")
        .tags(["finsentry"])
        .editable()
        .timezone("browser")
        .time("now-24h", "now")
        .refresh("30s")
        .with_variable(_watchlist_variable())
        .with_variable(_ticker_variable())
        .annotation(_alert_annotations())
        .with_panel(per_watchlist)
        .with_panel(per_company)
        .with_panel(per_rule)
        .with_panel(newest)
        .with_panel(sentiment)
    )
    data = to_plain(board.build())
    for annotation in data["annotations"]["list"]:
        if annotation.get("datasource", {}).get("uid") == ALERTS_DS_UID:
            annotation.update(WATCHLIST_ANNOTATION_FIELDS)
    return data
