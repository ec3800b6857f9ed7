"""Health checks of the configured (local or external) Kafka, Elasticsearch, consumer groups
and HTTP endpoints; used by `finsentry services check` and the compose healthchecks."""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

from pydantic import BaseModel

from finsentry.settings import Settings

if TYPE_CHECKING:
    from kafka import KafkaAdminClient


class CheckResult(BaseModel):
    name: str
    ok: bool
    detail: str


def check_kafka(settings: Settings, group: str | None = None) -> list[CheckResult]:
    """Kafka answers a metadata request; with `group`, that consumer group has members."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    from finsentry.services.kafka_login import KafkaLoginError, verify_kafka_login

    name = f"kafka {settings.kafka_bootstrap}"
    try:
        verify_kafka_login(settings)
    except KafkaLoginError as exc:
        return [CheckResult(name=name, ok=False, detail=str(exc))]
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=settings.kafka_bootstrap.split(","),
            client_id="finsentry-health",
            request_timeout_ms=10_000,
            bootstrap_timeout_ms=10_000,
            **settings.kafka_client_options(),
        )
    except (KafkaError, OSError) as exc:
        return [CheckResult(name=name, ok=False, detail=f"unreachable: {exc}")]
    try:
        topics = admin.list_topics()
        results = [CheckResult(name=name, ok=True, detail=f"{len(topics)} topics")]
        if group is not None:
            results.append(_group_result(admin, group))
        return results
    except (KafkaError, OSError) as exc:
        return [CheckResult(name=name, ok=False, detail=str(exc))]
    finally:
        admin.close()


def _group_result(admin: KafkaAdminClient, group: str) -> CheckResult:
    from kafka.errors import KafkaError

    try:
        described = admin.describe_groups([group])[group]
    except KafkaError as exc:
        return CheckResult(name=f"group {group}", ok=False, detail=str(exc))
    members = len(described.get("members") or [])
    state = described.get("group_state", "?")
    return CheckResult(
        name=f"group {group}", ok=members > 0, detail=f"state {state}, {members} members"
    )


def _verify(settings: Settings) -> ssl.SSLContext | bool:
    if settings.es_ca_certs is not None:
        return ssl.create_default_context(cafile=str(settings.es_ca_certs))
    return True


def check_elasticsearch(settings: Settings) -> CheckResult:
    """The cluster at `es_url` is at least yellow, with the configured credentials."""
    import httpx

    headers: dict[str, str] = {}
    auth: tuple[str, str] | None = None
    if settings.es_api_key is not None:
        headers["Authorization"] = f"ApiKey {settings.es_api_key.get_secret_value()}"
    elif settings.es_username and settings.es_password is not None:
        auth = (settings.es_username, settings.es_password.get_secret_value())
    name = f"elasticsearch {settings.es_url}"
    try:
        response = httpx.get(
            f"{settings.es_url.rstrip('/')}/_cluster/health",
            params={"wait_for_status": "yellow", "timeout": "5s"},
            headers=headers,
            auth=auth,
            verify=_verify(settings),
            timeout=15.0,
        )
    except httpx.HTTPError as exc:
        return CheckResult(name=name, ok=False, detail=f"unreachable: {exc}")
    if response.status_code != 200:
        return CheckResult(name=name, ok=False, detail=f"HTTP {response.status_code}")
    status = response.json().get("status", "?")
    return CheckResult(name=name, ok=status in ("green", "yellow"), detail=f"status {status}")


def check_url(url: str) -> CheckResult:
    """The URL answers with a 2xx status."""
    import httpx

    try:
        response = httpx.get(url, timeout=10.0)
    except httpx.HTTPError as exc:
        return CheckResult(name=url, ok=False, detail=f"unreachable: {exc}")
    return CheckResult(name=url, ok=response.is_success, detail=f"HTTP {response.status_code}")
