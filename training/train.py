"""A training run end to end: data -> fine-tuning -> test report -> versioned artifact."""

from __future__ import annotations

import hashlib
import json
import platform
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from finsentry.models.artifact import save_entity_head, save_task_models, staging
from finsentry.models.heads import ENTITY
from finsentry.models.labels import SENTIMENT
from finsentry.models.text import preprocessor
from finsentry.training.config import TrainConfig
from finsentry.training.data import TaskData, load_task_data
from finsentry.training.entity_data import (
    MIXED,
    EntityLabel,
    NewsText,
    derived_entities,
    read_finentity,
    sentences,
    split_news,
)
from finsentry.training.loop import (
    IGNORE,
    Examples,
    ValSet,
    apply_freezing,
    apply_lora,
    build_models,
    fit,
    merge_lora,
    predict_val,
    set_seed,
)
from finsentry.training.report import model_card, plot_confusion, plot_learning_curves, task_report

Teacher = Callable[[list[str], list[tuple[EntityLabel, ...]] | None], Mapping[str, np.ndarray]]
"""Texts (and each text's labelled companies, if any) -> per task probabilities, columns in
the student's label order; `entity` (optional): a row per company, as `Examples.entity_soft`."""


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
            seed=config.split_seed,
            max_samples=config.max_train_samples,
        )
        for frame in (data.train, data.val, data.test) if preprocess else ():
            frame["text"] = [clean(t) for t in frame["text"]]
        out[task] = data
    return out


NEWS_SENTIMENT = "news_sentiment"


@dataclass(frozen=True)
class NewsData:
    """FinEntity-style news split by paragraph (train / validation / test)."""

    train: list[NewsText]
    val: list[NewsText]
    test: list[NewsText]
    fingerprint: dict[str, object]


FFN_SAMPLE = 256  # texts a training set, to rank a student's feed-forward units


def ffn_sample(
    config: TrainConfig, data: Mapping[str, TaskData], news: NewsData | None
) -> list[str]:
    """Training texts of every set (tweets of each task, news paragraphs), the same number
    of each, for ranking a narrowed student's feed-forward units; none if not narrowing."""
    if config.student_ffn is None:
        return []
    rng = np.random.default_rng(config.seed)
    sets = [d.train["text"].tolist() for d in data.values()]
    if news is not None:
        sets.append([n.text for n in news.train])
    return [
        texts[i]
        for texts in sets
        for i in sorted(rng.choice(len(texts), min(FFN_SAMPLE, len(texts)), replace=False))
    ]


def load_news(config: TrainConfig, labels: list[str]) -> NewsData | None:
    """The per-company / news data of the config, cleaned like the tweets, split by paragraph."""
    if config.entity_data is None:
        return None
    texts = read_finentity(Path(config.entity_data), labels, preprocessor(config.preprocess))
    train, val, test = split_news(
        texts, config.entity_val_frac, config.entity_test_frac, config.split_seed
    )
    digest = hashlib.sha256("\n".join(t.text for t in texts).encode()).hexdigest()[:16]
    return NewsData(
        train,
        val,
        test,
        {
            "source": config.entity_data,
            "paragraphs": len(texts),
            "entities": sum(len(t.entities) for t in texts),
            "sha256": digest,
            "split": {"train": len(train), "val": len(val), "test": len(test)},
            "seed": config.split_seed,
        },
    )


def news_examples(news: NewsData, config: TrainConfig) -> Examples:
    """News paragraphs (all their entities labelled; the sentence label where they agree),
    repeated `news_repeat` times, and their single-label sentences."""
    texts = [t for t in news.train for _ in range(max(config.news_repeat, 1))]
    if config.news_sentences:
        texts += [s for t in news.train for s in sentences(t) if s.consistent_label() != MIXED]
    labels = [t.consistent_label() for t in texts]
    if config.news_repeat == 0:  # the paragraphs still teach the per-company head
        labels[: len(news.train)] = [MIXED] * len(news.train)
    return Examples(
        [t.text for t in texts],
        {SENTIMENT: np.array([IGNORE if y == MIXED else y for y in labels], np.int64)},
        entities=[t.entities for t in texts],
    )


