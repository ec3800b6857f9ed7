"""The token budget, measured: word-piece lengths of real texts and what a max length cuts.

For each vendored data set (tweets with sentiment, tweets with topics, news paragraphs) it
prints the length percentiles after the artifact's own preprocessing and tokenizer, and the
share of texts (and of tokens) that each candidate max length would cut off. Batches are
padded to their longest text, so the max length costs time only on the texts it cuts.

    .venv/bin/python benchmarks/token_lengths.py --model artifacts/models/<artifact>
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table
from transformers import AutoTokenizer

from finsentry.models.artifact import read_manifest, resolve_artifact
from finsentry.models.text import preprocessor
from finsentry.settings import Settings


def texts_of(path: Path) -> list[str]:
    if path.suffix == ".jsonl":
        with path.open(encoding="utf-8") as handle:
            return [json.loads(line)["text"] for line in handle if line.strip()]
    with path.open(newline="", encoding="utf-8") as handle:
        return [row["text"] for row in csv.DictReader(handle)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="artifact (default: live)")
    parser.add_argument("--max-lengths", default="32,48,64,96,128,256")
    args = parser.parse_args()
    settings = Settings()
    root = args.model or resolve_artifact(settings.models_dir, settings.model_path)
    manifest = read_manifest(root)
    tokenizer = AutoTokenizer.from_pretrained(root / next(iter(manifest.tasks.values())).tokenizer)
    clean = preprocessor(manifest.preprocess)
    budgets = [int(x) for x in args.max_lengths.split(",")]
    sets = {
        "tweets, sentiment": settings.data_dir / "tfns_sentiment" / "train.csv",
        "tweets, topic": settings.data_dir / "tfn_topic" / "train.csv",
        "news paragraphs": settings.data_dir / "finentity" / "train.jsonl",
    }
    table = Table(
        title=f"Word-piece tokens per text ({root.name}, preprocessing {manifest.preprocess}, "
        f"served max length {manifest.max_length}); cut at L: texts longer than L / tokens lost"
    )
    for column in ("data set", "texts", "p50", "p90", "p99", "max"):
        table.add_column(column, justify="right")
    for budget in budgets:
        table.add_column(f"cut at {budget}", justify="right")
    for name, path in sets.items():
        if not path.is_file():
            continue
        texts = [clean(t) for t in texts_of(path)]
        lengths = np.array([len(ids) for ids in tokenizer(texts)["input_ids"]])
        p50, p90, p99 = np.percentile(lengths, [50, 90, 99])
        lost = [np.clip(lengths - b, 0, None).sum() / lengths.sum() for b in budgets]
        cuts = [f"{np.mean(lengths > b):.1%} / {x:.1%}" for b, x in zip(budgets, lost, strict=True)]
        table.add_row(
            name,
            f"{len(texts):,}",
            f"{p50:.0f}",
            f"{p90:.0f}",
            f"{p99:.0f}",
            str(lengths.max()),
            *cuts,
        )
    Console().print(table)


if __name__ == "__main__":
    main()
