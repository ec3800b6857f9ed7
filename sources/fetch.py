"""One poll of one source over HTTP (httpx, async): conditional GET, size cap, timeouts,
redirects, gzip (httpx decodes it), and errors sorted into counted kinds.

An unchanged feed costs one 304: the previous response's `ETag` and `Last-Modified` go
back as `If-None-Match` / `If-Modified-Since`. `Retry-After` (seconds or an HTTP date) on a
429 or 503 is carried in the error so the poller waits at least that long.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from finsentry.sources.config import ResolvedSource

MAX_RETRY_AFTER = 24 * 3600.0


class FetchError(Exception):
    """A poll that brought nothing. `kind` is the counted error kind; the message never
    holds the URL (it may carry a key)."""

    def __init__(self, kind: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.retry_after = retry_after


@dataclass(frozen=True)
class Validators:
    etag: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True)
class Fetched:
    status: int  # 200 or 304
    body: bytes
    content_type: str | None
    validators: Validators
    url: str  # after redirects (secret-free only if the source URL was)


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """`Retry-After` as seconds: a number, or an HTTP date. None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    delta = (when - (now or datetime.now(UTC))).total_seconds()
    return min(max(0.0, delta), MAX_RETRY_AFTER)


def request_headers(source: ResolvedSource, user_agent: str, validators: Validators) -> dict:
    headers = {
        "User-Agent": user_agent,
        "Accept-Encoding": "gzip, deflate",
        "Accept": (
            "application/json;q=1.0, */*;q=0.5"
            if source.config.kind == "json"
            else "application/rss+xml, application/atom+xml, application/xml;q=0.9, "
            "text/xml;q=0.9, */*;q=0.5"
        ),
    }
    if validators.etag:
        headers["If-None-Match"] = validators.etag
    if validators.last_modified:
        headers["If-Modified-Since"] = validators.last_modified
    headers.update({k: v.get_secret_value() for k, v in source.headers.items()})
    return headers


async def _read_capped(response: httpx.Response, max_bytes: int) -> bytes:
    declared = response.headers.get("content-length", "")
    plain = "content-encoding" not in response.headers
    if declared.isdigit() and int(declared) > max_bytes and plain:
        raise FetchError("too_large", f"response declares {declared} bytes, cap is {max_bytes}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():  # decoded: a gzip bomb is capped too
        size += len(chunk)
        if size > max_bytes:
            raise FetchError("too_large", f"response is over the cap of {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def fetch(
    client: httpx.AsyncClient,
    source: ResolvedSource,
    validators: Validators,
    *,
    user_agent: str,
    timeout: float,
    max_bytes: int,
) -> Fetched:
    """GET the source once. Raises FetchError for anything but a usable 200 or a 304."""
    headers = request_headers(source, user_agent, validators)
    try:
        async with asyncio.timeout(timeout * 2):  # a server that drips bytes forever
            async with client.stream(
                "GET", source.url.get_secret_value(), headers=headers, timeout=timeout
            ) as response:
                if response.status_code == 304:
                    return Fetched(304, b"", None, validators, str(response.url))
                if response.status_code != 200:
                    retry = None
                    if response.status_code in (429, 503):
                        retry = retry_after_seconds(response.headers.get("retry-after"))
                    raise FetchError(
                        "rate_limited" if response.status_code == 429 else "http_status",
                        f"HTTP {response.status_code} {response.reason_phrase}",
                        retry_after=retry,
                    )
                body = await _read_capped(response, max_bytes)
                return Fetched(
                    200,
                    body,
                    response.headers.get("content-type"),
                    Validators(response.headers.get("etag"), response.headers.get("last-modified")),
                    str(response.url),
                )
    except TimeoutError as exc:
        raise FetchError("timeout", f"no complete answer within {timeout * 2:.0f}s") from exc
    except httpx.TooManyRedirects as exc:
        raise FetchError("redirects", "too many redirects (a redirect loop?)") from exc
    except httpx.TimeoutException as exc:
        raise FetchError("timeout", f"{type(exc).__name__} after {timeout}s") from exc
    except httpx.DecodingError as exc:
        raise FetchError("decoding", f"cannot decode the response: {exc}"[:300]) from exc
    except httpx.TransportError as exc:
        raise FetchError("connection", f"{type(exc).__name__}: {exc}"[:300]) from exc


def make_client(max_redirects: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        follow_redirects=True,
        max_redirects=max_redirects,
        limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
    )
