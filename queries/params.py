"""Validated parameters of the ad-hoc queries, shared by the CLI and the HTTP API.

Time field: every query filters, sorts and buckets on ONE date field, `time_field`, which
defaults to `ingested_at` (when the item reached Kafka). It is set on every document, it is
close to real time, and it is the time the dashboards and alerts use. `published_at` may be
missing (items without it never match a time range on it) or far in the past for back-filled
feeds; `scored_at` trails `ingested_at` by the scoring latency. Pick either with
`time_field` when that is the question.

Time range: either `since` (a duration back from now, e.g. `6h`) or `from`/`to` (ISO 8601;
naive times are UTC). The range is half-open: from <= t < to.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    model_validator,
)

from finsentry.messages import Kind, Sentiment

MAX_PAGE_SIZE = 500
MAX_RESULT_WINDOW = 10_000  # Elasticsearch's index.max_result_window: page * size stays below.
MAX_FILTER_VALUES = 50
MAX_TEXT_CHARS = 256
MAX_LABEL_CHARS = 256
MAX_SINCE = timedelta(days=3660)
MAX_TIMELINE_SPAN = timedelta(days=90)
DEFAULT_TIMELINE_SPAN = timedelta(days=7)
MAX_TIMELINE_BUCKETS = 1_000
AUTO_TARGET_BUCKETS = 120
MIN_INTERVAL = timedelta(minutes=1)
MAX_BREAKDOWN_LIMIT = 500
# Ranking by share or mean score happens among the most active keys (by volume).
BREAKDOWN_CANDIDATES = 5_000

TimeField = Literal["ingested_at", "published_at", "scored_at"]
ItemSort = Literal["newest", "oldest", "most_negative", "most_positive"]
RankBy = Literal["volume", "negative_share", "mean_score"]
Order = Literal["asc", "desc"]

AUTO_INTERVALS: tuple[timedelta, ...] = (
    timedelta(minutes=1),
    timedelta(minutes=5),
    timedelta(minutes=15),
    timedelta(minutes=30),
    timedelta(hours=1),
    timedelta(hours=3),
    timedelta(hours=6),
    timedelta(hours=12),
    timedelta(days=1),
    timedelta(days=7),
)


class QueryError(ValueError):
    """Parameters that are each valid but do not make a query (checked against the clock)."""


class QueryMode(StrEnum):
    items = "items"
    timeline = "timeline"
    tickers = "tickers"
    topics = "topics"


# Every pattern below is both what the OpenAPI schema declares and what the validators
# accept (Python `re`), so a request the schema allows is never refused as malformed.
_DURATION = re.compile(r"^\s*(0*[1-9]\d{0,6})\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: str) -> timedelta:
    """`90s`, `15m`, `6h`, `7d`, `2w` -> timedelta."""
    match = _DURATION.match(value)
    if not match:
        raise ValueError(f"expected a positive duration like 30m, 6h, 7d or 2w, got {value!r}")
    amount, unit = int(match.group(1)), match.group(2)
    return timedelta(seconds=amount * _UNIT_SECONDS[unit])


def format_duration(value: timedelta) -> str:
    """The shortest exact `<n><unit>` spelling (also Elasticsearch's fixed_interval syntax)."""
    seconds = int(value.total_seconds())
    for unit in ("d", "h", "m"):
        if seconds % _UNIT_SECONDS[unit] == 0:
            return f"{seconds // _UNIT_SECONDS[unit]}{unit}"
    return f"{seconds}s"


def _duration_input(value: Any) -> Any:
    return parse_duration(value) if isinstance(value, str) else value


def _interval_input(value: Any) -> Any:
    if isinstance(value, str) and value.strip().lower() == "auto":
        return None
    return _duration_input(value)


_DURATION_SCHEMA = {"type": "string", "pattern": _DURATION.pattern, "examples": ["6h", "7d"]}
_INTERVAL_PATTERN = rf"^\s*[Aa][Uu][Tt][Oo]\s*$|{_DURATION.pattern}"
Duration = Annotated[timedelta, BeforeValidator(_duration_input), WithJsonSchema(_DURATION_SCHEMA)]
Interval = Annotated[
    timedelta | None,
    BeforeValidator(_interval_input),
    WithJsonSchema({"type": "string", "pattern": _INTERVAL_PATTERN, "examples": ["auto", "1h"]}),
]

# A date-time parameter is ISO 8601 text, as the schema's `format: date-time` says; pydantic
# would also read a number as a Unix timestamp, which the schema does not allow.
_NUMBER = re.compile(r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$")


def _iso_datetime_input(value: Any) -> Any:
    if isinstance(value, int | float) or (isinstance(value, str) and _NUMBER.match(value)):
        raise ValueError("expected an ISO 8601 date-time (e.g. 2026-11-29T08:00Z), not a number")
    return value


IsoDateTime = Annotated[datetime, BeforeValidator(_iso_datetime_input)]

_TICKER = re.compile(r"^[A-Z0-9][A-Z0-9.\-$]{0,15}$")
# As given: spaces around, any case, an optional leading `$` (normalised by `_ticker`).
_TICKER_INPUT = re.compile(r"^ *\$?[A-Za-z0-9][A-Za-z0-9.\-$]{0,15} *$")
# A label or free text: no control characters (C0, DEL, C1), something other than a space,
# and only spaces around it. No `\s`: Python and the fuzzer's generator disagree on it.
_CONTROL = "\\x00-\\x1f\\x7f-\\x9f"
_LABEL_INPUT = re.compile(rf"^ *[^ {_CONTROL}](?:[^{_CONTROL}]*[^ {_CONTROL}])? *$")


def _ticker_input(value: Any) -> Any:
    if isinstance(value, str) and not _TICKER_INPUT.match(value):
        raise ValueError(f"not a ticker symbol: {value!r}")
    return value


def _ticker(value: str) -> str:
    symbol = value.strip().upper().removeprefix("$")
    if not _TICKER.match(symbol):
        raise ValueError(f"not a ticker symbol: {value!r}")
    return symbol


def _no_control_chars(value: str) -> str:
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in value):
        raise ValueError("control characters are not allowed")
    return value


# simple_query_string syntax we do not run (fields, wildcards, fuzziness, boosts, regexes,
# ranges): rejected with a clear message instead of being silently searched as words.
_FORBIDDEN_TEXT = set(":*?~^{}[]<>\\")


_FORBIDDEN_CLASS = "".join(f"\\x{ord(c):02x}" for c in sorted(_FORBIDDEN_TEXT))
_TEXT_INPUT = re.compile(
    rf"^ *[^ {_CONTROL}{_FORBIDDEN_CLASS}]"
    rf"(?:[^{_CONTROL}{_FORBIDDEN_CLASS}]*[^ {_CONTROL}{_FORBIDDEN_CLASS}])? *$"
)


def _too_long(value: str, limit: int) -> None:
    """Lengths count as given, spaces included, as the schema's maxLength does."""
    if len(value) > limit:
        raise ValueError(f"String should have at most {limit} characters")


def _label_input(value: Any) -> Any:
    if isinstance(value, str):
        _too_long(value, MAX_LABEL_CHARS)
    if isinstance(value, str) and not _LABEL_INPUT.match(value):
        _no_control_chars(value)
        raise ValueError("needs a character other than a space, and only spaces around it")
    return value


def _text_input(value: Any) -> Any:
    if isinstance(value, str):
        _too_long(value, MAX_TEXT_CHARS)
    if isinstance(value, str) and not _TEXT_INPUT.match(value):
        _no_control_chars(value)
        bad = sorted({c for c in value if c in _FORBIDDEN_TEXT})
        if bad:
            raise ValueError(
                f"unsupported query syntax {''.join(bad)!r}: free text supports words, "
                '"phrases", + (and), | (or), - (not) and ( ) grouping'
            )
        raise ValueError("needs a character other than a space, and only spaces around it")
    return value


def balanced_text_error(value: str) -> str | None:
    """Why free text is no query (unbalanced quotes or brackets), or None. Not a pattern:
    bracket nesting is beyond a regular expression, so it is checked on the whole query."""
    if value.count('"') % 2:
        return 'unbalanced " in free text'
    if value.count("(") != value.count(")"):
        return "unbalanced ( ) in free text"
    return None


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _pattern_schema(pattern: re.Pattern[str], max_length: int, *examples: str) -> WithJsonSchema:
    return WithJsonSchema(
        {
            "type": "string",
            "pattern": pattern.pattern,
            "maxLength": max_length,
            "examples": [*examples],
        }
    )


Ticker = Annotated[
    str,
    BeforeValidator(_ticker_input),
    AfterValidator(_ticker),
    _pattern_schema(_TICKER_INPUT, 40, "NVDA", "$brk.b"),
]
Label = Annotated[
    str,
    BeforeValidator(_label_input),
    _pattern_schema(_LABEL_INPUT, MAX_LABEL_CHARS, "Financials"),
]
FreeText = Annotated[
    str,
    BeforeValidator(_text_input),
    _pattern_schema(_TEXT_INPUT, MAX_TEXT_CHARS, '"rate cut" | bank'),
]


class QueryFilters(BaseModel):
    """What to look at: every field narrows the items (values of one field are OR-ed)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, validate_by_name=True)

    ticker: list[Ticker] = Field(
        default_factory=list, max_length=MAX_FILTER_VALUES, description="Any of these tickers."
    )
    topic: list[Label] = Field(
        default_factory=list, max_length=MAX_FILTER_VALUES, description="Topic (any case)."
    )
    sentiment: list[Sentiment] = Field(default_factory=list, max_length=3)
    source: list[Label] = Field(
        default_factory=list, max_length=MAX_FILTER_VALUES, description="Source (any case)."
    )
    kind: list[Kind] = Field(default_factory=list, max_length=3)
    text: FreeText | None = Field(None, description="Words matched in title and text.")
    since: Duration | None = Field(None, description="Back from now, e.g. 6h, 7d.")
    from_: IsoDateTime | None = Field(None, alias="from", description="Start (ISO 8601, UTC).")
    to: IsoDateTime | None = Field(None, description="End, exclusive (ISO 8601, UTC).")
    time_field: TimeField = Field("ingested_at", description="Date the range applies to.")

    @model_validator(mode="after")
    def _range(self) -> QueryFilters:
        """Checks across parameters or beyond what a schema states: the API answers 400."""
        if self.text is not None and (reason := balanced_text_error(self.text)):
            raise ValueError(reason)
        self.from_ = _utc(self.from_)
        self.to = _utc(self.to)
        if self.since is not None:
            if self.from_ is not None or self.to is not None:
                raise ValueError("give either since or from/to, not both")
            if self.since > MAX_SINCE:
                raise ValueError(f"since is at most {MAX_SINCE.days}d")
        if self.from_ is not None and self.to is not None and self.from_ >= self.to:
            raise ValueError("from must be before to")
        return self


class ItemsParams(QueryFilters):
    """Matching items, one page at a time."""

    page: int = Field(1, ge=1, description="1-based page number.")
    size: int = Field(50, ge=1, le=MAX_PAGE_SIZE, description="Items a page.")
    sort: ItemSort = Field("newest", description="newest/oldest by time_field, or by score.")

    @model_validator(mode="after")
    def _window(self) -> ItemsParams:
        if self.page * self.size > MAX_RESULT_WINDOW:
            raise ValueError(
                f"page * size must be at most {MAX_RESULT_WINDOW}; narrow the filters instead"
            )
        return self


class TimelineParams(QueryFilters):
    """Counts per sentiment and the net sentiment index per time bucket."""

    interval: Interval = Field(None, description="Bucket width (e.g. 1h, 1d) or auto.")

    @model_validator(mode="after")
    def _interval(self) -> TimelineParams:
        if self.interval is not None:
            if self.interval < MIN_INTERVAL:
                raise ValueError(f"interval is at least {format_duration(MIN_INTERVAL)}")
            if self.interval > MAX_TIMELINE_SPAN:
                raise ValueError(f"interval is at most {MAX_TIMELINE_SPAN.days}d")
        return self


class BreakdownParams(QueryFilters):
    """Keys (tickers or topics) ranked by volume, negative share or mean score."""

    limit: int = Field(20, ge=1, le=MAX_BREAKDOWN_LIMIT, description="Rows returned.")
    rank_by: RankBy = "volume"
    order: Order | None = Field(
        None, description="Default: desc for volume and negative_share, asc for mean_score."
    )
    min_count: int = Field(1, ge=1, description="Ignore keys with fewer items.")

    @property
    def effective_order(self) -> Order:
        if self.order is not None:
            return self.order
        return "asc" if self.rank_by == "mean_score" else "desc"


class TickersParams(BreakdownParams):
    """Per ticker."""


class TopicsParams(BreakdownParams):
    """Per topic."""


QueryParams = ItemsParams | TimelineParams | TickersParams | TopicsParams

PARAMS_BY_MODE: dict[QueryMode, type[QueryFilters]] = {
    QueryMode.items: ItemsParams,
    QueryMode.timeline: TimelineParams,
    QueryMode.tickers: TickersParams,
    QueryMode.topics: TopicsParams,
}


@dataclass(frozen=True)
class TimeWindow:
    """A resolved, half-open time range; an open end is None."""

    start: datetime | None
    end: datetime | None


@dataclass(frozen=True)
class TimelinePlan:
    start: datetime
    end: datetime
    interval: timedelta

    @property
    def buckets(self) -> int:
        return timeline_bucket_count(self.start, self.end, self.interval)


def resolve_window(params: QueryFilters, now: datetime) -> TimeWindow:
    """The absolute range the filters mean at `now`."""
    if params.since is not None:
        return TimeWindow(now - params.since, now)
    return TimeWindow(params.from_, params.to)


def timeline_bucket_count(start: datetime, end: datetime, interval: timedelta) -> int:
    """Buckets of a date histogram aligned on multiples of `interval` since the epoch."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    step = interval.total_seconds()
    first = math.floor((start - epoch).total_seconds() / step)
    last = math.ceil((end - epoch).total_seconds() / step)
    return max(1, last - first)


def auto_interval(start: datetime, end: datetime) -> timedelta:
    """The finest standard interval giving at most AUTO_TARGET_BUCKETS buckets."""
    for candidate in AUTO_INTERVALS:
        if timeline_bucket_count(start, end, candidate) <= AUTO_TARGET_BUCKETS:
            return candidate
    return AUTO_INTERVALS[-1]


def plan_timeline(params: TimelineParams, now: datetime) -> TimelinePlan:
    """Resolve the timeline's window and interval, enforcing the span and bucket limits.

    An open end defaults to `now`, an open start to DEFAULT_TIMELINE_SPAN before the end.
    """
    window = resolve_window(params, now)
    end = window.end or now
    start = window.start or end - DEFAULT_TIMELINE_SPAN
    if start >= end:
        raise QueryError("from must be before to (an open 'to' means now)")
    if end - start > MAX_TIMELINE_SPAN:
        raise QueryError(f"a timeline spans at most {MAX_TIMELINE_SPAN.days} days")
    interval = params.interval or auto_interval(start, end)
    buckets = timeline_bucket_count(start, end, interval)
    if buckets > MAX_TIMELINE_BUCKETS:
        raise QueryError(
            f"interval {format_duration(interval)} gives {buckets} buckets over this range "
            f"(max {MAX_TIMELINE_BUCKETS}); use a larger interval or a shorter range"
        )
    return TimelinePlan(start=start, end=end, interval=interval)
