"""Alert rules and their evaluation: pure functions, no Kafka, no Elasticsearch.

Time is cut into tumbling buckets of `bucket_s` seconds (aligned to the epoch, as Faust's
tumbling windows are). A rule looks at the *window*: the newest `window_buckets` buckets,
ending with the bucket of the item being processed. The spike rule compares the window with
its *baseline*: the mean negative count per window over the `baseline_windows` windows before
it. The Grafana alert rules (dashboards/alerting.py) are generated from the same model, so
both sides fire on the same numbers.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, model_validator

from finsentry.alerts.stories import StoryPolicy
from finsentry.alerts.watchlists import Watchlist, WatchlistSpec
from finsentry.messages import Alert, ScoredItem, Sentiment

KeyType = Literal["ticker", "topic"]
NEGATIVE = "bearish"


class NegativeShareRule(BaseModel):
    """Trips when at least `threshold` of at least `min_volume` items in the window are bearish."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["negative_share"] = "negative_share"
    name: str = "negative_share"
    key_types: list[KeyType] = Field(default_factory=lambda: ["ticker"])
    threshold: float = Field(0.6, gt=0.0, le=1.0)
    min_volume: int = Field(20, ge=1)


class NegativeSpikeRule(BaseModel):
    """Trips when the window's bearish count is at least `min_negative` and at least `factor`
    times its baseline (mean bearish count per window before it). Not evaluated until the
    key has been counted for the whole baseline period (no spikes out of an empty history
    when the alerter starts)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["negative_spike"] = "negative_spike"
    name: str = "negative_spike"
    key_types: list[KeyType] = Field(default_factory=lambda: ["ticker"])
    factor: float = Field(3.0, gt=1.0)
    min_negative: int = Field(10, ge=1)


Rule = Annotated[NegativeShareRule | NegativeSpikeRule, Field(discriminator="kind")]


class SevereItemRule(BaseModel):
    """One item about a watched company, bearish for that company (its per-company verdict
    where there is one, else the item's) with at least `min_confidence`, and, when `topics`
    is set, of one of those topics: alert at once, carrying the item."""

    model_config = ConfigDict(extra="forbid")

    name: str = "severe_item"
    min_confidence: float = Field(0.8, ge=0.0, le=1.0)
    topics: list[str] = Field(default_factory=list, description="Empty: any topic.")


class SentimentShiftRule(BaseModel):
    """A watched company's mean sentiment score (P(bull) - P(bear), per company) over the
    window is at least `drop` below its mean over the baseline period before it."""

    model_config = ConfigDict(extra="forbid")

    name: str = "sentiment_shift"
    drop: float = Field(0.5, gt=0.0, le=2.0)
    min_volume: int = Field(5, ge=1, description="Items in the window.")
    min_baseline_volume: int = Field(10, ge=1, description="Items in the baseline period.")


class DeliveryPolicy(BaseModel):
    """How the outbox posts alerts to webhooks."""

    model_config = ConfigDict(extra="forbid")

    timeout_s: float = Field(5.0, gt=0)
    initial_backoff_s: float = Field(1.0, gt=0)
    max_backoff_s: float = Field(300.0, gt=0)
    sweep_interval_s: float = Field(5.0, gt=0, description="How often undelivered are retried.")


class AlertRules(BaseModel):
    """Everything the alerter and the Grafana alert rules need; loadable from YAML or JSON."""

    model_config = ConfigDict(extra="forbid")

    bucket_s: int = Field(60, ge=1, description="Tumbling bucket size in seconds.")
    window_buckets: int = Field(15, ge=1, description="Buckets in one rule window.")
    baseline_windows: int = Field(8, ge=1, description="Windows before it that form the baseline.")
    cooldown_s: float = Field(3600.0, ge=0, description="At most one alert per key this often.")
    sample_size: int = Field(5, ge=0, le=50, description="Negative items attached to an alert.")
    rules: list[Rule] = Field(default_factory=lambda: [NegativeShareRule(), NegativeSpikeRule()])
    delivery: DeliveryPolicy = Field(default_factory=DeliveryPolicy)
    severe_item: SevereItemRule | None = Field(default_factory=SevereItemRule)
    sentiment_shift: SentimentShiftRule | None = Field(default_factory=SentimentShiftRule)
    stories: StoryPolicy = Field(default_factory=StoryPolicy)
    watchlists: list[WatchlistSpec] = Field(default_factory=list)
    watchlist_refresh_s: float = Field(2.0, gt=0, description="How often watchlists are read.")

    @model_validator(mode="after")
    def _unique_names(self) -> AlertRules:
        names = [rule.name for rule in self.rules]
        names += [r.name for r in (self.severe_item, self.sentiment_shift) if r is not None]
        if len(names) != len(set(names)):
            raise ValueError(f"rule names must be unique: {names}")
        return self

    @property
    def window_s(self) -> int:
        return self.bucket_s * self.window_buckets

    @property
    def horizon_s(self) -> int:
        """How far back the window plus its baseline reach."""
        return self.window_s * (self.baseline_windows + 1)

    def key_types(self) -> set[KeyType]:
        return {key_type for rule in self.rules for key_type in rule.key_types}


def load_rules(path: Path | None) -> AlertRules:
    """The rules in `path` (.json, .yaml or .yml), or the defaults when `path` is None."""
    if path is None:
        return AlertRules()
    text = Path(path).read_text(encoding="utf-8")
    if Path(path).suffix.lower() == ".json":
        return AlertRules.model_validate_json(text)
    import yaml

    return AlertRules.model_validate(yaml.safe_load(text) or {})


class Counts(NamedTuple):
    total: int
    negative: int


class Verdict(NamedTuple):
    """What an item says about one company."""

    sentiment: Sentiment
    confidence: float
    score: float
    name: str | None
    source: str


def company_verdicts(item: ScoredItem) -> dict[str, Verdict]:
    """Each ticker of the item with its verdict: the per-company one where the models gave
    one (`companies`), else the item's own (items scored by older models)."""
    verdicts = {
        c.ticker: Verdict(c.sentiment, c.confidence, c.score, c.name, c.source)
        for c in item.companies
        if c.ticker
    }
    for ticker in item.tickers:
        if ticker and ticker not in verdicts:
            verdicts[ticker] = Verdict(
                item.sentiment, item.sentiment_confidence, item.sentiment_score, None, "item"
            )
    return verdicts


class KeyedItem(BaseModel):
    """What the alerter keeps of one scored item, once per key (ticker or topic) it counts for."""

    key_type: KeyType
    key: str
    ts: float = Field(description="Event time: the item's scored_at, epoch seconds.")
    negative: bool
    score: float = Field(0.0, description="The key's sentiment score in this item.")
    sample: dict[str, Any]

    @property
    def table_key(self) -> str:
        return table_key(self.key_type, self.key)


def table_key(key_type: KeyType, key: str) -> str:
    return f"{key_type}:{key}"


def sample_of(item: ScoredItem, verdict: Verdict | None = None) -> dict[str, Any]:
    """The few fields of an item that travel with an alert; with a company's verdict, the
    sentiment and confidence are that company's."""
    sample = {
        "id": item.id,
        "title": item.title or item.text[:200],
        "url": item.url,
        "source": item.source,
        "sentiment": item.sentiment,
        "sentiment_confidence": item.sentiment_confidence,
        "scored_at": item.scored_at.isoformat(),
    }
    if verdict is not None:
        sample.update(
            sentiment=verdict.sentiment,
            sentiment_confidence=round(verdict.confidence, 4),
            sentiment_score=round(verdict.score, 4),
            verdict_source=verdict.source,
        )
    return sample


def keyed_items(item: ScoredItem, rules: AlertRules, now: float) -> list[KeyedItem]:
    """One entry per key the item counts for; none when it is too old to reach any window.
    A ticker counts as negative by the company's own verdict (company_verdicts)."""
    ts = item.scored_at.timestamp()
    if ts < now - rules.horizon_s:
        return []
    wanted = rules.key_types() | ({"ticker"} if rules.sentiment_shift is not None else set())
    entries: list[KeyedItem] = []
    if "ticker" in wanted:
        for ticker, verdict in company_verdicts(item).items():
            entries.append(
                KeyedItem(
                    key_type="ticker",
                    key=ticker,
                    ts=ts,
                    negative=verdict.sentiment == NEGATIVE,
                    score=verdict.score,
                    sample=sample_of(item, verdict),
                )
            )
    if "topic" in wanted and item.topic:
        entries.append(
            KeyedItem(
                key_type="topic",
                key=item.topic,
                ts=ts,
                negative=item.sentiment == NEGATIVE,
                score=item.sentiment_score,
                sample=sample_of(item),
            )
        )
    return entries


class SevereTrip(NamedTuple):
    watchlist: Watchlist
    ticker: str
    verdict: Verdict


def severe_trips(
    item: ScoredItem, watchlists: Sequence[Watchlist], rule: SevereItemRule
) -> list[SevereTrip]:
    """Every (watchlist, watched company) for which this one item is a severe item."""
    if rule.topics and item.topic not in rule.topics:
        return []
    verdicts = company_verdicts(item)
    trips = []
    for watchlist in watchlists:
        for ticker in sorted(watchlist.tickers & verdicts.keys()):
            verdict = verdicts[ticker]
            if verdict.sentiment == NEGATIVE and verdict.confidence >= rule.min_confidence:
                trips.append(SevereTrip(watchlist, ticker, verdict))
    return trips


def severe_alert(rule: SevereItemRule, trip: SevereTrip, item: ScoredItem, story_id: str) -> Alert:
    """The alert for one severe item; its id is the same for every item of the story."""
    raw = f"{rule.name}|{trip.watchlist.name}|{trip.ticker}|{story_id}"
    return Alert(
        id=hashlib.sha256(raw.encode("utf-8")).hexdigest()[:32],
        rule=rule.name,
        key_type="ticker",
        key=trip.ticker,
        window_start=item.scored_at,
        window_end=item.scored_at,
        total=1,
        negative=1,
        negative_share=1.0,
        threshold=rule.min_confidence,
        sample_items=[sample_of(item, trip.verdict)],
        watchlist=trip.watchlist.name,
        company=trip.verdict.name or trip.watchlist.company_name(trip.ticker),
        story_id=story_id,
    )


def for_watchlists(alert: Alert, watchlists: Sequence[Watchlist]) -> list[Alert]:
    """A ticker alert routed to each watchlist that holds the ticker (own ids)."""
    if alert.key_type != "ticker":
        return []
    routed = []
    for watchlist in watchlists:
        if alert.key in watchlist.tickers:
            raw = f"{alert.id}|{watchlist.name}"
            routed.append(
                alert.model_copy(
                    update={
                        "id": hashlib.sha256(raw.encode("utf-8")).hexdigest()[:32],
                        "watchlist": watchlist.name,
                        "company": alert.company or watchlist.company_name(alert.key),
                    }
                )
            )
    return routed


def bucket_start(ts: float, bucket_s: int) -> int:
    return math.floor(ts / bucket_s) * bucket_s


def window_buckets(ts: float, rules: AlertRules) -> list[int]:
    """Start times of the buckets of the window that ends with the bucket holding `ts`."""
    last = bucket_start(ts, rules.bucket_s)
    return [last - i * rules.bucket_s for i in reversed(range(rules.window_buckets))]


def baseline_buckets(ts: float, rules: AlertRules) -> list[int]:
    """Start times of the buckets of the baseline period just before the window."""
    first = window_buckets(ts, rules)[0]
    n = rules.window_buckets * rules.baseline_windows
    return [first - i * rules.bucket_s for i in reversed(range(1, n + 1))]


class WindowStats(BaseModel):
    """The numbers one key has in the window ending at one item."""

    model_config = ConfigDict(frozen=True)

    key_type: KeyType
    key: str
    window_start: datetime
    window_end: datetime
    total: int
    negative: int
    baseline: float = Field(description="Mean negative count per window over the baseline.")
    baseline_complete: bool = Field(
        True, description="The key was seen before the baseline period began."
    )

    @property
    def negative_share(self) -> float:
        return self.negative / self.total if self.total else 0.0


def window_stats(
    key_type: KeyType,
    key: str,
    ts: float,
    counts: Mapping[int, Counts],
    rules: AlertRules,
    first_seen: float | None = None,
) -> WindowStats:
    """Sum the bucket counts (bucket start -> Counts; missing buckets count zero).
    `first_seen` is when the key was first counted; None means long ago."""
    current = window_buckets(ts, rules)
    past_buckets = baseline_buckets(ts, rules)
    zero = Counts(0, 0)
    total = sum(counts.get(b, zero).total for b in current)
    negative = sum(counts.get(b, zero).negative for b in current)
    past = sum(counts.get(b, zero).negative for b in past_buckets)
    return WindowStats(
        key_type=key_type,
        key=key,
        window_start=datetime.fromtimestamp(current[0], UTC),
        window_end=datetime.fromtimestamp(current[-1] + rules.bucket_s, UTC),
        total=total,
        negative=negative,
        baseline=past / rules.baseline_windows,
        baseline_complete=first_seen is None or first_seen <= past_buckets[0],
    )


class Trip(NamedTuple):
    rule: str
    threshold: float
    baseline: float | None


def evaluate(rule: NegativeShareRule | NegativeSpikeRule, stats: WindowStats) -> Trip | None:
    """Whether one rule trips on one window; the threshold is in the rule's own unit
    (a share for negative_share, a bearish count for negative_spike)."""
    if stats.key_type not in rule.key_types:
        return None
    if isinstance(rule, NegativeShareRule):
        if stats.total >= rule.min_volume and stats.negative_share >= rule.threshold:
            return Trip(rule.name, rule.threshold, None)
        return None
    if not stats.baseline_complete:
        return None
    limit = max(float(rule.min_negative), rule.factor * stats.baseline)
    if stats.negative >= limit:
        return Trip(rule.name, limit, stats.baseline)
    return None


def in_cooldown(last_alert_at: float | None, now: float, cooldown_s: float) -> bool:
    return last_alert_at is not None and now - last_alert_at < cooldown_s


def alert_id(rule: str, key_type: str, key: str, window_start: datetime) -> str:
    """Deterministic: the same trip replayed after a crash gives the same alert."""
    raw = f"{rule}|{key_type}|{key}|{window_start.isoformat()}"
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:32]


