"""Watchlists: named lists of companies, each with the channels its alerts go to.

A watchlist comes from the rules file (`AlertRules.watchlists`, written to Elasticsearch at
every alerter start) or from the API (`PUT /v1/watchlists/{name}`). Entries are tickers or
company names; both resolve to tickers through the company lists (`Settings.company_files`)
before anything is stored, so a list is stored whole or not at all. The alerter re-reads the
watchlists index every few seconds: changes apply without a restart.

Channel secrets stay in the environment: a webhook or Slack channel names an entry of
`FINSENTRY_ALERT_CHANNEL_URLS`; an e-mail channel lists recipients and uses the SMTP settings.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from elasticsearch import AsyncElasticsearch, BadRequestError, Elasticsearch, NotFoundError
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from finsentry.messages import utcnow
from finsentry.streams.entity_linking import (
    WORD,
    CompanyIndex,
    clean_company_name,
    load_company_index,
)

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
MAX_COMPANIES = 1000
_EMAIL = re.compile(r"^[^@\s<>,;]+@[^@\s<>,;]+\.[^@\s<>,;]+$")

WatchlistName = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
Entry = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True,
        min_length=1,
        max_length=100,
        pattern=r"^\$?[A-Za-z0-9][A-Za-z0-9 .,&'()/-]*$",
    ),
]


class ChannelSpec(BaseModel):
    """Where a watchlist's alerts go. `webhook` and `slack` name a URL kept in the environment
    (FINSENTRY_ALERT_CHANNEL_URLS); `email` lists recipients (SMTP settings from the
    environment)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["webhook", "slack", "email"]
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    to: list[str] = Field(default_factory=list, max_length=50)

    @model_validator(mode="after")
    def _complete(self) -> ChannelSpec:
        if self.kind == "email":
            if not self.to or self.name is not None:
                raise ValueError("an email channel needs `to` (recipients) and no `name`")
            bad = [address for address in self.to if not _EMAIL.match(address)]
            if bad:
                raise ValueError(f"not e-mail addresses: {bad[:5]}")
        elif self.name is None or self.to:
            raise ValueError(f"a {self.kind} channel needs `name` (a channel URL name), no `to`")
        return self

    @property
    def target_id(self) -> str:
        if self.kind == "email":
            recipients = ",".join(sorted(a.lower() for a in self.to))
            return "email-" + hashlib.sha256(recipients.encode("utf-8")).hexdigest()[:12]
        return f"{self.kind}-{self.name}"


class WatchlistIn(BaseModel):
    """A watchlist as a person writes it (API body)."""

    model_config = ConfigDict(extra="forbid")

    companies: list[Entry] = Field(min_length=1, max_length=MAX_COMPANIES)
    channels: list[ChannelSpec] = Field(default_factory=list, max_length=20)
    description: str | None = Field(None, max_length=500)


class WatchlistSpec(WatchlistIn):
    """A watchlist in the rules file: the same, with its name."""

    name: WatchlistName


class WatchedCompany(BaseModel):
    ticker: str
    name: str | None = None


class Watchlist(BaseModel):
    """A watchlist as stored: what was asked for and the tickers it resolved to."""

    name: WatchlistName
    description: str | None = None
    entries: list[str]
    companies: list[WatchedCompany]
    channels: list[ChannelSpec] = Field(default_factory=list)
    source: Literal["api", "file"] = "api"
    updated_at: datetime = Field(default_factory=utcnow)

    @property
    def tickers(self) -> set[str]:
        return {c.ticker for c in self.companies}

    def company_name(self, ticker: str) -> str | None:
        return next((c.name for c in self.companies if c.ticker == ticker), None)


class WatchlistError(ValueError):
    """A watchlist that cannot be stored; the message says why."""


def _first(columns: dict[str, str], candidates: Sequence[str]) -> str | None:
    return next((columns[c] for c in candidates if c in columns), None)


@dataclass
class CompanyDirectory:
    """Tickers and names of the company lists: resolves watchlist entries."""

    names: dict[str, str] = field(default_factory=dict)
    index: CompanyIndex = field(default_factory=CompanyIndex)

    @classmethod
    def from_files(cls, paths: Iterable[Path]) -> CompanyDirectory:
        paths = list(paths)
        names: dict[str, str] = {}
        for path in paths:
            with Path(path).open(newline="", encoding="utf-8") as handle:
                reader = csv.DictReader(handle)
                columns = {c.strip().lower(): c for c in reader.fieldnames or [] if c}
                symbol = _first(columns, ("symbol", "act symbol", "ticker"))
                name = _first(columns, ("security", "security name", "company name", "name"))
                if symbol is None or name is None:
                    continue
                for row in reader:
                    ticker = (row.get(symbol) or "").strip().upper()
                    if ticker and ticker not in names:
                        names[ticker] = clean_company_name(row.get(name) or "") or ticker
        return cls(names=names, index=load_company_index(paths))

    def resolve(self, entry: str) -> str | None:
        """A ticker for a ticker ('AAPL', '$aapl') or a company name ('Apple')."""
        symbol = entry.removeprefix("$").strip().upper()
        if symbol in self.names or symbol in self.index.symbols:
            return symbol
        for variant in dict.fromkeys((entry, entry.title(), clean_company_name(entry))):
            node: Any = self.index.trie
            for token in WORD.findall(variant):
                node = node.get(token)
                if node is None:
                    break
            if node is not None and node is not self.index.trie and "$symbol" in node:
                return str(node["$symbol"])
        return None


