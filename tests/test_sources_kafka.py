"""The sources stage on the real broker, worker and index: `finsentry sources run` polls a
local HTTP server; new entries arrive once and become searchable; a runner killed with
SIGKILL and restarted sends nothing again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from kafka import KafkaConsumer, TopicPartition
from pydantic import SecretStr

from finsentry.queries.api import create_api
from finsentry.settings import Settings
from finsentry.sources.state import load_state
from tests.conftest import unique_settings
from tests.support.feed_server import FIXTURES, FeedServer, Route, fixture
from tests.support.streams import count
from tests.support.worker_process import WorkerProcess, settings_env, wait_until

pytestmark = pytest.mark.integration
TOKEN = "push-token-for-tests"


def raw_topic_total(settings: Settings) -> int:
    """Messages ever written to the raw topic (sum of its partitions' end offsets)."""
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    try:
        partitions = consumer.partitions_for_topic(settings.topic_raw) or set()
        ends = consumer.end_offsets([TopicPartition(settings.topic_raw, p) for p in partitions])
        return sum(ends.values())
    finally:
        consumer.close()


class Runner:
    """`finsentry sources run` as a child process."""

    def __init__(self, settings: Settings, model: Path, sources: Path, log: Path) -> None:
        env = settings_env(settings, model)
        env.update(
            {
                "FINSENTRY_STATE_DIR": str(settings.state_dir),
                "FINSENTRY_SOURCES_METRICS_PORT": "0",
                "FINSENTRY_SOURCES_TIMEOUT": "3",
                "FINSENTRY_SOURCE_SECRETS": json.dumps({"NEWS_API_KEY": "k-123"}),
            }
        )
        self.log = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "finsentry", "sources", "run", "--file", str(sources)],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.log.close()


@pytest.fixture(scope="module")
def stream(  # type: ignore[no-untyped-def]
    services: Settings, es, tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    """One worker for the module (texts up to 50,000 characters: whole articles)."""
    settings = unique_settings(
        services,
        max_batch=32,
        max_wait=0.2,
        max_text_chars=50_000,
        api_token=SecretStr(TOKEN),
        state_dir=tmp_path_factory.mktemp("state"),
    )
    worker = WorkerProcess(settings, tiny_artifact, tmp_path_factory.mktemp("w") / "worker.log")
    yield settings
    worker.terminate()
    for index in (settings.items_index, settings.dead_letters_index):
        es.options(ignore_status=404).indices.delete(index=index)


@pytest.fixture
def pipeline(stream: Settings) -> Iterator[tuple[Settings, FeedServer]]:
    server = FeedServer()
    yield stream, server
    server.close()


def test_entries_arrive_once_are_searchable_and_a_restart_resends_nothing(  # type: ignore[no-untyped-def]
    pipeline, es, tiny_artifact: Path, tmp_path: Path
) -> None:
    settings, server = pipeline
    server.set("/wire.rss", Route(fixture("rss_v1.xml")))
    server.set("/research.atom", Route(fixture("atom.xml"), "application/atom+xml"))
    server.set("/edgar.atom", Route(fixture("edgar_8k.xml"), "application/atom+xml"))
    server.set("/api/news", Route(fixture("news_api.json"), "application/json", validators=False))
    sources = tmp_path / "sources.yaml"
    template = (FIXTURES / "local_sources.yaml").read_text()
    sources.write_text(template.replace("__BASE__", server.url("")).replace("0.3", "0.5"))
    log = tmp_path / "runner.log"

    sent_before = raw_topic_total(settings)
    indexed_before = count(es, settings.items_index)
    runner = Runner(settings, tiny_artifact, sources, log)
    try:
        index = settings.items_index
        wait_until(lambda: count(es, index) >= indexed_before + 10, 150, "10 indexed items")
        server.set("/wire.rss", Route(fixture("rss_v2.xml")))
        wait_until(lambda: count(es, index) >= indexed_before + 12, 60, "12 indexed items")
    finally:
        runner.kill()
    assert raw_topic_total(settings) == sent_before + 12
    assert count(es, settings.items_index) == indexed_before + 12
    es.indices.refresh(index=settings.items_index)
    hits = es.search(index=settings.items_index, query={"match": {"title": "Boeing"}})["hits"]
    assert hits["total"]["value"] == 1
    doc = hits["hits"][0]["_source"]
    assert doc["source"] == "wire-rss" and doc["url"].endswith("/ba-halt")
    filings = es.count(index=settings.items_index, query={"term": {"source": "sec-8k"}})
    assert filings["count"] == 3

    # Restarted after SIGKILL: the JSON API has no validators (a full 200 every poll) and
    # the RSS feed answers 304; neither sends anything again.
    polls_before = {
        name: load_state(settings.state_dir, name).health.polls for name in ("news-api", "wire-rss")
    }
    served_before = len(server.requests("/api/news"))
    runner = Runner(settings, tiny_artifact, sources, log)
    try:
        wait_until(
            lambda: all(
                load_state(settings.state_dir, name).health.polls >= before + 3
                for name, before in polls_before.items()
            ),
            60,
            "three polls of each source after the restart",
        )
    finally:
        runner.kill()
    assert [s.status for s in server.requests("/api/news")[served_before:]][:3] == [200] * 3
    assert server.requests("/wire.rss")[-1].status == 304
    assert raw_topic_total(settings) == sent_before + 12
    assert count(es, settings.items_index) == indexed_before + 12
    assert "k-123" not in log.read_text()


def test_pushed_items_and_a_whole_article_become_searchable(stream: Settings, es) -> None:  # type: ignore[no-untyped-def]
    """POST /v1/items -> raw topic -> the real worker (with the chunking scorer) -> index."""
    ndjson = (FIXTURES / "push_items.ndjson").read_bytes()
    article = (FIXTURES / "long_article.txt").read_text()
    before = count(es, stream.items_index)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with TestClient(create_api(stream, es)) as client:
        pushed = client.post(
            "/v1/items", content=ndjson, headers={**auth, "Content-Type": "application/x-ndjson"}
        )
        assert pushed.status_code == 202 and pushed.json()["accepted"] == 4
        whole = {"id": "push-long-article", "source": "partner", "text": article}
        assert client.post("/v1/items", json=whole, headers=auth).status_code == 202
    wait_until(lambda: count(es, stream.items_index) >= before + 5, 120, "5 pushed items")
    assert count(es, stream.items_index) == before + 5
    for item_id in ("push-nd-1", "push-nd-2", "push-nd-3", "push-nd-4"):
        assert es.get(index=stream.items_index, id=item_id)["_source"]["source"] == "partner"
    doc = es.get(index=stream.items_index, id="push-long-article")["_source"]
    assert doc["text"] == article.strip() and doc["sentiment"] in {"bearish", "neutral", "bullish"}
    # read whole, in chunks of the tiny artifact's 128-token window (models/chunking.py)
    assert doc["chunks"] > 30 and doc["evidence"] in article
    assert count(es, stream.dead_letters_index) == 0