def decide(
    rules: AlertRules,
    stats: WindowStats,
    *,
    last_alert_at: float | None,
    now: float,
    samples: Sequence[dict[str, Any]] = (),
) -> Alert | None:
    """The alert for this window, if a rule trips and the key is not cooling down. Rules are
    tried in order and the first that trips wins: one episode, one alert."""
    if in_cooldown(last_alert_at, now, rules.cooldown_s):
        return None
    for rule in rules.rules:
        trip = evaluate(rule, stats)
        if trip is None:
            continue
        return Alert(
            id=alert_id(trip.rule, stats.key_type, stats.key, stats.window_start),
            rule=trip.rule,
            key_type=stats.key_type,
            key=stats.key,
            window_start=stats.window_start,
            window_end=stats.window_end,
            total=stats.total,
            negative=stats.negative,
            negative_share=round(stats.negative_share, 6),
            baseline=trip.baseline,
            threshold=trip.threshold,
            sample_items=list(samples)[: rules.sample_size],
        )
    return None


def shift_alert(
    rules: AlertRules,
    key: str,
    ts: float,
    counts: Mapping[int, Counts],
    score_sums: Mapping[int, float],
    *,
    last_alert_at: float | None,
    samples: Sequence[dict[str, Any]] = (),
) -> Alert | None:
    """The sentiment_shift alert for a ticker's window ending at `ts`, if its mean score is
    `drop` or more below the mean over the baseline period and it is not cooling down."""
    rule = rules.sentiment_shift
    if rule is None or in_cooldown(last_alert_at, ts, rules.cooldown_s):
        return None
    current, past = window_buckets(ts, rules), baseline_buckets(ts, rules)
    zero = Counts(0, 0)
    n_window = sum(counts.get(b, zero).total for b in current)
    n_past = sum(counts.get(b, zero).total for b in past)
    if n_window < rule.min_volume or n_past < rule.min_baseline_volume:
        return None
    mean = sum(score_sums.get(b, 0.0) for b in current) / n_window
    baseline = sum(score_sums.get(b, 0.0) for b in past) / n_past
    if baseline - mean < rule.drop:
        return None
    negative = sum(counts.get(b, zero).negative for b in current)
    window_start = datetime.fromtimestamp(current[0], UTC)
    return Alert(
        id=alert_id(rule.name, "ticker", key, window_start),
        rule=rule.name,
        key_type="ticker",
        key=key,
        window_start=window_start,
        window_end=datetime.fromtimestamp(current[-1] + rules.bucket_s, UTC),
        total=n_window,
        negative=negative,
        negative_share=round(negative / n_window, 6),
        threshold=rule.drop,
        mean_score=round(mean, 6),
        baseline_score=round(baseline, 6),
        sample_items=list(samples)[: rules.sample_size],
    )