def news_sets(paragraphs: list[NewsText]) -> dict[str, ValSet]:
    """Per-company labels, and sentence sentiment where a paragraph's entities agree."""
    single = [t for t in paragraphs if t.consistent_label() != MIXED]
    sets = {
        ENTITY: ValSet(
            ENTITY,
            [t.text for t in paragraphs],
            np.array([e.label for t in paragraphs for e in t.entities], np.int64),
            entities=[t.entities for t in paragraphs],
        ),
    }
    if single:  # none when every paragraph has mixed labels (crafted test sets)
        sets[NEWS_SENTIMENT] = ValSet(
            SENTIMENT,
            [t.text for t in single],
            np.array([t.consistent_label() for t in single], np.int64),
        )
    return sets


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
    extra: Examples | None = None,
) -> Path:
    """Train, evaluate on the held-out test split, and write an artifact; returns its folder.

    `extra` examples (preprocessed, label ids in `data`'s order) join the training set only:
    re-training adds analysts' labels this way (training/retrain.py)."""
    if config.threads:
        torch.set_num_threads(config.threads)
    started = time.perf_counter()
    data = dict(data) if data is not None else load_all(config)
    tasks = config.tasks()
    task_labels = {t: data[t].labels for t in tasks}
    news = load_news(config, data[SENTIMENT].labels) if SENTIMENT in data else None
    entity_labels = data[SENTIMENT].labels if news is not None else None
    set_seed(config.seed)
    module, tokenizer = build_models(
        config, task_labels, entity_labels, ffn_texts=ffn_sample(config, data, news)
    )
    if config.lora:
        apply_lora(module, config)
    else:
        apply_freezing(module, config)

    parts = [
        Examples(data[t].train["text"].tolist(), {t: data[t].train["label"].to_numpy()})
        for t in tasks
    ]
    if news is not None:
        if config.derived_entity_weight > 0 and config.company_files:
            from finsentry.streams.entity_linking import load_company_index

            tweets = data[SENTIMENT].train
            parts[tasks.index(SENTIMENT)].entities = derived_entities(
                tweets["text"].tolist(),
                tweets["label"].tolist(),
                load_company_index(Path(f) for f in config.company_files),
                config.derived_entity_weight,
            )
        parts.append(news_examples(news, config))
    if extra is not None:
        parts.append(extra if news is not None else replace(extra, entities=None))
    train = Examples.concat(parts, tasks)
    if teacher is not None:
        soft = dict(teacher(train.texts, train.entities))
        if ENTITY in soft:
            train.entity_soft = np.asarray(soft.pop(ENTITY), np.float32)
        train.soft = {t: np.asarray(p, np.float32) for t, p in soft.items()}
    val = {
        t: ValSet(t, data[t].val["text"].tolist(), data[t].val["label"].to_numpy()) for t in tasks
    }
    test_sets = {
        t: ValSet(t, data[t].test["text"].tolist(), data[t].test["label"].to_numpy()) for t in tasks
    }
    if news is not None:
        val.update(news_sets(news.val))
        test_sets.update(news_sets(news.test))
    result = fit(module, tokenizer, train, val, config)
    merge_lora(module)

    metrics: dict[str, Any] = {"model_name": model_name, "tasks": {}, "notes": notes}
    for name, test in test_sets.items():
        labels = data[test.task].labels if test.task in data else data[SENTIMENT].labels
        probs = predict_val(module, tokenizer, test, config)
        metrics["tasks"][name] = {
            "test": task_report(test.labels, probs.argmax(axis=1), labels),
            "val_best": next(
                (h["val"][name] for h in result.history if h["step"] == result.best_step), None
            ),
            "baselines": {},
        }
    if news is not None:
        metrics["tasks"][ENTITY]["baselines"]["the text's sentiment copied to each company"] = (
            copied_text_baseline(module, tokenizer, test_sets[ENTITY], config)
        )
        metrics["data"] = {"news": news.fingerprint}
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


def copied_text_baseline(
    module: Any, tokenizer: Any, companies: ValSet, config: TrainConfig
) -> dict[str, float]:
    """What one verdict per text scores on per-company labels: the sentence head's label
    of the text, copied onto each of its companies (finsentry before the per-company head)."""
    from finsentry.training.loop import classification_scores

    text_probs = predict_val(module, tokenizer, ValSet(SENTIMENT, companies.texts, None), config)
    assert companies.entities is not None
    copied = [
        int(text_probs[i].argmax()) for i, ents in enumerate(companies.entities) for _ in ents
    ]
    return classification_scores(companies.labels, np.array(copied))


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
        metrics["tasks"][task].setdefault("baselines", {})
        metrics["tasks"][task]["baselines"]["TF-IDF + logistic regression"] = tfidf_logreg(
            split["train"],
            split["val"],
            split["test"],
            class_weight="balanced" if config.class_weights else None,
        )
    set_seed(config.seed)
    fresh, tokenizer = build_models(
        config.model_copy(update={"student_layers": None, "student_ffn": None, "init_from": None}),
        task_labels,
    )
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
    fingerprints.update(metrics.get("data", {}))
    Path(config.output_dir).mkdir(parents=True, exist_ok=True)
    with staging(config.output_dir) as stage:
        specs = save_task_models(stage.path, dict(module.models.items()), tokenizer)
        entity = None
        if getattr(module, "entity_head", None) is not None:
            entity = save_entity_head(stage.path, module.entity_head, data[SENTIMENT].labels)
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
            "entity": entity,
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
