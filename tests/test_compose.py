"""docker-compose.yml (the production path) stays consistent with the local services."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from finsentry.settings import ELASTICSEARCH_VERSION, KAFKA_VERSION

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def test_pinned_versions_match_the_local_services(services: dict[str, dict[str, Any]]) -> None:
    assert services["kafka"]["image"] == f"apache/kafka:{KAFKA_VERSION}"
    assert (
        services["elasticsearch"]["image"]
        == f"docker.elastic.co/elasticsearch/elasticsearch:{ELASTICSEARCH_VERSION}"
    )
    assert re.fullmatch(r"grafana/grafana:\d+\.\d+\.\d+", services["grafana"]["image"])


def test_expected_services(services: dict[str, dict[str, Any]]) -> None:
    assert {"kafka", "elasticsearch", "grafana", "worker", "api"} <= set(services)


def test_every_service_has_a_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


def test_dependencies_wait_for_health(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            assert condition == {"condition": "service_healthy"}, name
    assert set(services["worker"]["depends_on"]) == {"kafka", "elasticsearch"}


def test_worker_reserves_one_gpu(services: dict[str, dict[str, Any]]) -> None:
    worker = services["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert worker["command"] == ["finsentry", "worker"]
    assert worker["build"]["dockerfile"] == "docker/worker.Dockerfile"
    assert (ROOT / worker["build"]["dockerfile"]).is_file()


def test_app_services_point_at_the_compose_services(services: dict[str, dict[str, Any]]) -> None:
    for name in ("worker", "api"):
        env = services[name]["environment"]
        assert env["FINSENTRY_MANAGE_SERVICES"] == "false"
        assert env["FINSENTRY_KAFKA_BOOTSTRAP"].split(":")[0] == "kafka"
        assert env["FINSENTRY_ES_URL"] == "http://elasticsearch:9200"
        assert env["FINSENTRY_ES_USERNAME"] == "elastic"
    assert services["api"]["command"] == ["finsentry", "api"]


def test_grafana_provisioning_is_mounted_read_only(services: dict[str, dict[str, Any]]) -> None:
    volumes = services["grafana"]["volumes"]
    assert "./dashboards/provisioning:/etc/grafana/provisioning:ro" in volumes


SECRET_KEYS = re.compile(r"PASSWORD|TOKEN|SECRET|API_KEY|WEBHOOK", re.IGNORECASE)


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def test_no_literal_secrets(services: dict[str, dict[str, Any]]) -> None:
    """Every secret-looking variable is substituted from the host environment, and the
    required ones fail fast (`${VAR:?...}`) instead of defaulting."""
    for name, service in services.items():
        for key, value in _environment(service).items():
            if SECRET_KEYS.search(key) and key != "FINSENTRY_ES_USERNAME":
                assert re.fullmatch(r"\$\{[A-Z_]+(:[?-][^}]*)?\}", value), f"{name}.{key}"
                assert ":-" not in value or value.endswith(":-[]}"), f"{name}.{key}"
    text = COMPOSE.read_text()
    assert "ELASTIC_PASSWORD:?" in text and "GRAFANA_ADMIN_PASSWORD:?" in text
