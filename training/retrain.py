"""Re-training on analysts' labels, promoted only when it is not worse than the live model.

1. The recipe is the live model's own (its manifest's training parameters; for an int8
   export, its parent's), else the default recipe.
2. The feedback (`finsentry.feedback.export.FeedbackExample`) is split by item id: a share
   (`FINSENTRY_RETRAIN_HOLDOUT`) is held out, the same items every time; the rest joins the
   base training data, each example `FINSENTRY_RETRAIN_FEEDBACK_WEIGHT` times (weighting by
   repetition). Per-company labels teach the per-company head when the recipe has one.
3. The candidate and the live model are scored, through the serving path (`Scorer`), on
   the same texts: the recipe's held-out test split of each task (mean macro-F1) and the
   feedback hold-out (accuracy over its sentiment, topic and per-company labels).
4. The candidate is promoted through the registry only when neither figure is worse than the
   live model's by more than `FINSENTRY_RETRAIN_TOLERANCE`; the live model stays in the
   registry's history (`finsentry models rollback`). Both figures and the decision go into
   the candidate's model card (README.md, metrics.json `retrain`) and the command's output.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field, ValidationError

from finsentry.feedback.export import FeedbackExample, split_examples
from finsentry.messages import CompanyMention, Mention
from finsentry.models.artifact import ArtifactError, read_manifest
from finsentry.models.labels import SENTIMENT, TOPIC
from finsentry.models.text import clean_with_spans, preprocessor
from finsentry.settings import Settings
from finsentry.training.config import TrainConfig
from finsentry.training.data import TaskData
from finsentry.training.entity_data import EntityLabel
from finsentry.training.loop import IGNORE, Examples

log = logging.getLogger(__name__)


class Figures(BaseModel):
    """One model's two figures, and the per-task numbers behind them."""

    version: str
    heldout_macro_f1: float = Field(description="Mean macro-F1 over tasks, held-out split.")
    heldout_tasks: dict[str, dict[str, float]] = Field(default_factory=dict)
    feedback_accuracy: float | None = Field(None, description="On the feedback hold-out.")
    feedback_n: int = 0


class RetrainReport(BaseModel):
    candidate: str
    candidate_version: str
    live: Figures | None
    new: Figures
    feedback_items: int
    feedback_train: int
    feedback_holdout: int
    weight: int
    tolerance: float
    promoted: bool
    reason: str


def live_artifact(settings: Settings) -> Path | None:
    """The artifact the registry serves now (None when there is none)."""
    from finsentry.models.registry import serving_artifact

    try:
        return serving_artifact(settings.model_copy(update={"device": "cpu"}))
    except ArtifactError:
        return None


def current_recipe(settings: Settings, live: Path | None) -> TrainConfig:
    """The live model's training parameters (its parent's for an export), else the default."""
    from finsentry.models.registry import find_artifact
    from finsentry.training.defaults import default_config

    if live is not None:
        manifest = read_manifest(live)
        if manifest.parent_version:
            with contextlib.suppress(ArtifactError):
                parent = find_artifact(settings.models_dir, manifest.parent_version)
                manifest = read_manifest(parent)
        try:
            return TrainConfig.from_manifest(
                manifest.params, output_dir=settings.models_dir, progress=False
            )
        except ValidationError:
            log.info("live model %s has no training recipe: the default one", manifest.version)
    return default_config(settings, progress=False)


def feedback_examples(
    examples: Sequence[FeedbackExample],
    data: dict[str, TaskData],
    config: TrainConfig,
    weight: int,
) -> Examples | None:
    """Training `Examples` of the feedback (cleaned like the recipe's data), `weight` times;
    None when no example has a label the recipe trains."""
    clean = preprocessor(config.preprocess)
    tasks = config.tasks()
    index = {t: {name: i for i, name in enumerate(data[t].labels)} for t in tasks}
    sentiment_ids = index.get(SENTIMENT, {})
    texts: list[str] = []
    labels: dict[str, list[int]] = {t: [] for t in tasks}
    entities: list[tuple[EntityLabel, ...]] = []
    for example in examples:
        spans = [(e.start, e.end) for e in example.entities]
        cleaned, moved = clean_with_spans(clean, example.text, spans)
        grouped: dict[tuple[str, str], list[tuple[int, int]]] = {}
        for entity, span in zip(example.entities, moved, strict=True):
            if span is not None and entity.label in sentiment_ids:
                grouped.setdefault((entity.value.casefold(), entity.label), []).append(span)
        given = {SENTIMENT: example.sentiment, TOPIC: example.topic}
        ids = {task: index[task].get(given[task] or "", IGNORE) for task in tasks}
        if not grouped and all(i == IGNORE for i in ids.values()):
            continue  # nothing this recipe trains (a topic label for a sentiment model)
        texts.append(cleaned)
        for task in tasks:
            labels[task].append(ids[task])
        entities.append(
            tuple(
                EntityLabel(name=name, spans=tuple(s), label=sentiment_ids[label])
                for (name, label), s in grouped.items()
            )
        )
    if not texts:
        return None
    repeat = max(weight, 1)
    return Examples(
        texts * repeat,
        {t: np.array(v * repeat, np.int64) for t, v in labels.items()},
        entities=entities * repeat,
    )


