"""The local real services: config rendering (unit) and the running Kafka + Elasticsearch
(integration: `up` is idempotent, round trips through the real broker and node)."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from finsentry.services import manager
from finsentry.services.base import Launch, LocalService
from finsentry.services.elasticsearch import elasticsearch_yml
from finsentry.services.java import parse_major
from finsentry.services.kafka import server_properties
from finsentry.services.process import ServiceError, process_alive, read_pid
from finsentry.settings import Settings


def _properties(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line)


def test_server_properties_is_a_single_kraft_node(tmp_path: Path) -> None:
    settings = Settings(kafka_port=19092, kafka_controller_port=19093)
    props = _properties(server_properties(settings, tmp_path / "data"))
    assert props["process.roles"] == "broker,controller"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://localhost:19092"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["log.dirs"] == str(tmp_path / "data")
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["group.initial.rebalance.delay.ms"] == "0"


def test_elasticsearch_yml_security_off_by_default(tmp_path: Path) -> None:
    text = elasticsearch_yml(Settings(elasticsearch_port=19200), tmp_path / "d", tmp_path / "l")
    assert 'discovery.type: "single-node"' in text
    assert "http.port: 19200" in text
    assert "transport.port: 19300" in text
    assert "xpack.security.enabled: false" in text
    assert "cluster.routing.allocation.disk.threshold_enabled: false" in text


def test_elasticsearch_yml_with_security(tmp_path: Path) -> None:
    settings = Settings(elasticsearch_security=True, es_password="s3cret-for-test")
    text = elasticsearch_yml(settings, tmp_path / "d", tmp_path / "l")
    assert "xpack.security.enabled: true" in text
    assert "s3cret-for-test" not in text


@pytest.mark.parametrize(
    ("text", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('java version "1.8.0_392"', 8),
        ('JAVA_VERSION="25.0.3"', 25),
        ('JAVA_VERSION="21"', 21),
        ("garbage", None),
    ],
)
def test_parse_java_major(text: str, major: int | None) -> None:
    assert parse_major(text) == major


def test_read_pid_needs_a_live_process_with_the_marker(tmp_path: Path) -> None:
    pid_file = tmp_path / "x.pid"
    pid_file.write_text(f"{os.getpid()}\n")
    assert read_pid(pid_file, os.getcwd()) == os.getpid()
    assert read_pid(pid_file, f"no-such-marker-{uuid.uuid4()}") is None
    pid_file.write_text("not a pid")
    assert read_pid(pid_file, os.getcwd()) is None


class _SlowStarter(LocalService):
    """A service whose command line never shows its marker, like a child between fork and
    exec (it still shows the parent's), that turns healthy after a second."""

    name = "slow"
    start_timeout = 10.0
    version = "0"
    url = "-"
    marker = f"never-in-any-command-line-{uuid.uuid4()}"
    ready_at = 0.0

    def ports(self) -> dict[str, int]:
        return {}

    def fetch(self) -> None:
        pass

    def prepare(self) -> Launch:
        self.ready_at = time.monotonic() + 1.0
        return Launch(command=["sleep", "30"], env=dict(os.environ), cwd=self.dir)

    def healthy(self) -> bool:
        return time.monotonic() >= self.ready_at


def test_start_up_waits_for_the_started_process_not_its_command_line(tmp_path: Path) -> None:
    """A kafka under load was declared "exited during start-up" while it ran: the start-up
    wait asked for the marker in a command line the fresh child had not exec'd yet."""
    service = _SlowStarter(Settings(state_dir=tmp_path))
    service.up()  # raised ServiceError("slow exited during start-up") before
    pid = int(service.pid_file.read_text())
    assert process_alive(pid)
    os.kill(pid, 9)
    deadline = time.monotonic() + 5
    while process_alive(pid):
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_up_refuses_a_port_taken_by_another_process(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = Settings(state_dir=tmp_path, kafka_port=port, kafka_controller_port=port + 1)
        with pytest.raises(ServiceError, match=f"port {port} .*already in use"):
            manager.up(settings, only="kafka")
    assert not (tmp_path / "cache").exists()


def test_unknown_service_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ServiceError, match="unknown service"):
        manager.up(Settings(state_dir=tmp_path), only="zookeeper")


@pytest.fixture(scope="module")
def live() -> Settings:
    settings = Settings()
    if not settings.manage_services:
        pytest.skip("FINSENTRY_MANAGE_SERVICES is false: external services are configured")
    manager.up(settings)
    return settings


@pytest.mark.integration
def test_up_twice_is_harmless_and_status_is_healthy(live: Settings) -> None:
    before = manager.status(live)
    manager.up(live)
    after = manager.status(live)
    assert set(after) == {"kafka", "elasticsearch"}
    for name, item in after.items():
        assert item.running and item.healthy, item
        assert item.pid == before[name].pid
    assert after["kafka"].version == live.kafka_version
    assert after["elasticsearch"].version == live.elasticsearch_version


@pytest.fixture
def topic(live: Settings) -> Iterator[str]:
    from kafka import KafkaAdminClient

    name = f"test-services-{uuid.uuid4().hex[:12]}"
    yield name
    admin = KafkaAdminClient(bootstrap_servers=live.kafka_bootstrap)
    try:
        admin.delete_topics([name])
    finally:
        admin.close()


@pytest.mark.integration
def test_kafka_produce_consume_round_trip(live: Settings, topic: str) -> None:
    from kafka import KafkaConsumer, KafkaProducer

    producer = KafkaProducer(bootstrap_servers=live.kafka_bootstrap)
    try:
        producer.send(topic, key=b"AAPL", value=b'{"headline": "beats"}').get(timeout=30)
    finally:
        producer.close()
    consumer = KafkaConsumer(
        topic, bootstrap_servers=live.kafka_bootstrap, auto_offset_reset="earliest"
    )
    received = []
    deadline = time.monotonic() + 30
    try:
        while not received and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=1000).values():
                received += records
    finally:
        consumer.close()
    assert [(r.key, r.value) for r in received] == [(b"AAPL", b'{"headline": "beats"}')]


@pytest.mark.integration
def test_elasticsearch_index_and_search(live: Settings) -> None:
    from elasticsearch import Elasticsearch

    auth = None
    if live.es_username and live.es_password is not None:
        auth = (live.es_username, live.es_password.get_secret_value())
    es = Elasticsearch(live.es_url, basic_auth=auth, request_timeout=30)
    index = f"test-services-{uuid.uuid4().hex[:12]}"
    try:
        es.index(
            index=index,
            id="1",
            document={"headline": "Acme beats estimates", "ticker": "ACME"},
            refresh="wait_for",
        )
        hits = es.search(index=index, query={"match": {"headline": "estimates"}})["hits"]
        assert hits["total"]["value"] == 1
        assert hits["hits"][0]["_source"]["ticker"] == "ACME"
    finally:
        es.indices.delete(index=index, ignore_unavailable=True)
        es.close()
