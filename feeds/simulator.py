"""A built-in market simulator: an endless, seeded stream of NewsItem dicts.

Wire headlines and social comments/posts about companies from the configured company lists,
mostly a calm mix of bullish, neutral and bearish items plus macro items with no ticker, and
now and then a negative burst: for a stretch of items one ticker gets much of the chatter and
most of it is bearish (a recall, a probe, a guidance cut, a downgrade, ...).

Every text comes from the templates below (written for this project) with slots filled in;
each item records what it was meant to say in `extra` (`simulated`, `intended_sentiment`,
`burst`, `ticker`, `template`), so tests and demos can check what the pipeline made of it.
The same seed gives the same stream (with the default simulated clock, byte for byte).
"""

from __future__ import annotations

import csv
import json
import logging
import random
import re
import string
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from finsentry.messages import Sentiment
from finsentry.settings import Settings
from finsentry.streams.entity_linking import WORD, CompanyIndex, clean_company_name

log = logging.getLogger(__name__)

Style = Literal["news", "social"]

DEFAULT_START = datetime(2025, 1, 6, 14, 30, tzinfo=UTC)


@dataclass(frozen=True)
class Company:
    symbol: str
    name: str
    sector: str | None = None


@dataclass(frozen=True)
class Template:
    id: str
    sentiment: Sentiment
    style: Style
    text: str
    theme: str | None = None
    macro: bool = False

    @property
    def slots(self) -> frozenset[str]:
        return frozenset(f for _, f, _, _ in string.Formatter().parse(self.text) if f)


# --- company lists ---------------------------------------------------------------------

_SYMBOL_COLUMNS = ("symbol", "act symbol", "ticker")
_NAME_COLUMNS = ("security", "security name", "company name", "name")
_SECTOR_COLUMNS = ("gics sector", "sector")
# Rows of broad exchange listings that are not operating companies.
_NOT_A_COMPANY = (
    " etf", " fund", " trust", "warrant", " unit", " right", " notes", "preferred",
    "depositary", "debenture", "acquisition corp", " index", " etn",
)  # fmt: skip
_FORMAL_SUFFIX = re.compile(
    r"\s*\((?:the|class [a-z])\)|\s+-\s+.*$|\s+common stock.*$", re.IGNORECASE
)


def _column(columns: dict[str, str], candidates: Sequence[str]) -> str | None:
    return next((columns[c] for c in candidates if c in columns), None)


def _read_company_file(path: Path) -> tuple[list[Company], bool]:
    """Companies in one CSV list, and whether the list is curated (has a sector column)."""
    with Path(path).open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = {c.strip().lower(): c for c in reader.fieldnames or [] if c}
        symbol_col = _column(columns, _SYMBOL_COLUMNS)
        name_col = _column(columns, _NAME_COLUMNS)
        sector_col = _column(columns, _SECTOR_COLUMNS)
        if symbol_col is None or name_col is None:
            return [], False
        companies: list[Company] = []
        seen_names: set[str] = set()
        curated = sector_col is not None
        linker = CompanyIndex()
        for row in reader:
            symbol = (row.get(symbol_col) or "").strip().upper()
            raw_name = (row.get(name_col) or "").strip()
            if not symbol or not raw_name or not symbol.replace(".", "").isalpha():
                continue
            if sector_col is None and any(w in f" {raw_name.lower()}" for w in _NOT_A_COMPANY):
                continue
            name = clean_company_name(raw_name)
            linker.add(symbol, raw_name, curated=curated)
            if linker.is_ambiguous(tuple(WORD.findall(name))):
                # 'Target' alone is a word; 'Target Corporation' is a company.
                name = _FORMAL_SUFFIX.sub("", raw_name).strip() or name
            # Share classes (GOOGL/GOOG) share a name: the entity linker picks the first.
            if len(name) < 2 or name in seen_names:
                continue
            seen_names.add(name)
            sector = ((row.get(sector_col) or "").strip() or None) if sector_col else None
            companies.append(Company(symbol=symbol, name=name, sector=sector))
        return companies, curated


def load_companies(paths: Iterable[Path]) -> list[Company]:
    """The companies to talk about: the S&P 500 list (any curated list with a sector column)
    when one is given, else the first list with a symbol and a name column."""
    fallback: list[Company] = []
    for path in paths:
        if not Path(path).exists():
            continue
        companies, curated = _read_company_file(Path(path))
        if curated and companies:
            return companies
        if companies and not fallback:
            fallback = companies
    if not fallback:
        raise ValueError("no usable company list (CSV with a symbol and a name column)")
    return fallback


