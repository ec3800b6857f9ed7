"""The watchlist digest: each company's sentiment over the day against its own baseline (a
PNG chart) and the most negative stories, as an e-mail (sent by the alerter at
`FINSENTRY_DIGEST_AT`, UTC) or as a file (`finsentry digest --watchlist NAME`).

Scores are per company (the per-company verdict where the models gave one, else the item's,
see `rules.company_verdicts`); the baseline is each company's mean score over the
`baseline_days` before the digest period. Near-duplicate stories are listed once.
"""

from __future__ import annotations

import asyncio
import base64
import html
import io
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any

from elasticsearch import AsyncElasticsearch, ConflictError, Elasticsearch, NotFoundError
from pydantic import BaseModel, Field

from finsentry.alerts.email import SmtpConfig
from finsentry.alerts.email import send as send_email
from finsentry.alerts.rules import NEGATIVE, company_verdicts
from finsentry.alerts.stories import StoryTracker, story_text
from finsentry.alerts.watchlists import Watchlist
from finsentry.index.date_range import date_range_filters
from finsentry.messages import ScoredItem
from finsentry.settings import Settings

log = logging.getLogger(__name__)

MAX_ITEMS = 10_000


class Point(BaseModel):
    at: datetime
    mean_score: float
    items: int


class CompanyDay(BaseModel):
    ticker: str
    name: str | None = None
    series: list[Point] = Field(default_factory=list)
    mean_score: float | None = None
    baseline_score: float | None = None
    items: int = 0
    bearish: int = 0


class Story(BaseModel):
    ticker: str
    title: str
    source: str
    url: str | None = None
    sentiment: str
    confidence: float
    score: float
    at: datetime
    copies: int = 1


class Digest(BaseModel):
    watchlist: str
    since: datetime
    until: datetime
    companies: list[CompanyDay]
    stories: list[Story]


