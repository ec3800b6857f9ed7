"""Security (issue 7, part 5): Elasticsearch with x-pack security and HTTPS, least-privilege
users, Kafka SASL/SSL settings, and secrets kept out of logs and error messages.

A private node (same class as `finsentry services`, with security on, plus HTTPS from a CA made
here with `cryptography`) holds file-realm users: a writer for the worker and a reader for the
CLI and API. The HTTP API's token and rate limit are tested in tests/test_queries_es.py
(`test_api_token_required_when_configured`, `test_api_rate_limit`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kafka import KafkaProducer
from pydantic import SecretStr

from finsentry.es_client import describe_es_client, es_client_options, make_es_client
from finsentry.services.kafka import (
    BROKER_USER,
    SaslConfig,
    local_protocol,
    same_credentials,
    sasl_properties,
    scram_fingerprint,
    server_properties,
)
from finsentry.services.process import ServiceError
from finsentry.services.tls import make_server_tls, needs_new_certificate, server_tls_files
from finsentry.settings import Settings, local_kafka_ca_file
from finsentry.streams.app import broker_credentials
from finsentry.streams.worker import wait_for_elasticsearch
from tests.conftest import unique_settings
from tests.support.outcomes import record
from tests.support.private_services import TlsElasticsearch, private_tls_elasticsearch, running
from tests.support.streams import count
from tests.support.tls import TlsFiles, make_tls_files
from tests.support.worker_process import WorkerProcess, wait_until

AREA = "security"
ELASTIC_PASSWORD = f"elastic-{uuid.uuid4().hex}"
WRITER = ("finsentry_writer", f"writer-{uuid.uuid4().hex}")
READER = ("finsentry_reader", f"reader-{uuid.uuid4().hex}")
ROLES_YML = """\
finsentry_writer:
  cluster: ["monitor", "manage_index_templates"]
  indices:
    - names: ["t*"]
      privileges: ["all"]
finsentry_reader:
  cluster: ["monitor"]
  indices:
    - names: ["t*"]
      privileges: ["read", "view_index_metadata"]
