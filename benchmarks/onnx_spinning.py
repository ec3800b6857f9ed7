"""ONNX Runtime's thread spinning, on and off: items/s and CPU per item of an int8 export.

The worker's graph threads do not spin between runs (`FINSENTRY_ONNX_SPINNING`, default
false). This prints what that costs in a closed loop, where spinning can only help: the
same export, the same ~30-word items, batch 16, the two settings interleaved over rounds.
What it saves end to end is in `e2e_replay.py`'s CPU table.

    .venv/bin/python benchmarks/onnx_spinning.py --onnx <int8 export> --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import psutil
from classifier_throughput import thirty_word_items
from rich.console import Console
from rich.table import Table

from finsentry.models.runtime import ArtifactScorer
from finsentry.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", type=Path, required=True, help="an ONNX int8 export")
    parser.add_argument("--items", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    texts = thirty_word_items(Settings().data_dir / "tfns_sentiment" / "train.csv", args.items)
    scorers = {
        spin: ArtifactScorer(
            args.onnx, device="cpu", batch_size=args.batch_size, onnx_spinning=spin
        )
        for spin in (True, False)
    }
    for scorer in scorers.values():
        scorer.score(texts[:64])  # warm up
    me = psutil.Process()
    rates: dict[bool, list[float]] = {True: [], False: []}
    cpu: dict[bool, list[float]] = {True: [], False: []}
    for round_ in range(args.rounds):
        for spin in (True, False) if round_ % 2 == 0 else (False, True):  # neither always first
            scorer = scorers[spin]
            before, started = me.cpu_times(), time.perf_counter()
            scorer.score(texts)
            wall, after = time.perf_counter() - started, me.cpu_times()
            used = after.user + after.system - before.user - before.system
            rates[spin].append(len(texts) / wall)
            cpu[spin].append(1000 * used / len(texts))

    table = Table(title=f"{args.onnx.name}: {len(texts)} items, batch {args.batch_size}, "
                  f"{args.rounds} rounds interleaved (median)")  # fmt: skip
    for column in ("threads", "items/s", "CPU ms / item"):
        table.add_column(column, justify="right")
    for spin in (True, False):
        table.add_row(
            "spinning (ONNX Runtime's default)" if spin else "not spinning (served)",
            f"{statistics.median(rates[spin]):.1f}",
            f"{statistics.median(cpu[spin]):.2f}",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
