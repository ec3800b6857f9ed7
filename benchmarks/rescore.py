"""Backfill re-scoring while live traffic flows: rescore items/s and the live latency.

Indexes `--backfill` items as if an older model had scored them, starts the real worker on
fresh topics (serving `--model`), replays dataset rows at `--rate` items/s twice: once
alone (baseline) and once while `finsentry rescore` re-scores the backfill with the same
model (at its default niceness, rate cap and yield limit). Prints, for both phases, the live
produce-to-searchable p50/p95/p99, and the rescore's items/s.

    .venv/bin/python benchmarks/rescore.py --model artifacts/models/<stamp>-<v>/exports/<int8>
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kafka import KafkaProducer
from rich.console import Console
from rich.table import Table

from finsentry.es_client import make_es_client
from finsentry.feeds.producer import Pacer
from finsentry.index.template import apply_items_template
from finsentry.messages import ScoredItem
from finsentry.models.registry import serving_artifact
from finsentry.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from e2e_replay import _poll, percentile, replay_texts

OLD = "backfill-old"


def _backfill(es: Any, index: str, texts: list[str]) -> None:
    apply_items_template(es, index)
    now = datetime.now(UTC) - timedelta(days=1)
    for start in range(0, len(texts), 1000):
        operations: list[dict[str, Any]] = []
        for i, text in enumerate(texts[start : start + 1000], start):
            item = ScoredItem(
                id=f"old-{i}", text=text, topic="Markets", topic_confidence=0.5,
                sentiment="neutral", sentiment_confidence=0.5, sentiment_score=0.0,
                model_version=OLD, ingested_at=now, scored_at=now + timedelta(milliseconds=i),
                latency_ms=0.0,
            )  # fmt: skip
            operations += [
                {"index": {"_index": index, "_id": item.id}},
                item.model_dump(mode="json"),
            ]
        assert not es.bulk(operations=operations, refresh=True)["errors"]


def _live(
    es: Any, producer: KafkaProducer, settings: Settings, prefix: str, texts: list[str], rate: float
) -> list[float]:
    sent_at: dict[str, float] = {}
    seen_at: dict[str, float] = {}
    pacer = Pacer(rate)
    next_poll = time.monotonic()
    for i, text in enumerate(texts):
        pacer.wait()
        doc_id = f"{prefix}-{i}"
        sent_at[doc_id] = time.time()
        value = json.dumps({"id": doc_id, "text": text, "source": "bench"}).encode()
        producer.send(settings.topic_raw, key=doc_id.encode(), value=value)
        if time.monotonic() >= next_poll:
            _poll(es, settings.items_index, sent_at, seen_at)
            next_poll = time.monotonic() + 0.2
    producer.flush()
    deadline = time.monotonic() + 120
    while not all(i in seen_at for i in sent_at) and time.monotonic() < deadline:
        _poll(es, settings.items_index, sent_at, seen_at)
        time.sleep(0.1)
    return [seen_at[i] - sent_at[i] for i in sent_at if i in seen_at]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="artifact (default: live)")
    parser.add_argument("--backfill", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=150.0)
    parser.add_argument("--seconds", type=float, default=20.0, help="live phase length")
    args = parser.parse_args()

    base = Settings()
    tag = f"rescore{uuid.uuid4().hex[:8]}"
    settings = base.model_copy(
        update={
            "app_id": tag, "topic_raw": f"{tag}.raw", "topic_scored": f"{tag}.scored",
            "topic_dead_letters": f"{tag}.dl", "items_index": f"{tag}-items",
            "dead_letters_index": f"{tag}-dl",
        }
    )  # fmt: skip
    model = args.model or serving_artifact(settings)
    es = make_es_client(settings)
    _backfill(es, settings.items_index, replay_texts(settings, args.backfill))
    env = {
        **os.environ,
        **{
            f"FINSENTRY_{k.upper()}": str(getattr(settings, k))
            for k in (
                "app_id",
                "topic_raw",
                "topic_scored",
                "topic_dead_letters",
                "items_index",
                "dead_letters_index",
            )
        },
        "FINSENTRY_MANAGE_SERVICES": "false",
        "FINSENTRY_MODEL_PATH": str(model),
        "FINSENTRY_METRICS_PORT": "0",
        "FINSENTRY_STATE_DIR": str(settings.state_dir / tag),
    }
    log = settings.state_dir / "logs" / f"{tag}-worker.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    worker = subprocess.Popen(
        [sys.executable, "-m", "finsentry", "worker", "--loglevel", "WARNING"],
        env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    rows = []
    try:
        producer = KafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=5
        )
        warm = _live(es, producer, settings, "warm", ["warm up"], 10)
        assert warm, f"the worker did not start; see {log}"
        count = int(args.rate * args.seconds)
        alone = _live(
            es, producer, settings, "alone", replay_texts(settings, count, 5000), args.rate
        )
        rows.append(("live alone", alone, None))
        rescore = subprocess.Popen(
            [sys.executable, "-m", "finsentry", "rescore", "--from-version", OLD, "--json",
             "--no-progress"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        time.sleep(2.0)  # the rescore has loaded its model and runs
        during = _live(
            es, producer, settings, "during", replay_texts(settings, count, 7000), args.rate
        )
        out, _ = rescore.communicate(timeout=3600)
        result = json.loads(out.strip().splitlines()[-1])
        rows.append(("live during rescore", during, result))
    finally:
        worker.terminate()
        worker.wait(timeout=60)
        for index in (settings.items_index, settings.dead_letters_index):
            es.options(ignore_status=404).indices.delete(index=index)

    table = Table(title=f"rescore under live traffic at {args.rate:.0f}/s ({model.name})")
    for column in ("phase", "live items", "p50 s", "p95 s", "p99 s", "rescored",
                   "rescore items/s", "rescore paused s"):  # fmt: skip
        table.add_column(column, justify="right")
    for name, latencies, result in rows:
        table.add_row(
            name,
            str(len(latencies)),
            f"{percentile(latencies, 50):.2f}",
            f"{percentile(latencies, 95):.2f}",
            f"{percentile(latencies, 99):.2f}",
            str(result["updated"]) if result else "-",
            f"{result['updated'] / result['seconds']:.1f}" if result else "-",
            f"{result.get('yielded_s', 0):.0f}" if result else "-",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