# --- templates -------------------------------------------------------------------------


def _company_templates(
    table: dict[tuple[Sentiment, Style], dict[str, tuple[str, ...]]],
) -> tuple[Template, ...]:
    """Templates from a (sentiment, style) -> theme -> texts table; "" means no theme."""
    return tuple(
        Template(
            id=f"{sentiment}-{style}-{theme or 'any'}-{i}",
            sentiment=sentiment,
            style=style,
            text=text,
            theme=theme or None,
        )
        for (sentiment, style), themes in table.items()
        for theme, texts in themes.items()
        for i, text in enumerate(texts, 1)
    )


def _macro_templates(table: dict[tuple[Sentiment, Style], tuple[str, ...]]) -> tuple[Template, ...]:
    return tuple(
        Template(
            id=f"macro-{sentiment}-{style}-{i}",
            sentiment=sentiment,
            style=style,
            text=text,
            macro=True,
        )
        for (sentiment, style), texts in table.items()
        for i, text in enumerate(texts, 1)
    )


COMPANY_TEMPLATES: tuple[Template, ...] = _company_templates(
    {
        ("bearish", "news"): {
            "recall": (
                "{name} recalls {units} units over a safety defect",
                "{name} widens recall after regulators flag {defect}",
                "{name} halts shipments of its {product} pending safety review",
                "{name} shares plunge {pct}% as recall of {units} units widens",
            ),
            "probe": (
                "{name} shares slide on report of federal probe into its accounting",
                "Regulators open investigation into {name} sales practices",
                "{name} discloses SEC subpoena; stock falls {pct}%",
                "{name} under SEC investigation over accounting irregularities; shares sink {pct}%",
            ),
            "guidance": (
                "{name} cuts full-year outlook, citing weaker demand",
                "{name} misses {q} estimates with EPS of ${eps_miss} vs ${eps_est} expected",
                "{name} slashes revenue forecast; shares tumble {pct}% after hours",
                "{name} drags {sector} stocks lower after weak quarter",
            ),
            "downgrade": (
                "{firm} downgrades {name} to underperform, cuts price target to ${pt_lo}",
                "{name} cut to sell at {firm} on margin worries",
                "{name} stock falls {pct}% after {firm} downgrade to sell",
            ),
            "legal": (
                "{name} hit with class action lawsuit over misleading disclosures",
                "Short seller {short_firm} targets {name}, alleging inflated revenue",
            ),
            "layoffs": (
                "{name} to cut {n_jobs} jobs as restructuring deepens",
                "{name} shares drop {pct}% as it announces {n_jobs} layoffs amid falling sales",
            ),
            "exec": (
                "{name} CFO resigns abruptly; shares fall {pct}%",
                "{name} stock tumbles {pct}% after CEO departs amid accounting questions",
            ),
            "": ("{name} suspends dividend to preserve cash as losses mount",),
            "breach": (
                "{name} reports data breach affecting millions of customers",
                "{name} shares fall {pct}% after massive data breach exposes customer records",
            ),
        },
        ("bullish", "news"): {
            "": (
                "{name} beats {q} estimates as revenue climbs {pct}%",
                "{name} tops forecasts with EPS of ${eps_beat} vs ${eps_est} expected",
                "{name} raises full-year guidance on strong demand",
                "{firm} upgrades {name} to buy, lifts price target to ${pt_hi}",
                "{firm} initiates {name} at outperform, sees {big_pct}% upside",
                "{name} announces ${bn}B share buyback",
                "{name} boosts quarterly dividend by {pct}%",
                "{name} wins multiyear contract worth ${bn}B",
                "{name} shares jump {pct}% after record quarterly sales",
                "{name} wins regulatory approval for its new {product}",
                "{name} stock hits all-time high as margins expand",
                "{name} leads {sector} gainers after upbeat forecast",
            ),
        },
        ("neutral", "news"): {
            "": (
                "{name} to report {q} results on {weekday}",
                "{name} names new chief operating officer",
                "{name} to present at {conference} next week",
                "{name} completes previously announced notes offering",
                "{name} declares regular quarterly dividend of ${dividend} per share",
                "{name} shares little changed ahead of investor day",
                "{firm} reiterates hold rating on {name}, price target ${pt_mid}",
                "{name} files annual report with the SEC",
                "{name} appoints {person} to its board of directors",
                "{name} sets date for annual shareholder meeting",
            ),
        },
        ("bearish", "social"): {
            "": (
                "{tag} looks ugly, broke support and no bid in sight {bear_emoji}",
                "Sold all my {tag} today. Management keeps overpromising and underdelivering",
                "{tag} down {pct}% and I think it's just getting started {bear_emoji}",
                "{tag} bagholders, how are we feeling today {bear_emoji}",
                "{tag} is a falling knife, stay away until it finds a floor",
            ),
            "guidance": (
                "That {name} guidance cut is a disaster, {tag} has a lot more downside",
                "Terrible call from {name} management, dodged every question. Out of {tag}",
            ),
            "recall": ("A recall on top of weak margins? {tag} is uninvestable right now",),
            "probe": ("If this probe turns out to be real, {tag} gets cut in half",),
            "downgrade": ("Bought puts on {tag}. This downgrade won't be the last one",),
            "layoffs": ("More layoffs at {name}. Demand must be worse than they admit {tag}",),
            "legal": ("Lawyers circling {tag} already, this will drag on for years",),
            "breach": ("{name} leaking customer data again?? {tag} deserves this selloff",),
            "exec": ("When the CFO walks out mid-quarter you sell first and ask later {tag}",),
        },
        ("bullish", "social"): {
            "": (
                "{tag} breaking out, loaded more calls this morning {bull_emoji}",
                "Been holding {tag} for years and this quarter shows why. Not selling",
                "{tag} guidance raise is huge, the street is way too low on this one",
                "Buying every dip in {tag}, the thesis hasn't changed {bull_emoji}",
                "{tag} up {pct}% and still cheap versus peers imo",
                "Big volume on {tag} today, looks like funds are accumulating",
                "{name} just crushed it. {tag} to new highs {bull_emoji}",
                "Who else is long {tag}? That earnings call was fantastic",
                "{tag} upgrade well deserved, margins keep getting better",
                "Added to my {tag} position, easily my highest conviction name",
            ),
        },
        ("neutral", "social"): {
            "": (
                "What's everyone's price target on {tag} going into earnings?",
                "{tag} reports next week, anyone playing it?",
                "Watching {tag} here, waiting for a cleaner setup before doing anything",
                "Anyone know when {name} reports? {tag}",
                "{tag} flat all day, options pricing a {pct}% move",
                "Reading through the {name} annual report this weekend. Long one {tag}",
                "Holding my {tag} shares, no changes for now",
            ),
        },
    }
)

