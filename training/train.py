"""A training run end to end: data -> fine-tuning -> test report -> versioned artifact."""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from finsentry.models.artifact import save_task_models, staging
from finsentry.models.text import preprocessor
from finsentry.training.config import TrainConfig
from finsentry.training.data import TaskData, load_task_data
from finsentry.training.loop import (
    Examples,
    apply_freezing,
    apply_lora,
    build_models,
    fit,
    merge_lora,
    predict_probs,
    set_seed,
)
from finsentry.training.report import model_card, plot_confusion, plot_learning_curves, task_report

Teacher = Callable[[list[str]], Mapping[str, np.ndarray]]
"""Texts -> per task probabilities, columns in the student's label order."""


def load_all(config: TrainConfig, *, preprocess: bool = True) -> dict[str, TaskData]:
    """Each task's data, cleaned, split (train / val / test) and (optionally) preprocessed."""
    clean = preprocessor(config.preprocess)
    out: dict[str, TaskData] = {}
    for task in config.tasks():
        data = load_task_data(
            task,
            config.data[task],
            val_frac=config.val_frac,
            test_frac=config.test_frac,
            seed=config.seed,
            max_samples=config.max_train_samples,
        )
        for frame in (data.train, data.val, data.test) if preprocess else ():
            frame["text"] = [clean(t) for t in frame["text"]]
        out[task] = data
    return out


def hardware() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    cpu = platform.processor() or platform.machine()
    return f"CPU ({cpu}), {torch.get_num_threads()} torch threads"


def run_training(
    config: TrainConfig,
    *,
    teacher: Teacher | None = None,
    model_name: str = "fine-tuned",
    notes: str = "",
    data: Mapping[str, TaskData] | None = None,
) -> Path:
    """Train, evaluate on the held-out test split, and write an artifact; returns its folder."""
    if config.threads:
        torch.set_num_threads(config.threads)
    started = time.perf_counter()
    data = dict(data) if data is not None else load_all(config)
    tasks = config.tasks()
    task_labels = {t: data[t].labels for t in tasks}
    set_seed(config.seed)
    module, tokenizer = build_models(config, task_labels)
    if config.lora:
        apply_lora(module, config)
    else:
        apply_freezing(module, config)

    parts = [
        Examples(data[t].train["text"].tolist(), {t: data[t].train["label"].to_numpy()})
        for t in tasks
    ]
    train = Examples.concat(parts, tasks)
    if teacher is not None:
        train.soft = {t: np.asarray(p, np.float32) for t, p in teacher(train.texts).items()}
    val = {t: (data[t].val["text"].tolist(), data[t].val["label"].to_numpy()) for t in tasks}
    result = fit(module, tokenizer, train, val, config)
    merge_lora(module)

    metrics: dict[str, Any] = {"model_name": model_name, "tasks": {}, "notes": notes}
    for task in tasks:
        test = data[task].test
        probs = predict_probs(
            module,
            tokenizer,
            test["text"].tolist(),
            max_length=config.max_length,
            batch_size=config.eval_batch_size,
        )[task]
        metrics["tasks"][task] = {
            "test": task_report(test["label"].to_numpy(), probs.argmax(axis=1), data[task].labels),
            "val_best": next(
                (h["val"][task] for h in result.history if h["step"] == result.best_step), None
            ),
            "baselines": {},
        }
    if config.baselines:
        add_baselines(metrics, config, data, task_labels)
    metrics["training"] = {
        "steps": result.steps,
        "best_step": result.best_step,
        "best_val_score": result.best_score,
        "stopped_early": result.stopped_early,
        "epoch_seconds": result.epoch_seconds,
        "train_seconds": result.train_seconds,
        "eval_seconds": result.eval_seconds,
        "total_seconds": time.perf_counter() - started,
        "train_examples": len(train),
        "hardware": hardware(),
    }
    metrics["history"] = result.history
    return write_training_artifact(module, tokenizer, config, data, metrics)


def add_baselines(
    metrics: dict[str, Any],
    config: TrainConfig,
    data: Mapping[str, TaskData],
    task_labels: Mapping[str, list[str]],
) -> None:
    """TF-IDF + LR and frozen-encoder + trained-head rows, on the same splits."""
    from finsentry.training.baselines import head_only, tfidf_logreg

    splits = {
        t: {
            name: (frame["text"].tolist(), frame["label"].to_numpy())
            for name, frame in (("train", d.train), ("val", d.val), ("test", d.test))
        }
        for t, d in data.items()
    }
    for task, split in splits.items():
        metrics["tasks"][task]["baselines"]["TF-IDF + logistic regression"] = tfidf_logreg(
            split["train"],
            split["val"],
            split["test"],
            class_weight="balanced" if config.class_weights else None,
        )
    set_seed(config.seed)
    fresh, tokenizer = build_models(config.model_copy(update={"student_layers": None}), task_labels)
    heads = head_only(
        fresh,
        tokenizer,
        splits,
        max_length=config.max_length,
        epochs=config.head_only_epochs,
        seed=config.seed,
    )
    for task, scores in heads.items():
        metrics["tasks"][task]["baselines"]["pretrained encoder, head only"] = scores


def write_training_artifact(
    module: Any,
    tokenizer: Any,
    config: TrainConfig,
    data: Mapping[str, TaskData],
    metrics: dict[str, Any],
) -> Path:
    params = json.loads(config.model_dump_json(exclude={"output_dir", "progress", "threads"}))
    fingerprints = {t: d.fingerprint for t, d in data.items()}
    Path(config.output_dir).mkdir(parents=True, exist_ok=True)
    with staging(config.output_dir) as stage:
        specs = save_task_models(stage.path, dict(module.models.items()), tokenizer)
        for task, info in metrics["tasks"].items():
            plot_confusion(
                info["test"], f"{task} (test split)", stage.path / f"confusion_{task}.png"
            )
        plot_learning_curves(metrics["history"], stage.path / "learning_curves.png")
        fields = {
            "runtime": "torch",
            "shared_encoder": module.shared_encoder,
            "max_length": config.max_length,
            "preprocess": config.preprocess,
            "tasks": specs,
            "base_model": config.base_model,
        }
        manifest = stage.manifest(fields, data=fingerprints, params=params)
        metrics["version"] = manifest.version
        (stage.path / "metrics.json").write_text(
            json.dumps(metrics, indent=2, default=str), encoding="utf-8"
        )
        card = model_card(metrics, json.loads(manifest.model_dump_json()))
        (stage.path / "README.md").write_text(card, encoding="utf-8")
        return stage.commit(manifest)
