"""End-to-end benchmark on the real local Kafka and Elasticsearch.

Replays N dataset rows into a fresh raw topic at a fixed rate (or as fast as possible),
runs the real worker on them, and records when each item becomes searchable. Prints the
sustained rate and produce-to-searchable latency percentiles as a table.

    .venv/bin/python benchmarks/e2e_replay.py --items 2000 --rate 0
    .venv/bin/python benchmarks/e2e_replay.py --items 2000 --rate 150
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

import psutil
from kafka import KafkaProducer
from rich.console import Console
from rich.table import Table

from finsentry.es_client import make_es_client
from finsentry.feeds.producer import Pacer
from finsentry.models.artifact import resolve_artifact
from finsentry.services import manager
from finsentry.settings import Settings
from finsentry.streams.parser import ParseError, parse_raw

FORWARDED = ("app_id", "topic_raw", "topic_scored", "topic_dead_letters", "items_index",
             "company_verdicts_index", "dead_letters_index", "max_batch", "max_wait",
             "items_refresh_interval", "overlap_writes", "onnx_spinning")  # fmt: skip


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def accepted(text: str, settings: Settings) -> bool:
    raw = json.dumps({"id": "probe", "text": text}).encode()
    return not isinstance(parse_raw(raw, settings.max_text_chars), ParseError)


def replay_texts(settings: Settings, count: int, skip: int = 0) -> list[str]:
    """`count` dataset tweets from row `skip` on (round again past the end), only those the
    worker accepts: a dead-lettered one would never become searchable."""
    with (settings.data_dir / "tfns_sentiment" / "train.csv").open(newline="") as handle:
        rows = [row["text"] for row in csv.DictReader(handle) if accepted(row["text"], settings)]
    return [rows[(skip + i) % len(rows)] for i in range(count)]


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """User + system CPU seconds each process and its live children have used so far; a
    child that has a row of its own (the worker, services this script started) is not
    counted again under its parent."""
    used: dict[str, float] = {}
    listed = set(pids.values())
    for name, pid in pids.items():
        try:
            root = psutil.Process(pid)
            processes = [root]
            for child in root.children():
                if child.pid not in listed:
                    processes += [child, *child.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        total = 0.0
        for process in processes:
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        used[name] = total
    return used


def cpu_table(before: dict[str, float], after: dict[str, float], wall: float, items: int) -> Table:
    """Where the machine's cores went during the replay: CPU time per process, per item."""
    cores = psutil.cpu_count() or 1
    table = Table(title=f"CPU during the replay ({wall:.1f} s wall, {cores} cores)")
    for column in ("process", "CPU s", "CPU ms / item", "share of all cores"):
        table.add_column(column, justify="right")
    machine = sum(after[name] - before[name] for name in after if name in before)
    for name in after:
        used = after[name] - before.get(name, 0.0)
        table.add_row(name, f"{used:.1f}", f"{1000 * used / max(items, 1):.2f}",
                      f"{used / (wall * cores):.0%}")  # fmt: skip
    table.add_row("all of these", f"{machine:.1f}", f"{1000 * machine / max(items, 1):.2f}",
                  f"{machine / (wall * cores):.0%}")  # fmt: skip
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=0.0, help="items/s; 0 = unpaced")
    parser.add_argument("--max-batch", type=int, default=None)
    parser.add_argument("--max-wait", type=float, default=None)
    parser.add_argument(
        "--refresh-interval", default=None, help="the items index's refresh_interval (250ms)"
    )
    parser.add_argument("--model", type=Path, default=None, help="artifact (default: newest)")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()

    base = Settings()
    if base.manage_services:
        manager.up(base)
    tag = f"bench{uuid.uuid4().hex[:8]}"
    overrides: dict[str, object] = {
        "app_id": tag, "topic_raw": f"{tag}.raw", "topic_scored": f"{tag}.scored",
        "topic_dead_letters": f"{tag}.dl", "items_index": f"{tag}-items",
        "dead_letters_index": f"{tag}-dl", "company_verdicts_index": f"{tag}-verdicts",
    }  # fmt: skip
    if args.max_batch:
        overrides["max_batch"] = args.max_batch
    if args.max_wait:
        overrides["max_wait"] = args.max_wait
    if args.refresh_interval:
        overrides["items_refresh_interval"] = args.refresh_interval
    settings = base.model_copy(update=overrides)
    model = args.model or resolve_artifact(settings.models_dir, settings.model_path)

    texts = replay_texts(settings, args.items)
    ids = [f"{tag}-{i}" for i in range(len(texts))]

    env = {
        f"FINSENTRY_{k.upper()}": str(getattr(settings, k))
        for k in FORWARDED
        if getattr(settings, k) is not None
    }
    env.update(FINSENTRY_MANAGE_SERVICES="false", FINSENTRY_MODEL_PATH=str(model))
    log = settings.state_dir / "logs" / f"{tag}-worker.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    worker = subprocess.Popen(
        [sys.executable, "-m", "finsentry", "worker", "--loglevel", "WARNING"],
        env={**os.environ, **env},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    es = make_es_client(settings)
    console = Console()
    try:
        # Warm up: one item through the whole path, so start-up is not measured.
        producer = KafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=5
        )
        producer.send(settings.topic_raw, json.dumps({"id": "warmup", "text": "warm up"}).encode())
        producer.flush()
        deadline = time.monotonic() + 300
        while not es.options(ignore_status=404).count(index=settings.items_index).get("count"):
            if worker.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"worker did not start; see {log}")
            time.sleep(0.5)
            es.indices.refresh(index=settings.items_index, ignore_unavailable=True)

        pids = {"worker": worker.pid, "benchmark (producer, polling)": os.getpid()}
        pids.update({
            name: state.pid for name, state in manager.status(settings).items() if state.pid
        })  # fmt: skip
        cpu_before = cpu_seconds(pids)
        sent_at: dict[str, float] = {}
        seen_at: dict[str, float] = {}
        pacer = Pacer(args.rate)
        console.print(f"replaying {len(texts)} items at {args.rate or 'max'} items/s ...")
        start = time.time()
        next_poll = time.monotonic()
        for doc_id, text in zip(ids, texts, strict=True):
            pacer.wait()
            sent_at[doc_id] = time.time()
            value = json.dumps({"id": doc_id, "text": text, "source": "bench"}).encode()
            producer.send(settings.topic_raw, key=doc_id.encode(), value=value)
            if time.monotonic() >= next_poll:
                _poll(es, settings.items_index, sent_at, seen_at)
                next_poll = time.monotonic() + 0.2
        producer.flush()
        deadline = time.monotonic() + args.timeout
        while len(seen_at) < len(ids) and time.monotonic() < deadline:
            _poll(es, settings.items_index, sent_at, seen_at)
            time.sleep(0.1)
        end = max(seen_at.values()) if seen_at else time.time()
        cpu_after, cpu_end = cpu_seconds(pids), time.time()
    finally:
        worker.terminate()
        worker.wait(timeout=60)

    latencies = [seen_at[i] - sent_at[i] for i in ids if i in seen_at]
    table = Table(
        title=f"end-to-end replay ({model.name}; refresh "
        f"{settings.items_refresh_interval or 'default 1s'}; overlap writes "
        f"{settings.overlap_writes}, ONNX spinning {settings.onnx_spinning})"
    )
    for column in ("items", "indexed", "offered rate/s", "sustained items/s", "p50 s", "p95 s",
                   "p99 s", "max s"):  # fmt: skip
        table.add_column(column, justify="right")
    table.add_row(
        str(len(ids)),
        str(len(latencies)),
        f"{args.rate:.0f}" if args.rate else "max",
        f"{len(latencies) / (end - start):.1f}",
        f"{percentile(latencies, 50):.2f}",
        f"{percentile(latencies, 95):.2f}",
        f"{percentile(latencies, 99):.2f}",
        f"{max(latencies):.2f}",
    )
    console.print(table)
    console.print(f"mean latency {statistics.mean(latencies):.2f}s; worker log {log}")
    console.print(cpu_table(cpu_before, cpu_after, cpu_end - start, len(latencies)))
    for index in (
        settings.items_index,
        settings.dead_letters_index,
        settings.company_verdicts_index,
    ):
        es.options(ignore_status=404).indices.delete(index=index)


def _poll(es, index: str, sent: Iterable[str], seen_at: dict[str, float]) -> None:  # type: ignore[no-untyped-def]
    """Record the first time each sent id is searchable (search sees refreshed segments
    only). Asks for the ids still in flight only, so the poll costs Elasticsearch little
    beside the worker it measures."""
    # At most a search's window (index.max_result_window, 10,000) at a time.
    pending = [doc_id for doc_id in sent if doc_id not in seen_at][:10_000]
    if not pending:
        return
    now = time.time()
    response = es.options(ignore_status=404).search(
        index=index, size=len(pending), source=False, query={"ids": {"values": pending}}
    )
    for hit in response.get("hits", {}).get("hits", []):
        seen_at.setdefault(hit["_id"], now)


if __name__ == "__main__":
    main()
