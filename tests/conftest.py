"""Shared fixtures. Integration tests run against the real local Kafka broker and
Elasticsearch node, started once per session by `finsentry services up`."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from finsentry.settings import Settings

# Reliability rows -> RELIABILITY.md, and the check of the committed table.
pytest_plugins = ["tests.support.outcomes"]


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    return Settings()


@pytest.fixture(scope="session")
def services(base_settings: Settings) -> Iterator[Settings]:
    """Start (or reuse) the local Kafka and Elasticsearch; stop them afterwards only if
    this session started them."""
    if not base_settings.manage_services:
        yield base_settings
        return
    from finsentry.services import manager

    already_running = all(s.healthy for s in manager.status(base_settings).values())
    manager.up(base_settings)
    yield base_settings
    if not already_running:
        manager.down(base_settings)


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT encoder and tokenizer (tests/support/tiny_artifact.py)."""
    from tests.support.tiny_artifact import build_tiny_base

    return build_tiny_base(tmp_path_factory.mktemp("base"))


@pytest.fixture(scope="session")
def kafka_bootstrap(services: Settings) -> str:
    return services.kafka_bootstrap


@pytest.fixture(scope="session")
def es(services: Settings):  # type: ignore[no-untyped-def]
    from finsentry.es_client import make_es_client

    return make_es_client(services)


def unique_settings(base: Settings, **overrides: object) -> Settings:
    """Settings whose topics, indices and app id no other test (or person) uses."""
    tag = f"t{uuid.uuid4().hex[:10]}"
    names: dict[str, object] = {
        "app_id": f"finsentry-{tag}",
        "topic_raw": f"{tag}.raw",
        "topic_scored": f"{tag}.scored",
        "topic_dead_letters": f"{tag}.dead-letters",
        "topic_alerts": f"{tag}.alerts",
        "items_index": f"{tag}-items",
        "company_verdicts_index": f"{tag}-company-verdicts",
        "alerts_index": f"{tag}-alerts",
        "dead_letters_index": f"{tag}-dead-letters",
        "feedback_index": f"{tag}-feedback",
        "drift_index": f"{tag}-drift",
        "drift_metrics_port": 0,
        "manage_services": False,
        "metrics_port": 0,
    }
    return base.model_copy(update={**names, **overrides})


@pytest.fixture
def settings(services: Settings, es) -> Iterator[Settings]:  # type: ignore[no-untyped-def]
    """Per-test settings with their own topics and indices (indices deleted afterwards)."""
    test_settings = unique_settings(services)
    yield test_settings
    for index in (
        test_settings.items_index,
        test_settings.company_verdicts_index,
        test_settings.alerts_index,
        test_settings.dead_letters_index,
        test_settings.feedback_index,
        test_settings.drift_index,
    ):
        es.options(ignore_status=404).indices.delete(index=index)
        es.options(ignore_status=404).indices.delete_index_template(name=index)


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real, servable artifact with tiny random weights (built in about a second)."""
    from tests.support.tiny_artifact import build_tiny_artifact

    return build_tiny_artifact(tmp_path_factory.mktemp("models"))