MACRO_TEMPLATES: tuple[Template, ...] = _macro_templates(
    {
        ("bearish", "news"): (
            "Stocks slide as Treasury yields climb to {yield_pct}%",
            "Hotter-than-expected inflation reading rattles markets",
            "Consumer confidence falls to lowest level in {months} months",
            "Payroll growth stalls, stoking recession worries",
        ),
        ("bullish", "news"): (
            "Stocks rally as inflation cools more than expected",
            "Fed signals rate cuts ahead; equities climb",
            "Hiring beats forecasts with {jobs}k jobs added last month",
        ),
        ("neutral", "news"): (
            "Fed holds rates steady, in line with expectations",
            "Markets await {weekday} jobs report for direction",
            "Treasury yields little changed at {yield_pct}%",
        ),
        ("bearish", "social"): (
            "Tape feels heavy. Yields at {yield_pct}% and nobody cares until they do {bear_emoji}",
            "Recession talk everywhere today. Cutting risk until the picture clears",
            "Breadth is awful, a handful of megacaps holding up the whole index {bear_emoji}",
        ),
        ("bullish", "social"): (
            "CPI came in cool, bulls are back {bull_emoji}",
            "Soft landing looks more likely every week. Staying long {bull_emoji}",
            "Small caps finally joining the rally, this is what a healthy market looks like",
        ),
        ("neutral", "social"): (
            "Quiet session today, everyone waiting on the Fed",
            "Busy data week ahead: inflation on {weekday}, retail sales later in the week",
            "Anyone else sitting in cash until the jobs number?",
        ),
    }
)

ALL_TEMPLATES: tuple[Template, ...] = COMPANY_TEMPLATES + MACRO_TEMPLATES

