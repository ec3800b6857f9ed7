"""Does the demo alert? What the serving model makes of `make run`'s simulated news events.

`finsentry run` (alerts/demo.py) sends the simulator's stream (seed 7, 20 items/s) with its
negative bursts hitting the demo watchlist. This script takes the first `--items` items of
that stream (default: 5 minutes' worth), links and scores the burst items the way the worker
does, and prints per burst company how many of its burst items are bearish for it (its
per-company verdict) with at least 0.6 ... 0.9 confidence: the severe-item rule (0.8 in the
demo rules) alerts on the first of them.

    .venv/bin/python benchmarks/demo_alerts.py [--items 6000] [--model artifacts/models/ID]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from finsentry.alerts.demo import demo_burst_tickers
from finsentry.alerts.rules import company_verdicts
from finsentry.feeds.simulator import MarketSimulator, load_companies
from finsentry.messages import NewsItem
from finsentry.models.scorer import load_scorer
from finsentry.settings import Settings
from finsentry.streams.batch_processor import text_for_model, to_scored_item
from finsentry.streams.entity_linking import find_mentions, load_company_index
from finsentry.streams.parser import parse_raw

THRESHOLDS = (0.6, 0.7, 0.8, 0.9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=6000, help="Items of the stream (20/s).")
    parser.add_argument("--model", type=Path, default=None, help="Artifact (default: serving).")
    args = parser.parse_args()
    settings = Settings(alert_rules_file=None)
    if args.model is not None:
        settings = settings.model_copy(update={"model_path": args.model})

    simulator = MarketSimulator(
        load_companies(settings.company_files),
        seed=7,
        clock=lambda: datetime.now(UTC),
        burst_tickers=demo_burst_tickers(settings),
    )
    stream = simulator.items()
    burst = [raw for raw in (next(stream) for _ in range(args.items)) if raw["extra"]["burst"]]
    parsed = [parse_raw(json.dumps(raw).encode(), settings.max_text_chars) for raw in burst]
    news = [item for item in parsed if isinstance(item, NewsItem)]
    assert len(news) == len(burst), "the simulator made an item the parser refuses"
    texts = [text_for_model(item) for item in news]
    index = load_company_index(settings.company_files)
    mentions = [find_mentions(text, index) for text in texts]
    scorer = load_scorer(settings)
    started = time.monotonic()
    scores = []
    for k in range(0, len(texts), 64):
        scores += scorer.score(texts[k : k + 64], mentions[k : k + 64])
    took = time.monotonic() - started

    now = datetime.now(UTC)
    items: Counter[str] = Counter()
    bearish: Counter[tuple[str, float]] = Counter()
    for raw, item, score, found in zip(burst, news, scores, mentions, strict=True):
        ticker = raw["extra"]["ticker"]
        items[ticker] += 1
        verdict = company_verdicts(to_scored_item(item, score, found, "x", now, now)).get(ticker)
        for threshold in THRESHOLDS:
            if verdict and verdict.sentiment == "bearish" and verdict.confidence >= threshold:
                bearish[(ticker, threshold)] += 1
    print(
        f"model {scorer.version}: {len(burst)} burst items of the first {args.items} "
        f"scored in {took:.0f} s"
    )
    print(
        "company  burst items  bearish for it at confidence >= " + " / ".join(map(str, THRESHOLDS))
    )
    for ticker, n in items.items():
        counts = " / ".join(
            f"{bearish[(ticker, t)]} ({bearish[(ticker, t)] / n:.0%})" for t in THRESHOLDS
        )
        print(f"{ticker:8} {n:11}  {counts}")


if __name__ == "__main__":
    main()
