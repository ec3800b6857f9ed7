"""What the alerter end-to-end tests share: a local webhook receiver and SMTP server that
record what they get, crafted scored items with per-company verdicts, the Kafka options
fixture (deleting the test's topics afterwards), and waiting on the alerter child."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from kafka.admin import KafkaAdminClient

from finsentry.alerts.alerter_process import AlerterProcess
from finsentry.alerts.outbox import ALERT_ID_HEADER
from finsentry.messages import CompanyScores, ScoredItem
from finsentry.settings import Settings


class Receiver:
    """An http.server webhook on 127.0.0.1 that records every POST."""

    def __init__(self, port: int = 0) -> None:
        received: list[dict[str, Any]] = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                del format, args

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received.append(
                    {
                        "path": self.path,
                        "id": self.headers.get(ALERT_ID_HEADER),
                        "body": json.loads(body),
                    }
                )
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.received = received
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Mailbox:
    """aiosmtpd on 127.0.0.1:`port`, started and stopped by the test."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.messages: list[bytes] = []
        self._controller: Controller | None = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        del server, session
        self.messages.append(envelope.content)
        return "250 OK"

    def start(self) -> None:
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(what: str, check: Callable[[], Any], timeout: float, alerter: AlerterProcess) -> Any:
    """Poll `check` until it returns something truthy; fail with the alerter's log tail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}; alerter log tail:\n{alerter.log_tail()}")


@pytest.fixture
def kafka(settings: Settings, kafka_bootstrap: str) -> Iterator[dict[str, Any]]:
    """kafka-python options; the test's topics (all carry the app id's tag) are deleted after."""
    options = {"bootstrap_servers": kafka_bootstrap, **settings.kafka_client_options()}
    yield options
    tag = settings.app_id.removeprefix("finsentry-")
    admin = KafkaAdminClient(**options)
    ours = [t for t in admin.list_topics() if tag in t]
    if ours:
        admin.delete_topics(ours)
    admin.close()


def _probs(sentiment: str, confidence: float) -> dict[str, float]:
    rest = (1.0 - confidence) / 2
    return {"bearish": rest, "neutral": rest, "bullish": rest} | {sentiment: confidence}


def verdict(ticker: str, sentiment: str, confidence: float, name: str) -> CompanyScores:
    """What an item says about one company: `sentiment` with `confidence`."""
    probs = _probs(sentiment, confidence)
    return CompanyScores(
        ticker=ticker,
        name=name,
        sentiment=sentiment,  # type: ignore[arg-type]
        confidence=confidence,
        probs=probs,
        score=probs["bullish"] - probs["bearish"],
    )


def scored(
    item_id: str,
    title: str,
    sentiment: str,
    companies: list[CompanyScores],
    *,
    source: str = "wire",
    confidence: float = 0.9,
) -> ScoredItem:
    """A scored item (scored now) with the item's own verdict and the companies' ones."""
    now = datetime.now(UTC)
    probs = _probs(sentiment, confidence)
    return ScoredItem(
        id=item_id,
        source=source,
        title=title,
        text=title,
        url=f"https://news.example/{item_id}",
        tickers=[c.ticker for c in companies],
        companies=companies,
        topic="Company | Legal",
        topic_confidence=0.9,
        sentiment=sentiment,  # type: ignore[arg-type]
        sentiment_confidence=confidence,
        sentiment_probs=probs,
        sentiment_score=probs["bullish"] - probs["bearish"],
        model_version="test",
        ingested_at=now,
        scored_at=now,
        latency_ms=1.0,
    )
