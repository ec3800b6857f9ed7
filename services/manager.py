"""Public API of the local services: `up`, `down`, `status`."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console

from finsentry.services.base import LocalService
from finsentry.services.elasticsearch import LocalElasticsearch
from finsentry.services.kafka import LocalKafka
from finsentry.services.process import ServiceError, ServiceStatus
from finsentry.settings import Settings

SERVICES: dict[str, type[LocalService]] = {
    "kafka": LocalKafka,
    "elasticsearch": LocalElasticsearch,
}

__all__ = ["SERVICES", "ServiceError", "ServiceStatus", "down", "status", "up"]


def _selected(settings: Settings, only: str | None, console: Console | None) -> list[LocalService]:
    if only is not None and only not in SERVICES:
        raise ServiceError(f"unknown service {only!r}; choose from {', '.join(SERVICES)}")
    names = [only] if only else list(SERVICES)
    return [SERVICES[name](settings, console) for name in names]


@contextmanager
def _locked(settings: Settings) -> Iterator[None]:
    """Serialise `up`/`down` across processes (several test sessions share the services)."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    with (settings.state_dir / "services.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _external(settings: Settings, console: Console | None) -> bool:
    """True (and says so) when FINSENTRY_MANAGE_SERVICES is false: nothing to start or stop."""
    if settings.manage_services:
        return False
    (console or Console(stderr=True)).print(
        "FINSENTRY_MANAGE_SERVICES is false: external services are configured "
        f"(Kafka {settings.kafka_bootstrap}, Elasticsearch {settings.es_url}); nothing to do."
    )
    return True


def up(settings: Settings, only: str | None = None, console: Console | None = None) -> None:
    """Fetch (once), start and health-wait the local services; harmless when they run.
    Does nothing when `settings.manage_services` is false."""
    if _external(settings, console):
        return
    with _locked(settings):
        for service in _selected(settings, only, console):
            service.up()


def down(settings: Settings, only: str | None = None, console: Console | None = None) -> None:
    """Stop the local services (their data stays under the state dir)."""
    if _external(settings, console):
        return
    with _locked(settings):
        for service in reversed(_selected(settings, only, console)):
            service.down()


def status(settings: Settings) -> dict[str, ServiceStatus]:
    """Each local service's pid-file process and health check (external ones: see `check`)."""
    return {name: cls(settings).status() for name, cls in SERVICES.items()}
