"""Produce -> notification latency of the severe-item rule, on the real local Kafka and
Elasticsearch with a real `finsentry alerter` subprocess and a local webhook receiver.

Scored items go to a fresh scored topic at `--rate` items/s (the alerter's input; the models
stage is not part of this measurement). About once a second one of them is a severe item
(a new story, bearish with 0.95 confidence, about a company of the watchlist); the receiver
notes when its notification arrives. Latency = arrival - the moment the producer sent it.

    .venv/bin/python benchmarks/alert_latency.py --rate 150 --duration 60
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from finsentry.alerts.alerter_process import AlerterProcess
from finsentry.alerts.rules import AlertRules, DeliveryPolicy, SevereItemRule
from finsentry.alerts.watchlists import (
    ChannelSpec,
    WatchedCompany,
    Watchlist,
    put_watchlist,
)
from finsentry.es_client import make_es_client
from finsentry.messages import CompanyScores, ScoredItem
from finsentry.settings import Settings

WATCHED = ("AAPL", "MSFT", "NVDA", "TSLA", "JPM")
OTHERS = ("XOM", "AMZN", "META", "KO", "PFE", "WMT", "BA", "DIS")
WORDS = [
    "probe",
    "recall",
    "lawsuit",
    "outage",
    "breach",
    "downgrade",
    "guidance",
    "layoffs",
    "fine",
    "default",
    "strike",
    "subpoena",
    "fraud",
    "delay",
    "halt",
    "cut",
    "warning",
    "loss",
    "writedown",
    "resign",
    "investigation",
    "plant",
    "factory",
    "regulator",
    "court",
    "customers",
    "suppliers",
    "margins",
    "revenue",
    "quarter",
    "europe",
    "asia",
]


def item(n: int, ticker: str, sentiment: str, confidence: float, rng: random.Random) -> ScoredItem:
    now = datetime.now(UTC)
    words = " ".join(rng.sample(WORDS, 8))
    rest = (1 - confidence) / 2
    probs = {"bearish": rest, "neutral": rest, "bullish": rest} | {sentiment: confidence}
    verdict = CompanyScores(
        ticker=ticker,
        sentiment=sentiment,  # type: ignore[arg-type]
        confidence=confidence,
        probs=probs,
        score=probs["bullish"] - probs["bearish"],
    )
    return ScoredItem(
        id=f"bench-{n}",
        source="bench",
        title=f"{ticker} {words} {n}",
        text=f"{ticker} {words} {n}",
        tickers=[ticker],
        companies=[verdict],
        topic="Company | Legal",
        topic_confidence=0.9,
        sentiment=sentiment,  # type: ignore[arg-type]
        sentiment_confidence=confidence,
        sentiment_probs=probs,
        sentiment_score=verdict.score,
        model_version="bench",
        ingested_at=now,
        scored_at=now,
        latency_ms=0.0,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=150.0, help="Scored items per second.")
    parser.add_argument("--duration", type=float, default=60.0, help="Seconds of traffic.")
    parser.add_argument("--severe-every", type=int, default=150, help="One severe item per N.")
    args = parser.parse_args()

    base = Settings()
    tag = f"bench{uuid.uuid4().hex[:8]}"
    settings = base.model_copy(
        update={
            "app_id": f"finsentry-{tag}",
            "topic_scored": f"{tag}.scored",
            "topic_alerts": f"{tag}.alerts",
            "alerts_index": f"{tag}-alerts",
            "watchlists_index": f"{tag}-watchlists",
        }
    )
    sent_at: dict[str, float] = {}
    arrived: dict[str, float] = {}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *a: Any) -> None:
            del format, a

        def do_POST(self) -> None:
            now = time.time()
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            arrived.setdefault(body["sample_items"][0]["id"], now)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{server.server_address[1]}/hook"

    es = make_es_client(settings)
    put_watchlist(
        es,
        settings.watchlists_index,
        Watchlist(
            name="bench",
            entries=list(WATCHED),
            companies=[WatchedCompany(ticker=t) for t in WATCHED],
            channels=[ChannelSpec(kind="webhook", name="bench-hook")],
        ),
    )
    options = {"bootstrap_servers": settings.kafka_bootstrap, **settings.kafka_client_options()}
    admin = KafkaAdminClient(**options)
    admin.create_topics([NewTopic(settings.topic_scored, num_partitions=1, replication_factor=1)])

    rules = AlertRules(
        cooldown_s=0,
        severe_item=SevereItemRule(min_confidence=0.8),
        delivery=DeliveryPolicy(sweep_interval_s=1.0),
    )
    child = settings.model_copy(
        update={
            "topic_partitions": 1,
            "webhook_urls": [],
            "slack_webhook_urls": [],
            "alert_channel_urls": {"bench-hook": hook},
        }
    )
    work = Path(tempfile.mkdtemp(prefix="alert-latency-"))
    alerter = AlerterProcess(child, rules, work, loglevel="warning")
    alerter.start()
    producer = KafkaProducer(**options, linger_ms=0)
    rng = random.Random(7)
    try:
        # Warm up: one severe item, wait until the alerter has delivered it.
        warm = item(0, WATCHED[0], "bearish", 0.95, rng)
        producer.send(
            settings.topic_scored, key=warm.id.encode(), value=warm.model_dump_json().encode()
        )
        producer.flush()
        deadline = time.monotonic() + 300
        while warm.id not in arrived and time.monotonic() < deadline:
            time.sleep(0.2)
        if warm.id not in arrived:
            sys.exit(f"the alerter did not answer; see {alerter.log_path}")
        total = int(args.rate * args.duration)
        start = time.monotonic()
        for n in range(1, total + 1):
            severe = n % args.severe_every == 0
            if severe:
                it = item(n, WATCHED[n % len(WATCHED)], "bearish", 0.95, rng)
            else:
                ticker = rng.choice(OTHERS + WATCHED)
                it = item(n, ticker, rng.choice(["neutral", "bullish", "bearish"]), 0.6, rng)
            producer.send(
                settings.topic_scored, key=it.id.encode(), value=it.model_dump_json().encode()
            )
            if severe:
                producer.flush()
                sent_at[it.id] = time.time()
            pause = start + n / args.rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        producer.flush()
        achieved = total / (time.monotonic() - start)
        time.sleep(10)
    finally:
        alerter.kill(signal.SIGTERM, timeout=60)
        producer.close()
        server.shutdown()
        admin.delete_topics([t for t in admin.list_topics() if tag in t])
        admin.close()
        for index in (settings.alerts_index, settings.watchlists_index):
            es.options(ignore_status=404).indices.delete(index=index)

    latencies = sorted(arrived[k] - v for k, v in sent_at.items() if k in arrived)
    missing = len(sent_at) - len(latencies)
    if not latencies:
        sys.exit("no notifications arrived")
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))]
    print(
        f"rate {achieved:.0f} items/s for {args.duration:.0f} s; severe items {len(sent_at)}, "
        f"notified {len(latencies)}, missing {missing}"
    )
    print(
        f"produce -> webhook latency: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
        f"max {latencies[-1] * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
