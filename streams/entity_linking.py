"""Find the tickers a text talks about: cashtags, exchange tags and company names.

Company names come from CSV lists (symbol + name columns). Names are matched on word
boundaries, case-sensitively, longest match first. A one-word name is ambiguous when it is
also an ordinary word ("Target", "Apple", "Visa", "Snap") or when it comes from a broad
exchange listing rather than a curated list (one with a sector column, like the S&P 500):
an ambiguous name only counts when the text looks like it talks about a company, i.e. the
name carries its legal suffix, or the text has finance words or a cashtag.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from finsentry.messages import CompanyMention, Mention

CASHTAG = re.compile(r"(?<![\w$])\$([A-Za-z]{1,6}(?:\.[A-Za-z]{1,2})?)(?![\w])")
# Reuters instrument codes in wire copy: "Microsoft <MSFT.O>", "Shell <SHEL.L>".
RIC_TAG = re.compile(r"<([A-Z]{1,6})\.(?:O|OQ|N|K|A|P|PK)>")
EXCHANGE_TAG = re.compile(
    r"\((?:NYSE|NASDAQ|Nasdaq|NYSE American|NYSEARCA|AMEX|OTC)\s*:\s*([A-Z]{1,6}(?:\.[A-Z])?)\)"
)
# Words, keeping "A.O." and "Coca-Cola" whole but splitting a possessive ("Tesla's").
WORD = re.compile(r"[A-Za-z0-9&]+(?:(?:\.|-|'(?![sS]\b))[A-Za-z0-9&]+)*")

_LEGAL_SUFFIXES = {
    "inc", "inc.", "incorporated", "corp", "corp.", "corporation", "co", "co.", "company",
    "ltd", "ltd.", "limited", "plc", "llc", "l.p.", "lp", "n.v.", "s.a.", "ag", "se", "sa",
    "holdings", "holding", "group", "the",
}  # fmt: skip
_SHARE_CLASS = re.compile(
    r"\s+[-–]\s+.*$|\s+(class [a-z]\b.*|common stock.*|ordinary shares.*|american depositary.*"
    r"|depositary shares.*|warrants?.*|units?\b.*|rights?\b.*|\(the\).*|series [a-z]\b.*"
    r"|\(class [a-z]\).*)$",
    re.IGNORECASE,
)
_FINANCE_CONTEXT = {
    "shares", "stock", "stocks", "earnings", "revenue", "profit", "ceo", "cfo", "analyst",
    "analysts", "upgrade", "upgrades", "downgrade", "downgrades", "guidance", "dividend",
    "ipo", "nasdaq", "nyse", "investors", "quarter", "quarterly", "q1", "q2", "q3", "q4",
    "sales", "rating", "outperform", "underperform",
    "market", "valuation", "acquisition", "merger", "sec", "lawsuit", "layoffs",
    "forecast", "outlook", "misses", "rally", "plunge", "plunges", "soars", "falls",
    "rises", "jumps", "slides", "tumbles",
}  # fmt: skip
# Single-word names that are everyday words in tweets and headlines.
_COMMON_WORDS = {
    "apple", "target", "visa", "snap", "block", "gap", "ball", "match", "crown", "best",
    "general", "ford", "oracle", "chase", "progressive", "southern", "equity",
    "global", "united", "american", "national", "first", "digital", "energy", "fox",
    "news", "square", "shell", "total", "delta", "alpha", "live", "open",
    "bank", "data", "cloud", "coin", "gold", "silver", "booking", "discovery", "genuine",
    "public", "realty", "regency", "service", "state", "street", "union", "waters",
    "zoom", "lumen", "carrier", "catalyst", "edison", "eagle", "evergy", "everest",
    "focus", "frontier", "harmony", "insight", "liberty", "marathon", "mosaic", "nucor",
    "pioneer", "prudential", "sierra", "summit", "trade", "trust", "unity", "vista", "west",
    "a", "an", "on", "it", "all", "any", "are", "be", "can", "for", "now", "one", "so",
    "big", "car", "cat", "key", "low", "net", "new", "out", "run", "see", "way",
}  # fmt: skip


# Names that are function words, commodities or periods: never a company by name alone
# (only with a legal suffix, or as a cashtag / exchange tag). Found by
# benchmarks/linker_eval.py: "On" (On Holding) began sentences, "Oil" was the commodity.
_NEVER_ALONE = {
    "a", "an", "on", "it", "all", "any", "are", "be", "can", "for", "now", "one", "so",
    "big", "car", "cat", "key", "low", "net", "new", "out", "run", "see", "way", "oil",
    "gas", "q1", "q2", "q3", "q4", "strategy", "dave", "open", "live", "best",
}  # fmt: skip

# Exchange and index names: a company name too, but nearly always meant as the market.
_NEVER_BY_NAME = {("Nasdaq",), ("NASDAQ",), ("NYSE",), ("Dow",)}


def clean_company_name(name: str) -> str:
    """'Apple Inc. - Common Stock' -> 'Apple'; 'Alcoa Corporation Common Stock' -> 'Alcoa'."""
    name = _SHARE_CLASS.sub("", name.strip().strip('"'))
    words = name.replace(",", " ").split()
    while len(words) > 1 and (words[-1].lower() in _LEGAL_SUFFIXES or words[-1] in {"&", "and"}):
        words.pop()
    return " ".join(words)


@dataclass
class CompanyIndex:
    """Name token sequences -> ticker, as a trie for longest-match scanning."""

    symbols: set[str] = field(default_factory=set)
    trie: dict = field(default_factory=dict)
    trusted: set[tuple[str, ...]] = field(default_factory=set)
    names: dict[str, str] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)

    def add(self, symbol: str, name: str, curated: bool = True) -> None:
        symbol = symbol.strip().upper()
        if not symbol or not name.strip():
            return
        self.symbols.add(symbol)
        self.names.setdefault(symbol, clean_company_name(name))
        for alias in {name.strip(), clean_company_name(name)}:
            tokens = tuple(WORD.findall(alias))
            if (
                not tokens
                or tokens in _NEVER_BY_NAME
                or (len(tokens) == 1 and _too_short(tokens[0]))
            ):
                continue
            node = self.trie
            for token in tokens:
                node = node.setdefault(token, {})
            node.setdefault("$symbol", symbol)
            if len(tokens) == 1 and curated and tokens[0].lower() not in _COMMON_WORDS:
                self.trusted.add(tokens)

    def is_ambiguous(self, tokens: tuple[str, ...]) -> bool:
        return len(tokens) == 1 and tokens not in self.trusted


def _too_short(token: str) -> bool:
    """'3M' and 'GE' are names; 'on', 'A' or a number ('111, Inc.') are not worth matching."""
    return len(token) < 2 or (len(token) == 2 and token.islower()) or token.isdigit()


def _symbol_and_name(row: dict[str, str]) -> tuple[str, str] | None:
    lowered = {k.strip().lower(): (v or "") for k, v in row.items() if k}
    symbol = next((lowered[k] for k in ("symbol", "act symbol", "ticker") if k in lowered), None)
    name = next(
        (
            lowered[k]
            for k in ("security", "security name", "company name", "name", "alias")
            if k in lowered
        ),
        None,
    )
    if symbol is None or name is None:
        return None
    return symbol, name


def load_company_index(paths: Iterable[Path]) -> CompanyIndex:
    """Read company lists (CSV with a symbol column and a name column)."""
    index = CompanyIndex()
    for path in paths:
        with Path(path).open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = {c.strip().lower() for c in reader.fieldnames or []}
            is_alias_list = "alias" in columns
            curated = is_alias_list or bool(columns & {"gics sector", "sector"})
            for row in reader:
                pair = _symbol_and_name(row)
                if pair is None:
                    raise ValueError(f"{path}: needs a symbol column and a name column")
                if is_alias_list:
                    index.aliases[pair[1].strip()] = pair[0].strip().upper()
                index.add(*pair, curated=curated)
    return index


def _has_finance_context(words: list[str], text: str) -> bool:
    return (
        bool(CASHTAG.search(text) or RIC_TAG.search(text))
        or "%" in text
        or any(w.lower() in _FINANCE_CONTEXT for w in words)
    )


def _blank(match: re.Match[str]) -> str:
    return " " * len(match.group())


def find_mentions(text: str, companies: CompanyIndex) -> list[CompanyMention]:
    """Companies mentioned in `text`, in order of first mention, each with the character
    spans of all its mentions (cashtags, exchange tags and names)."""
    found: dict[str, list[Mention]] = {}

    def add(symbol: str, start: int, end: int) -> None:
        found.setdefault(symbol, []).append(Mention(start=start, end=end))

    # A cashtag is an explicit ticker mention, listed today or not ($BTC, delisted names).
    for match in CASHTAG.finditer(text):
        add(match.group(1).upper(), match.start(), match.end())
    for match in EXCHANGE_TAG.finditer(text):
        add(match.group(1), match.start(1), match.end(1))
    for match in RIC_TAG.finditer(text):
        add(match.group(1), match.start(1), match.end(1))

    # Names are looked for in the text without its cashtags and exchange tags (blanked
    # out, so that offsets stay those of `text`).
    blanked = RIC_TAG.sub(_blank, EXCHANGE_TAG.sub(_blank, CASHTAG.sub(_blank, text)))
    words = list(WORD.finditer(blanked))
    tokens_of = [w.group() for w in words]
    finance_context: bool | None = None
    i = 0
    while i < len(words):
        node, best, best_len = companies.trie, None, 0
        for j in range(i, len(words)):
            node = node.get(tokens_of[j])  # type: ignore[assignment]
            if node is None:
                break
            if "$symbol" in node:
                best, best_len = node["$symbol"], j - i + 1
        if best is not None:
            tokens = tuple(tokens_of[i : i + best_len])
            if companies.is_ambiguous(tokens):
                followed_by_suffix = (
                    i + 1 < len(words) and tokens_of[i + 1].lower().rstrip(".,") in _LEGAL_SUFFIXES
                )
                if finance_context is None:
                    finance_context = _has_finance_context(tokens_of, text)
                context_is_enough = tokens[0].lower() not in _NEVER_ALONE
                if not (followed_by_suffix or (finance_context and context_is_enough)):
                    i += 1
                    continue
            add(best, words[i].start(), words[i + best_len - 1].end())
            i += best_len
        else:
            i += 1
    order = sorted(found, key=lambda symbol: min(m.start for m in found[symbol]))
    return [
        CompanyMention(
            ticker=symbol,
            name=companies.names.get(symbol),
            mentions=sorted(found[symbol], key=lambda m: m.start),
        )
        for symbol in order
    ]


def find_tickers(text: str, companies: CompanyIndex) -> list[str]:
    """Tickers mentioned in `text`, in order of first mention, without repeats."""
    return [company.ticker for company in find_mentions(text, companies)]
