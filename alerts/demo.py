"""The demo `finsentry run` shows: a watchlist the simulator's news events hit.

Without FINSENTRY_ALERT_RULES_FILE, `finsentry run` starts its alerter with `DEMO_RULES` (the
default rules plus the demo watchlist) and has the simulator's negative bursts happen to the
demo watchlist's companies, so severe-item alerts reach the live view within minutes. With a
rules file of one's own, neither happens.
"""

from __future__ import annotations

from pathlib import Path

from finsentry.alerts.rules import load_rules
from finsentry.settings import Settings

DEMO_RULES = Path(__file__).with_name("demo_rules.yaml")


def demo_alerter_args(settings: Settings) -> list[str]:
    """Extra `finsentry alerter` arguments: the demo rules unless a rules file is set."""
    return [] if settings.alert_rules_file else ["--rules-file", str(DEMO_RULES)]


def demo_burst_tickers(settings: Settings) -> list[str] | None:
    """The companies the simulator's bursts should hit: the demo watchlist's, or None (the
    simulator's own choice) when a rules file of one's own is set."""
    if settings.alert_rules_file:
        return None
    return [t for w in load_rules(DEMO_RULES).watchlists for t in w.companies]