def build_digest(
    watchlist: Watchlist,
    items: Iterable[ScoredItem],
    baseline_items: Iterable[ScoredItem],
    since: datetime,
    until: datetime,
    *,
    bucket: timedelta = timedelta(hours=1),
    top: int = 10,
) -> Digest:
    """The digest from the period's items and the baseline period's items (pure)."""
    watched = watchlist.tickers
    base_sum: dict[str, float] = defaultdict(float)
    base_n: dict[str, int] = defaultdict(int)
    for item in baseline_items:
        for ticker, verdict in company_verdicts(item).items():
            if ticker in watched:
                base_sum[ticker] += verdict.score
                base_n[ticker] += 1
    buckets: dict[str, dict[datetime, list[float]]] = defaultdict(lambda: defaultdict(list))
    bearish: dict[str, int] = defaultdict(int)
    stories = StoryTracker()
    found: dict[tuple[str, str], Story] = {}
    for item in sorted(items, key=lambda i: i.scored_at):
        story = stories.observe(
            item.id, story_text(item.title, item.text), item.scored_at.timestamp(), item.tickers
        )
        for ticker, verdict in company_verdicts(item).items():
            if ticker not in watched:
                continue
            start = since + ((item.scored_at - since) // bucket) * bucket
            buckets[ticker][start].append(verdict.score)
            if verdict.sentiment != NEGATIVE:
                continue
            bearish[ticker] += 1
            key = (ticker, story)
            if key in found:
                found[key].copies += 1
                continue
            found[key] = Story(
                ticker=ticker,
                title=item.title or item.text[:200],
                source=item.source,
                url=item.url,
                sentiment=verdict.sentiment,
                confidence=verdict.confidence,
                score=verdict.score,
                at=item.scored_at,
            )
    companies = []
    for company in watchlist.companies:
        series = [
            Point(at=at, mean_score=sum(v) / len(v), items=len(v))
            for at, v in sorted(buckets[company.ticker].items())
        ]
        n = sum(p.items for p in series)
        companies.append(
            CompanyDay(
                ticker=company.ticker,
                name=company.name,
                series=series,
                mean_score=sum(p.mean_score * p.items for p in series) / n if n else None,
                baseline_score=(
                    base_sum[company.ticker] / base_n[company.ticker]
                    if base_n[company.ticker]
                    else None
                ),
                items=n,
                bearish=bearish[company.ticker],
            )
        )
    worst = sorted(found.values(), key=lambda s: (s.score, -s.confidence))[:top]
    return Digest(
        watchlist=watchlist.name, since=since, until=until, companies=companies, stories=worst
    )


def render_png(digest: Digest, width_in: float = 10.0) -> bytes:
    """Each company's mean score per bucket (solid) against its baseline (dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    shown = [c for c in digest.companies if c.series][:12]
    figure, axes = plt.subplots(figsize=(width_in, 4.5), dpi=100)
    try:
        for n, company in enumerate(shown):
            color = f"C{n % 10}"
            label = f"{company.ticker}" + (f" ({company.name})" if company.name else "")
            times = [p.at for p in company.series]
            axes.plot(
                times, [p.mean_score for p in company.series], marker="o", color=color, label=label
            )
            if company.baseline_score is not None:
                axes.axhline(company.baseline_score, color=color, linestyle="--", linewidth=1)
        axes.axhline(0.0, color="grey", linewidth=0.5)
        axes.set_ylim(-1.05, 1.05)
        axes.set_ylabel("mean sentiment score (bull - bear)")
        axes.set_title(
            f"Watchlist {digest.watchlist}: sentiment {digest.since:%Y-%m-%d %H:%M} - "
            f"{digest.until:%Y-%m-%d %H:%M} UTC (dashed: baseline)"
        )
        if shown:
            axes.legend(loc="lower left", fontsize="small", ncol=2)
        else:
            axes.text(0.5, 0.5, "no items about these companies", ha="center", va="center")
        figure.autofmt_xdate()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", bbox_inches="tight")
        return buffer.getvalue()
    finally:
        plt.close(figure)


def digest_text(digest: Digest) -> str:
    lines = [
        f"finsentry digest for watchlist {digest.watchlist}",
        f"{digest.since:%Y-%m-%d %H:%M} - {digest.until:%Y-%m-%d %H:%M} UTC",
        "",
        "Companies (mean score today vs baseline; items, bearish):",
    ]
    for c in digest.companies:
        today = f"{c.mean_score:+.2f}" if c.mean_score is not None else "  n/a"
        base = f"{c.baseline_score:+.2f}" if c.baseline_score is not None else "n/a"
        name = f" ({c.name})" if c.name else ""
        lines.append(f"  {c.ticker}{name}: {today} vs {base}; {c.items} items, {c.bearish} bearish")
    lines += ["", "Most negative stories:" if digest.stories else "No bearish stories."]
    for n, s in enumerate(digest.stories, 1):
        copies = f", {s.copies} copies" if s.copies > 1 else ""
        lines += [
            f"{n}. [{s.ticker}] {s.title}",
            f"   {s.source}, {s.at:%H:%M} UTC, {s.sentiment} ({s.confidence:.0%}){copies}",
            f"   {s.url or '-'}",
        ]
    return "\n".join(lines) + "\n"


def digest_html(digest: Digest, png: bytes) -> str:
    """A self-contained HTML page (the chart inline), for people without e-mail."""
    image = base64.b64encode(png).decode("ascii")
    rows = "".join(
        f"<tr><td>{html.escape(c.ticker)}</td><td>{html.escape(c.name or '')}</td>"
        f"<td>{'' if c.mean_score is None else f'{c.mean_score:+.2f}'}</td>"
        f"<td>{'' if c.baseline_score is None else f'{c.baseline_score:+.2f}'}</td>"
        f"<td>{c.items}</td><td>{c.bearish}</td></tr>"
        for c in digest.companies
    )
    stories = "".join(
        f"<li>[{html.escape(s.ticker)}] <a href='{html.escape(s.url or '#')}'>"
        f"{html.escape(s.title)}</a> - {html.escape(s.source)}, {s.at:%H:%M} UTC, "
        f"{s.sentiment} ({s.confidence:.0%})</li>"
        for s in digest.stories
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>finsentry digest {html.escape(digest.watchlist)}</title></head><body>"
        f"<h1>Watchlist {html.escape(digest.watchlist)}</h1>"
        f"<p>{digest.since:%Y-%m-%d %H:%M} - {digest.until:%Y-%m-%d %H:%M} UTC</p>"
        f"<img alt='sentiment chart' src='data:image/png;base64,{image}'>"
        "<table><tr><th>ticker</th><th>company</th><th>mean today</th><th>baseline</th>"
        f"<th>items</th><th>bearish</th></tr>{rows}</table>"
        f"<h2>Most negative stories</h2><ol>{stories}</ol></body></html>\n"
    )


def digest_message(digest: Digest, png: bytes, sender: str, to: Sequence[str]) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = (
        f"[finsentry] digest {digest.watchlist} {digest.until:%Y-%m-%d}: "
        f"{len(digest.stories)} negative stories"
    )
    message["From"] = sender
    message["To"] = ", ".join(to)
    message["Message-ID"] = f"<digest-{digest.watchlist}-{digest.until:%Y%m%d%H%M}@finsentry>"
    message.set_content(digest_text(digest))
    message.add_attachment(
        png, maintype="image", subtype="png", filename=f"{digest.watchlist}-sentiment.png"
    )
    return message


def fetch_items(
    es: Elasticsearch, index: str, tickers: Sequence[str], since: datetime, until: datetime
) -> list[ScoredItem]:
    """Items about any of `tickers` scored in [since, until), newest last (at most 10,000)."""
    query: dict[str, Any] = {
        "bool": {
            "filter": [
                {"terms": {"tickers": list(tickers)}},
                *date_range_filters("scored_at", since, until),
            ]
        }
    }
    try:
        found = es.search(index=index, query=query, size=MAX_ITEMS, sort=[{"scored_at": "asc"}])
    except NotFoundError:
        return []
    return [ScoredItem.model_validate(hit["_source"]) for hit in found["hits"]["hits"]]


def digest_from_es(
    es: Elasticsearch,
    items_index: str,
    watchlist: Watchlist,
    since: datetime,
    until: datetime,
    baseline_days: int = 7,
) -> Digest:
    tickers = sorted(watchlist.tickers)
    items = fetch_items(es, items_index, tickers, since, until)
    baseline = fetch_items(es, items_index, tickers, since - timedelta(days=baseline_days), since)
    return build_digest(watchlist, items, baseline, since, until)


def due_time(now: datetime, digest_at: str) -> datetime:
    """Today's digest time (UTC) for an 'HH:MM' setting."""
    hour, minute = (int(part) for part in digest_at.split(":"))
    return now.replace(hour=hour, minute=minute, second=0, microsecond=0)


async def send_due_digests(
    settings: Settings,
    es: AsyncElasticsearch,
    watchlists: Sequence[Watchlist],
    smtp: SmtpConfig,
    now: datetime,
) -> int:
    """Send today's digest of every watchlist with an e-mail channel, once: a marker
    document (`<watchlists_index>-digests`, id `<name>:<day>`) is created first, and removed
    again when sending fails so that the next round retries. Returns how many were sent."""
    if not settings.digest_at:
        return 0
    due = due_time(now, settings.digest_at)
    if now < due:
        return 0
    markers = f"{settings.watchlists_index}-digests"
    sent = 0
    for watchlist in watchlists:
        recipients = sorted({a for c in watchlist.channels if c.kind == "email" for a in c.to})
        if not recipients:
            continue
        marker = f"{watchlist.name}:{due:%Y-%m-%d}"
        try:
            await es.create(
                index=markers, id=marker, document={"watchlist": watchlist.name, "due": due}
            )
        except ConflictError:
            continue
        try:
            digest = await asyncio.to_thread(
                _digest_sync, settings, watchlist, due - timedelta(days=1), due
            )
            png = await asyncio.to_thread(render_png, digest)
            message = digest_message(digest, png, smtp.sender, recipients)
            await asyncio.to_thread(send_email, smtp, message)
            sent += 1
        except Exception:
            log.exception("digest %s not sent; retrying later", marker)
            await es.options(ignore_status=404).delete(index=markers, id=marker)
    return sent


def _digest_sync(
    settings: Settings, watchlist: Watchlist, since: datetime, until: datetime
) -> Digest:
    from finsentry.es_client import make_es_client

    with make_es_client(settings) as es:
        return digest_from_es(es, settings.items_index, watchlist, since, until)
