"""The stream alerter end to end, on the real Kafka and Elasticsearch: crafted scored items go
to a unique scored topic, `finsentry alerter` runs as a subprocess, and two local webhook
receivers count what they get. The generic one is up from the start; the Slack-compatible one
is down when the episode begins and comes back later. Each gets exactly one notification for
the one negative burst; normal traffic gives none."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import ApiError, Elasticsearch
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from finsentry.alerts.outbox import ALERT_ID_HEADER
from finsentry.alerts.rules import AlertRules, DeliveryPolicy
from finsentry.alerts.stories import StoryPolicy
from finsentry.messages import Alert
from finsentry.settings import Settings
from tests.test_alerts_rules import scenario

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FINSENTRY = Path(sys.executable).with_name("finsentry")


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(what: str, check: Callable[[], Any], timeout: float, log: Path) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.3)
    tail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
    pytest.fail(f"timed out waiting for {what}; alerter log tail:\n{tail}")


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


def test_one_notification_per_episode_even_when_a_webhook_was_down(
    settings: Settings, kafka: dict[str, Any], es: Elasticsearch, tmp_path: Path
) -> None:
    admin = KafkaAdminClient(**kafka)
    admin.create_topics([NewTopic(settings.topic_scored, num_partitions=1, replication_factor=1)])
    admin.close()

    generic = Receiver()
    slack_port = free_port()  # nothing listens here until later
    rules = AlertRules(
        delivery=DeliveryPolicy(
            timeout_s=2.0, initial_backoff_s=0.5, max_backoff_s=1.0, sweep_interval_s=0.5
        ),
        # The crafted titles differ only by a number: near-duplicates by design, which
        # would count once (test_alerts_watchlists covers that); here each counts.
        stories=StoryPolicy(count_once=False),
    )
    rules_file = tmp_path / "rules.json"
    rules_file.write_text(rules.model_dump_json())
    env = {
        **os.environ,
        "FINSENTRY_APP_ID": settings.app_id,
        "FINSENTRY_TOPIC_SCORED": settings.topic_scored,
        "FINSENTRY_TOPIC_ALERTS": settings.topic_alerts,
        "FINSENTRY_ALERTS_INDEX": settings.alerts_index,
        "FINSENTRY_MANAGE_SERVICES": "false",
        "FINSENTRY_TOPIC_PARTITIONS": "1",
        "FINSENTRY_ALERT_RULES_FILE": str(rules_file),
        "FINSENTRY_WEBHOOK_URLS": json.dumps([f"http://127.0.0.1:{generic.port}/hook"]),
        "FINSENTRY_SLACK_WEBHOOK_URLS": json.dumps([f"http://127.0.0.1:{slack_port}/slack"]),
    }
    log = tmp_path / "alerter.log"
    slack: Receiver | None = None
    with log.open("wb") as out:
        alerter = subprocess.Popen(
            [str(FINSENTRY), "alerter", "--loglevel", "info"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        producer = KafkaProducer(**kafka, value_serializer=str.encode, key_serializer=str.encode)
        items = scenario(time.time(), with_steady=False)
        for it in items:
            producer.send(settings.topic_scored, key=it.id, value=it.model_dump_json())
        producer.flush()
        producer.close()

        def pending() -> dict[str, Any] | None:
            try:
                found = es.search(index=settings.alerts_index, query={"match_all": {}})
            except ApiError:  # not created yet, or its shard is still starting
                return None
            hits = found["hits"]["hits"]
            docs = [h["_source"] for h in hits]
            return docs[0] if docs and docs[0]["attempts"] >= 2 else None

        doc = wait_for("the alert to be stored and tried", pending, 120, log)
        assert doc["key"] == "BURST" and not doc["delivered"]
        assert [t.split("-")[0] for t in doc["pending_targets"]] == ["slack"]
        assert "http" not in (doc["last_error"] or "")
        assert len(generic.received) == 1

        slack = Receiver(slack_port)

        def delivered() -> bool:
            found = es.get(index=settings.alerts_index, id=doc["id"])["_source"]
            return bool(found["delivered"])

        wait_for("the Slack webhook to get the alert", delivered, 30, log)
        time.sleep(3 * rules.delivery.sweep_interval_s + 1)

        assert len(generic.received) == 1 and len(slack.received) == 1
        (hook,) = generic.received
        assert hook["id"] == doc["id"] and hook["path"] == "/hook"
        alert = Alert.model_validate({k: v for k, v in hook["body"].items() if k != "summary"})
        assert (alert.key_type, alert.key) == ("ticker", "BURST")
        assert alert.negative >= 12 and alert.sample_items
        assert slack.received[0]["id"] == doc["id"]
        assert "BURST" in slack.received[0]["body"]["text"]

        consumer = KafkaConsumer(
            settings.topic_alerts,
            **kafka,
            auto_offset_reset="earliest",
            consumer_timeout_ms=3000,
            group_id=None,
        )
        on_topic = [Alert.model_validate_json(m.value) for m in consumer]
        consumer.close()
        assert [(a.id, a.key) for a in on_topic] == [(doc["id"], "BURST")]
    finally:
        os.killpg(alerter.pid, signal.SIGTERM)
        try:
            alerter.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(alerter.pid, signal.SIGKILL)
            alerter.wait()
        generic.close()
        if slack is not None:
            slack.close()
