"""Several served artifacts side by side: items/s of each on the same items (~30 words), runs
interleaved (A, B, A, B, ...) so that a host whose speed drifts (this one moves 15-25 %
within an hour) treats them alike. The fp32 matrix-multiply rate is printed before and
after: compare figures across days by it.

    .venv/bin/python benchmarks/export_speed.py <export or artifact> <another> [...] --rounds 5
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from classifier_throughput import matmul_gflops, thirty_word_items
from rich.console import Console
from rich.table import Table

from finsentry.models.runtime import ArtifactScorer
from finsentry.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifacts", type=Path, nargs="+", help="ONNX exports or PyTorch artifacts")
    parser.add_argument("--items", type=int, default=512)
    parser.add_argument("--words", type=int, default=30, help="words an item (tweets: ~15)")
    parser.add_argument("--batch", type=int, default=16, help="the CPU default")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    settings = Settings()
    data = settings.data_dir / "tfns_sentiment" / "train.csv"
    texts = thirty_word_items(data, args.items, words=args.words)
    scorers = {p: ArtifactScorer(p, device="cpu", batch_size=args.batch) for p in args.artifacts}
    for scorer in scorers.values():
        scorer.score(texts[: args.batch * 2])  # warm-up
    console = Console(width=130)
    before = matmul_gflops("cpu")
    rates: dict[Path, list[float]] = {p: [] for p in scorers}
    for _ in range(args.rounds):
        for path, scorer in scorers.items():
            started = time.perf_counter()
            scorer.score(texts)
            rates[path].append(len(texts) / (time.perf_counter() - started))
    after = matmul_gflops("cpu")
    table = Table(
        title=f"items/s, ~{args.words}-word items, batch {args.batch}, "
        f"{args.rounds} interleaved rounds (fp32 matmul {before:.0f} / {after:.0f} GFLOP/s "
        "before / after)"
    )
    for column in ("artifact", "runtime", "best", "median", "rounds"):
        table.add_column(column, justify="left" if column in ("artifact", "rounds") else "right")
    for path, got in rates.items():
        ordered = sorted(got)
        table.add_row(
            path.name,
            scorers[path].manifest.runtime,
            f"{ordered[-1]:.1f}",
            f"{ordered[len(ordered) // 2]:.1f}",
            " ".join(f"{r:.0f}" for r in got),
        )
    console.print(table)


if __name__ == "__main__":
    main()
