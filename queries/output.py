"""Query results as a rich table, JSON, CSV or (timelines) a PNG chart."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from rich.table import Table

from finsentry.queries.results import BreakdownResult, ItemsResult, QueryResult, TimelineResult


class OutputFormat(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


_TABLE_TEXT_CHARS = 80


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, list):
        return ";".join(str(v) for v in value)
    return str(value)


def _item_cell(item: Any, column: str) -> Any:
    """`companies` as `TICKER:verdict` pairs (each company's own sentiment)."""
    if column == "companies":
        return [f"{c.ticker}:{c.sentiment}" for c in item.companies]
    return getattr(item, column)


def tabular(result: QueryResult) -> tuple[list[str], list[list[Any]]]:
    """Column names and rows of raw values: the one flat view behind tables and CSV."""
    if isinstance(result, ItemsResult):
        columns = [
            result.time_field,
            "id",
            "source",
            "kind",
            "tickers",
            "companies",
            "topic",
            "sentiment",
            "sentiment_score",
            "title",
            "text",
            "evidence",
        ]
        rows = [[_item_cell(item, c) for c in columns] for item in result.items]
        return columns, rows
    if isinstance(result, TimelineResult):
        columns = ["start", "total", "bullish", "neutral", "bearish", "net_sentiment", "mean_score"]
        return columns, [[getattr(b, c) for c in columns] for b in result.buckets]
    columns = [
        "rank",
        "key",
        "volume",
        "bullish",
        "bearish",
        "negative_share",
        "net_sentiment",
        "mean_score",
    ]
    return columns, [[getattr(r, c) for c in columns] for r in result.rows]


def to_json(result: QueryResult) -> str:
    return result.model_dump_json(indent=2)


def to_csv(result: QueryResult) -> str:
    columns, rows = tabular(result)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([[_cell(v) for v in row] for row in rows])
    return buffer.getvalue()


def _table_cell(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return _cell(value)


def _short(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _TABLE_TEXT_CHARS else flat[: _TABLE_TEXT_CHARS - 1] + "…"


def _caption(result: QueryResult) -> str:
    if isinstance(result, ItemsResult):
        return f"{result.total} items, page {result.page}/{max(result.pages, 1)}"
    if isinstance(result, TimelineResult):
        nsi = _cell(result.net_sentiment) or "n/a"
        return (
            f"{result.total} items ({result.bullish} bullish, {result.neutral} neutral, "
            f"{result.bearish} bearish), net sentiment {nsi}, interval {result.interval}"
        )
    return f"{result.total} items, ranked by {result.rank_by} {result.order}"


def to_table(result: QueryResult) -> Table:
    columns, rows = tabular(result)
    title = result.mode if not isinstance(result, BreakdownResult) else f"{result.mode} ranking"
    table = Table(title=title, caption=_caption(result))
    for column in columns:
        numeric = column in {"total", "volume", "bullish", "neutral", "bearish", "rank"}
        table.add_column(column, justify="right" if numeric else "left", overflow="fold")
    for row in rows:
        cells = [_table_cell(v) for v in row]
        if isinstance(result, ItemsResult):
            cells = [
                _short(c) if col in {"title", "text"} else c
                for col, c in zip(columns, cells, strict=True)
            ]
        table.add_row(*cells)
    return table


def plot_timeline(result: TimelineResult, path: Path) -> Path:
    """Stacked counts per sentiment per bucket, with the net sentiment index on a second axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    starts = [b.start for b in result.buckets]
    width = (result.buckets[1].start - result.buckets[0].start) * 0.9 if len(starts) > 1 else None
    bar_args: dict[str, Any] = {"width": width} if width is not None else {}
    fig, counts_ax = plt.subplots(figsize=(11, 5))
    try:
        bottom = [0] * len(starts)
        for name, color in (("bearish", "#d62728"), ("neutral", "#9e9e9e"), ("bullish", "#2ca02c")):
            values = [getattr(b, name) for b in result.buckets]
            counts_ax.bar(starts, values, bottom=bottom, color=color, label=name, **bar_args)
            bottom = [a + v for a, v in zip(bottom, values, strict=True)]
        counts_ax.set_ylabel("items")
        nsi_ax = counts_ax.twinx()
        nsi = [
            b.net_sentiment if b.net_sentiment is not None else float("nan") for b in result.buckets
        ]
        nsi_ax.plot(starts, nsi, color="black", marker=".", label="net sentiment")
        nsi_ax.set_ylim(-1.05, 1.05)
        nsi_ax.axhline(0, color="black", linewidth=0.5, linestyle=":")
        nsi_ax.set_ylabel("net sentiment (bullish - bearish) / total")
        handles = counts_ax.get_legend_handles_labels()[0] + nsi_ax.get_legend_handles_labels()[0]
        counts_ax.legend(handles=handles, loc="upper left")
        counts_ax.set_title(
            f"Sentiment by {result.time_field}, {result.interval} buckets, {result.total} items"
        )
        fig.autofmt_xdate()
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png", dpi=100)
    finally:
        plt.close(fig)
    return path
