"""How a training recipe scores over several seeds, against the accuracy bars it must meet.

One run is one draw: on 954 held-out tweets one point of accuracy is ten texts, and two
seeds of the same recipe can differ by more than that. This script trains the recipe once
per seed (`--seed`, sequentially, each a full `finsentry train`) and/or reads artifacts
already trained (`--artifact`), then prints one row per run and the mean, standard
deviation and minimum of the held-out test scores per recipe, with the bars beside them
(a run whose parameters differ from the first run's is labelled with the difference and
summarised apart). All runs of one table must share the data split (`finsentry train
--split-seed`, default 42; pass it after `--`): then they are scored on the same held-out
examples, and runs of one recipe differ only by initialisation, dropout and batch order.

    .venv/bin/python benchmarks/recipe_seeds.py --seed 42 --seed 43 --seed 44 \
        --output /tmp/seeds -- --epochs 8       # arguments after -- go to `finsentry train`
    .venv/bin/python benchmarks/recipe_seeds.py --artifact artifacts/models/<run> ...
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from finsentry.training.config import TrainConfig

# Held-out test sets of the model card, the score reported, and the bar (issue #16).
COLUMNS = [
    ("sentiment", "accuracy", "tweets, sentiment", 0.87),
    ("topic", "accuracy", "tweets, topic", 0.887),
    ("entity", "accuracy", "news, per company", 0.85),
    ("news_sentiment", "accuracy", "news, sentence sentiment", 0.85),
]


def train(seed: int, output: Path, extra: list[str]) -> Path:
    """One `finsentry train --task multitask` run; returns the artifact it wrote."""
    finsentry = Path(sys.executable).with_name("finsentry")
    command = [str(finsentry), "train", "--task", "multitask", "--seed", str(seed)]
    command += ["--output", str(output), "--no-progress", *extra]
    print(f"[seed {seed}] {' '.join(command)}", flush=True)
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"[seed {seed}] training failed:\n{done.stdout[-2000:]}{done.stderr[-4000:]}")
    line = next(x for x in done.stdout.splitlines() if x.startswith("artifact: "))
    path = Path(line.removeprefix("artifact: ").strip())
    print(f"[seed {seed}] {path} in {(time.perf_counter() - started) / 60:.1f} min", flush=True)
    return path


# Parameters that do not change what a run learns (or that the table shows itself).
NOT_RECIPE = {"seed", "threads", "progress", "output_dir", "baselines", "head_only_epochs"}


def run_row(path: Path) -> dict[str, object]:
    """What the table shows of one artifact (its manifest and metrics)."""
    manifest = json.loads((path / "manifest.json").read_text())
    metrics = json.loads((path / "metrics.json").read_text())
    params = manifest["params"]
    # Read as training reads it: defaults for fields newer than the run, its split seed.
    config = TrainConfig.from_manifest(params, output_dir=".")
    recipe = config.model_dump(mode="json", exclude=NOT_RECIPE)
    scores = {
        task: metrics["tasks"][task]["test"][metric]
        for task, metric, _, _ in COLUMNS
        if task in metrics["tasks"]
    }
    training = metrics["training"]
    return {
        "artifact": path.name,
        "seed": config.seed,
        "split_seed": recipe["split_seed"],
        "recipe": recipe,
        "best": f"{training['best_step']}/{training['steps']}",
        "val_score": training["best_val_score"],
        "minutes": training["total_seconds"] / 60,
        "scores": scores,
    }


def recipe_label(recipe: dict[str, object], first: dict[str, object]) -> str:
    """How a run's recipe differs from the first run's ("as the first" where it does not)."""
    keys = sorted(set(recipe) | set(first))
    changed = [f"{k}={recipe.get(k)}" for k in keys if recipe.get(k) != first.get(k)]
    return ", ".join(changed) or "as the first"


def summary(rows: list[dict[str, object]], label: str) -> list[str]:
    """Mean, standard deviation and minimum of each score over runs of one recipe."""
    lines = []
    for name, reduce in (("mean", statistics.fmean), ("sd", statistics.stdev), ("min", min)):
        cells = []
        for task, *_ in COLUMNS:
            values = [r["scores"][task] for r in rows if task in r["scores"]]  # type: ignore[index,operator]
            cells.append(f"**{reduce(values):.4f}**" if len(values) > 1 else "")
        lines.append(
            f"| {name} ({len(rows)} seeds) | | {label} | | | | " + " | ".join(cells) + " |"
        )
    return lines


def table(rows: list[dict[str, object]]) -> str:
    head = ["artifact", "seed", "recipe", "best step", "minutes", "validation score"]
    head += [c[2] for c in COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 5 + "---:|" * (1 + len(COLUMNS))]
    first = rows[0]["recipe"]
    assert isinstance(first, dict)
    groups: dict[str, list[dict[str, object]]] = {}
    for row in rows:
        scores, recipe = row["scores"], row["recipe"]
        assert isinstance(scores, dict) and isinstance(recipe, dict)
        label = recipe_label(recipe, first)
        groups.setdefault(label, []).append(row)
        cells = [f"{scores[c[0]]:.4f}" if c[0] in scores else "" for c in COLUMNS]
        lines.append(
            f"| `{row['artifact']}` | {row['seed']} | {label} | {row['best']} "
            f"| {row['minutes']:.0f} | {row['val_score']:.4f} | " + " | ".join(cells) + " |"
        )
    for label, members in groups.items():
        if len(members) > 1:
            lines += summary(members, label)
    lines.append("| bar | | | | | | " + " | ".join(f">= {c[3]}" for c in COLUMNS) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, extra = argv[:at], argv[at + 1 :]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, action="append", default=[], help="Train this seed.")
    parser.add_argument("--artifact", type=Path, action="append", default=[])
    parser.add_argument("--output", type=Path, default=Path("artifacts/seeds"))
    parser.add_argument("--report", type=Path, help="Also write the table to this file.")
    args = parser.parse_args(argv)
    if not args.seed and not args.artifact:
        parser.error("give --seed (to train) and/or --artifact (already trained)")
    paths = list(args.artifact) + [train(seed, args.output, extra) for seed in args.seed]
    rows = [run_row(p) for p in paths]
    splits = {r["split_seed"] for r in rows}
    if len(splits) > 1:
        sys.exit(f"the runs were split differently (split seeds {sorted(splits)}): not comparable")
    out = table(rows)
    print(out)
    if args.report:
        args.report.write_text(out + "\n")


if __name__ == "__main__":
    main()
