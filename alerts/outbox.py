"""The webhook outbox: alerts wait in the alerts index until every webhook has taken them.

Delivery is at-least-once. An attempt first *claims* the document (an optimistic-concurrency
update that pushes `next_attempt_at` past the attempt's deadline), so two deliverers (the
immediate one and the periodic sweep, or two alerter instances) never post the same alert at
once. Failed targets stay pending and are retried with exponential backoff. Receivers can
deduplicate on the `X-Finsentry-Alert-Id` header. Webhook URLs are secrets: documents and logs
name targets by a hash only.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import smtplib
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, Literal

import httpx
from elasticsearch import AsyncElasticsearch, ConflictError, NotFoundError
from pydantic import BaseModel, Field, SecretStr

from finsentry.alerts.email import SmtpConfig, alert_message
from finsentry.alerts.email import send as send_email
from finsentry.alerts.rules import DeliveryPolicy, slack_body, webhook_body
from finsentry.alerts.store import AlertDocument
from finsentry.alerts.watchlists import ChannelSpec, Watchlist
from finsentry.messages import Alert, utcnow
from finsentry.settings import Settings

log = logging.getLogger(__name__)

ALERT_ID_HEADER = "X-Finsentry-Alert-Id"


class Target(BaseModel):
    """One channel: `generic` webhooks get the Alert as JSON, `slack` a Slack-compatible
    body, `email` a readable message to `to` over SMTP."""

    id: str
    kind: Literal["generic", "slack", "email"]
    url: SecretStr | None = None
    to: list[str] = Field(default_factory=list)

    @classmethod
    def of(cls, kind: Literal["generic", "slack"], url: str) -> Target:
        digest = hashlib.sha256(url.encode("utf-8")).hexdigest()[:12]
        return cls(id=f"{kind}-{digest}", kind=kind, url=SecretStr(url))

    @classmethod
    def from_channel(cls, channel: ChannelSpec, urls: Mapping[str, SecretStr]) -> Target | None:
        """A watchlist channel's target; None for a webhook whose URL is not configured."""
        if channel.kind == "email":
            return cls(id=channel.target_id, kind="email", to=channel.to)
        url = urls.get(channel.name or "")
        if url is None:
            return None
        kind: Literal["generic", "slack"] = "slack" if channel.kind == "slack" else "generic"
        return cls(id=channel.target_id, kind=kind, url=url)

    def body(self, alert: Alert) -> dict[str, Any]:
        return slack_body(alert) if self.kind == "slack" else webhook_body(alert)


def targets_from_settings(settings: Settings) -> list[Target]:
    """The default targets: every alert not routed by a watchlist goes to these."""
    targets = [Target.of("generic", url) for url in settings.webhook_urls]
    targets += [Target.of("slack", url) for url in settings.slack_webhook_urls]
    return list({t.id: t for t in targets}.values())


def watchlist_targets(watchlist: Watchlist, settings: Settings) -> list[Target]:
    targets = [Target.from_channel(c, settings.alert_channel_urls) for c in watchlist.channels]
    found = [t for t in targets if t is not None]
    missing = [c.name for c, t in zip(watchlist.channels, targets, strict=True) if t is None]
    if missing:
        log.warning("watchlist %s: channels without a URL: %s", watchlist.name, missing)
    return list({t.id: t for t in found}.values())


def backoff_s(attempts: int, policy: DeliveryPolicy) -> float:
    """Delay after the `attempts`-th failed attempt: 1x, 2x, 4x, ... the initial backoff."""
    return min(policy.max_backoff_s, policy.initial_backoff_s * 2 ** max(attempts - 1, 0))


def after_attempt(
    doc: AlertDocument, failures: dict[str, str], now: datetime, policy: DeliveryPolicy
) -> dict[str, Any]:
    """The partial update that records one delivery attempt."""
    attempts = doc.attempts + 1
    pending = [t for t in doc.pending_targets if t in failures]
    if not pending:
        return {
            "delivered": True,
            "pending_targets": [],
            "attempts": attempts,
            "delivered_at": now.isoformat(),
            "last_error": None,
        }
    errors = "; ".join(f"{t}: {failures[t]}" for t in pending)
    return {
        "delivered": False,
        "pending_targets": pending,
        "attempts": attempts,
        "next_attempt_at": (now + timedelta(seconds=backoff_s(attempts, policy))).isoformat(),
        "last_error": errors[:1000],
    }