_LEDES: dict[Sentiment, tuple[str, ...]] = {
    "bearish": (
        "Shares fell {pct}% in early trading.",
        "The stock is down {big_pct}% so far this year.",
        "Analysts said the news adds to pressure on margins.",
        "The company declined to comment beyond its statement.",
    ),
    "bullish": (
        "Shares rose {pct}% in premarket trading.",
        "The stock has gained {big_pct}% so far this year.",
        "Executives said demand remained strong across regions.",
    ),
    "neutral": (
        "The company made the announcement in a statement on {weekday}.",
        "Shares were little changed.",
        "Further details were not disclosed.",
    ),
}

# --- slot values (all invented) ----------------------------------------------------------

_FIRMS = (
    "Ashgrove Ridge Capital", "Northgate Securities", "Halvorsen & Pike", "Brightwater Research",
    "Ironbridge Advisors", "Larchmont Partners", "Osterley Brothers", "a major broker",
    "one Wall Street firm", "a top-ranked analyst",
)  # fmt: skip
_SHORT_FIRMS = ("Grey Lantern Research", "Blackfen Analytics", "Cold Harbor Reports")
_DEFECTS = (
    "overheating batteries", "faulty wiring", "a contamination risk", "a software glitch",
    "loose fasteners", "a labeling error",
)  # fmt: skip
_PRODUCTS = (
    "flagship product line", "next-generation platform", "treatment", "device",
    "payments service", "processor", "cloud offering",
)  # fmt: skip
_CONFERENCES = (
    "an investor conference", "a sector conference", "a global technology summit",
    "a healthcare investor forum", "an industrials symposium",
)  # fmt: skip
_FIRST_NAMES = (
    "Maren", "Tobias", "Priya", "Dario", "Elena", "Kwame", "Ingrid", "Matteo", "Noor", "Callum",
    "Yuki", "Beatriz", "Hollis", "Anouk", "Tariq", "Siobhan",
)  # fmt: skip
_LAST_NAMES = (
    "Okafor", "Lindqvist", "Marchetti", "Havel", "Draper", "Nakamura", "Quint", "Abernathy",
    "Falk", "Oyelaran", "Brennick", "Castellanos", "Whitcombe", "Vashti",
)  # fmt: skip
_HANDLE_PARTS = (
    ("value", "theta", "chart", "dip", "bull", "bear", "macro", "swing", "quiet", "option"),
    ("hawk", "gang", "wizard", "buyer", "trader", "monk", "watcher", "fox", "owl", "pilot"),
)
_BULL_EMOJI = ("🚀", "📈", "💪", "🔥", "")
_BEAR_EMOJI = ("📉", "🩸", "😬", "🐻", "")
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")


@dataclass(frozen=True)
class _Source:
    name: str
    kind: Literal["news", "comment", "post"]
    style: Style
    domain: str


_NEWS_SOURCES = (
    _Source("meridian-wire", "news", "news", "news.meridianwire.example"),
    _Source("ledger-daily", "news", "news", "ledgerdaily.example"),
    _Source("capital-tape", "news", "news", "capitaltape.example"),
)
_SOCIAL_SOURCES = (
    _Source("tickerchat", "post", "social", "tickerchat.example"),
    _Source("marketforum", "comment", "social", "forum.marketboard.example"),
)