"""
ITEMS = 20


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def node(services: Settings, tls: TlsFiles) -> Iterator[TlsElasticsearch]:
    secured = private_tls_elasticsearch(
        services,
        tls,
        ELASTIC_PASSWORD,
        roles_yml=ROLES_YML,
        users={
            WRITER[0]: (WRITER[1], "finsentry_writer"),
            READER[0]: (READER[1], "finsentry_reader"),
        },
    )
    with running(secured) as started:
        assert isinstance(started, TlsElasticsearch)
        yield started


def _as(base: Settings, user: tuple[str, str] | None, **overrides: Any) -> Settings:
    """`base` authenticated as `user` (None: no credentials)."""
    update: dict[str, Any] = {"es_username": None, "es_password": None, "es_api_key": None}
    if user is not None:
        update |= {"es_username": user[0], "es_password": SecretStr(user[1])}
    return base.model_copy(update={**update, **overrides})


def _context(tls: TlsFiles) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(tls.ca_cert))


@pytest.fixture(scope="module")
def secured_stream(
    node: TlsElasticsearch, tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    """The worker, authenticated as the writer over HTTPS (CA, user and password from
    FINSENTRY_* variables), has indexed ITEMS items read from the shared Kafka."""
    settings = unique_settings(_as(node.settings, WRITER), max_batch=8, max_wait=0.2)
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    for i in range(ITEMS):
        item = {"id": f"s{i}", "text": f"$JPM item {i}: bank shares rally"}
        producer.send(settings.topic_raw, value=json.dumps(item).encode())
    producer.flush()
    producer.close()
    env = {
        "FINSENTRY_ES_USERNAME": WRITER[0],
        "FINSENTRY_ES_PASSWORD": WRITER[1],
        "FINSENTRY_ES_CA_CERTS": str(node.tls.ca_cert),
    }
    logs = tmp_path_factory.mktemp("secured-worker")
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        worker = WorkerProcess(settings, tiny_artifact, logs / "worker.log")
    admin = make_es_client(_as(node.settings, ("elastic", ELASTIC_PASSWORD)))
    try:
        wait_until(lambda: count(admin, settings.items_index) >= ITEMS, 240, "items", worker)
    finally:
        worker.terminate()
    log = worker.log_text()
    assert WRITER[1] not in log
    yield settings


@pytest.mark.integration
def test_unauthenticated_and_unverified_access_is_refused(
    node: TlsElasticsearch, tls: TlsFiles
) -> None:
    url = f"{node.url}/_cluster/health"
    anonymous = httpx.get(url, verify=_context(tls))
    wrong = httpx.get(url, verify=_context(tls), auth=(WRITER[0], "not-the-password"))
    right = httpx.get(url, verify=_context(tls), auth=WRITER)
    with pytest.raises(httpx.ConnectError) as untrusted:
        httpx.get(url, auth=WRITER)  # the system trust store does not know our CA
    plain = url.replace("https://", "http://")
    with pytest.raises(httpx.HTTPError) as cleartext:
        httpx.get(plain, auth=WRITER, timeout=10)
    cases = [
        (
            "no credentials over HTTPS",
            "401",
            str(anonymous.status_code),
            anonymous.status_code == 401,
        ),
        ("wrong password", "401", str(wrong.status_code), wrong.status_code == 401),
        ("the writer's password", "200", str(right.status_code), right.status_code == 200),
        (
            "HTTPS without our CA",
            "TLS verification fails",
            f"{untrusted.type.__name__}: {untrusted.value}",
            "CERTIFICATE_VERIFY_FAILED" in str(untrusted.value),
        ),
        (
            "plain HTTP to the HTTPS port, with a password",
            "refused (no cleartext credentials)",
            f"{cleartext.type.__name__}: {cleartext.value}",
            True,
        ),
    ]
    for case, expected, observed, ok in cases:
        record(AREA, f"Elasticsearch: {case}", expected, observed, ok)
    assert all(ok for *_, ok in cases)


@pytest.mark.integration
def test_the_worker_indexes_as_the_writer_over_https(
    secured_stream: Settings, node: TlsElasticsearch
) -> None:
    reader = make_es_client(_as(node.settings, READER))
    indexed = reader.count(index=secured_stream.items_index)["count"]
    record(
        AREA,
        "worker with FINSENTRY_ES_USERNAME/PASSWORD/CA_CERTS against the HTTPS node",
        f"authenticates, verifies the node, indexes all {ITEMS} items",
        f"{indexed} items indexed; the password is not in its log",
        indexed == ITEMS,
    )
    assert indexed == ITEMS


@pytest.mark.integration
def test_the_reader_cannot_write(secured_stream: Settings, node: TlsElasticsearch) -> None:
    from elasticsearch import AuthorizationException

    reader = make_es_client(_as(node.settings, READER))
    with pytest.raises(AuthorizationException) as refused:
        reader.index(index=secured_stream.items_index, id="forged", document={"id": "forged"})
    record(
        AREA,
        "the reader (CLI/API user) writes to the items index",
        "403: least privilege",
        f"{refused.value.meta.status} {refused.value.error}",
        refused.value.meta.status == 403,
    )


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "finsentry", *args],
        env={**os.environ, "FINSENTRY_MANAGE_SERVICES": "false", **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _cli_env(settings: Settings, user: tuple[str, str] | None, ca: Path | None) -> dict[str, str]:
    env = {"FINSENTRY_ES_URL": settings.es_url, "FINSENTRY_ITEMS_INDEX": settings.items_index}
    if user is not None:
        env |= {"FINSENTRY_ES_USERNAME": user[0], "FINSENTRY_ES_PASSWORD": user[1]}
    if ca is not None:
        env["FINSENTRY_ES_CA_CERTS"] = str(ca)
    return env


@pytest.mark.integration
def test_the_cli_queries_as_the_reader_and_is_refused_without_credentials(
    secured_stream: Settings, tls: TlsFiles
) -> None:
    ok = _cli(["query", "items", "--format", "json"], _cli_env(secured_stream, READER, tls.ca_cert))
    anonymous = _cli(
        ["query", "items", "--format", "json"], _cli_env(secured_stream, None, tls.ca_cert)
    )
    wrong_password = ("finsentry_reader", f"wrong-{uuid.uuid4().hex}")
    wrong = _cli(
        ["query", "items", "--format", "json"],
        _cli_env(secured_stream, wrong_password, tls.ca_cert),
    )
    total = json.loads(ok.stdout)["total"] if ok.returncode == 0 else None
    record(
        AREA,
        "`finsentry query items` as the reader over HTTPS",
        f"exit 0, {ITEMS} items",
        f"exit {ok.returncode}, total {total}",
        ok.returncode == 0 and total == ITEMS,
    )
    for name, done, secret in (
        ("no credentials", anonymous, None),
        ("a wrong password", wrong, wrong_password[1]),
    ):
        output = done.stdout + done.stderr
        leaked = secret is not None and secret in output
        record(
            AREA,
            f"`finsentry query items` with {name}",
            "exit 1 with a clear error; no secret in the output",
            f"exit {done.returncode}: {done.stderr.strip()[:200]}; secret in output: {leaked}",
            done.returncode == 1 and "refused" in done.stderr and not leaked,
        )
        assert done.returncode == 1 and "refused" in done.stderr and not leaked
    assert ok.returncode == 0 and total == ITEMS


@pytest.mark.integration
def test_the_api_authenticates_to_elasticsearch(secured_stream: Settings, tls: TlsFiles) -> None:
    from fastapi.testclient import TestClient

    from finsentry.queries.api import create_api

    reader = _as(secured_stream, READER, es_ca_certs=tls.ca_cert)
    anonymous = _as(secured_stream, None, es_ca_certs=tls.ca_cert)
    ok = TestClient(create_api(reader)).get("/v1/items")
    health = TestClient(create_api(reader)).get("/healthz")
    refused = TestClient(create_api(anonymous)).get("/v1/items")
    refused_health = TestClient(create_api(anonymous)).get("/healthz")
    record(
        AREA,
        "HTTP API backed by the reader over HTTPS",
        f"/v1/items 200 with {ITEMS} items; /healthz 200",
        f"/v1/items {ok.status_code} ({ok.json().get('total')} items); "
        f"/healthz {health.status_code}",
        ok.status_code == 200 and ok.json()["total"] == ITEMS and health.status_code == 200,
    )
    record(
        AREA,
        "HTTP API with no Elasticsearch credentials",
        "queries fail with an error (not data); /healthz 503",
        f"/v1/items {refused.status_code}: {refused.json().get('detail')}; "
        f"/healthz {refused_health.status_code}",
        refused.status_code >= 500 and refused_health.status_code == 503,
    )
    assert ok.status_code == 200 and ok.json()["total"] == ITEMS
    assert refused.status_code >= 500 and refused_health.status_code == 503


@pytest.mark.integration
def test_a_secret_never_reaches_logs_or_errors(
    node: TlsElasticsearch,
    tls: TlsFiles,
    tiny_artifact: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Secret-valued FINSENTRY_* variables and failing connections: the worker's log, the
    CLI's output and the error messages must not contain them."""
    secrets = {
        "FINSENTRY_KAFKA_SASL_PASSWORD": f"kafka-{uuid.uuid4().hex}",
        "FINSENTRY_API_TOKEN": f"token-{uuid.uuid4().hex}",
        "FINSENTRY_GRAFANA_TOKEN": f"grafana-{uuid.uuid4().hex}",
        "FINSENTRY_GRAFANA_WEBHOOK_URL": f"https://hooks.example/{uuid.uuid4().hex}",
    }
    wrong_es = f"es-{uuid.uuid4().hex}"

    # 1. In-process: the worker's start-up check against the node with a wrong password.
    settings = _as(node.settings, (WRITER[0], wrong_es))
    caplog.set_level(logging.DEBUG)
    with pytest.raises(RuntimeError) as failed:
        wait_for_elasticsearch(settings, timeout=2.0)
    startup = str(failed.value) + caplog.text + repr(settings) + str(describe_es_client(settings))
    record(
        AREA,
        "worker start-up check, wrong Elasticsearch password (in-process)",
        "fails with a clear error; the password in no message, log or repr",
        f"{str(failed.value)[:160]}; secret present: {wrong_es in startup}",
        wrong_es not in startup,
    )

    # 2. The worker process: the writer's real password, a Kafka SASL password on a
    # plaintext broker (so Kafka fails), and other secrets in its environment.
    stream = unique_settings(_as(node.settings, WRITER))
    env = {
        **secrets,
        "FINSENTRY_ES_USERNAME": WRITER[0],
        "FINSENTRY_ES_PASSWORD": WRITER[1],
        "FINSENTRY_ES_CA_CERTS": str(tls.ca_cert),
        "FINSENTRY_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "FINSENTRY_KAFKA_SASL_MECHANISM": "PLAIN",
        "FINSENTRY_KAFKA_SASL_USERNAME": "finsentry",
    }
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        worker = WorkerProcess(stream, tiny_artifact, tmp_path / "worker.log")
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and worker.proc.poll() is None:
            if "sasl" in worker.log_text().lower() or "kafka" in worker.log_text().lower():
                time.sleep(5)  # let it retry a few times
                break
            time.sleep(1)
    finally:
        worker.terminate()
    log = worker.log_text()
    leaked = [k for k, v in {**secrets, "ES": WRITER[1]}.items() if v in log]
    record(
        AREA,
        "worker with secret-valued FINSENTRY_* variables and a failing (SASL) Kafka connection",
        "the failure is logged; no secret in the log",
        f"{len(log)} bytes of log, Kafka failure logged: {'kafka' in log.lower()}; "
        f"secrets found: {leaked or 'none'}",
        not leaked and "kafka" in log.lower(),
    )

    # 3. The CLI with a wrong password and with an unreachable node.
    cli_env = {**secrets, **_cli_env(stream, (WRITER[0], wrong_es), tls.ca_cert)}
    refused = _cli(["query", "items"], cli_env)
    unreachable = _cli(["query", "items"], {**cli_env, "FINSENTRY_ES_URL": "https://localhost:9"})
    checked = _cli(["services", "check", "--elasticsearch"], cli_env)
    outputs = {
        "query, wrong password": refused,
        "query, node unreachable": unreachable,
        "services check, wrong password": checked,
    }
    every_secret = [*secrets.values(), wrong_es]
    for name, done in outputs.items():
        text = done.stdout + done.stderr
        found = [s for s in every_secret if s in text]
        record(
            AREA,
            f"CLI `{name}` with secret-valued variables",
            "non-zero exit with a clear error; no secret in stdout/stderr",
            f"exit {done.returncode}: {' '.join(text.split())[:160]}; secrets found: "
            f"{found or 'none'}",
            done.returncode != 0 and not found,
        )
    assert wrong_es not in startup
    assert not leaked and "kafka" in log.lower()
    for done in outputs.values():
        assert done.returncode != 0
        assert not [s for s in every_secret if s in done.stdout + done.stderr]


