"""int8 recipes side by side: label agreement with fp32, test accuracy and items/s.

Each recipe is one way to turn the artifact's fp32 ONNX graph into int8 (which graph, which
weight type, what stays float); `finsentry export` tries the rows marked "(export ...)" in
that order and keeps the first that passes its parity gate. Agreement
is measured like the export's parity check (every head on every held-out text of both data
sets; the per-company head is left to that check), accuracy on each task's own test texts,
and speed on ~30-word items at batch 16, the recipes interleaved over three rounds (best of
three) so that a machine whose speed drifts treats them alike. The fp32 matrix-multiply rate
is printed before and after: compare figures across days by it.

    .venv/bin/python benchmarks/int8_recipes.py --model artifacts/models/<torch artifact>
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from classifier_throughput import matmul_gflops, thirty_word_items
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from finsentry.models.artifact import read_manifest, resolve_artifact
from finsentry.settings import Settings
from finsentry.training.config import TrainConfig
from finsentry.training.export import KEEP_FLOAT, _export_group, _float_nodes, calibration_feeds
from finsentry.training.quantize import quantize_int8
from finsentry.training.train import load_all

HEADS_ONLY = (r"/pooler/", r"/classifier", r"/entity_head/")


class Recipe(BaseModel):
    name: str
    graph: str  # "sdpa" | "eager" | "fused" (eager + ONNX Runtime's transformer fusions)
    weights: str | None = None  # None: fp32; "int8" | "uint8"
    keep_float: tuple[str, ...] = KEEP_FLOAT
    reduce_range: bool = False
    attention_int8: bool = False  # quantise the fused Attention's QKV product too


RECIPES = [
    Recipe(name="fp32", graph="sdpa"),
    Recipe(name="fp32, fused", graph="fused"),
    Recipe(name="fp32, eager", graph="eager"),
    Recipe(name="int8 weights (before)", graph="sdpa", weights="int8"),
    Recipe(name="int8 weights, 7-bit", graph="sdpa", weights="int8", reduce_range=True),
    Recipe(name="int8 weights, every product", graph="sdpa", weights="int8", keep_float=HEADS_ONLY),
    Recipe(name="uint8 weights", graph="sdpa", weights="uint8"),
    Recipe(
        name="int8 7-bit, eager graph (export, tried first)",
        graph="eager",
        weights="int8",
        reduce_range=True,
    ),
    Recipe(name="int8, eager graph (export, second)", graph="eager", weights="int8"),
    Recipe(
        name="int8 7-bit, eager, every product",
        graph="eager",
        weights="int8",
        reduce_range=True,
        keep_float=HEADS_ONLY,
    ),
    Recipe(name="uint8 weights, eager graph (export fallback)", graph="eager", weights="uint8"),
    Recipe(
        name="uint8, eager, every product", graph="eager", weights="uint8", keep_float=HEADS_ONLY
    ),
    Recipe(name="uint8, fused (QKV float)", graph="fused", weights="uint8"),
    Recipe(name="uint8, fused, QKV int8", graph="fused", weights="uint8", attention_int8=True),
    Recipe(name="int8, fused, QKV int8", graph="fused", weights="int8", attention_int8=True),
]


def fp32_graphs(root: Path, work: Path) -> dict[str, Path]:
    """The artifact's fp32 graph traced two ways, and the eager one fused."""
    from onnxruntime.transformers.optimizer import optimize_model

    manifest = read_manifest(root)
    tasks = list(manifest.tasks)
    graphs = {"sdpa": work / "sdpa.onnx", "eager": work / "eager.onnx"}
    for attention, path in graphs.items():
        _export_group(root, manifest, tasks, path, 17, attention=attention)
    config = json.loads((root / manifest.tasks[tasks[0]].path / "config.json").read_text())
    fused = optimize_model(
        str(graphs["eager"]),
        model_type="bert",
        num_heads=config["num_attention_heads"],
        hidden_size=config["hidden_size"],
        opt_level=0,
    )
    graphs["fused"] = work / "fused.onnx"
    fused.save_model_to_file(str(graphs["fused"]))
    return graphs


def build(recipe: Recipe, graphs: Mapping[str, Path], calibration: list, work: Path) -> Path:
    source = graphs[recipe.graph]
    if recipe.weights is None:
        return source
    target = work / f"{recipe.name.replace(' ', '_').replace(',', '')}.onnx"
    quantize_int8(
        source,
        target,
        calibration,
        keep_float=_float_nodes(source, recipe.keep_float),
        weight_type=recipe.weights,
        reduce_range=recipe.reduce_range,
        op_types=("MatMul", "Attention") if recipe.attention_int8 else ("MatMul",),
    )
    return target


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def logits(sess: ort.InferenceSession, feeds: Sequence[dict], heads: list[str]) -> dict:
    outs = [sess.run([f"logits_{h}" for h in heads], feed) for feed in feeds]
    return {h: np.concatenate([o[i] for o in outs]) for i, h in enumerate(heads)}


