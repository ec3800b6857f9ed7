"""Response bodies -> NewsItems. Pure: no I/O.

RSS 2.0, RSS 1.0 and Atom go through feedparser (encodings as declared by the HTTP header
or the XML prolog, dates, relative links); HTML is turned into text by selectolax (the
Lexbor HTML5 parser); JSON responses are mapped by the source's JMESPath `fields`.
A whole response that cannot be read raises `ExtractError`; one entry that cannot become a
NewsItem is reported in `Extracted.rejected` while the others are kept.
"""

from __future__ import annotations

import calendar
import hashlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from xml.sax import SAXException

import feedparser
import jmespath
from pydantic import ValidationError
from selectolax.lexbor import LexborHTMLParser

from finsentry.messages import NewsItem
from finsentry.sources.config import JsonFields, SourceConfig

_WHITESPACE = re.compile(r"[ \t\r\f\v]+")
_BLANK_LINES = re.compile(r"\n\s*\n+")
_BLOCKS = ("p", "div", "br", "li", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "blockquote")
_DROP = "script, style, noscript, template, iframe, svg, head"
_FEED_TYPES = ("xml", "rss", "atom", "rdf")
_NEUTRAL_TYPES = ("", "text/plain", "application/octet-stream", "binary/octet-stream")


class ExtractError(Exception):
    """A response that yields nothing: `kind` is the counted error kind."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class Extracted:
    items: list[NewsItem] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)  # why each dropped entry was dropped


def html_to_text(markup: str | None) -> str:
    """Visible text of an HTML fragment or page: scripts and styles dropped, block elements
    on their own lines, entities decoded, whitespace collapsed."""
    if not markup:
        return ""
    if "<" not in markup and "&" not in markup:
        return _tidy(markup)
    tree = LexborHTMLParser(markup)
    for node in tree.css(_DROP):
        node.decompose()
    root = tree.body or tree.root
    if root is None:
        return ""
    for node in root.css(", ".join(_BLOCKS)):
        node.insert_before("\n")
        node.insert_after("\n")
    return _tidy(root.text(separator="", strip=False))


def _tidy(text: str) -> str:
    lines = (_WHITESPACE.sub(" ", line).strip() for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def stable_id(source: str, guid: str | None, link: str | None, title: str, published: str) -> str:
    """The entry's id: from its guid, else its link, else title + published; scoped by the
    source so that two APIs numbering items 1, 2, 3 do not collide."""
    if guid:
        key = f"guid:{guid.strip()}"
    elif link:
        key = f"link:{link.strip()}"
    else:
        key = f"title:{title.strip()}|{published.strip()}"
    return f"{source}:{hashlib.sha256(key.encode()).hexdigest()[:32]}"


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip().lower()


def check_content_type(kind: str, content_type: str | None) -> None:
    media = _media_type(content_type)
    if media in _NEUTRAL_TYPES:
        return
    ok = "json" in media if kind == "json" else any(word in media for word in _FEED_TYPES)
    if not ok:
        raise ExtractError("content_type", f"a {kind} source answered with {media!r}")


def _struct_to_datetime(value: Any) -> datetime | None:
    if not value:
        return None
    return datetime.fromtimestamp(calendar.timegm(value), UTC)


def _parse_time(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = value / 1000 if value > 1e11 else value  # epoch milliseconds or seconds
        return datetime.fromtimestamp(seconds, UTC)
    text = str(value).strip()
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        try:
            parsed = parsedate_to_datetime(text)  # RFC 822, as in RSS
        except (TypeError, ValueError):
            return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _tickers(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = re.split(r"[,\s]+", value)
    if not isinstance(value, list):
        return []
    found = []
    for one in value:
        if isinstance(one, dict):  # e.g. [{"symbol": "AAPL"}]
            one = one.get("symbol") or one.get("ticker")
        if isinstance(one, str) and one.strip():
            found.append(one.strip().upper().lstrip("$"))
    return found


def _merge_tickers(*lists: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for values in lists:
        for value in values:
            seen.setdefault(value, None)
    return list(seen)


def build_item(source: SourceConfig, record: dict[str, Any]) -> NewsItem:
    """One NewsItem from already-extracted fields; `ValidationError` when it cannot be."""
    title = html_to_text(record.get("title")) or None
    text = html_to_text(record.get("text")) or title or ""
    published = record.get("published")
    extra = {k: v for k, v in (record.get("extra") or {}).items() if v not in (None, "", [])}
    tickers = _merge_tickers(source.tickers, record.get("tickers") or [])
    if tickers:
        extra["tickers"] = tickers
    item_id = stable_id(
        source.name,
        record.get("guid"),
        record.get("url"),
        title or text[:200],
        published.isoformat() if isinstance(published, datetime) else "",
    )
    return NewsItem(
        id=item_id,
        source=source.name,
        kind=source.item_kind,
        title=title,
        text=text,
        url=record.get("url") or None,
        author=record.get("author") or None,
        published_at=published,
        lang=record.get("lang") or source.lang,
        extra=extra,
    )


def _collect(
    source: SourceConfig, records: Iterable[dict[str, Any]], labels: Iterable[str]
) -> Extracted:
    out = Extracted()
    seen: set[str] = set()
    for label, record in zip(labels, records, strict=False):
        try:
            item = build_item(source, record)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"]) or "entry"
            out.rejected.append(f"{label}: {where}: {first['msg']}")
            continue
        if item.id not in seen:  # a feed listing an entry twice sends it once
            seen.add(item.id)
            out.items.append(item)
    return out


def _feed_records(parsed: Any, lang: str | None) -> list[dict[str, Any]]:
    records = []
    for entry in parsed.entries:
        content = entry.get("content") or []
        body = max((c.get("value", "") for c in content), key=len, default="")
        summary = entry.get("summary", "")
        published = _struct_to_datetime(
            entry.get("published_parsed") or entry.get("updated_parsed")
        )
        records.append(
            {
                "guid": entry.get("id"),
                "url": entry.get("link"),
                "title": entry.get("title"),
                "text": body if len(body) >= len(summary) else summary,
                "published": published,
                "author": entry.get("author"),
                "lang": lang,
                "extra": {
                    "categories": [t.get("term") for t in entry.get("tags", []) if t.get("term")],
                    "entry": entry,  # removed by the caller; lets EDGAR read its fields
                },
            }
        )
    return records


def parse_feed(body: bytes, content_type: str | None, url: str) -> Any:
    """feedparser's result, or ExtractError when the feed cannot be trusted."""
    headers = {"content-location": url}
    if content_type and "charset=" in content_type.lower():
        headers["content-type"] = content_type
    else:
        # RFC 7303: with no charset parameter the XML declaration (or BOM) decides, also
        # for text/xml (feedparser would follow RFC 3023's us-ascii default instead).
        headers["content-type"] = "application/xml"
    # Markup is reduced to text here: neither sanitising nor resolving links inside it helps.
    parsed = feedparser.parse(
        body, response_headers=headers, sanitize_html=False, resolve_relative_uris=False
    )
    if parsed.get("bozo"):
        exc = parsed.get("bozo_exception")
        name = type(exc).__name__
        if isinstance(
            exc, feedparser.CharacterEncodingOverride | feedparser.CharacterEncodingUnknown
        ):
            raise ExtractError("encoding", f"not in its declared encoding ({name}: {exc})")
        if isinstance(exc, SAXException | feedparser.NonXMLContentType) or not parsed.entries:
            raise ExtractError("malformed", f"not a well-formed feed ({name}: {exc})"[:300])
    if not parsed.get("version") and not parsed.entries:
        raise ExtractError("malformed", "not an RSS or Atom feed")
    return parsed