def _cleaned(data: dict[str, TaskData], config: TrainConfig) -> dict[str, TaskData]:
    clean = preprocessor(config.preprocess)
    out = {}
    for task, d in data.items():
        frames = []
        for frame in (d.train, d.val, d.test):
            copy = frame.copy()
            copy["text"] = [clean(t) for t in copy["text"]]
            frames.append(copy)
        out[task] = replace(d, train=frames[0], val=frames[1], test=frames[2])
    return out


def score_model(
    path: Path,
    settings: Settings,
    heldout: dict[str, tuple[list[str], list[str]]],
    feedback: Sequence[FeedbackExample],
) -> Figures:
    """Held-out macro-F1 per task and feedback hold-out accuracy, through the serving path."""
    from sklearn.metrics import accuracy_score, f1_score

    from finsentry.models.chunking import with_chunking
    from finsentry.models.registry import load_artifact_scorer

    scorer = with_chunking(load_artifact_scorer(path, settings))
    tasks: dict[str, dict[str, float]] = {}
    for task, (texts, gold) in heldout.items():
        said = [getattr(s, task).label for s in scorer.score(texts)]
        tasks[task] = {
            "accuracy": float(accuracy_score(gold, said)),
            "macro_f1": float(f1_score(gold, said, average="macro", zero_division=0)),
            "n": float(len(gold)),
        }
    right = total = 0
    if feedback:
        companies = [_companies(e) for e in feedback]
        scored = scorer.score([e.text for e in feedback], companies)
        for example, scores, named in zip(feedback, scored, companies, strict=True):
            for given, answer in (
                (example.sentiment, scores.sentiment.label),
                (example.topic, scores.topic.label),
            ):
                if given is not None:
                    total += 1
                    right += given == answer
            verdicts = {c.ticker: c.sentiment for c in scores.companies}
            wanted = {e.value.casefold(): e.label for e in example.entities}
            for company in named:
                total += 1
                right += verdicts.get(company.ticker) == wanted[company.ticker]
    mean_f1 = float(np.mean([t["macro_f1"] for t in tasks.values()])) if tasks else 0.0
    return Figures(
        version=scorer.version,
        heldout_macro_f1=mean_f1,
        heldout_tasks=tasks,
        feedback_accuracy=right / total if total else None,
        feedback_n=total,
    )


def _companies(example: FeedbackExample) -> list[CompanyMention]:
    """The labelled companies as the entity linker would give them (named by their text)."""
    grouped: dict[str, list[Mention]] = {}
    for e in example.entities:
        grouped.setdefault(e.value.casefold(), []).append(Mention(start=e.start, end=e.end))
    return [CompanyMention(ticker=name, mentions=m) for name, m in grouped.items()]


def decide(live: Figures | None, new: Figures, tolerance: float) -> tuple[bool, str]:
    """Promote only when the candidate is not worse on either figure; the reason in words."""
    if live is None:
        return True, "no live model to compare with"
    worse = []
    if new.heldout_macro_f1 < live.heldout_macro_f1 - tolerance:
        worse.append(
            f"held-out split mean macro-F1 {new.heldout_macro_f1:.4f} is below the live "
            f"model's {live.heldout_macro_f1:.4f}"
        )
    if (
        new.feedback_accuracy is not None
        and live.feedback_accuracy is not None
        and new.feedback_accuracy < live.feedback_accuracy - tolerance
    ):
        worse.append(
            f"feedback hold-out accuracy {new.feedback_accuracy:.4f} is below the live "
            f"model's {live.feedback_accuracy:.4f}"
        )
    if worse:
        return False, "; ".join(worse) + (f" (tolerance {tolerance:g})" if tolerance else "")
    return True, (
        f"not worse than {live.version}: held-out mean macro-F1 {new.heldout_macro_f1:.4f} vs "
        f"{live.heldout_macro_f1:.4f}, feedback hold-out accuracy "
        f"{_shown(new.feedback_accuracy)} vs {_shown(live.feedback_accuracy)}"
    )


