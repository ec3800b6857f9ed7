"""Sending to the raw topic: one kafka-python producer setup and a steady pacer."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from kafka import KafkaProducer

from finsentry.services.kafka_login import verify_kafka_login
from finsentry.settings import Settings


def make_producer(settings: Settings) -> KafkaProducer:
    """A producer for the raw topic; KafkaLoginError at once if the broker refuses the
    configured credentials or CA (instead of a minute's "Unable to bootstrap")."""
    verify_kafka_login(settings)
    return KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap.split(","),
        acks="all",
        linger_ms=5,
        retries=10,
        **settings.kafka_client_options(),
    )


@dataclass
class Pacer:
    """Spaces calls `1/rate` seconds apart on average (rate <= 0: no pacing)."""

    rate: float
    _next: float = field(default_factory=time.monotonic)

    def wait(self) -> None:
        if self.rate <= 0:
            return
        now = time.monotonic()
        if self._next > now:
            time.sleep(self._next - now)
        self._next = max(self._next, now - 1.0) + 1.0 / self.rate
