"""Scaling out: items/s with 1, 2 and 3 workers in one consumer group, on the real local
Kafka and Elasticsearch.

For each worker count: a fresh six-partition raw topic, that many `finsentry worker`
processes in one group (started, joined and warmed up first, so start-up is not measured),
then N dataset rows produced at once; the figure is N over the time from the first send to
the last item searchable. All workers share this machine's cores: on a 2-core machine the
model already uses both, so expect the figure to stay flat (workers scale with machines,
not on one); see README, *Scaling out*.

    .venv/bin/python benchmarks/scaling.py --items 1500 --workers 1 2 3
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic
from rich.console import Console
from rich.table import Table

from finsentry.es_client import make_es_client
from finsentry.models.artifact import resolve_artifact
from finsentry.settings import Settings

PARTITIONS = 6
FORWARDED = ("app_id", "topic_raw", "topic_scored", "topic_dead_letters", "items_index",
             "dead_letters_index", "topic_partitions")  # fmt: skip


def _members(admin: KafkaAdminClient, group: str) -> int:
    found = admin.describe_groups([group]).get(group, {})
    return len(found.get("members", [])) if found.get("group_state") == "Stable" else 0


def _count(es, index: str) -> int:  # type: ignore[no-untyped-def]
    es.indices.refresh(index=index, ignore_unavailable=True)
    return int(es.options(ignore_status=404).count(index=index).get("count", 0))


def run_one(base: Settings, model: Path, texts: list[str], workers: int, timeout: float) -> float:
    """Items/s of `workers` workers over `texts`, start-up excluded."""
    tag = f"scale{uuid.uuid4().hex[:8]}"
    settings = base.model_copy(
        update={
            "app_id": tag, "topic_raw": f"{tag}.raw", "topic_scored": f"{tag}.scored",
            "topic_dead_letters": f"{tag}.dl", "items_index": f"{tag}-items",
            "dead_letters_index": f"{tag}-dl", "topic_partitions": PARTITIONS,
        }
    )  # fmt: skip
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    admin.create_topics([NewTopic(settings.topic_raw, PARTITIONS, 1)])
    env = {f"FINSENTRY_{k.upper()}": str(getattr(settings, k)) for k in FORWARDED}
    env.update(FINSENTRY_MANAGE_SERVICES="false", FINSENTRY_MODEL_PATH=str(model))
    env.update(FINSENTRY_METRICS_PORT="0")
    logs = settings.state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "finsentry", "worker", "--loglevel", "WARNING"],
            env={**os.environ, **env},
            stdout=(logs / f"{tag}-worker{n}.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        for n in range(workers)
    ]
    es = make_es_client(settings)
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=5)
    try:
        deadline = time.monotonic() + 600
        while _members(admin, tag) != workers:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise SystemExit(f"workers did not form a group; logs in {logs}/{tag}-*")
            time.sleep(1.0)
        # Warm up every partition (so every worker), then measure.
        for p in range(PARTITIONS):
            value = json.dumps({"id": f"warm{p}", "text": "warm up"}).encode()
            producer.send(settings.topic_raw, value=value, partition=p)
        producer.flush()
        while _count(es, settings.items_index) < PARTITIONS:
            if time.monotonic() > deadline:
                raise SystemExit(f"warm-up items not indexed; logs in {logs}/{tag}-*")
            time.sleep(0.5)
        start = time.monotonic()
        for i, text in enumerate(texts):
            value = json.dumps({"id": f"{tag}-{i}", "text": text}).encode()
            producer.send(settings.topic_raw, key=f"{tag}-{i}".encode(), value=value)
        producer.flush()
        expected = PARTITIONS + len(texts)
        end_by = time.monotonic() + timeout
        while _count(es, settings.items_index) < expected:
            if time.monotonic() > end_by:
                raise SystemExit(f"not every item indexed in {timeout}s")
            time.sleep(0.2)
        return len(texts) / (time.monotonic() - start)
    finally:
        producer.close()
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=60)
        admin.close()
        for index in (settings.items_index, settings.dead_letters_index):
            es.options(ignore_status=404).indices.delete(index=index)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1500)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--model", type=Path, default=None, help="artifact (default: served)")
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args()

    base = Settings()
    if base.manage_services:
        from finsentry.services import manager

        manager.up(base)
    model = args.model or resolve_artifact(base.models_dir, base.model_path)
    data = base.data_dir / "tfns_sentiment" / "train.csv"
    with data.open(newline="") as handle:
        rows = zip(csv.DictReader(handle), range(args.items), strict=False)
        texts = [row["text"] for row, _ in rows]
    table = Table(title=f"scaling out on {os.cpu_count()} cores ({model.name})")
    for column in ("workers", "partitions", "items", "items/s"):
        table.add_column(column, justify="right")
    for workers in args.workers:
        rate = run_one(base, model, texts, workers, args.timeout)
        table.add_row(str(workers), str(PARTITIONS), str(len(texts)), f"{rate:.1f}")
    Console().print(table)


if __name__ == "__main__":
    main()
