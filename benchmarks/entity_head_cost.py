"""What the per-company head costs: texts/s with and without company verdicts, same texts,
same scorer (the head reads the encoder output of the same pass; no pass per company).

Texts: FinEntity news paragraphs (the companies the entity linker finds in them), as a
monitor sees news. Prints a table for each model given (PyTorch artifact and/or its ONNX
export).

    .venv/bin/python benchmarks/entity_head_cost.py --model artifacts/models/<artifact> \
        [--model <its int8 export>] [--texts 384] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from finsentry.models.runtime import ArtifactScorer
from finsentry.settings import Settings
from finsentry.streams.entity_linking import find_mentions, load_company_index


def best_rate(call, n: int, repeat: int) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - started)
    return n / best


def main() -> None:
    settings = Settings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, action="append", required=True)
    parser.add_argument("--texts", type=int, default=384)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows = (settings.data_dir / "finentity" / "train.jsonl").read_text().splitlines()
    texts = [json.loads(line)["text"] for line in rows[: args.texts]]
    index = load_company_index(settings.company_files)
    companies = [find_mentions(t, index) for t in texts]
    n_companies = sum(len(c) for c in companies)
    table = Table(title=f"{len(texts)} news paragraphs, {n_companies} companies found")
    for column in ("model", "runtime", "texts/s, text verdicts", "texts/s, + per company", "cost"):
        table.add_column(column)
    for model in args.model:
        scorer = ArtifactScorer(model, device=settings.device)
        scorer.score(texts[:32], companies[:32])  # warm-up
        plain = best_rate(lambda: scorer.score(texts), len(texts), args.repeat)  # noqa: B023
        full = best_rate(lambda: scorer.score(texts, companies), len(texts), args.repeat)  # noqa: B023
        table.add_row(
            scorer.version,
            scorer.device_name,
            f"{plain:.1f}",
            f"{full:.1f}",
            f"{(plain / full - 1) * 100:+.1f} % time",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
