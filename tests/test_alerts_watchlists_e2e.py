"""Watchlist alerts end to end, on the real Kafka and Elasticsearch: a watchlist is stored
through the HTTP API, `finsentry alerter` runs as a subprocess, crafted scored items go to a
unique scored topic, and a local webhook receiver and a local SMTP server (aiosmtpd) count
what they get.

One severe item about a watched company gives exactly one webhook POST and one e-mail; the
same story from two more sources, an unwatched company, a bullish item that names the
watched company in passing, and a bearish item that is bullish for the watched company give
nothing. The SMTP server is down when the episode starts and comes back later: the e-mail
arrives once. The alerter is then killed (SIGKILL) and restarted while the story goes on:
still one notification per channel for that company + rule + episode; a new severe story
about another watched company, waiting in the topic with the re-post, gives exactly one more
within `RESTART_S` of the restart (no wait for the killed member's session timeout), and the
alerter commits every item (none dropped by the table recovery).

Cooldown is 0 here, so only the near-duplicate detection keeps re-posts from alerting again;
the SMTP outage is `SMTP_DOWN_S` seconds (the retry schedule is `DeliveryPolicy`).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch
from fastapi.testclient import TestClient
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from finsentry.alerts.alerter_process import AlerterProcess
from finsentry.alerts.rules import AlertRules, DeliveryPolicy, SevereItemRule
from finsentry.messages import ScoredItem
from finsentry.queries.api import create_api
from finsentry.settings import Settings
from tests.support.alerts import (
    Mailbox,
    Receiver,
    free_port,
    kafka,  # noqa: F401  (fixture)
    scored,
    verdict,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SMTP_DOWN_S = 8.0
STARTUP_S = 300.0
# A restart must not wait for the killed member's session timeout (60 s): with static
# group membership the restarted alerter takes its partitions back at once.
RESTART_S = 45.0
STORY = "Apple under SEC investigation over accounting of iPhone sales"


def all_committed(options: dict[str, Any], group: str, topic: str) -> bool:
    """Whether `group` has committed the whole of partition 0 of `topic`."""
    tp = TopicPartition(topic, 0)
    consumer = KafkaConsumer(**options, group_id=group, enable_auto_commit=False)
    try:
        return consumer.committed(tp) == consumer.end_offsets([tp])[tp]
    finally:
        consumer.close()


def all_delivered(es: Elasticsearch, index: str) -> bool:
    """Whether the outbox has recorded every alert in `index` as delivered everywhere."""
    es.indices.refresh(index=index)
    return es.count(index=index, query={"term": {"delivered": False}})["count"] == 0


@pytest.fixture
def watch_settings(settings: Settings, es: Elasticsearch) -> Iterator[Settings]:
    ours = settings.model_copy(
        update={
            "watchlists_index": f"{settings.app_id}-watchlists",
            "alert_channel_urls": {},
        }
    )
    yield ours
    es.options(ignore_status=404).indices.delete(index=ours.watchlists_index)


def test_severe_item_on_a_watchlist_notifies_once_per_channel(
    watch_settings: Settings,
    kafka: dict[str, Any],  # noqa: F811
    es: Elasticsearch,
    tmp_path: Path,
) -> None:
    hook = Receiver()
    mailbox = Mailbox(free_port())  # down until later
    hook_url = f"http://127.0.0.1:{hook.port}/desk"
    settings = watch_settings.model_copy(
        update={
            "topic_partitions": 1,
            "webhook_urls": [],
            "slack_webhook_urls": [],
            "alert_channel_urls": {"desk-hook": hook_url},
            "smtp_host": "127.0.0.1",
            "smtp_port": mailbox.port,
            "smtp_from": "finsentry@example.com",
            # This test counts alert e-mails exactly; the daily digest (20:30 UTC by
            # default) would add one more to the mailbox when the suite runs in the evening.
            # Empty = off (None would leave the child alerter its default).
            "digest_at": "",
        }
    )
    admin = KafkaAdminClient(**kafka)
    admin.create_topics([NewTopic(settings.topic_scored, num_partitions=1, replication_factor=1)])
    admin.close()

    with TestClient(create_api(settings, es)) as client:
        answer = client.put(
            "/v1/watchlists/desk",
            json={
                "companies": ["AAPL", "Tesla"],
                "channels": [
                    {"kind": "webhook", "name": "desk-hook"},
                    {"kind": "email", "to": ["desk@example.com"]},
                ],
            },
        )
        assert answer.status_code == 200, answer.text
        assert [c["ticker"] for c in answer.json()["companies"]] == ["AAPL", "TSLA"]

    rules = AlertRules(
        cooldown_s=0,
        severe_item=SevereItemRule(min_confidence=0.8),
        delivery=DeliveryPolicy(
            timeout_s=2.0, initial_backoff_s=0.5, max_backoff_s=1.0, sweep_interval_s=0.5
        ),
    )
    alerter = AlerterProcess(settings, rules, tmp_path)
    producer = KafkaProducer(**kafka, value_serializer=str.encode, key_serializer=str.encode)

    def send(*items: ScoredItem) -> None:
        for it in items:
            producer.send(settings.topic_scored, key=it.id, value=it.model_dump_json())
        producer.flush()

    names = {"AAPL": "Apple", "TSLA": "Tesla"}

    def notified(key: str) -> tuple[int, int]:
        """(webhook POSTs, e-mails) about `key` so far."""
        posts = sum(h["body"]["key"] == key for h in hook.received)
        bodies = [message_from_bytes(m).get_payload(decode=True) for m in mailbox.messages]
        mails = sum(f"Company:   {names[key]} ({key})".encode() in b for b in bodies)
        return posts, mails

    apple_bear = verdict("AAPL", "bearish", 0.93, "Apple")
    alerter.start()
    try:
        send(
            scored("s1-a", STORY, "bearish", [apple_bear], source="wire-a"),
            # Bearish and confident, but about an unwatched company.
            scored(
                "xom",
                "Exxon under SEC investigation over reserves",
                "bearish",
                [verdict("XOM", "bearish", 0.95, "Exxon Mobil")],
            ),
            # A bullish item that names Apple in passing (neutral for Apple).
            scored(
                "passing",
                "Microsoft beats estimates, shrugging off Apple",
                "bullish",
                [
                    verdict("MSFT", "bullish", 0.9, "Microsoft"),
                    verdict("AAPL", "neutral", 0.7, "Apple"),
                ],
            ),
            # A bearish item that is good news for Apple.
            scored(
                "rival",
                "Samsung recalls phones; Apple gains share",
                "bearish",
                [verdict("AAPL", "bullish", 0.85, "Apple")],
            ),
        )
        # Generous: on a loaded 2-core machine the alerter takes long to start.
        wait_for("the webhook", lambda: hook.received, STARTUP_S, alerter)
        # The same story from two more sources, and a re-post.
        send(
            scored("s1-b", f"{STORY} - Reuters", "bearish", [apple_bear], source="wire-b"),
            scored(
                "s1-c",
                f"RT @desk: {STORY} https://t.co/x",
                "bearish",
                [apple_bear],
                source="social",
            ),
        )
        time.sleep(SMTP_DOWN_S)
        assert mailbox.messages == []
        mailbox.start()
        wait_for("the e-mail after the SMTP server is back", lambda: mailbox.messages, 30, alerter)
        assert notified("AAPL") == (1, 1)
        # The outbox records a delivery just after the receiver took it; a kill in between
        # sends it again on restart (at-least-once, alerts/outbox.py). This test counts
        # notifications exactly, so it kills only once the delivery is recorded.
        wait_for(
            "the outbox to record the deliveries",
            lambda: all_delivered(es, settings.alerts_index),
            30,
            alerter,
        )

        # Killed mid-episode: the story goes on while the alerter is down, and both items
        # wait in the topic for the restarted alerter (the case Faust's recovery used to
        # drop one of; alerts/recovery.py).
        alerter.kill(signal.SIGKILL)
        send(
            scored(
                "s1-d",
                STORY.replace("accounting", "the accounting"),
                "bearish",
                [apple_bear],
                source="wire-d",
            ),
            scored(
                "t1",
                "Tesla files for Chapter 11 bankruptcy protection",
                "bearish",
                [verdict("TSLA", "bearish", 0.97, "Tesla")],
            ),
        )
        alerter.start()
        wait_for("the Tesla alert", lambda: notified("TSLA")[0], RESTART_S, alerter)
        wait_for("the Tesla e-mail", lambda: notified("TSLA")[1], 30, alerter)
        # Every item after the restart was processed and acked: the alerter's committed
        # offset reaches the end of the topic (a dropped item would hold it back for good).
        group = f"{settings.app_id}-alerts"
        wait_for(
            "the alerter to commit every item",
            lambda: all_committed(kafka, group, settings.topic_scored),
            30,
            alerter,
        )
        time.sleep(4 * rules.delivery.sweep_interval_s + 2)

        # Exactly one notification per channel for each company + rule + episode.
        assert notified("AAPL") == (1, 1)
        assert notified("TSLA") == (1, 1)
        got = [(h["body"]["key"], h["body"]["story_id"]) for h in hook.received]
        assert len(hook.received) == 2 and len(mailbox.messages) == 2, got
        first, second = (h["body"] for h in hook.received)
        assert (first["key"], first["rule"], first["watchlist"]) == ("AAPL", "severe_item", "desk")
        assert first["sample_items"][0]["id"] == "s1-a"
        assert first["sample_items"][0]["sentiment"] == "bearish"
        assert hook.received[0]["path"] == "/desk"
        assert (second["key"], second["sample_items"][0]["id"]) == ("TSLA", "t1")

        mail = message_from_bytes(mailbox.messages[0])
        body = mail.get_payload(decode=True).decode()
        assert mail["To"] == "desk@example.com" and "AAPL" in mail["Subject"]
        for expected in (
            "Apple (AAPL)",
            "severe_item",
            "93%",
            STORY,
            "wire-a",
            "https://news.example/s1-a",
            "sentiment: bearish",
        ):
            assert expected in body, expected

        es.indices.refresh(index=settings.alerts_index)
        docs = es.search(index=settings.alerts_index, size=20)["hits"]["hits"]
        assert sorted(d["_source"]["key"] for d in docs) == ["AAPL", "TSLA"]
        assert all(d["_source"]["delivered"] for d in docs)
    finally:
        alerter.kill(signal.SIGTERM)
        producer.close()
        hook.close()
        mailbox.stop()
