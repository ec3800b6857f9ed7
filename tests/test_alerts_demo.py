"""The demo `finsentry run` shows (alerts/demo.py): its alerter gets the demo rules, the
simulator's news events hit the demo watchlist, and the severe-item rule alerts on what the
trained model makes of such an event's headline: bearish for the company at 0.93. With the
trained artifact 20261129T161340-46518fbc462b, 63-76 % of each burst's items about its
company are bearish for it at 0.8 or more, in all six bursts of the first 5 minutes
(`benchmarks/demo_alerts.py`, BENCHMARKS.md)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from finsentry.alerts.demo import DEMO_RULES, demo_alerter_args, demo_burst_tickers
from finsentry.alerts.rules import load_rules, severe_trips
from finsentry.alerts.watchlists import CompanyDirectory, resolve_watchlist
from finsentry.feeds.simulator import MarketSimulator, load_companies
from finsentry.settings import Settings
from tests.support.alerts import scored, verdict

DEMO = Settings(alert_rules_file=None)
OWN = Settings(alert_rules_file=Path("/etc/finsentry/rules.yaml"))


@pytest.fixture(scope="module")
def demo_watchlist():  # type: ignore[no-untyped-def]
    if not DEMO.company_files:
        pytest.skip("no company lists")
    (spec,) = load_rules(DEMO_RULES).watchlists
    return resolve_watchlist(
        spec.name, spec, CompanyDirectory.from_files(DEMO.company_files), source="file"
    )


def test_run_uses_the_demo_only_without_a_rules_file_of_ones_own() -> None:
    assert demo_alerter_args(DEMO) == ["--rules-file", str(DEMO_RULES)]
    assert demo_alerter_args(OWN) == [] and demo_burst_tickers(OWN) is None


def test_the_simulated_news_events_hit_the_demo_watchlist(demo_watchlist) -> None:  # type: ignore[no-untyped-def]
    tickers = demo_burst_tickers(DEMO)
    assert tickers is not None and set(tickers) == demo_watchlist.tickers
    assert len(demo_watchlist.tickers) == 10
    simulator = MarketSimulator(load_companies(DEMO.company_files), seed=7, burst_tickers=tickers)
    first_minute = itertools.islice(simulator.items(), 20 * 60)  # `make run` sends 20 items/s
    burst = {i["extra"]["ticker"] for i in first_minute if i["extra"].get("burst")}
    assert burst and burst <= demo_watchlist.tickers


def test_the_severe_rule_alerts_on_an_event_about_a_demo_company(demo_watchlist) -> None:  # type: ignore[no-untyped-def]
    rule = load_rules(DEMO_RULES).severe_item
    assert rule is not None and rule.min_confidence == 0.8 and rule.topics == []
    headline = "Tesla under SEC investigation over accounting of vehicle deliveries"
    event = scored("sim-7-1", headline, "bearish", [verdict("TSLA", "bearish", 0.93, "Tesla")])
    (trip,) = severe_trips(event, [demo_watchlist], rule)
    assert (trip.watchlist.name, trip.ticker) == ("demo", "TSLA")

    unsure = scored("sim-7-2", headline, "bearish", [verdict("TSLA", "bearish", 0.7, "Tesla")])
    elsewhere = scored(
        "sim-7-3", "Coca-Cola probed", "bearish", [verdict("KO", "bearish", 0.95, "")]
    )
    good = scored("sim-7-4", "Tesla beats", "bullish", [verdict("TSLA", "bullish", 0.95, "Tesla")])
    for quiet in (unsure, elsewhere, good):
        assert severe_trips(quiet, [demo_watchlist], rule) == [], quiet.title
