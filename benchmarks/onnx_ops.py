"""Where an ONNX export's time goes: ONNX Runtime's own profile of the served graph scoring
~30-word items at the CPU batch, summed by operator type and by node.

    .venv/bin/python benchmarks/onnx_ops.py <ONNX export> [--items 256] [--top 15]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import Counter
from pathlib import Path

import onnxruntime as ort
from classifier_throughput import thirty_word_items
from rich.console import Console
from rich.table import Table

from finsentry.models.runtime import ArtifactScorer
from finsentry.settings import Settings


def kernel_times(profile: Path) -> tuple[Counter[str], Counter[str]]:
    """Microseconds per operator type and per node name, from an ONNX Runtime profile."""
    by_op: Counter[str] = Counter()
    by_node: Counter[str] = Counter()
    for event in json.loads(profile.read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            by_op[event["args"]["op_name"]] += event["dur"]
            by_node[event["name"].removesuffix("_kernel_time")] += event["dur"]
    return by_op, by_node


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export", type=Path, help="an ONNX export (artifact folder)")
    parser.add_argument("--items", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()

    texts = thirty_word_items(Settings().data_dir / "tfns_sentiment" / "train.csv", args.items)
    scorer = ArtifactScorer(args.export, device="cpu", batch_size=args.batch)
    if scorer.manifest.runtime != "onnx":
        parser.error(f"{args.export} is not an ONNX export")
    scorer.score(texts[: args.batch])  # warm-up, unprofiled
    group = scorer.groups[0]
    with tempfile.TemporaryDirectory(prefix="onnx-ops-") as tmp:
        options = ort.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "profile")
        group.session = ort.InferenceSession(  # type: ignore[attr-defined]
            group.session._model_path,  # type: ignore[attr-defined]
            options,
            providers=["CPUExecutionProvider"],
        )
        scorer.score(texts)
        by_op, by_node = kernel_times(Path(group.session.end_profiling()))  # type: ignore[attr-defined]
    total = sum(by_op.values()) or 1
    console = Console(width=130)
    for title, counts in (("operator type", by_op), ("node", by_node)):
        table = Table(
            title=f"{args.export.name}: kernel time by {title}",
            caption=f"{len(texts)} items, batch {args.batch}, {total / 1e3:.0f} ms in all",
        )
        table.add_column(title)
        table.add_column("ms", justify="right")
        table.add_column("share", justify="right")
        for name, micros in counts.most_common(args.top):
            table.add_row(name[:90], f"{micros / 1e3:.1f}", f"{micros / total:.1%}")
        console.print(table)


if __name__ == "__main__":
    main()
