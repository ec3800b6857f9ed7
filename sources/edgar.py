"""SEC EDGAR filings feeds (the Atom of `browse-edgar?action=getcurrent`): form type,
company and CIK into `NewsItem.extra`, and the ticker where the company lists allow.

An EDGAR entry's title reads `8-K - Apple Inc. (0000320193) (Filer)`; its category term is
the form type and its summary lists the filing date, accession number and the items
("Item 2.02: Results of Operations and Financial Condition"). A CIK links to a ticker
through the lists' CIK column (the S&P 500 list has one); failing that, the company's name,
cleaned of legal suffixes, is looked up among the listed names.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finsentry.streams.entity_linking import clean_company_name

_TITLE = re.compile(
    r"^\s*(?P<form>[^\s].*?)\s+-\s+(?P<company>.+?)\s+\((?P<cik>\d{1,10})\)\s*(?:\((?P<role>[^)]*)\))?\s*$"
)
_ACCESSION = re.compile(r"accession-number=(?P<acc>[\d-]+)|AccNo:\s*</b>\s*(?P<acc2>[\d-]+)")
_NON_WORD = re.compile(r"[^a-z0-9 ]+")


def _name_key(name: str) -> str:
    cleaned = clean_company_name(name.replace("/", " ").replace("\\", " "))
    return " ".join(_NON_WORD.sub(" ", cleaned.lower()).split())


@dataclass
class CompanyDirectory:
    """CIK -> ticker and normalised name -> ticker, from the company list CSVs."""

    by_cik: dict[int, str] = field(default_factory=dict)
    by_name: dict[str, str] = field(default_factory=dict)

    def ticker(self, cik: str | None, company: str | None) -> str | None:
        if cik and cik.isdigit() and int(cik) in self.by_cik:
            return self.by_cik[int(cik)]
        if company:
            return self.by_name.get(_name_key(company))
        return None


def load_directory(paths: Iterable[Path]) -> CompanyDirectory:
    directory = CompanyDirectory()
    for path in paths:
        with Path(path).open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                lowered = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}
                symbol = lowered.get("symbol") or lowered.get("act symbol") or lowered.get("ticker")
                name = (
                    lowered.get("security")
                    or lowered.get("security name")
                    or lowered.get("company name")
                    or lowered.get("name")
                )
                if not symbol:
                    continue
                symbol = symbol.upper()
                cik = lowered.get("cik", "")
                if cik.isdigit():
                    directory.by_cik.setdefault(int(cik), symbol)
                if name and (key := _name_key(name)):
                    directory.by_name.setdefault(key, symbol)
    return directory


def parse_title(title: str) -> dict[str, str] | None:
    match = _TITLE.match(title or "")
    if match is None:
        return None
    return {k: v for k, v in match.groupdict().items() if v}


def enrich_record(record: dict[str, Any], directory: CompanyDirectory) -> None:
    """Add form type, company, CIK, accession and ticker to a feed record (in place)."""
    entry = record["extra"].get("entry") or {}
    extra = record["extra"]
    parts = parse_title(record.get("title") or "") or {}
    terms = [t.get("term") for t in entry.get("tags", []) if t.get("term")]
    form = terms[0] if terms else parts.get("form")
    if form:
        extra["form_type"] = form
    if company := parts.get("company"):
        extra["company"] = company
    if cik := parts.get("cik"):
        extra["cik"] = str(int(cik))
    if role := parts.get("role"):
        extra["filer_role"] = role
    haystack = f"{record.get('guid') or ''} {entry.get('summary', '')}"
    if accession := _ACCESSION.search(haystack):
        extra["accession"] = accession.group("acc") or accession.group("acc2")
    ticker = directory.ticker(parts.get("cik"), parts.get("company"))
    if ticker:
        record["tickers"] = [*record.get("tickers", []), ticker]
    extra.pop("categories", None)
    summary_items = [
        line.strip()
        for line in re.split(r"<br\s*/?>", entry.get("summary", ""))
        if line.strip().startswith("Item ")
    ]
    if summary_items:
        record["text"] = "\n".join(summary_items)
    if form and company:
        record["title"] = f"{form} filing: {company}"
