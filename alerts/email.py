"""E-mail over SMTP: readable alert messages (pure) and a blocking sender for an executor.

The server, account and TLS mode come from the settings (FINSENTRY_SMTP_*); the password is
a SecretStr, never logged. `send` is blocking (stdlib smtplib): the alerter calls it with
`asyncio.to_thread` so the event loop never waits on a mail server.
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Sequence
from email.message import EmailMessage

from pydantic import BaseModel, SecretStr

from finsentry.alerts.rules import summary, why
from finsentry.messages import Alert
from finsentry.settings import Settings

RULE_TITLES = {
    "severe_item": "severe bearish item",
    "negative_share": "high share of bearish items",
    "negative_spike": "spike of bearish items",
    "sentiment_shift": "sentiment shift",
}


class SmtpConfig(BaseModel):
    host: str
    port: int
    username: str | None = None
    password: SecretStr | None = None
    sender: str
    tls: str = "none"
    timeout_s: float = 10.0

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpConfig | None:
        if not settings.smtp_host:
            return None
        return cls(
            host=settings.smtp_host,
            port=settings.smtp_port,
            username=settings.smtp_username,
            password=settings.smtp_password,
            sender=settings.smtp_from,
            tls=settings.smtp_tls,
            timeout_s=settings.smtp_timeout,
        )


def alert_text(alert: Alert) -> str:
    """The plain-text body: company, rule, why in numbers, then the items."""
    company = f"{alert.company} ({alert.key})" if alert.company else alert.key
    lines = [
        f"Company:   {company}" if alert.key_type == "ticker" else f"Topic:     {alert.key}",
        f"Rule:      {alert.rule} - {RULE_TITLES.get(alert.rule, alert.rule)}",
        f"Why:       {why(alert)}",
        f"Watchlist: {alert.watchlist or '-'}",
        f"Window:    {alert.window_start:%Y-%m-%d %H:%M} - {alert.window_end:%H:%M} UTC",
        f"Alert id:  {alert.id}",
        "",
        "Items:" if alert.sample_items else "Items: none attached",
    ]
    for n, item in enumerate(alert.sample_items, 1):
        confidence = float(item.get("sentiment_confidence") or 0.0)
        lines += [
            f"{n}. {item.get('title') or item.get('id')}",
            f"   source: {item.get('source') or '-'}",
            f"   link: {item.get('url') or '-'}",
            f"   sentiment: {item.get('sentiment')} (confidence {confidence:.0%})",
        ]
    return "\n".join(lines) + "\n"


def alert_message(alert: Alert, sender: str, to: Sequence[str]) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = f"[finsentry] {summary(alert)}"[:250]
    message["From"] = sender
    message["To"] = ", ".join(to)
    # The same alert always has the same Message-ID: mail clients fold a rare re-send.
    message["Message-ID"] = f"<{alert.id}@finsentry>"
    message["X-Finsentry-Alert-Id"] = alert.id
    message.set_content(alert_text(alert))
    return message


def send(config: SmtpConfig, message: EmailMessage) -> None:
    """Deliver one message (blocking); raises OSError / smtplib.SMTPException on failure."""
    if config.tls == "ssl":
        client: smtplib.SMTP = smtplib.SMTP_SSL(
            config.host, config.port, timeout=config.timeout_s, context=ssl.create_default_context()
        )
    else:
        client = smtplib.SMTP(config.host, config.port, timeout=config.timeout_s)
    with client:
        if config.tls == "starttls":
            client.starttls(context=ssl.create_default_context())
        if config.username and config.password is not None:
            client.login(config.username, config.password.get_secret_value())
        client.send_message(message)