def add_sample(
    samples: Sequence[dict[str, Any]], sample: dict[str, Any], size: int
) -> list[dict[str, Any]]:
    """Newest first, at most `size`, no duplicate ids."""
    rest = [s for s in samples if s.get("id") != sample.get("id")]
    return [sample, *rest][:size]


def why(alert: Alert) -> str:
    """The numbers that made the rule trip, in words (summaries, e-mails, digests)."""
    minutes = round((alert.window_end - alert.window_start).total_seconds() / 60)
    if alert.story_id is not None:
        item = alert.sample_items[0] if alert.sample_items else {}
        confidence = float(item.get("sentiment_confidence") or 0.0)
        return (
            f"one item is bearish about the company with {confidence:.0%} confidence "
            f"(threshold {alert.threshold:.0%})"
        )
    if alert.mean_score is not None and alert.baseline_score is not None:
        return (
            f"mean sentiment score {alert.mean_score:+.2f} over {alert.total} items in the last "
            f"{minutes} min, against {alert.baseline_score:+.2f} before: a drop of "
            f"{alert.baseline_score - alert.mean_score:.2f} (limit {alert.threshold:.2f})"
        )
    if alert.baseline is None:
        return (
            f"{alert.negative} of {alert.total} items ({alert.negative_share:.0%}) bearish in "
            f"{minutes} min (threshold {alert.threshold:.0%})"
        )
    return (
        f"{alert.negative} bearish items in {minutes} min against a baseline of "
        f"{alert.baseline:.1f} per window (limit {alert.threshold:.1f})"
    )


def summary(alert: Alert) -> str:
    """One line a person can act on: who, why in numbers, the item of a severe-item alert."""
    what = f"{alert.key_type} {alert.key}"
    if alert.company:
        what = f"{alert.key} ({alert.company})"
    if alert.watchlist:
        what = f"[{alert.watchlist}] {what}"
    if alert.story_id is not None:
        item = alert.sample_items[0] if alert.sample_items else {}
        return f"{what}: {why(alert)}: {item.get('title')!r} ({item.get('source')}) [{alert.rule}]"
    return f"{what}: {why(alert)} [{alert.rule}]"


def webhook_body(alert: Alert) -> dict[str, Any]:
    """The generic JSON body: the Alert itself plus its summary."""
    return {**json.loads(alert.model_dump_json()), "summary": summary(alert)}


def slack_body(alert: Alert) -> dict[str, Any]:
    """A Slack incoming-webhook compatible body."""
    lines = [f":rotating_light: *finsentry alert* {summary(alert)}"]
    for item in alert.sample_items:
        title = item.get("title") or item.get("id")
        url = item.get("url")
        lines.append(f"• <{url}|{title}>" if url else f"• {title}")
    return {"text": "\n".join(lines)}
