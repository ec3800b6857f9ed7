"""The webhook outbox on the real Elasticsearch with local webhook receivers: replays are
idempotent, concurrent deliverers post once, failures back off and are retried by a sweep."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from elasticsearch import AsyncElasticsearch

from finsentry.alerts.outbox import Outbox, Target
from finsentry.alerts.rules import AlertRules, DeliveryPolicy, WindowStats, decide
from finsentry.alerts.store import AlertDocument, apply_alerts_template_async
from finsentry.es_client import make_async_es_client
from finsentry.messages import Alert
from finsentry.settings import Settings

pytestmark = pytest.mark.integration

POLICY = DeliveryPolicy(timeout_s=2.0, initial_backoff_s=0.3, max_backoff_s=1.0)


class Hook:
    """A webhook that answers `statuses` in turn (then 200) and records the alert ids."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.ids: list[str] = []
        todo = list(statuses or [])
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                del format, args

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                hook.ids.append(body.get("id") or body.get("text", ""))
                self.send_response(todo.pop(0) if todo else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook() -> Iterator[Hook]:
    hook = Hook(statuses=[500])
    yield hook
    hook.close()


@pytest.fixture
async def es(settings: Settings) -> AsyncIterator[tuple[AsyncElasticsearch, str]]:
    client = make_async_es_client(settings)
    await apply_alerts_template_async(client, settings.alerts_index)
    yield client, settings.alerts_index
    await client.close()


def an_alert() -> Alert:
    start = datetime.now(UTC) - timedelta(minutes=15)
    stats = WindowStats(
        key_type="ticker",
        key="AAPL",
        window_start=start,
        window_end=start + timedelta(minutes=15),
        total=30,
        negative=25,
        baseline=1.0,
    )
    alert = decide(AlertRules(), stats, last_alert_at=None, now=0.0)
    assert alert is not None
    return alert


async def test_failed_delivery_backs_off_and_a_sweep_delivers_once(es, hook: Hook) -> None:
    client, index = es
    async with httpx.AsyncClient() as http:
        outbox = Outbox(client, index, [Target.of("generic", hook.url)], POLICY, http)
        alert = an_alert()
        assert await outbox.put(alert)
        assert not await outbox.put(alert)

        assert not await outbox.deliver(alert.id)
        assert not await outbox.deliver(alert.id)
        assert hook.ids == [alert.id]
        doc = AlertDocument.model_validate((await client.get(index=index, id=alert.id))["_source"])
        assert doc.attempts == 1 and doc.last_error == f"{doc.pending_targets[0]}: HTTP 500"

        await asyncio.sleep(POLICY.initial_backoff_s + 0.2)
        await client.indices.refresh(index=index)
        assert await outbox.sweep() == 1
        assert await outbox.sweep() == 0
        assert hook.ids == [alert.id, alert.id]
        doc = AlertDocument.model_validate((await client.get(index=index, id=alert.id))["_source"])
        assert doc.delivered and doc.attempts == 2 and doc.pending_targets == []


async def test_concurrent_deliverers_post_once(es) -> None:
    client, index = es
    hook = Hook()
    try:
        async with httpx.AsyncClient() as http:
            targets = [Target.of("generic", hook.url)]
            first = Outbox(client, index, targets, POLICY, http)
            second = Outbox(client, index, targets, POLICY, http)
            alert = an_alert()
            assert await first.put(alert)
            results = await asyncio.gather(*(o.deliver(alert.id) for o in (first, second) * 3))
            assert sum(results) == 1
            assert hook.ids == [alert.id]
    finally:
        hook.close()