# --- Kafka SASL / SSL and Elasticsearch credentials: the settings' spelling ----------------


def test_kafka_security_settings_reach_faust_and_kafka_python(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text(make_tls_files(tmp_path / "tls").ca_cert.read_text())
    sasl_ssl = Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="svc",
        kafka_sasl_password=SecretStr("pw-1"),
        kafka_ssl_cafile=ca,
    )
    credentials = broker_credentials(sasl_ssl)
    assert credentials.username == "svc" and credentials.password == "pw-1"
    assert credentials.mechanism.name == "SCRAM_SHA_512"
    assert credentials.ssl_context is not None
    assert credentials.ssl_context.verify_mode == ssl.CERT_REQUIRED
    assert sasl_ssl.kafka_client_options() == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "svc",
        "sasl_plain_password": "pw-1",
        "ssl_cafile": str(ca),
    }
    ssl_only = Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=ca)
    assert broker_credentials(ssl_only).context.verify_mode == ssl.CERT_REQUIRED
    assert ssl_only.kafka_client_options() == {"security_protocol": "SSL", "ssl_cafile": str(ca)}
    assert broker_credentials(Settings()) is None
    assert Settings().kafka_client_options() == {"security_protocol": "PLAINTEXT"}
    assert "pw-1" not in repr(sasl_ssl) and "pw-1" not in sasl_ssl.model_dump_json()
    record(
        AREA,
        "Kafka SASL_SSL (SCRAM) and SSL settings",
        "the same credentials and CA reach Faust (aiokafka) and kafka-python; "
        "password masked in repr/JSON",
        "as expected",
        True,
    )


