"""The watchlist rules as pure functions: severe item (per-company verdict), routing per
watchlist, sentiment shift, near-duplicate stories, episodes, and the e-mail text."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from finsentry.alerts.email import alert_message, alert_text
from finsentry.alerts.episodes import Episodes
from finsentry.alerts.rules import (
    AlertRules,
    Counts,
    SentimentShiftRule,
    SevereItemRule,
    WindowStats,
    baseline_buckets,
    company_verdicts,
    decide,
    for_watchlists,
    keyed_items,
    severe_alert,
    severe_trips,
    shift_alert,
    summary,
    window_buckets,
)
from finsentry.alerts.stories import StoryTracker, normalise
from finsentry.alerts.watchlists import (
    ChannelSpec,
    CompanyDirectory,
    WatchedCompany,
    Watchlist,
    WatchlistError,
    WatchlistIn,
    resolve_watchlist,
)
from finsentry.settings import Settings
from tests.support.alerts import scored, verdict

NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
DESK = Watchlist(
    name="desk",
    entries=["AAPL", "Tesla"],
    companies=[WatchedCompany(ticker="AAPL", name="Apple"), WatchedCompany(ticker="TSLA")],
    channels=[ChannelSpec(kind="webhook", name="desk-hook")],
)
OTHER = Watchlist(name="energy", entries=["XOM"], companies=[WatchedCompany(ticker="XOM")])
RULE = SevereItemRule(min_confidence=0.8)


def test_severe_item_uses_the_company_verdict() -> None:
    bad_for_apple = scored("a", "Apple probed", "bearish", [verdict("AAPL", "bearish", 0.9, "A")])
    (trip,) = severe_trips(bad_for_apple, [DESK, OTHER], RULE)
    assert (trip.watchlist.name, trip.ticker) == ("desk", "AAPL")

    passing = scored(
        "b",
        "Microsoft soars; Apple mentioned",
        "bullish",
        [verdict("MSFT", "bullish", 0.9, "M"), verdict("AAPL", "neutral", 0.7, "A")],
    )
    good_for_apple = scored("c", "Rival recall", "bearish", [verdict("AAPL", "bullish", 0.9, "A")])
    unsure = scored("d", "Apple maybe probed", "bearish", [verdict("AAPL", "bearish", 0.79, "A")])
    unwatched = scored("e", "Exxon probed", "bearish", [verdict("XOM", "bearish", 0.99, "X")])
    assert severe_trips(passing, [DESK], RULE) == []
    assert severe_trips(good_for_apple, [DESK], RULE) == []
    assert severe_trips(unsure, [DESK], RULE) == []
    assert severe_trips(unwatched, [DESK], RULE) == []
    assert [t.watchlist.name for t in severe_trips(unwatched, [DESK, OTHER], RULE)] == ["energy"]


def test_items_of_older_models_fall_back_to_the_item_verdict() -> None:
    old = scored("a", "Apple probed", "bearish", [], confidence=0.9)
    old = old.model_copy(update={"tickers": ["AAPL", "MSFT"], "companies": []})
    assert {t: v.sentiment for t, v in company_verdicts(old).items()} == {
        "AAPL": "bearish",
        "MSFT": "bearish",
    }
    assert [t.ticker for t in severe_trips(old, [DESK], RULE)] == ["AAPL"]


def test_topics_limit_the_severe_rule() -> None:
    item = scored("a", "Apple probed", "bearish", [verdict("AAPL", "bearish", 0.9, "A")])
    assert severe_trips(item, [DESK], SevereItemRule(topics=["Company | Legal"]))
    assert severe_trips(item, [DESK], SevereItemRule(topics=["Earnings"])) == []


def test_severe_alert_carries_the_item_and_is_the_same_for_a_story() -> None:
    apple = verdict("AAPL", "bearish", 0.93, "Apple")
    item = scored("a", "Apple probed by SEC", "bearish", [apple])
    (trip,) = severe_trips(item, [DESK], RULE)
    alert = severe_alert(RULE, trip, item, story_id="a")
    again = severe_alert(RULE, trip, item.model_copy(update={"id": "b"}), story_id="a")
    assert alert.id == again.id
    assert (alert.watchlist, alert.company, alert.rule) == ("desk", "Apple", "severe_item")
    assert alert.sample_items[0]["sentiment_confidence"] == 0.93
    assert "93% confidence" in summary(alert)


def test_counting_rules_count_by_company_verdict_and_route_per_watchlist() -> None:
    rules = AlertRules()
    item = scored(
        "a",
        "Samsung recalls; Apple gains",
        "bearish",
        [verdict("AAPL", "bullish", 0.8, "A"), verdict("SSNLF", "bearish", 0.9, "S")],
    )
    keyed = {k.key: k.negative for k in keyed_items(item, rules, now=item.scored_at.timestamp())}
    assert keyed == {"AAPL": False, "SSNLF": True}

    stats = WindowStats(
        key_type="ticker",
        key="AAPL",
        window_start=NOW - timedelta(minutes=15),
        window_end=NOW,
        total=30,
        negative=25,
        baseline=1.0,
    )
    alert = decide(rules, stats, last_alert_at=None, now=NOW.timestamp())
    assert alert is not None
    routed = for_watchlists(alert, [DESK, OTHER])
    assert [(a.watchlist, a.company) for a in routed] == [("desk", "Apple")]
    assert routed[0].id != alert.id


def test_sentiment_shift_against_the_company_baseline() -> None:
    rules = AlertRules(sentiment_shift=SentimentShiftRule(drop=0.5, min_volume=5))
    ts = NOW.timestamp()
    counts: dict[int, Counts] = {}
    sums: dict[int, float] = {}
    for b in baseline_buckets(ts, rules)[:20]:
        counts[b], sums[b] = Counts(1, 0), 0.4  # calm: +0.4 on average
    current = window_buckets(ts, rules)
    for b in current[-3:]:
        counts[b], sums[b] = Counts(2, 2), -0.6  # -0.3 on average: a drop of 0.7
    alert = shift_alert(rules, "AAPL", ts, counts, sums, last_alert_at=None)
    assert alert is not None
    assert (alert.mean_score, alert.baseline_score, alert.total) == (-0.3, 0.4, 6)
    assert shift_alert(rules, "AAPL", ts, counts, sums, last_alert_at=ts - 60) is None
    milder = {b: (-0.0 if b in current else v) for b, v in sums.items()}
    assert shift_alert(rules, "AAPL", ts, counts, milder, last_alert_at=None) is None
    assert "drop of 0.70" in summary(alert)


STORY = "Apple under SEC investigation over accounting of iPhone sales"


def test_near_duplicates_are_one_story() -> None:
    tracker = StoryTracker()
    first = tracker.observe("a", STORY, 1.0, ["AAPL"])
    assert first == "a"
    for n, text in enumerate(
        [
            f"{STORY} - Reuters",
            f"RT @desk: {STORY} https://t.co/abc",
            STORY.replace("accounting", "the accounting").upper(),
        ]
    ):
        assert tracker.observe(f"dup{n}", text, 2.0 + n, ["AAPL"]) == "a", text
    assert tracker.observe("b", "Apple beats estimates on iPhone sales", 5.0, ["AAPL"]) == "b"
    assert tracker.observe("c", STORY.replace("Apple", "Tesla"), 6.0, ["TSLA"]) == "c"
    # Forgotten after the window.
    later = tracker.policy.window_s + 10
    assert tracker.observe("d", STORY, later, ["AAPL"]) == "d"
    assert normalise("RT @x: $AAPL falls! https://a.b/c - Reuters") == "aapl falls"


def test_episodes_cooldown_story_and_restore() -> None:
    episodes = Episodes(cooldown_s=600)
    key = ("desk", "AAPL", "severe_item")
    assert episodes.admit(key, "s1", 1000.0)
    assert not episodes.admit(key, "s1", 5000.0)  # same story, even after the cooldown
    assert not episodes.admit(key, "s2", 1300.0)  # new story, same episode
    assert episodes.admit(key, "s3", 2000.0)  # a new episode
    assert episodes.admit(("desk", "TSLA", "severe_item"), "s2", 1300.0)

    restored = Episodes(cooldown_s=600)
    tracker = StoryTracker()
    doc = {
        "watchlist": "desk",
        "key": "AAPL",
        "rule": "severe_item",
        "window_end": datetime.fromtimestamp(1000.0, UTC).isoformat(),
        "story_id": "s1",
        "sample_items": [{"id": "s1", "title": STORY}],
    }
    assert restored.restore([doc, {**doc, "watchlist": None}], tracker) == 1
    assert not restored.admit(key, "s9", 1100.0)
    assert tracker.observe("s1-again", f"{STORY} - AP", 1100.0, ["AAPL"]) == "s1"


def test_email_is_readable() -> None:
    item = scored(
        "a", "Apple under SEC probe", "bearish", [verdict("AAPL", "bearish", 0.93, "Apple")]
    )
    (trip,) = severe_trips(item, [DESK], RULE)
    alert = severe_alert(RULE, trip, item, story_id="a")
    text = alert_text(alert)
    for expected in (
        "Company:   Apple (AAPL)",
        "Rule:      severe_item",
        "93% confidence (threshold 80%)",
        "1. Apple under SEC probe",
        "source: wire",
        "link: https://news.example/a",
        "sentiment: bearish (confidence 93%)",
        "Watchlist: desk",
    ):
        assert expected in text, expected
    message = alert_message(alert, "f@example.com", ["a@example.com", "b@example.com"])
    assert message["To"] == "a@example.com, b@example.com"
    assert message["Message-ID"] == f"<{alert.id}@finsentry>"


def test_channel_specs_are_validated() -> None:
    assert ChannelSpec(kind="email", to=["a@b.co"]).target_id.startswith("email-")
    assert ChannelSpec(kind="slack", name="x").target_id == "slack-x"
    for bad in (
        {"kind": "email", "to": []},
        {"kind": "email", "to": ["not-an-address"]},
        {"kind": "webhook"},
        {"kind": "webhook", "name": "x", "to": ["a@b.co"]},
        {"kind": "pager", "name": "x"},
    ):
        with pytest.raises(ValidationError):
            ChannelSpec.model_validate(bad)


@pytest.fixture(scope="module")
def directory() -> CompanyDirectory:
    files = Settings().company_files
    if not files:
        pytest.skip("no company lists")
    return CompanyDirectory.from_files(files)


def test_entries_resolve_to_tickers(directory: CompanyDirectory) -> None:
    spec = WatchlistIn(companies=["AAPL", "$msft", "Tesla", "apple", "JPMorgan Chase"])
    watchlist = resolve_watchlist("desk", spec, directory)
    assert [c.ticker for c in watchlist.companies] == ["AAPL", "MSFT", "TSLA", "JPM"]
    assert watchlist.company_name("AAPL") == "Apple"
    with pytest.raises(WatchlistError, match="'Nosuchco Widgets'"):
        resolve_watchlist("desk", WatchlistIn(companies=["AAPL", "Nosuchco Widgets"]), directory)
    with pytest.raises(WatchlistError, match="invalid watchlist name"):
        resolve_watchlist("Desk!", spec, directory)
    channels = [ChannelSpec(kind="webhook", name="nope")]
    with pytest.raises(WatchlistError, match="unknown channels"):
        resolve_watchlist(
            "desk", WatchlistIn(companies=["AAPL"], channels=channels), directory, known_channels=[]
        )
