"""Kafka with SASL_SSL (SCRAM-SHA-512) on a real broker (issue 13).

One private broker for the module, started by the same class as `finsentry services up` with
FINSENTRY_KAFKA_SECURITY_PROTOCOL=SASL_SSL (its own CA and certificate made at start, SCRAM
credentials written at format), on its own ports and state dir. Through it: the producer
(`replay`), the worker and the alerter (Faust/aiokafka) and the health check behind
`finsentry services check` (kafka-python); items end up indexed in the shared Elasticsearch.
A wrong password and an untrusted CA fail within seconds with a clear error and no
secret.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer
from pydantic import SecretStr

from finsentry.feeds.replay import replay
from finsentry.services.health import CheckResult, check_kafka
from finsentry.services.kafka import LocalKafka
from finsentry.services.kafka_login import KafkaLoginError, verify_kafka_login
from finsentry.services.process import ServiceError
from finsentry.settings import Settings, local_kafka_ca_file
from tests.conftest import unique_settings
from tests.support.outcomes import record
from tests.support.private_services import kafka_settings, private_state_dir, running
from tests.support.streams import count
from tests.support.worker_process import WorkerProcess, settings_env, wait_until

pytestmark = pytest.mark.integration

AREA = "security"
USER = "finsentry"
PASSWORD = f"kafka-{uuid.uuid4().hex}"
ITEMS = 20


def _sasl(settings: Settings, password: str = PASSWORD) -> Settings:
    return settings.model_copy(
        update={
            "kafka_security_protocol": "SASL_SSL",
            "kafka_sasl_mechanism": "SCRAM-SHA-512",
            "kafka_sasl_username": USER,
            "kafka_sasl_password": SecretStr(password),
            "kafka_ssl_cafile": local_kafka_ca_file(settings.state_dir),
        }
    )


def _kafka_env(settings: Settings) -> dict[str, str]:
    """The FINSENTRY_* variables a client process of the SASL_SSL broker needs."""
    assert settings.kafka_sasl_password is not None
    return {
        "FINSENTRY_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "FINSENTRY_KAFKA_SECURITY_PROTOCOL": settings.kafka_security_protocol,
        "FINSENTRY_KAFKA_SASL_MECHANISM": str(settings.kafka_sasl_mechanism),
        "FINSENTRY_KAFKA_SASL_USERNAME": str(settings.kafka_sasl_username),
        "FINSENTRY_KAFKA_SASL_PASSWORD": settings.kafka_sasl_password.get_secret_value(),
        "FINSENTRY_KAFKA_SSL_CAFILE": str(settings.kafka_ssl_cafile),
    }


@pytest.fixture(scope="module")
def broker(services: Settings) -> Iterator[LocalKafka]:
    state_dir = private_state_dir(services, "kafka-sasl")
    with running(LocalKafka(_sasl(kafka_settings(services, state_dir)))) as kafka:
        assert isinstance(kafka, LocalKafka)
        yield kafka


def _cli(args: list[str], env: dict[str, str], timeout: float = 120) -> tuple[Any, float]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "finsentry", *args],
        env={**os.environ, "FINSENTRY_MANAGE_SERVICES": "false", **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return done, time.monotonic() - started


def _scored_keys(settings: Settings) -> Counter[str]:
    consumer = KafkaConsumer(
        settings.topic_scored,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=10_000,
        **settings.kafka_client_options(),
    )
    keys: Counter[str] = Counter()
    try:
        for message in consumer:
            keys[message.key.decode()] += 1
            if len(keys) >= ITEMS:
                break
    finally:
        consumer.close()
    return keys


def test_the_broker_listens_only_with_sasl_ssl(broker: LocalKafka) -> None:
    properties = broker.config_file.read_text()
    listeners = next(line for line in properties.splitlines() if line.startswith("listeners="))
    log = broker.log_file.read_text(errors="replace")
    secret_files = (
        broker.config_file,
        broker.sasl_dir / "broker.password",
        broker.tls_dir / "server.pem",
    )
    readable_by_others = [p.name for p in secret_files if p.stat().st_mode & 0o077]
    expected = (
        f"listeners=SASL_SSL://127.0.0.1:{broker.settings.kafka_port},"
        f"CONTROLLER://127.0.0.1:{broker.settings.kafka_controller_port}"
    )
    ok = listeners == expected and PASSWORD not in log and not readable_by_others
    record(
        AREA,
        "`services up` with FINSENTRY_KAFKA_SECURITY_PROTOCOL=SASL_SSL (private broker)",
        "SCRAM-SHA-512 over TLS with a CA made at start; no plaintext client listener; "
        "password in no log; key, password and config readable by the owner only",
        f"{listeners}; password in broker log: {PASSWORD in log}; "
        f"readable by others: {readable_by_others or 'none'}",
        ok,
    )
    assert ok, (listeners, readable_by_others)


def test_producer_worker_alerter_and_health_check_work_through_sasl_ssl(
    broker: LocalKafka, es: Any, tiny_artifact: Path, tmp_path: Path
) -> None:
    settings = unique_settings(broker.settings, max_batch=8, max_wait=0.2)
    items = tmp_path / "items.jsonl"
    items.write_text(
        "".join(
            json.dumps({"id": f"sasl{i}", "text": f"$JPM item {i}: bank shares rally"}) + "\n"
            for i in range(ITEMS)
        )
    )
    sent = replay(settings, items, progress=False)
    env = _kafka_env(settings)
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        worker = WorkerProcess(settings, tiny_artifact, tmp_path / "worker.log")
    alerter_log = (tmp_path / "alerter.log").open("wb")
    alerter = subprocess.Popen(
        [sys.executable, "-m", "finsentry", "alerter", "--loglevel", "warning"],
        env={**settings_env(settings, tiny_artifact), **env},
        stdout=alerter_log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(lambda: count(es, settings.items_index) >= ITEMS, 180, "items", worker)
        worker_group = check_kafka(settings, settings.app_id)
        alerter_group: list[CheckResult] = []

        def alerter_joined() -> bool:
            alerter_group[:] = check_kafka(settings, f"{settings.app_id}-alerts")
            return all(r.ok for r in alerter_group) or alerter.poll() is not None

        wait_until(alerter_joined, 60, "the alerter's group")
        keys = _scored_keys(settings)
    finally:
        worker.terminate()
        alerter.terminate()
        alerter.wait(timeout=60)
        alerter_log.close()
    indexed = count(es, settings.items_index)
    logs = worker.log_text() + (tmp_path / "alerter.log").read_text(errors="replace")
    ok = (
        sent == ITEMS
        and indexed == ITEMS
        and len(keys) == ITEMS
        and all(r.ok for r in worker_group + alerter_group)
    )
    record(
        AREA,
        "producer (`replay`), worker, alerter and the Kafka health check against SASL_SSL",
        f"all {ITEMS} items sent, scored onto the scored topic and indexed; the worker's and "
        "the alerter's consumer groups have members; no password in their logs",
        f"sent {sent}, indexed {indexed}, scored-topic keys {len(keys)}; groups: "
        f"{'; '.join(r.detail for r in worker_group + alerter_group)}; password in logs: "
        f"{PASSWORD in logs}",
        ok and PASSWORD not in logs,
    )
    assert PASSWORD not in logs
    assert ok, (sent, indexed, len(keys), worker_group, alerter_group)
    es.options(ignore_status=404).indices.delete(index=settings.items_index)


def test_a_wrong_password_fails_fast_and_clearly(broker: LocalKafka, tiny_artifact: Path) -> None:
    wrong = f"wrong-{uuid.uuid4().hex}"
    settings = unique_settings(_sasl(broker.settings, wrong))
    env = {**_kafka_env(settings), "FINSENTRY_MODEL_PATH": str(tiny_artifact)}
    done, seconds = _cli(["worker"], env, timeout=90)
    output = done.stdout + done.stderr
    ok = (
        done.returncode == 1
        and seconds < 45
        and f"refused the SCRAM-SHA-512 login of user '{USER}'" in done.stderr
        and wrong not in output
        and PASSWORD not in output
    )
    record(
        AREA,
        "`finsentry worker` with a wrong Kafka SASL password",
        "exit 1 within seconds (not a hang), saying the login was refused and which "
        "variables to check; no password in the output",
        f"exit {done.returncode} after {seconds:.1f}s: {done.stderr.strip()[-220:]}; "
        f"password in output: {wrong in output}",
        ok,
    )
    assert ok, (done.returncode, seconds, output[-2000:])


def test_a_refused_login_or_certificate_is_an_error_for_every_client(
    broker: LocalKafka, tmp_path: Path
) -> None:
    """In-process: the producer (`replay`), the untrusted-CA case and a plaintext client."""
    wrong = f"wrong-{uuid.uuid4().hex}"
    items = tmp_path / "one.jsonl"
    items.write_text(json.dumps({"id": "x", "text": "$JPM up"}) + "\n")
    cases: list[tuple[str, Settings, str]] = [
        ("producer (`replay`), wrong password", _sasl(broker.settings, wrong), "refused"),
        (
            "producer, the system CAs instead of the broker's",
            _sasl(broker.settings).model_copy(update={"kafka_ssl_cafile": None}),
            "not trusted",
        ),
    ]
    for case, settings, expected in cases:
        started = time.monotonic()
        with pytest.raises(KafkaLoginError) as refused:
            replay(unique_settings(settings), items, progress=False)
        seconds = time.monotonic() - started
        message = str(refused.value)
        ok = expected in message and seconds < 15 and wrong not in message
        record(
            AREA,
            f"Kafka SASL_SSL: {case}",
            f"KafkaLoginError ('{expected}') within seconds, no secret in it",
            f"{seconds:.1f}s: {message[:200]}",
            ok,
        )
        assert ok, message
    plaintext = broker.settings.model_copy(update={"kafka_security_protocol": "PLAINTEXT"})
    started = time.monotonic()
    verify_kafka_login(plaintext, timeout=3)  # PLAINTEXT: nothing to verify, returns at once
    assert time.monotonic() - started < 1


def test_up_refuses_a_running_broker_of_the_other_protocol(broker: LocalKafka) -> None:
    plaintext = broker.settings.model_copy(update={"kafka_security_protocol": "PLAINTEXT"})
    with pytest.raises(ServiceError) as refused:
        LocalKafka(plaintext).up()
    message = str(refused.value)
    assert "runs with SASL_SSL, but PLAINTEXT is configured" in message
    assert broker.pid() is not None and broker.healthy()