class _Slots(dict[str, str]):
    """Slot values made on first use, so one item's numbers agree (headline and lede)."""

    def __init__(self, rng: random.Random, company: Company | None) -> None:
        super().__init__()
        self._rng = rng
        self._company = company
        self._price = rng.uniform(15, 650)
        self._eps = rng.uniform(0.2, 5.0)

    def __missing__(self, key: str) -> str:
        value = self._make(key)
        self[key] = value
        return value

    def _make(self, key: str) -> str:
        rng, company = self._rng, self._company
        if key in ("name", "tag", "sector"):
            if company is None:
                raise KeyError(key)
            if key == "name":
                return company.name
            if key == "tag":
                return f"${company.symbol}"
            return company.sector or "sector"
        if key == "pct":
            return f"{rng.uniform(1.5, 12):.1f}"
        if key == "big_pct":
            return str(rng.randint(12, 45))
        if key == "pt_lo":
            return str(round(self._price * (1 - rng.uniform(0.08, 0.3))))
        if key == "pt_hi":
            return str(round(self._price * (1 + rng.uniform(0.08, 0.35))))
        if key == "pt_mid":
            return str(round(self._price))
        if key == "eps_est":
            return f"{self._eps:.2f}"
        if key == "eps_beat":
            return f"{self._eps * (1 + rng.uniform(0.04, 0.25)):.2f}"
        if key == "eps_miss":
            return f"{self._eps * (1 - rng.uniform(0.04, 0.3)):.2f}"
        if key == "dividend":
            return f"{rng.uniform(0.05, 1.8):.2f}"
        if key == "bn":
            return f"{rng.uniform(0.5, 15):.1f}"
        if key == "q":
            return rng.choice(
                ("first-quarter", "second-quarter", "third-quarter", "fourth-quarter")
            )
        if key == "units":
            return f"{rng.randint(2, 480) * 1000:,}"
        if key == "n_jobs":
            return f"{rng.randint(4, 120) * 50:,}"
        if key == "months":
            return str(rng.randint(6, 30))
        if key == "jobs":
            return str(rng.randint(180, 340))
        if key == "yield_pct":
            return f"{rng.uniform(3.6, 5.1):.2f}"
        if key == "person":
            return f"{rng.choice(_FIRST_NAMES)} {rng.choice(_LAST_NAMES)}"
        choices = {
            "firm": _FIRMS,
            "short_firm": _SHORT_FIRMS,
            "defect": _DEFECTS,
            "product": _PRODUCTS,
            "conference": _CONFERENCES,
            "weekday": _WEEKDAYS,
            "bull_emoji": _BULL_EMOJI,
            "bear_emoji": _BEAR_EMOJI,
        }
        if key in choices:
            return rng.choice(choices[key])
        raise KeyError(key)


# --- the simulator -----------------------------------------------------------------------