def test_kafka_sasl_without_a_mechanism_is_spelled_the_same_for_both_clients() -> None:
    """Faust falls back to PLAIN when FINSENTRY_KAFKA_SASL_MECHANISM is unset; kafka-python
    (the feeds, the health check) must get the same mechanism and credentials, or producers
    fail to authenticate where the worker succeeds."""
    settings = Settings(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_username="svc",
        kafka_sasl_password=SecretStr("pw-2"),
    )
    faust_side = broker_credentials(settings)
    options = settings.kafka_client_options()
    same = (
        options.get("sasl_mechanism") == faust_side.mechanism.value
        and options.get("sasl_plain_username") == faust_side.username
        and options.get("sasl_plain_password") == faust_side.password
    )
    record(
        AREA,
        "Kafka SASL_PLAINTEXT with user and password but no FINSENTRY_KAFKA_SASL_MECHANISM",
        "Faust and kafka-python get the same mechanism and credentials",
        f"Faust: {faust_side.mechanism.value} as {faust_side.username}; kafka-python options: "
        f"{sorted(k for k in options if k != 'sasl_plain_password')}",
        same,
    )
    assert same, options


def test_an_api_key_wins_over_basic_auth_and_is_never_described() -> None:
    settings = Settings(
        es_url="https://es.example:9200",
        es_username="someone",
        es_password=SecretStr("pw-3"),
        es_api_key=SecretStr("key-4"),
        es_ca_certs=Path("/etc/ssl/ca.pem"),
    )
    options = es_client_options(settings)
    described = describe_es_client(settings)
    ok = (
        options["api_key"] == "key-4"
        and "basic_auth" not in options
        and options["ca_certs"] == "/etc/ssl/ca.pem"
        and described["auth"] == "api_key"
        and "key-4" not in str(described)
        and "pw-3" not in str(described)
    )
    record(
        AREA,
        "Elasticsearch API key and user/password both set (client options, unit)",
        "the API key is used, with the CA; describe_es_client shows neither secret",
        f"auth {described['auth']}, ca_certs {options.get('ca_certs')}; secrets described: "
        f"{'key-4' in str(described) or 'pw-3' in str(described)}",
        ok,
    )
    assert ok