def resolve_watchlist(
    name: str,
    spec: WatchlistIn,
    directory: CompanyDirectory,
    *,
    source: Literal["api", "file"] = "api",
    known_channels: Sequence[str] | None = None,
) -> Watchlist:
    """The watchlist to store, or WatchlistError naming every entry that does not resolve."""
    if not re.match(NAME_PATTERN, name):
        raise WatchlistError(
            f"invalid watchlist name {name!r}: 1-63 of a-z, 0-9, '-', '_', starting with a "
            "letter or digit"
        )
    companies: dict[str, WatchedCompany] = {}
    unknown: list[str] = []
    for entry in spec.companies:
        ticker = directory.resolve(entry)
        if ticker is None:
            unknown.append(entry)
        elif ticker not in companies:
            companies[ticker] = WatchedCompany(ticker=ticker, name=directory.names.get(ticker))
    if unknown:
        shown = ", ".join(repr(u) for u in unknown[:20])
        more = f" and {len(unknown) - 20} more" if len(unknown) > 20 else ""
        raise WatchlistError(
            f"unknown companies (neither a ticker nor a company name of the company lists): "
            f"{shown}{more}"
        )
    if known_channels is not None:
        missing = [
            c.name for c in spec.channels if c.kind != "email" and c.name not in known_channels
        ]
        if missing:
            raise WatchlistError(
                f"unknown channels {missing}: each webhook/slack channel must be a name in "
                "FINSENTRY_ALERT_CHANNEL_URLS"
            )
    return Watchlist(
        name=name,
        description=spec.description,
        entries=list(spec.companies),
        companies=list(companies.values()),
        channels=spec.channels,
        source=source,
    )


# --- storage -----------------------------------------------------------------------------

_KEYWORD = {"type": "keyword"}
WATCHLIST_MAPPINGS: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "name": _KEYWORD,
        "description": {"type": "text"},
        "entries": _KEYWORD,
        "companies": {"properties": {"ticker": _KEYWORD, "name": _KEYWORD}},
        "channels": {"type": "object", "enabled": False},
        "source": _KEYWORD,
        "updated_at": {"type": "date"},
    },
}


def _index_body() -> dict[str, Any]:
    return {
        "settings": {"number_of_shards": 1, "number_of_replicas": 0},
        "mappings": WATCHLIST_MAPPINGS,
    }


def ensure_watchlists_index(es: Elasticsearch, index: str) -> None:
    try:
        if not es.indices.exists(index=index):
            es.indices.create(index=index, **_index_body())
    except BadRequestError as error:
        if error.error != "resource_already_exists_exception":
            raise


async def ensure_watchlists_index_async(es: AsyncElasticsearch, index: str) -> None:
    try:
        if not await es.indices.exists(index=index):
            await es.indices.create(index=index, **_index_body())
    except BadRequestError as error:
        if error.error != "resource_already_exists_exception":
            raise


def put_watchlist(es: Elasticsearch, index: str, watchlist: Watchlist) -> None:
    """One document write: the watchlist is stored whole or not at all."""
    ensure_watchlists_index(es, index)
    es.index(
        index=index,
        id=watchlist.name,
        document=watchlist.model_dump(mode="json"),
        refresh="wait_for",
    )


async def put_watchlist_async(es: AsyncElasticsearch, index: str, watchlist: Watchlist) -> None:
    await ensure_watchlists_index_async(es, index)
    await es.index(
        index=index,
        id=watchlist.name,
        document=watchlist.model_dump(mode="json"),
        refresh="wait_for",
    )


def get_watchlist(es: Elasticsearch, index: str, name: str) -> Watchlist | None:
    try:
        found = es.get(index=index, id=name)
    except NotFoundError:
        return None
    return Watchlist.model_validate(found["_source"])


def delete_watchlist(es: Elasticsearch, index: str, name: str) -> bool:
    try:
        es.delete(index=index, id=name, refresh="wait_for")
    except NotFoundError:
        return False
    return True


def list_watchlists(es: Elasticsearch, index: str) -> list[Watchlist]:
    try:
        found = es.search(index=index, query={"match_all": {}}, size=1000, sort=["name"])
    except NotFoundError:
        return []
    return [Watchlist.model_validate(hit["_source"]) for hit in found["hits"]["hits"]]


async def list_watchlists_async(es: AsyncElasticsearch, index: str) -> list[Watchlist]:
    try:
        found = await es.search(index=index, query={"match_all": {}}, size=1000, sort=["name"])
    except NotFoundError:
        return []
    return [Watchlist.model_validate(hit["_source"]) for hit in found["hits"]["hits"]]
