"""Classifier throughput: both classifiers (topic + sentiment) on ~30-word items.

Compares what a user would write first (two `transformers.pipeline()`s, one item at a
time), per-item calls of our scorer, and batched calls at several batch sizes, for the
PyTorch artifact and (when given) its ONNX int8 export. Prints a table.

    .venv/bin/python benchmarks/classifier_throughput.py --items 512
    .venv/bin/python benchmarks/classifier_throughput.py --onnx artifacts/models/<int8 export>
"""

from __future__ import annotations

import argparse
import csv
import time
from collections.abc import Callable
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from finsentry.models.artifact import resolve_artifact
from finsentry.models.runtime import ArtifactScorer
from finsentry.settings import Settings


def thirty_word_items(data: Path, n: int, words: int = 30) -> list[str]:
    """Dataset tweets joined until each item has about `words` words."""
    with data.open(newline="") as handle:
        tweets = [row["text"] for row in csv.DictReader(handle)]
    items, current = [], []
    for tweet in tweets:
        current.extend(tweet.split())
        if len(current) >= words:
            items.append(" ".join(current[:words]))
            current = []
        if len(items) == n:
            break
    return items


def timed(run: Callable[[], object], n_items: int, repeat: int = 1) -> float:
    """Items per second, best of `repeat` runs after one warm-up call."""
    run()
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return n_items / best


def matmul_gflops(device: str, n: int = 1024, repeat: int = 20) -> float:
    """The device's measured dense matrix-multiply rate (fp32 on CPU, bf16 on CUDA)."""
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeat):
        a @ b
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return 2 * n**3 * repeat / (time.perf_counter() - started) / 1e9


def encoder_gflops_per_item(scorer: ArtifactScorer, texts: list[str]) -> float:
    """Forward FLOPs of one item through the encoder(s): 2 x (non-embedding parameters) per
    token, plus attention scores, at the items' mean token count."""
    flops = 0.0
    for group in scorer.groups:
        module = getattr(group, "module", None)
        tokenizer = group.tokenizer  # type: ignore[attr-defined]
        tokens = sum(len(tokenizer(t, truncation=True, max_length=128)["input_ids"]) for t in texts)
        mean_tokens = tokens / len(texts)
        if module is None:
            continue
        params = sum(p.numel() for name, p in module.named_parameters() if "embeddings" not in name)
        config = next(m.config for m in module.modules() if hasattr(m, "config"))
        attention = 4 * config.num_hidden_layers * mean_tokens * config.hidden_size
        flops += mean_tokens * (2 * params + attention)
    return flops / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="artifact (default: newest)")
    parser.add_argument("--onnx", type=Path, default=None, help="an ONNX int8 export to compare")
    parser.add_argument("--items", type=int, default=512)
    parser.add_argument("--per-item", type=int, default=64, help="items for the batch-1 runs")
    parser.add_argument("--batch-sizes", default="8,32,64,128")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    settings = Settings()
    model = args.model or resolve_artifact(settings.models_dir, settings.model_path)
    texts = thirty_word_items(settings.data_dir / "tfns_sentiment" / "train.csv", args.items)
    few = texts[: args.per_item]
    rows: list[tuple[str, str, float]] = []

    from transformers import pipeline

    scorer = ArtifactScorer(model, device=args.device, batch_size=1)
    manifest = scorer.manifest
    pipes = [
        pipeline(
            "text-classification",
            model=str(model / spec.path),
            tokenizer=str(model / spec.tokenizer),
            device=args.device,
        )
        for spec in manifest.tasks.values()
    ]
    rows.append(
        ("transformers.pipeline() x2, one item a call", "1",
         timed(lambda: [p(t) for t in few for p in pipes], len(few)))
    )  # fmt: skip
    rows.append(
        ("torch fp32, per item", "1", timed(lambda: [scorer.score([t]) for t in few], len(few)))
    )
    for size in (int(s) for s in args.batch_sizes.split(",")):
        scorer.batch_size = size
        rows.append(
            ("torch fp32, batched", str(size), timed(lambda: scorer.score(texts), len(texts)))
        )
    if args.onnx:
        onnx = ArtifactScorer(args.onnx, device="cpu", batch_size=1)
        rows.append(
            ("onnx int8, per item", "1", timed(lambda: [onnx.score([t]) for t in few], len(few)))
        )
        for size in (int(s) for s in args.batch_sizes.split(",")):
            onnx.batch_size = size
            rows.append(
                ("onnx int8, batched", str(size), timed(lambda: onnx.score(texts), len(texts)))
            )

    baseline, per_item = rows[0][2], rows[1][2]
    peak = matmul_gflops(args.device)
    gflops = encoder_gflops_per_item(scorer, texts[:128])
    if not gflops:
        raise SystemExit("--model must be a PyTorch artifact; pass an ONNX export as --onnx")
    floor = peak / gflops
    table = Table(
        title=f"both classifiers, ~30-word items, {args.device}, "
        f"{torch.get_num_threads()} threads ({model.name})"
    )
    columns = ("mode", "batch", "items/s", "ms/item", "x per-item", "x pipeline()", "of floor")
    for column in columns:
        table.add_column(column, justify="right" if column != "mode" else "left")
    for mode, batch, rate in rows:
        table.add_row(
            mode, batch, f"{rate:.1f}", f"{1000 / rate:.2f}", f"{rate / per_item:.1f}",
            f"{rate / baseline:.1f}", f"{rate / floor:.0%}",
        )  # fmt: skip
    console = Console(width=130)
    console.print(table)
    console.print(
        f"compute floor: {peak / floor:.2f} GFLOP per item (fp32 encoder), device matmul "
        f"{peak:.0f} GFLOP/s -> at most {floor:,.0f} items/s; best achieved "
        f"{max(rate for _, _, rate in rows):,.1f} items/s"
    )


if __name__ == "__main__":
    main()
