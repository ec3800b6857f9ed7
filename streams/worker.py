"""Assemble and run the scoring worker: services, index template, model, Faust app."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor

import faust

from finsentry.es_client import describe_es_client, make_es_client
from finsentry.index.bulk_sink import BulkSink
from finsentry.index.template import apply_dead_letters_template, apply_items_template
from finsentry.models.scorer import load_scorer
from finsentry.settings import Settings
from finsentry.streams.app import ModelSwapper, add_scoring_agent, create_app, declare_topics
from finsentry.streams.batch_processor import BatchProcessor
from finsentry.streams.entity_linking import load_company_index

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


def build_worker_app(settings: Settings) -> faust.App:
    """Everything the scoring agent needs, checked before the first message is read."""
    wait_for_elasticsearch(settings)
    es = make_es_client(settings)
    apply_items_template(es, settings.items_index)
    apply_dead_letters_template(es, settings.dead_letters_index)
    scorer = load_scorer(settings)
    log.info("serving model version %s", scorer.version)
    companies = load_company_index(settings.company_files)
    sink, dead_letter_sink = (
        BulkSink(
            es,
            index,
            initial_backoff=settings.bulk_initial_backoff,
            max_backoff=settings.bulk_max_backoff,
        )
        for index in (settings.items_index, settings.dead_letters_index)
    )
    app = create_app(settings)
    topics = declare_topics(app, settings)
    processor = BatchProcessor(
        scorer=scorer,
        companies=companies,
        sink=sink,
        executor=ThreadPoolExecutor(max_workers=1, thread_name_prefix="score"),
        max_text_chars=settings.max_text_chars,
        dead_letter_sink=dead_letter_sink,
    )
    # A pinned model (FINSENTRY_MODEL_PATH) stays; else the worker follows the live one.
    swapper = ModelSwapper(settings, processor) if settings.model_path is None else None
    add_scoring_agent(app, topics, processor, settings, swapper)

    @app.on_before_shutdown.connect
    async def _stop_retrying(app: faust.App, **_: object) -> None:
        sink.stop.set()
        dead_letter_sink.stop.set()

    return app


def run_worker(settings: Settings, loglevel: str = "INFO") -> None:
    if settings.manage_services:
        from finsentry.services import manager

        manager.up(settings)
    app = build_worker_app(settings)
    if settings.metrics_port:
        from prometheus_client import start_http_server

        try:
            start_http_server(settings.metrics_port)
            log.info("metrics on :%d/metrics", settings.metrics_port)
        except OSError as exc:  # another worker on this host has the port: score anyway
            log.warning("no metrics endpoint on port %d: %s", settings.metrics_port, exc)
    worker = faust.Worker(app, loglevel=loglevel)
    worker.execute_from_commandline()