# --- the local SASL_SSL broker's configuration (services/kafka.py), unit --------------------


def _sasl_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "state_dir": tmp_path,
        "kafka_security_protocol": "SASL_SSL",
        "kafka_sasl_mechanism": "SCRAM-SHA-512",
        "kafka_sasl_username": "finsentry",
        "kafka_sasl_password": SecretStr("pw-5"),
    }
    return Settings(**{**values, **overrides})


def test_clients_of_the_local_sasl_broker_trust_its_ca(tmp_path: Path) -> None:
    local = _sasl_settings(tmp_path)
    assert local.kafka_ssl_cafile == local_kafka_ca_file(tmp_path)
    assert local.kafka_client_options()["ssl_cafile"] == str(tmp_path / "kafka/tls/ca.crt")
    external = _sasl_settings(tmp_path, manage_services=False)
    assert external.kafka_ssl_cafile is None  # an external broker: its CA is configured
    assert _sasl_settings(tmp_path, kafka_security_protocol="PLAINTEXT").kafka_ssl_cafile is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"kafka_security_protocol": "SSL"}, "serves PLAINTEXT or SASL_SSL"),
        ({"kafka_sasl_mechanism": None}, "FINSENTRY_KAFKA_SASL_MECHANISM=SCRAM-SHA-512"),
        ({"kafka_sasl_mechanism": "PLAIN"}, "(it is PLAIN)"),
        ({"kafka_sasl_username": None}, "needs FINSENTRY_KAFKA_SASL_USERNAME"),
        ({"kafka_sasl_username": "a b"}, "needs FINSENTRY_KAFKA_SASL_USERNAME"),
        ({"kafka_sasl_password": None}, "needs FINSENTRY_KAFKA_SASL_PASSWORD"),
        ({"kafka_sasl_password": SecretStr('p"w')}, "must not contain a double quote"),
    ],
)
def test_the_local_broker_refuses_settings_it_cannot_serve(
    tmp_path: Path, overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ServiceError) as refused:
        local_protocol(_sasl_settings(tmp_path, **overrides))
    assert message in str(refused.value)
    assert "pw-5" not in str(refused.value)