class Outbox:
    """Stores alerts in the alerts index and posts them to the webhooks until all have them."""

    def __init__(
        self,
        es: AsyncElasticsearch,
        index: str,
        targets: list[Target],
        policy: DeliveryPolicy,
        http: httpx.AsyncClient,
        clock: Callable[[], datetime] = utcnow,
        smtp: SmtpConfig | None = None,
    ) -> None:
        self._es = es
        self._index = index
        self._targets = {t.id: t for t in targets}
        self._defaults = list(self._targets)
        self._policy = policy
        self._http = http
        self._clock = clock
        self._smtp = smtp

    def add_targets(self, targets: list[Target]) -> None:
        """Make (watchlist) targets known, so that alerts routed to them can be delivered."""
        self._targets.update({t.id: t for t in targets})

    async def put(self, alert: Alert, targets: list[str] | None = None) -> bool:
        """Store a new alert as undelivered, for `targets` (default: the default targets);
        False when it is already there (a replay)."""
        chosen = self._defaults if targets is None else list(dict.fromkeys(targets))
        doc = AlertDocument.new(alert, chosen, self._clock())
        try:
            await self._es.create(
                index=self._index, id=alert.id, document=doc.model_dump(mode="json")
            )
        except ConflictError:
            return False
        return True

    async def deliver(self, doc_id: str) -> bool:
        """One attempt at the pending targets of one alert, if it is due and not claimed.
        True when this attempt completed the delivery to every target."""
        try:
            got = await self._es.get(index=self._index, id=doc_id)
        except NotFoundError:
            return False
        doc = AlertDocument.model_validate(got["_source"])
        if doc.delivered:
            return False
        now = self._clock()
        if doc.next_attempt_at > now:
            return False
        deadline = self._policy.timeout_s * max(1, len(doc.pending_targets)) + 5.0
        try:
            claimed = await self._es.update(
                index=self._index,
                id=doc_id,
                doc={"next_attempt_at": (now + timedelta(seconds=deadline)).isoformat()},
                if_seq_no=got["_seq_no"],
                if_primary_term=got["_primary_term"],
            )
        except ConflictError:
            return False
        alert = doc.to_alert()
        failures: dict[str, str] = {}
        for target_id in doc.pending_targets:
            target = self._targets.get(target_id)
            if target is None:
                log.warning("alert %s: target %s is no longer configured", doc_id, target_id)
                continue
            error = await self._post(target, alert)
            if error is not None:
                failures[target_id] = error
        update = after_attempt(doc, failures, self._clock(), self._policy)
        await self._es.update(
            index=self._index,
            id=doc_id,
            doc=update,
            if_seq_no=claimed["_seq_no"],
            if_primary_term=claimed["_primary_term"],
        )
        if failures:
            log.warning("alert %s not delivered yet: %s", doc_id, update["last_error"])
        return not failures

    async def sweep(self) -> int:
        """Retry every undelivered alert that is due; returns how many it completed."""
        now = self._clock()
        response = await self._es.search(
            index=self._index,
            query={
                "bool": {
                    "filter": [
                        {"term": {"delivered": False}},
                        {"range": {"next_attempt_at": {"lte": now.isoformat()}}},
                    ]
                }
            },
            sort=[{"next_attempt_at": "asc"}],
            size=100,
            source=False,
        )
        delivered = 0
        for hit in response["hits"]["hits"]:
            delivered += await self.deliver(hit["_id"])
        return delivered

    async def _post(self, target: Target, alert: Alert) -> str | None:
        """None on a 2xx answer (or an e-mail the server took), else a short error (never
        the URL or a password)."""
        if target.kind == "email":
            if self._smtp is None:
                return "SMTP not configured (FINSENTRY_SMTP_HOST)"
            message = alert_message(alert, self._smtp.sender, target.to)
            try:
                await asyncio.to_thread(send_email, self._smtp, message)
            except (OSError, smtplib.SMTPException) as error:
                return type(error).__name__
            return None
        assert target.url is not None
        try:
            response = await self._http.post(
                target.url.get_secret_value(),
                json=target.body(alert),
                headers={ALERT_ID_HEADER: alert.id},
                timeout=self._policy.timeout_s,
            )
        except httpx.HTTPError as error:
            return type(error).__name__
        return None if response.is_success else f"HTTP {response.status_code}"