class MarketSimulator:
    """An endless, deterministic stream of simulated NewsItem dicts (JSON-ready).

    Bursts are counted in items: about every `burst_every` items (jittered +-25%) a burst of
    `burst_length` items starts, during which a `burst_focus` share of items is about one
    ticker and a `burst_bearish` share of those is bearish, mostly on one theme.

    Without `clock`, `published_at` follows a simulated clock from `start` with exponential
    gaps of mean `mean_gap_s`; with `clock` (e.g. `lambda: datetime.now(UTC)`) it is the
    clock's time less a small publication lag.
    """

    def __init__(
        self,
        companies: Sequence[Company],
        seed: int = 0,
        *,
        burst_every: int = 600,
        burst_length: int = 120,
        burst_focus: float = 0.5,
        burst_bearish: float = 0.9,
        burst_social_share: float = 0.15,
        macro_share: float = 0.08,
        social_share: float = 0.55,
        mix: tuple[float, float, float] = (0.3, 0.35, 0.35),
        burst_tickers: Sequence[str] | None = None,
        start: datetime = DEFAULT_START,
        mean_gap_s: float = 0.5,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if not companies:
            raise ValueError("the simulator needs at least one company")
        if burst_every < 1 or burst_length < 0 or burst_length >= burst_every:
            raise ValueError("need burst_every >= 1 and 0 <= burst_length < burst_every")
        self.seed = seed
        self.burst_every = burst_every
        self.burst_length = burst_length
        self.burst_focus = burst_focus
        self.burst_bearish = burst_bearish
        self.burst_social_share = burst_social_share
        self.macro_share = macro_share
        self.social_share = social_share
        self.mix = dict(zip(("bearish", "neutral", "bullish"), mix, strict=True))
        self.start = start
        self.mean_gap_s = mean_gap_s
        self.clock = clock
        # Popularity: a seeded order, and a long tail of chatter (weight 1/rank^0.9).
        order = list(companies)
        random.Random(f"{seed}:order").shuffle(order)
        self.companies = order
        self._weights = [1.0 / (rank + 1) ** 0.9 for rank in range(len(order))]
        by_symbol = {c.symbol: c for c in order}
        if burst_tickers:
            unknown = [s for s in burst_tickers if s not in by_symbol]
            if unknown:
                raise ValueError(f"burst tickers not in the company list: {unknown}")
            self._burst_pool = [by_symbol[s] for s in burst_tickers]
        else:
            self._burst_pool = order[:50]
        self._templates: dict[tuple[bool, Style, Sentiment], list[Template]] = {}
        for template in ALL_TEMPLATES:
            key = (template.macro, template.style, template.sentiment)
            self._templates.setdefault(key, []).append(template)
        self._themes = sorted({t.theme for t in COMPANY_TEMPLATES if t.theme})

    def items(self) -> Iterator[dict[str, Any]]:
        """The stream: NewsItem-shaped dicts, forever (slice it with itertools.islice)."""
        rng = random.Random(self.seed)
        now = self.start
        next_burst = self._gap(rng) // 2
        burst_end, burst_company, burst_theme, burst_no = -1, None, None, 0
        n = 0
        while True:
            if n == next_burst:
                burst_no += 1
                burst_company = rng.choice(self._burst_pool)
                burst_theme = rng.choice(self._themes)
                burst_end = n + self.burst_length
                next_burst = n + self._gap(rng)
            in_burst = n < burst_end and burst_company is not None
            now += timedelta(seconds=rng.expovariate(1.0 / self.mean_gap_s))
            published = now if self.clock is None else self.clock()
            if in_burst and rng.random() < self.burst_focus:
                item = self._burst_item(rng, burst_company, burst_theme, n, published)  # type: ignore[arg-type]
                item["extra"]["burst_no"] = burst_no
            else:
                item = self._calm_item(rng, n, published)
            n += 1
            yield item

    def _gap(self, rng: random.Random) -> int:
        return max(self.burst_length + 1, round(self.burst_every * rng.uniform(0.75, 1.25)))

    def _calm_item(self, rng: random.Random, n: int, published: datetime) -> dict[str, Any]:
        sentiment = self._pick_sentiment(rng, self.mix)
        style: Style = "social" if rng.random() < self.social_share else "news"
        if rng.random() < self.macro_share:
            template = rng.choice(self._templates[(True, style, sentiment)])
            return self._render(rng, template, None, n, published, burst=False)
        company = rng.choices(self.companies, weights=self._weights)[0]
        template = self._pick_company_template(rng, style, sentiment, company, theme=None)
        return self._render(rng, template, company, n, published, burst=False)

    def _burst_item(
        self, rng: random.Random, company: Company, theme: str, n: int, published: datetime
    ) -> dict[str, Any]:
        rest = (1.0 - self.burst_bearish) / 2
        mix = {"bearish": self.burst_bearish, "neutral": rest, "bullish": rest}
        sentiment = self._pick_sentiment(rng, mix)
        # A burst is a news event: mostly wire headlines that say plainly what happened to
        # the company (a classifier reads those as bearish), with some social chatter.
        style: Style = "social" if rng.random() < self.burst_social_share else "news"
        on_theme = theme if sentiment == "bearish" and rng.random() < 0.8 else None
        template = self._pick_company_template(rng, style, sentiment, company, theme=on_theme)
        return self._render(rng, template, company, n, published, burst=True)

    @staticmethod
    def _pick_sentiment(rng: random.Random, mix: dict[str, float]) -> Sentiment:
        labels: list[Sentiment] = ["bearish", "neutral", "bullish"]
        return rng.choices(labels, weights=[mix[label] for label in labels])[0]

    def _pick_company_template(
        self,
        rng: random.Random,
        style: Style,
        sentiment: Sentiment,
        company: Company,
        theme: str | None,
    ) -> Template:
        pool = self._templates[(False, style, sentiment)]
        if company.sector is None:
            pool = [t for t in pool if "sector" not in t.slots]
        if theme is not None:
            themed = [t for t in pool if t.theme == theme]
            pool = themed or pool
        return rng.choice(pool)

    def _render(
        self,
        rng: random.Random,
        template: Template,
        company: Company | None,
        n: int,
        published: datetime,
        *,
        burst: bool,
    ) -> dict[str, Any]:
        slots = _Slots(rng, company)
        headline = template.text.format_map(slots)
        headline = " ".join(headline.split())
        if template.style == "news" and template.text.startswith("{firm}"):
            headline = headline[0].upper() + headline[1:]  # "a major broker" opens a headline
        sources = _NEWS_SOURCES if template.style == "news" else _SOCIAL_SOURCES
        source = rng.choice(sources)
        item_id = f"sim-{self.seed}-{n:09d}"
        if template.style == "news":
            title: str | None = headline
            text = headline
            if company is not None and rng.random() < 0.6:
                text = f"{headline}. {rng.choice(_LEDES[template.sentiment]).format_map(slots)}"
            author = f"{rng.choice(_FIRST_NAMES)} {rng.choice(_LAST_NAMES)}"
            slug = "-".join("".join(c for c in w if c.isalnum()) for w in headline.lower().split())
            url = f"https://{source.domain}/{published:%Y/%m/%d}/{slug[:80].strip('-')}-{n}"
            lag = rng.uniform(0, 90)
        else:
            title, text = None, headline
            author = (
                f"{rng.choice(_HANDLE_PARTS[0])}_{rng.choice(_HANDLE_PARTS[1])}{rng.randint(1, 99)}"
            )
            if source.kind == "post":
                url = f"https://{source.domain}/{author}/status/{rng.getrandbits(48)}"
            else:
                topic = company.symbol.lower() if company else "markets"
                url = f"https://{source.domain}/t/{topic}/{rng.getrandbits(32)}#c{n}"
            lag = rng.uniform(0, 5)
        if self.clock is not None:
            published -= timedelta(seconds=lag)
        return {
            "id": item_id,
            "source": source.name,
            "kind": source.kind,
            "title": title,
            "text": text,
            "url": url,
            "author": author,
            "published_at": published.isoformat(),
            "lang": "en",
            "extra": {
                "simulated": True,
                "intended_sentiment": template.sentiment,
                "burst": burst,
                "ticker": company.symbol if company else None,
                "template": template.id,
            },
        }


# --- to Kafka ----------------------------------------------------------------------------


class SimulationStats(BaseModel):
    """What `simulate_to_kafka` did."""

    seed: int
    sent: int
    failed: int
    elapsed_s: float
    first_error: str | None = None


def simulate_to_kafka(
    settings: Settings,
    rate: float = 10.0,
    limit: int | None = None,
    seed: int | None = None,
    *,
    progress: bool | None = None,
    stop_event: threading.Event | None = None,
    simulator: MarketSimulator | None = None,
    burst_tickers: Sequence[str] | None = None,
) -> SimulationStats:
    """Send simulated items to `settings.topic_raw` (UTF-8 JSON, key = id) at `rate` items/s.

    Runs until `limit` items were sent (forever when None), `stop_event` is set or Ctrl-C;
    then flushes (acks=all) and returns what happened; delivery failures are counted in
    `failed`, not raised. `seed` None picks a random one (reported in the stats). `progress`
    None shows a progress bar when stderr is a terminal. `published_at` is the wall clock.
    `burst_tickers` are the companies the negative bursts hit (default: the simulator's).
    """
    from kafka import KafkaProducer
    from tqdm import tqdm

    from finsentry.services.kafka_login import verify_kafka_login

    if rate <= 0:
        raise ValueError("rate must be > 0 items/s (math.inf for unpaced)")
    if seed is None:
        seed = random.SystemRandom().randrange(2**31)
    if simulator is None:
        simulator = MarketSimulator(
            load_companies(settings.company_files),
            seed=seed,
            clock=lambda: datetime.now(UTC),
            burst_tickers=burst_tickers,
        )
    stop = stop_event or threading.Event()
    show = sys.stderr.isatty() if progress is None else progress
    failures: list[BaseException] = []

    def on_error(exc: BaseException) -> None:
        failures.append(exc)

    verify_kafka_login(settings)  # a refused login fails now, not after a minute
    producer = KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        **settings.kafka_client_options(),
        acks="all",
        linger_ms=5,
    )
    sent = 0
    started = time.monotonic()
    bar = tqdm(total=limit, unit="item", desc=f"simulate -> {settings.topic_raw}", disable=not show)
    try:
        for item in simulator.items():
            if (limit is not None and sent >= limit) or stop.is_set():
                break
            delay = started + sent / rate - time.monotonic()
            if delay > 0 and stop.wait(delay):
                break
            value = json.dumps(item, ensure_ascii=False).encode("utf-8")
            future = producer.send(settings.topic_raw, key=item["id"].encode("utf-8"), value=value)
            future.add_errback(on_error)
            sent += 1
            bar.update(1)
    except KeyboardInterrupt:
        log.info("simulation interrupted after %d items", sent)
    finally:
        bar.close()
        producer.flush()
        producer.close()
    stats = SimulationStats(
        seed=seed,
        sent=sent,
        failed=len(failures),
        elapsed_s=round(time.monotonic() - started, 3),
        first_error=repr(failures[0]) if failures else None,
    )
    if failures:
        log.warning("%d of %d simulated items were not delivered", len(failures), sent)
    return stats