def test_sasl_server_properties(tmp_path: Path) -> None:
    settings = _sasl_settings(tmp_path, kafka_port=19092, kafka_controller_port=19093)
    tls = server_tls_files(tmp_path / "tls")
    text = server_properties(settings, tmp_path / "data", SaslConfig(tls, "broker-pw-6"))
    values = dict(line.split("=", 1) for line in text.splitlines())
    assert values["listeners"] == "SASL_SSL://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert values["advertised.listeners"] == "SASL_SSL://localhost:19092"
    assert values["listener.security.protocol.map"] == "SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT"
    assert values["inter.broker.listener.name"] == "SASL_SSL"
    assert values["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert values["ssl.keystore.location"] == str(tls.keystore)
    jaas = values["listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config"]
    assert f'username="{BROKER_USER}" password="broker-pw-6";' in jaas
    plain = dict(line.split("=", 1) for line in server_properties(settings, tmp_path).splitlines())
    assert plain["listeners"].startswith("PLAINTEXT://") and "sasl.enabled.mechanisms" not in plain


def test_a_changed_client_password_is_noticed(tmp_path: Path) -> None:
    fingerprint = scram_fingerprint("finsentry", "pw-7", b"\x01" * 16)
    assert "pw-7" not in fingerprint
    assert same_credentials(fingerprint, "finsentry", "pw-7")
    assert not same_credentials(fingerprint, "finsentry", "pw-8")
    assert not same_credentials(fingerprint, "other", "pw-7")


def test_the_broker_certificate_is_renewed_before_it_expires(tmp_path: Path) -> None:
    from cryptography import x509

    files = make_server_tls(tmp_path, ("kafka", "127.0.0.1"), days=30)
    certificate = x509.load_pem_x509_certificates(files.keystore.read_bytes())[0]
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["kafka"]
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert files.keystore.stat().st_mode & 0o777 == 0o600
    assert b"PRIVATE KEY" in files.keystore.read_bytes()
    assert b"PRIVATE KEY" not in files.ca_cert.read_bytes()
    now = dt.datetime.now(dt.UTC)
    assert not needs_new_certificate(files, now)
    assert needs_new_certificate(files, now + dt.timedelta(days=24))
    assert needs_new_certificate(server_tls_files(tmp_path / "absent"), now)


def _image_properties(environment: dict[str, Any]) -> dict[str, str]:
    """apache/kafka's KAFKA_* variables as server.properties keys (`___` -, `__` _, `_` .)."""
    properties = {}
    for name, value in environment.items():
        if name.startswith("KAFKA_"):
            key = name.removeprefix("KAFKA_").lower()
            key = key.replace("___", "-").replace("__", "\0").replace("_", ".").replace("\0", "_")
            properties[key] = str(value)
    return properties


def test_compose_sasl_override_agrees_with_the_local_broker(tmp_path: Path) -> None:
    import yaml

    root = Path(__file__).resolve().parent.parent
    compose = yaml.safe_load((root / "docker-compose.sasl.yml").read_text())["services"]
    base = yaml.safe_load((root / "docker-compose.yml").read_text())["services"]
    image = _image_properties(compose["kafka"]["environment"])
    local = sasl_properties(SaslConfig(server_tls_files(tmp_path), "x"), listener="INTERNAL")
    same = ("sasl.enabled.mechanisms", "sasl.mechanism.inter.broker.protocol",
            "ssl.keystore.type", "ssl.truststore.type", "ssl.client.auth",
            "ssl.endpoint.identification.algorithm")  # fmt: skip
    assert {k: image[k] for k in same} == {k: local[k] for k in same}
    inter_broker = base["kafka"]["environment"]["KAFKA_INTER_BROKER_LISTENER_NAME"]
    jaas_key = f"listener.name.{inter_broker.lower()}.scram-sha-512.sasl.jaas.config"
    assert f'username="{BROKER_USER}"' in image[jaas_key]
    protocols = dict(p.split(":") for p in image["listener.security.protocol.map"].split(","))
    listeners = [
        u.split(":")[0] for u in base["kafka"]["environment"]["KAFKA_LISTENERS"].split(",")
    ]
    assert {protocols[n] for n in listeners if n != "CONTROLLER"} == {"SASL_SSL"}
    assert protocols["CONTROLLER"] == "PLAINTEXT"
    for app in ("worker", "alerter", "api"):
        env = {**base[app]["environment"], **compose[app]["environment"]}
        settings = Settings(
            state_dir=tmp_path,
            manage_services=False,
            kafka_security_protocol=env["FINSENTRY_KAFKA_SECURITY_PROTOCOL"],
            kafka_sasl_mechanism=env["FINSENTRY_KAFKA_SASL_MECHANISM"],
            kafka_sasl_username=env["FINSENTRY_KAFKA_SASL_USERNAME"],
            kafka_sasl_password=SecretStr("from-the-environment"),
        )
        assert local_protocol(settings) == "SASL_SSL", app
        assert (
            env["FINSENTRY_KAFKA_SASL_PASSWORD"]
            == "${KAFKA_SASL_PASSWORD:?set KAFKA_SASL_PASSWORD}"
        )
        assert env["FINSENTRY_KAFKA_SSL_CAFILE"].endswith("/ca.crt")
    text = (root / "docker-compose.sasl.yml").read_text()
    assert "--add-scram" in text and "name=finsentry," in text and f"name={BROKER_USER}," in text
