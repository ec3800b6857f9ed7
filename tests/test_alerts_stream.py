"""The stream alerter end to end, on the real Kafka and Elasticsearch: crafted scored items go
to a unique scored topic, `finsentry alerter` runs as a subprocess, and two local webhook
receivers count what they get. The generic one is up from the start; the Slack-compatible one
is down when the episode begins and comes back later. Each gets exactly one notification for
the one negative burst; normal traffic gives none."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import ApiError, Elasticsearch
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from finsentry.alerts.alerter_process import AlerterProcess
from finsentry.alerts.rules import AlertRules, DeliveryPolicy
from finsentry.alerts.stories import StoryPolicy
from finsentry.messages import Alert
from finsentry.settings import Settings
from tests.support.alerts import (
    Receiver,
    free_port,
    kafka,  # noqa: F401  (fixture)
    wait_for,
)
from tests.test_alerts_rules import scenario

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_one_notification_per_episode_even_when_a_webhook_was_down(
    settings: Settings,
    kafka: dict[str, Any],  # noqa: F811
    es: Elasticsearch,
    tmp_path: Path,
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
    ours = settings.model_copy(
        update={
            "topic_partitions": 1,
            "watchlists_index": f"{settings.app_id}-watchlists",  # none: no watchlists
            "webhook_urls": [f"http://127.0.0.1:{generic.port}/hook"],
            "slack_webhook_urls": [f"http://127.0.0.1:{slack_port}/slack"],
            "alert_channel_urls": {},
        }
    )
    alerter = AlerterProcess(ours, rules, tmp_path)
    alerter.start()
    slack: Receiver | None = None
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

        doc = wait_for("the alert to be stored and tried", pending, 120, alerter)
        assert doc["key"] == "BURST" and not doc["delivered"]
        assert [t.split("-")[0] for t in doc["pending_targets"]] == ["slack"]
        assert "http" not in (doc["last_error"] or "")
        assert len(generic.received) == 1

        slack = Receiver(slack_port)

        def delivered() -> bool:
            found = es.get(index=settings.alerts_index, id=doc["id"])["_source"]
            return bool(found["delivered"])

        wait_for("the Slack webhook to get the alert", delivered, 30, alerter)
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
        alerter.kill(signal.SIGTERM)
        es.options(ignore_status=404).indices.delete(index=ours.watchlists_index)
        generic.close()
        if slack is not None:
            slack.close()