def extract_feed(
    source: SourceConfig,
    body: bytes,
    content_type: str | None,
    url: str,
    enrich: Callable[[dict[str, Any]], None] | None = None,
) -> Extracted:
    """Items of an RSS or Atom response, oldest first. `enrich` may add to each record
    (it sees the feedparser entry under `extra.entry`; EDGAR uses it)."""
    check_content_type(source.kind, content_type)
    parsed = parse_feed(body, content_type, url)
    lang = parsed.feed.get("language") or None
    records = _feed_records(parsed, lang[:16] if lang else None)
    for record in records:
        if enrich is not None:
            enrich(record)
        record["extra"].pop("entry", None)
        if feed_title := parsed.feed.get("title"):
            record["extra"]["feed"] = feed_title
    labels = [f"entry {i + 1}" for i in range(len(records))]
    out = _collect(source, records, labels)
    out.items.sort(key=lambda item: item.published_at or datetime.min.replace(tzinfo=UTC))
    return out


def _search(expression: str | None, record: Any) -> Any:
    return jmespath.search(expression, record) if expression else None


def _text_value(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, list):
        return "\n\n".join(str(v) for v in value if v is not None)
    return str(value)


def json_records(fields: JsonFields, data: Any) -> list[dict[str, Any]]:
    """The mapped records of a decoded JSON response."""
    items = jmespath.search(fields.items, data)
    if not isinstance(items, list):
        raise ExtractError(
            "malformed", f"`items` ({fields.items!r}) is {type(items).__name__}, not a list"
        )
    records = []
    for raw in items:
        if not isinstance(raw, dict):
            records.append({})
            continue
        guid = _search(fields.id, raw)
        records.append(
            {
                "guid": str(guid) if guid is not None else None,
                "title": _text_value(_search(fields.title, raw)),
                "text": _text_value(_search(fields.text, raw)),
                "url": _text_value(_search(fields.url, raw)),
                "published": _parse_time(_search(fields.published, raw)),
                "tickers": _tickers(_search(fields.tickers, raw)),
                "author": _text_value(_search(fields.author, raw)),
            }
        )
    return records


def extract_json(source: SourceConfig, body: bytes, content_type: str | None) -> Extracted:
    check_content_type("json", content_type)
    try:
        data = json.loads(body)
    except UnicodeDecodeError as exc:
        raise ExtractError("encoding", f"JSON that is not UTF-8: {exc.reason}") from exc
    except (json.JSONDecodeError, RecursionError, ValueError) as exc:
        raise ExtractError("malformed", f"not JSON: {exc}"[:300]) from exc
    assert source.fields is not None  # set for every json source by its validator
    records = json_records(source.fields, data)
    labels = [f"item {i + 1}" for i in range(len(records))]
    out = _collect(source, records, labels)
    out.items.sort(key=lambda item: item.published_at or datetime.min.replace(tzinfo=UTC))
    return out