def _shown(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def card_section(report: RetrainReport) -> str:
    """The model card's re-training section: both models' figures and the decision."""
    live = report.live
    rows = [
        "## Re-training: candidate vs live model",
        "",
        f"Feedback: {report.feedback_items} labelled items, {report.feedback_train} trained on "
        f"(each {report.weight}x), {report.feedback_holdout} held out. Both models scored "
        "through the serving path on the same texts.",
        "",
        f"| figure | live ({live.version if live else 'none'}) | candidate "
        f"({report.candidate_version}) |",
        "|---|---:|---:|",
        f"| held-out split, mean macro-F1 | {live.heldout_macro_f1 if live else 0:.4f} | "
        f"{report.new.heldout_macro_f1:.4f} |",
        f"| feedback hold-out, accuracy (n={report.new.feedback_n}) | "
        f"{_shown(live.feedback_accuracy if live else None)} | "
        f"{_shown(report.new.feedback_accuracy)} |",
        "",
        f"**{'Promoted' if report.promoted else 'Not promoted'}**: {report.reason}.",
        "",
    ]
    return "\n".join(rows)


def _record(candidate: Path, report: RetrainReport) -> None:
    """Both figures and the decision into the candidate's model card and metrics.json."""
    card = candidate / "README.md"
    text = card.read_text(encoding="utf-8") if card.is_file() else ""
    card.write_text(text.rstrip() + "\n\n" + card_section(report), encoding="utf-8")
    metrics_file = candidate / "metrics.json"
    metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
    metrics["retrain"] = json.loads(report.model_dump_json())
    metrics_file.write_text(json.dumps(metrics, indent=2), encoding="utf-8")


def retrain(
    settings: Settings,
    feedback: Sequence[FeedbackExample],
    *,
    config: TrainConfig | None = None,
    overrides: dict[str, Any] | None = None,
    int8: bool = False,
) -> RetrainReport:
    """Train a candidate on the base data plus `feedback`, compare, promote if not worse.

    `config` replaces the live recipe; `overrides` change fields of it (ValidationError when
    they are not TrainConfig fields or values)."""
    from finsentry.models.registry import promote
    from finsentry.training.train import load_all, run_training

    live = live_artifact(settings)
    config = config or current_recipe(settings, live)
    fields = {**config.model_dump(), **(overrides or {}), "baselines": False, "progress": False}
    config = TrainConfig.model_validate(fields)
    trained, held = split_examples(list(feedback), settings.retrain_holdout)
    raw = load_all(config, preprocess=False)
    data = _cleaned(raw, config)
    weight = settings.retrain_feedback_weight
    extra = feedback_examples(trained, data, config, weight)
    notes = f"re-trained with {len(trained)} analyst-labelled items ({weight}x each)"
    candidate = run_training(config, model_name="re-trained", notes=notes, data=data, extra=extra)
    heldout = {
        t: (raw[t].test["text"].tolist(), [raw[t].labels[i] for i in raw[t].test["label"]])
        for t in (SENTIMENT, TOPIC)
        if t in raw
    }
    new = score_model(candidate, settings, heldout, held)
    old = score_model(live, settings, heldout, held) if live is not None else None
    promoted, reason = decide(old, new, settings.retrain_tolerance)
    report = RetrainReport(
        candidate=str(candidate),
        candidate_version=read_manifest(candidate).version,
        live=old,
        new=new,
        feedback_items=len(feedback),
        feedback_train=len(trained),
        feedback_holdout=len(held),
        weight=weight,
        tolerance=settings.retrain_tolerance,
        promoted=promoted,
        reason=reason,
    )
    _record(candidate, report)
    if promoted:
        if int8:
            from finsentry.training.defaults import export_and_promote

            export_and_promote(settings, candidate)
        else:
            promote(
                settings.models_dir,
                str(candidate),
                data_dir=settings.data_dir,
                reason=f"re-trained on feedback: {reason}",
            )
    return report
