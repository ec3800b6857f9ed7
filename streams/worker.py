"""Assemble and run the scoring worker: services, index template, model, Faust app."""

from __future__ import annotations

import logging
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import faust

from finsentry.es_client import describe_es_client, make_es_client
from finsentry.index.bulk_sink import BulkSink
from finsentry.index.template import (
    apply_company_verdicts_template,
    apply_dead_letters_template,
    apply_items_template,
)
from finsentry.models.scorer import load_scorer
from finsentry.services.kafka_login import verify_kafka_login
from finsentry.settings import Settings
from finsentry.streams.app import ModelSwapper, add_scoring_agent, create_app, declare_topics
from finsentry.streams.batch_processor import BatchProcessor
from finsentry.streams.entity_linking import load_company_index
from finsentry.streams.supervisor import exit_now

log = logging.getLogger(__name__)


def wait_for_elasticsearch(settings: Settings, timeout: float = 120.0) -> None:
    es = make_es_client(settings)
    deadline = time.monotonic() + timeout
    while True:
        try:
            es.cluster.health(wait_for_status="yellow", timeout="5s")
            return
        except Exception as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"Elasticsearch not reachable at {describe_es_client(settings)['url']}: {exc}"
                ) from exc
            time.sleep(1.0)


def build_worker_app(settings: Settings, stop: threading.Event | None = None) -> faust.App:
    """Everything the scoring agent needs, checked before the first message is read.
    Setting `stop` ends the sinks' retries (SinkStopped): the batch in hand is given up,
    unacknowledged."""
    stop = stop or threading.Event()
    verify_kafka_login(settings)
    wait_for_elasticsearch(settings)
    es = make_es_client(settings)
    apply_items_template(es, settings.items_index, settings.items_refresh_interval)
    apply_dead_letters_template(es, settings.dead_letters_index)
    apply_company_verdicts_template(es, settings.company_verdicts_index)
    scorer = load_scorer(settings)
    log.info("serving model version %s", scorer.version)
    companies = load_company_index(settings.company_files)
    sink, dead_letter_sink, verdict_sink = (
        BulkSink(
            es,
            index,
            initial_backoff=settings.bulk_initial_backoff,
            max_backoff=settings.bulk_max_backoff,
            stop=stop,
        )
        for index in (
            settings.items_index,
            settings.dead_letters_index,
            settings.company_verdicts_index,
        )
    )
    app = create_app(settings)
    topics = declare_topics(app, settings)
    processor = BatchProcessor(
        scorer=scorer,
        companies=companies,
        sink=sink,
        executor=ThreadPoolExecutor(max_workers=1, thread_name_prefix="score"),
        write_executor=ThreadPoolExecutor(max_workers=1, thread_name_prefix="write"),
        max_text_chars=settings.max_text_chars,
        dead_letter_sink=dead_letter_sink,
        verdict_sink=verdict_sink,
    )
    # A pinned model (FINSENTRY_MODEL_PATH) stays; else the worker follows the live one.
    swapper = ModelSwapper(settings, processor) if settings.model_path is None else None
    add_scoring_agent(app, topics, processor, settings, swapper)

    @app.on_before_shutdown.connect
    async def _stop_retrying(app: faust.App, **_: object) -> None:
        stop.set()

    return app


class ScoringWorker(faust.Worker):
    """A Faust worker that, on a stop signal (SIGTERM, SIGINT), does not wait for the batch
    in hand.

    Faust's shutdown waits until every message handed to the agent is acknowledged, and
    during an Elasticsearch outage the sink would retry that batch until the node returns.
    Here the signal sets `stop` (the sink gives up at once and the agent ends, streams/app.py)
    and turns that wait off: Faust commits what was acknowledged and exits; the unfinished
    batch is read again on restart (at-least-once, as after a crash)."""

    def __init__(self, app: faust.App, stop: threading.Event, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._stop_sinks = stop

    def _stop_now(self) -> None:
        self._stop_sinks.set()
        with warnings.catch_warnings():  # "reconfiguring late": read at shutdown, as meant
            warnings.simplefilter("ignore")
            self.app.conf.stream_wait_empty = False

    def _on_sigterm(self) -> None:
        self._stop_now()
        super()._on_sigterm()

    def _on_sigint(self) -> None:
        self._stop_now()
        super()._on_sigint()


def run_worker(settings: Settings, loglevel: str = "INFO") -> None:
    if settings.manage_services:
        from finsentry.services import manager

        manager.up(settings)
    stop = threading.Event()
    app = build_worker_app(settings, stop)
    if settings.metrics_port:
        from prometheus_client import start_http_server

        try:
            start_http_server(settings.metrics_port)
            log.info("metrics on :%d/metrics", settings.metrics_port)
        except OSError as exc:  # another worker on this host has the port: score anyway
            log.warning("no metrics endpoint on port %d: %s", settings.metrics_port, exc)
    worker = ScoringWorker(app, stop, loglevel=loglevel)
    try:
        worker.execute_from_commandline()
    except SystemExit as stopped:
        # Faust has stopped (offsets committed, sinks stopped). The interpreter's teardown,
        # a garbage collection of torch's and Faust's heap, took ~10 s on a loaded 2-core
        # machine: long enough for `finsentry run` to kill a worker that had stopped.
        exit_now(stopped.code)
