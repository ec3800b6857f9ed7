"""Soak: the real worker under steady load on the real local Kafka and Elasticsearch.

Once a first item went through (start-up is not soaked), sends `--rate` items/s (dataset
texts, unique ids) to a fresh raw topic for `--duration` seconds while the real `finsentry
worker` scores and indexes them, and samples every `--sample` seconds: the worker's resident
memory (RSS, its process tree), the consumer group's lag on the raw topic and the indexed
count. After sending stops it waits for the worker to drain, then prints the samples (one
row a minute) and the verdict:

- memory: the largest RSS after warm-up is within `--max-growth` (10 %) of the RSS at the
  end of warm-up;
- lag: the largest lag after warm-up is at most `--max-lag` items (default: 30 s of input);
- drained: once sending stops, the lag reaches 0 within `--drain-timeout`;
- nothing lost: every id sent is in the index (documents are written by id, so the count
  of the index is the number of distinct ids).

Exit status 1 when a criterion fails.

    .venv/bin/python benchmarks/soak.py                   # 100 items/s for 20 minutes
    .venv/bin/python benchmarks/soak.py --duration 180    # a 3-minute smoke run
    .venv/bin/python benchmarks/soak.py --model DIR --report benchmarks/results/soak.md

`--report` also writes the figures as Markdown, with a plot of memory and lag beside it
(`soak.png`); RELIABILITY.md includes that file (`tests/support/outcomes.py`).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import shlex
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil
from kafka import KafkaAdminClient, KafkaProducer
from rich.console import Console
from rich.table import Table

from finsentry.es_client import make_es_client
from finsentry.feeds.producer import Pacer, make_producer
from finsentry.models.artifact import resolve_artifact
from finsentry.settings import Settings
from finsentry.streams.consumer_lag import consumer_lag

FORWARDED = ("app_id", "topic_raw", "topic_scored", "topic_dead_letters", "items_index",
             "company_verdicts_index", "dead_letters_index", "metrics_port")  # fmt: skip


@dataclass(frozen=True)
class Sample:
    seconds: float
    sent: int
    indexed: int
    lag: int
    rss_mib: float


@dataclass(frozen=True)
class Verdict:
    rss_warm_mib: float
    rss_max_mib: float
    growth: float
    max_lag: int
    lost: int
    undrained: int
    memory_ok: bool
    lag_ok: bool

    @property
    def ok(self) -> bool:
        return self.memory_ok and self.lag_ok and self.lost == 0 and self.undrained == 0


def judge(
    samples: list[Sample],
    warmup: float,
    sent: int,
    indexed: int,
    max_growth: float,
    max_lag: int,
    dead_lettered: int = 0,
) -> Verdict:
    """Pure: the verdict on the samples taken after `warmup` seconds (at least the last).
    Items still in Kafka at the end (the last sample's lag) are undrained, not lost; dataset
    rows the parser refuses (e.g. a text of emoji only) are dead-lettered with a reason, not
    lost."""
    steady = [s for s in samples if s.seconds >= warmup] or samples[-1:]
    warm = steady[0].rss_mib
    peak = max(s.rss_mib for s in steady)
    growth = peak / warm - 1 if warm else 0.0
    lag = max(s.lag for s in steady)
    return Verdict(
        rss_warm_mib=warm,
        rss_max_mib=peak,
        growth=growth,
        max_lag=lag,
        lost=max(0, sent - indexed - dead_lettered - samples[-1].lag),
        undrained=samples[-1].lag,
        memory_ok=growth <= max_growth,
        lag_ok=lag <= max_lag,
    )


def rss_mib(pid: int) -> float:
    """Resident memory of the process and its children, MiB."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
        return sum(p.memory_info().rss for p in processes) / 2**20
    except psutil.NoSuchProcess:
        return 0.0


def wait_until_serving(  # type: ignore[no-untyped-def]
    producer: KafkaProducer, settings: Settings, es, worker: subprocess.Popen[bytes], log: Path
) -> None:
    """One item through the whole path first: start-up is not part of the soak."""
    value = json.dumps({"id": "warm-up", "text": "Shares rise on strong results"}).encode()
    producer.send(settings.topic_raw, key=b"warm-up", value=value)
    producer.flush()
    deadline = time.monotonic() + 300
    while indexed_count(es, settings.items_index) < 1:
        if worker.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the worker did not start; see {log}")
        time.sleep(0.5)


def indexed_count(es, index: str) -> int:  # type: ignore[no-untyped-def]
    es.indices.refresh(index=index, ignore_unavailable=True)
    return int(es.options(ignore_status=(404, 503)).count(index=index).get("count", 0))


class Sender(threading.Thread):
    """Sends dataset texts with ids `<tag>-<n>` at `rate` items/s until `stop` is set."""

    def __init__(self, producer: KafkaProducer, topic: str, texts: list[str], tag: str,
                 rate: float) -> None:  # fmt: skip
        super().__init__(name="soak-sender", daemon=True)
        self.producer, self.topic, self.texts, self.tag = producer, topic, texts, tag
        self.pacer = Pacer(rate)
        self.stop = threading.Event()
        self.sent = 0
        self.failed = 0

    def run(self) -> None:
        for n, text in zip(itertools.count(), itertools.cycle(self.texts)):
            if self.stop.is_set():
                break
            self.pacer.wait()
            item_id = f"{self.tag}-{n}"
            value = json.dumps({"id": item_id, "text": text, "source": "soak"}).encode()
            self.producer.send(self.topic, key=item_id.encode(), value=value).add_errback(
                self._failed
            )
            self.sent += 1
        self.producer.flush()

    def _failed(self, _: BaseException) -> None:
        self.failed += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=100.0, help="items/s offered")
    parser.add_argument("--duration", type=float, default=1200.0, help="seconds of sending")
    parser.add_argument("--warmup", type=float, default=None, help="default: min(120, 1/4)")
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--max-growth", type=float, default=0.10, help="RSS growth allowed")
    parser.add_argument("--max-lag", type=int, default=None, help="default: 30 s of input")
    parser.add_argument("--drain-timeout", type=float, default=300.0)
    parser.add_argument("--model", type=Path, default=None, help="artifact (default: newest)")
    parser.add_argument("--report", type=Path, default=None, help="also write Markdown + PNG")
    args = parser.parse_args()
    warmup = args.warmup if args.warmup is not None else min(120.0, args.duration / 4)
    max_lag = args.max_lag if args.max_lag is not None else int(30 * args.rate)

    base = Settings()
    if base.manage_services:
        from finsentry.services import manager

        manager.up(base)
    tag = f"soak{uuid.uuid4().hex[:8]}"
    settings = base.model_copy(
        update={
            "app_id": tag, "topic_raw": f"{tag}.raw", "topic_scored": f"{tag}.scored",
            "topic_dead_letters": f"{tag}.dl", "items_index": f"{tag}-items",
            "dead_letters_index": f"{tag}-dl", "company_verdicts_index": f"{tag}-verdicts",
            "metrics_port": 0,
        }
    )  # fmt: skip
    model = args.model or resolve_artifact(settings.models_dir, settings.model_path)
    data = settings.data_dir / "tfns_sentiment" / "train.csv"
    with data.open(newline="") as handle:
        texts = [row["text"] for row in csv.DictReader(handle)]

    env = {f"FINSENTRY_{k.upper()}": str(getattr(settings, k)) for k in FORWARDED}
    env.update(FINSENTRY_MANAGE_SERVICES="false", FINSENTRY_MODEL_PATH=str(model))
    log = settings.state_dir / "logs" / f"{tag}-worker.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    console = Console()
    es = make_es_client(settings)
    admin = KafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap.split(","),
        client_id="finsentry-soak",
        **settings.kafka_client_options(),
    )
    worker = subprocess.Popen(
        [sys.executable, "-m", "finsentry", "worker", "--loglevel", "WARNING"],
        env={**os.environ, **env},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    producer = make_producer(settings)
    sender = Sender(producer, settings.topic_raw, texts, tag, args.rate)
    samples: list[Sample] = []
    console.print(
        f"soak {tag}: {args.rate:g} items/s for {args.duration:g}s (warm-up {warmup:g}s), "
        f"model {model.name}; worker pid {worker.pid}, log {log}"
    )
    try:
        wait_until_serving(producer, settings, es, worker, log)
        started = time.monotonic()
        sender.start()
        while True:
            time.sleep(args.sample)
            if worker.poll() is not None:
                raise SystemExit(f"the worker exited ({worker.returncode}); see {log}")
            elapsed = time.monotonic() - started
            lag = consumer_lag(admin, tag, settings.topic_raw, settings.topic_partitions)
            indexed = indexed_count(es, settings.items_index) - 1  # less the warm-up item
            dead = indexed_count(es, settings.dead_letters_index)
            samples.append(Sample(elapsed, sender.sent, indexed, lag, rss_mib(worker.pid)))
            if elapsed >= args.duration and not sender.stop.is_set():
                sender.stop.set()
                sender.join()
            done = sender.stop.is_set() and indexed + dead >= sender.sent and lag == 0
            if done or elapsed > args.duration + args.drain_timeout:
                break
    finally:
        sender.stop.set()
        worker.terminate()
        worker.wait(timeout=60)
        admin.close()

    verdict = judge(
        samples, warmup, sender.sent, samples[-1].indexed, args.max_growth, max_lag, dead
    )
    print_report(console, samples, verdict, args, (warmup, max_lag), (sender.sent, sender.failed))
    if args.report:
        write_report(args.report, samples, verdict, args, (warmup, max_lag),
                     (sender.sent, sender.failed), model)  # fmt: skip
        console.print(f"report: {args.report} and {args.report.with_suffix('.png')}")
    for index in (
        settings.items_index,
        settings.dead_letters_index,
        settings.company_verdicts_index,
    ):
        es.options(ignore_status=404).indices.delete(index=index)
    if not verdict.ok:
        raise SystemExit(1)


def verdict_rows(
    verdict: Verdict, args: argparse.Namespace, limits: tuple[float, int], sent: tuple[int, int]
) -> list[tuple[str, str, str, bool]]:
    """criterion, limit, measured, ok: the verdict as rows (for the console and the report)."""
    warmup, max_lag = limits
    return [
        (
            "RSS after warm-up",
            f"<= +{args.max_growth:.0%} of {verdict.rss_warm_mib:.0f} MiB (at {warmup:g}s)",
            f"max {verdict.rss_max_mib:.0f} MiB ({verdict.growth:+.1%})",
            verdict.memory_ok,
        ),
        ("consumer lag after warm-up", f"<= {max_lag} items", f"max {verdict.max_lag}",
         verdict.lag_ok),
        (
            "drained when sending stopped",
            f"lag 0 within {args.drain_timeout:g}s",
            f"{verdict.undrained} items still in Kafka",
            verdict.undrained == 0,
        ),
        (
            "lost (sent - indexed - dead letters - still in Kafka)",
            "0",
            f"{verdict.lost} (sent {sent[0]}, send failures {sent[1]})",
            verdict.lost == 0,
        ),
    ]  # fmt: skip


def minute_rows(samples: list[Sample]) -> list[Sample]:
    """The first sample of every minute, and the last."""
    rows, minute = [], -1
    for sample in samples:
        if int(sample.seconds // 60) != minute or sample is samples[-1]:
            minute = int(sample.seconds // 60)
            rows.append(sample)
    return rows


def write_report(
    path: Path,
    samples: list[Sample],
    verdict: Verdict,
    args: argparse.Namespace,
    limits: tuple[float, int],
    sent: tuple[int, int],
    model: Path,
) -> None:
    """The soak as Markdown (verdict, one row a minute) and a PNG of RSS and lag over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    figure, (memory, lag) = plt.subplots(2, 1, sharex=True, figsize=(8, 5))
    minutes = [s.seconds / 60 for s in samples]
    memory.plot(minutes, [s.rss_mib for s in samples])
    memory.axhline(verdict.rss_warm_mib * (1 + args.max_growth), color="red", linestyle="--",
                   label=f"limit (+{args.max_growth:.0%} of warm)")  # fmt: skip
    memory.set_ylabel("worker RSS, MiB")
    memory.legend(loc="lower right")
    lag.plot(minutes, [s.lag for s in samples])
    lag.set_ylabel("consumer lag, items")
    lag.set_xlabel("minutes since sending started")
    figure.suptitle(f"soak: {args.rate:g} items/s for {args.duration / 60:g} min, {model.name}")
    figure.tight_layout()
    figure.savefig(path.with_suffix(".png"), dpi=80)
    plt.close(figure)

    command = shlex.join(["benchmarks/soak.py", *sys.argv[1:]])
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        f"Printed by `.venv/bin/python {command}` on {when} (load average at the end {load}):"
        f" the real worker serving `{model.name}` on the local Kafka and Elasticsearch,"
        f" {sent[0]} items sent. Plot: `{path.with_suffix('.png').name}`.",
        "",
        "| criterion | limit | measured | ok |",
        "|---|---|---|---|",
        *(
            f"| {c} | {limit} | {m} | {'yes' if ok else '**NO**'} |"
            for c, limit, m, ok in verdict_rows(verdict, args, limits, sent)
        ),
        "",
        "| t s | sent | indexed | lag | RSS MiB |",
        "|---|---|---|---|---|",
        *(
            f"| {s.seconds:.0f} | {s.sent} | {s.indexed} | {s.lag} | {s.rss_mib:.0f} |"
            for s in minute_rows(samples)
        ),
        "",
    ]
    path.write_text("\n".join(lines))


def print_report(
    console: Console,
    samples: list[Sample],
    verdict: Verdict,
    args: argparse.Namespace,
    limits: tuple[float, int],
    sent: tuple[int, int],
) -> None:
    """The samples, one row a minute, and the verdict. `limits`: warm-up seconds, max lag;
    `sent`: items sent, send failures."""
    table = Table(title=f"soak samples ({args.rate:g} items/s offered; one row a minute)")
    for column in ("t s", "sent", "indexed", "lag", "RSS MiB"):
        table.add_column(column, justify="right")
    for sample in minute_rows(samples):
        table.add_row(f"{sample.seconds:.0f}", str(sample.sent), str(sample.indexed),
                      str(sample.lag), f"{sample.rss_mib:.0f}")  # fmt: skip
    console.print(table)
    summary = Table(title="soak verdict")
    for column in ("criterion", "limit", "measured", "ok"):
        summary.add_column(column)
    for criterion, limit, measured, ok in verdict_rows(verdict, args, limits, sent):
        summary.add_row(criterion, limit, measured, "yes" if ok else "NO")
    console.print(summary)


if __name__ == "__main__":
    main()