def items_per_second(sessions: Mapping[str, ort.InferenceSession], feeds: list, n: int) -> dict:
    best = dict.fromkeys(sessions, 0.0)
    for _ in range(3):
        for name, sess in sessions.items():
            sess.run(None, feeds[0])
            started = time.perf_counter()
            for feed in feeds:
                sess.run(None, feed)
            best[name] = max(best[name], n / (time.perf_counter() - started))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="PyTorch artifact")
    parser.add_argument("--items", type=int, default=512, help="~30-word items for speed")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument(
        "--only", action="append", default=[], help="recipes whose name has this (repeatable)"
    )
    args = parser.parse_args()
    recipes = [r for r in RECIPES if not args.only or any(o in r.name for o in args.only)]
    settings = Settings()
    root = args.model or resolve_artifact(settings.models_dir, None)
    manifest = read_manifest(root)
    if manifest.runtime != "torch":
        parser.error(f"{root} is an ONNX export; pass its PyTorch parent with --model")
    heads = list(manifest.tasks)
    console = Console()
    gflops_before = matmul_gflops("cpu")
    config = TrainConfig.from_manifest(manifest.params, output_dir=".")
    data = load_all(config, preprocess=False)
    test_texts = [t for d in data.values() for t in d.test["text"].tolist()]
    test_feeds = calibration_feeds(root, manifest, test_texts)
    calibration_texts = [t for d in data.values() for t in d.train["text"].tolist()]
    picked = np.random.default_rng(config.seed).choice(len(calibration_texts), 256, replace=False)
    calibration = calibration_feeds(root, manifest, [calibration_texts[i] for i in sorted(picked)])
    items = thirty_word_items(settings.data_dir / "tfns_sentiment" / "train.csv", args.items)
    speed_feeds = calibration_feeds(root, manifest, items, batch_size=args.batch)
    with tempfile.TemporaryDirectory(prefix="int8-recipes-") as tmp:
        work = Path(tmp)
        with console.status("exporting the fp32 graphs"):
            graphs = fp32_graphs(root, work)
        reference = logits(session(graphs["sdpa"]), test_feeds, heads)
        rows: dict[str, dict] = {}
        sessions = {}
        for recipe in recipes:
            with console.status(f"{recipe.name}: quantising and checking"):
                path = build(recipe, graphs, calibration, work)
                sess = session(path)
                got = logits(sess, test_feeds, heads)
            agreement = {
                h: float(np.mean(got[h].argmax(1) == reference[h].argmax(1))) for h in heads
            }
            accuracy = {}
            offset = 0
            for task, d in data.items():
                n = len(d.test)
                if task in got:
                    order = [manifest.tasks[task].labels.index(name) for name in d.labels]
                    predicted = got[task][offset : offset + n][:, order].argmax(1)
                    accuracy[task] = float(np.mean(predicted == d.test["label"].to_numpy()))
                offset += n
            rows[recipe.name] = {
                "agreement": agreement,
                "accuracy": accuracy,
                "bytes": path.stat().st_size,
            }
            sessions[recipe.name] = sess
            console.print(f"{recipe.name}: {rows[recipe.name]}")
        with console.status("items/s, interleaved"):
            speed = items_per_second(sessions, speed_feeds, len(items))
    gflops_after = matmul_gflops("cpu")
    for name, value in speed.items():
        rows[name]["items_per_second"] = value
    table = Table(
        title=f"int8 recipes, {root.name}: agreement with fp32 and accuracy on "
        f"{len(test_texts)} held-out texts; {len(items)} ~30-word items at batch {args.batch}; "
        f"fp32 matmul {gflops_before:.0f} / {gflops_after:.0f} GFLOP/s (before / after)"
    )
    for column in ("recipe", *(f"{h} agree %" for h in heads), *(f"{t} acc" for t in data)):
        table.add_column(column)
    table.add_column("items/s", justify="right")
    table.add_column("MB", justify="right")
    for name, row in rows.items():
        table.add_row(
            name,
            *(f"{100 * row['agreement'][h]:.2f}" for h in heads),
            *(f"{row['accuracy'].get(t, float('nan')):.4f}" for t in data),
            f"{row['items_per_second']:.1f}",
            f"{row['bytes'] / 1e6:.1f}",
        )
    console.print(table)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
