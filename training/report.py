"""The training report: metrics.json, confusion matrices, learning curves, model card."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import classification_report, confusion_matrix

from finsentry.training.loop import classification_scores


def task_report(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """Per-class precision/recall/F1/support, accuracy, macro and weighted F1, confusion."""
    ids = list(range(len(labels)))
    per_class = classification_report(
        y_true, y_pred, labels=ids, target_names=list(labels), output_dict=True, zero_division=0
    )
    return {
        **classification_scores(y_true, y_pred),
        "n": len(y_true),
        "per_class": {name: {k: float(v) for k, v in per_class[name].items()} for name in labels},
        "confusion": confusion_matrix(y_true, y_pred, labels=ids).tolist(),
        "labels": list(labels),
    }


def plot_confusion(report: Mapping[str, Any], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(report["confusion"], dtype=np.float64)
    labels = report["labels"]
    rows = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = max(4.0, 0.45 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    for i in range(len(labels)):
        for j in range(len(labels)):
            if matrix[i, j]:
                color = "white" if rows[i, j] > 0.5 else "black"
                ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=7, color=color)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of true class")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_learning_curves(history: Sequence[Mapping[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    steps = [h["step"] for h in history]
    left.plot(steps, [h["train_loss"] for h in history], marker="o")
    left.set_xlabel("step")
    left.set_ylabel("training loss (running mean)")
    left.set_title("training loss")
    tasks = list(history[0]["val"]) if history else []
    for task in tasks:
        right.plot(
            steps,
            [h["val"][task]["macro_f1"] for h in history],
            marker="o",
            label=f"{task} macro-F1",
        )
        right.plot(
            steps,
            [h["val"][task]["accuracy"] for h in history],
            linestyle="--",
            label=f"{task} accuracy",
        )
    right.set_xlabel("step")
    right.set_title("validation")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(value: float) -> str:
    return f"{value:.4f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def cells(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in row) + " |"

    lines = [cells(header), "|" + "|".join("---" for _ in header) + "|"]
    lines += [cells(row) for row in rows]
    return "\n".join(lines)


def model_card(metrics: Mapping[str, Any], manifest: Mapping[str, Any]) -> str:
    """README.md of an artifact: what it is, how it was made, and how well it does."""
    tasks = metrics["tasks"]
    encoder = "one, shared by the task heads" if manifest["shared_encoder"] else "one per task"
    parts = [
        f"# finsentry classifier `{manifest['version']}`",
        "",
        f"Tasks: {', '.join(tasks)}. Base: `{manifest['base_model']}`. "
        f"Encoder: {encoder}. "
        f"Created {manifest['created_at']}. Text preprocessing: `{manifest['preprocess']}`; "
        f"max length {manifest['max_length']} tokens.",
        "",
        "Serve it with `load_scorer` (newest artifact in FINSENTRY_MODELS_DIR, or "
        "FINSENTRY_MODEL_PATH); evaluate it with `finsentry evaluate --model <this folder>`.",
        "",
        "## Results on the held-out test split",
        "",
        "The test split is stratified, seeded, and separate from the validation split used "
        "for early stopping and model selection. All rows use the same splits.",
        "",
    ]
    if "entity" in tasks:
        parts += [
            "`entity` is the per-company head: one verdict per company of a news paragraph "
            "(all its mentions), scored against FinEntity's per-entity labels; its baseline "
            "row is what finsentry did before the head existed (the text's sentiment copied "
            "onto every company). `news_sentiment` is the sentence head on the held-out news "
            "paragraphs whose entities all share one label.",
            "",
        ]
    rows = []
    for task, info in tasks.items():
        for name, scores in info.get("baselines", {}).items():
            rows.append(
                [
                    task,
                    name,
                    _fmt(scores["accuracy"]),
                    _fmt(scores["macro_f1"]),
                    _fmt(scores["weighted_f1"]),
                ]
            )
        test = info["test"]
        rows.append(
            [
                task,
                f"**{metrics.get('model_name', 'fine-tuned')}**",
                f"**{_fmt(test['accuracy'])}**",
                f"**{_fmt(test['macro_f1'])}**",
                f"**{_fmt(test['weighted_f1'])}**",
            ]
        )
    parts += [_table(["task", "model", "accuracy", "macro-F1", "weighted-F1"], rows), ""]
    for task, info in tasks.items():
        test = info["test"]
        parts += [f"### {task}: classification report (test, n={test['n']})", ""]
        per_class = [
            [
                name,
                _fmt(v["precision"]),
                _fmt(v["recall"]),
                _fmt(v["f1-score"]),
                str(int(v["support"])),
            ]
            for name, v in test["per_class"].items()
        ]
        per_class.append(["accuracy", "", "", _fmt(test["accuracy"]), str(test["n"])])
        per_class.append(["macro avg", "", "", _fmt(test["macro_f1"]), str(test["n"])])
        per_class.append(["weighted avg", "", "", _fmt(test["weighted_f1"]), str(test["n"])])
        parts += [_table(["class", "precision", "recall", "F1", "support"], per_class), ""]
        parts += [f"![{task} confusion matrix](confusion_{task}.png)", ""]
    parts += ["## Learning curves", "", "![learning curves](learning_curves.png)", ""]
    training = metrics["training"]
    parts += [
        "## Training",
        "",
        f"- steps: {training['steps']} (best at step {training['best_step']}, validation "
        f"macro-F1 {_fmt(training['best_val_score'])}; stopped early: {training['stopped_early']})",
        f"- time: {training['train_seconds']:.0f} s training + {training['eval_seconds']:.0f} s "
        f"validation; per epoch (training only): "
        f"{', '.join(f'{s:.0f} s' for s in training['epoch_seconds'])}",
        f"- hardware: {training['hardware']}",
        "",
        "## Data",
        "",
    ]
    for task, fp in manifest["data"].items():
        if "paragraphs" in fp:
            parts.append(
                f"- **{task}** (per-company head, news sentiment): `{fp['source']}`, "
                f"{fp['paragraphs']} paragraphs with {fp['entities']} labelled entities "
                f"(sha256 {fp['sha256']}), split by paragraph {fp['split']} with seed "
                f"{fp['seed']}. FinEntity (Tang et al., EMNLP 2023), ODC-BY-1.0."
            )
            continue
        parts.append(
            f"- **{task}**: `{fp['source']}`, {fp['rows']} usable rows "
            f"(sha256 {fp['sha256']}), split {fp['split']} with seed {fp['seed']}; "
            f"columns {fp['columns']}"
        )
    parts += [
        "",
        "## Hyperparameters",
        "",
        "```json",
        json.dumps(manifest["params"], indent=2, default=str),
        "```",
        "",
    ]
    if metrics.get("notes"):
        parts += ["## Notes", "", metrics["notes"], ""]
    return "\n".join(parts)
