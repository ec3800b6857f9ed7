"""Score a labelled file with an artifact, mapping the file's labels onto the model's."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from finsentry.models.artifact import read_manifest
from finsentry.models.labels import SENTIMENT, normalise_sentiment, read_label_map
from finsentry.training.data import DataError, raw_key, read_table


def parse_label_map(value: str | None) -> dict[str, str] | None:
    """A label map given as inline JSON (`{"0": "bearish"}`) or as a JSON file path."""
    if value is None:
        return None
    if value.lstrip().startswith("{"):
        try:
            data = json.loads(value)
        except json.JSONDecodeError as exc:
            raise DataError(f"--label-map is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise DataError("--label-map must be a JSON object")
        return {str(k): str(v) for k, v in data.items()}
    try:
        return read_label_map(Path(value))
    except ValueError as exc:
        raise DataError(str(exc)) from exc


def _to_model_label(name: str, labels: Sequence[str], task: str) -> str | None:
    """The model label a name means: exact, then case-insensitive, then sentiment synonyms."""
    if name in labels:
        return name
    folded = {label.casefold(): label for label in labels}
    if name.casefold() in folded:
        return folded[name.casefold()]
    if task == SENTIMENT:
        try:
            canonical = normalise_sentiment(name)
        except ValueError:
            return None
        return canonical if canonical in labels else None
    return None


def map_labels(
    raw: Sequence[str],
    label_map: Mapping[str, str] | None,
    labels: Sequence[str],
    task: str,
) -> tuple[np.ndarray, list[str]]:
    """Label ids in the model's order, and the raw values that could not be mapped."""
    names = {r: (label_map.get(r) if label_map is not None else r) for r in set(raw)}
    target = {
        r: (_to_model_label(n, labels, task) if n is not None else None) for r, n in names.items()
    }
    bad = sorted(r for r, t in target.items() if t is None)
    index = {label: i for i, label in enumerate(labels)}
    ids = np.array([index[target[r]] if target[r] is not None else -1 for r in raw], dtype=np.int64)
    return ids, bad


def pick_task(
    raw: Sequence[str], label_map: Mapping[str, str] | None, tasks: Mapping[str, Sequence[str]]
) -> str:
    """The artifact's only task, or the one task all of the file's labels map onto."""
    if len(tasks) == 1:
        return next(iter(tasks))
    fits = [t for t, labels in tasks.items() if not map_labels(raw, label_map, labels, t)[1]]
    if len(fits) != 1:
        raise DataError(
            f"cannot tell which task the labels belong to ({'several' if fits else 'none'} of "
            f"{list(tasks)} fit); pass --task and, if needed, --label-map"
        )
    return fits[0]


def evaluate_file(
    model_dir: Path,
    data: str,
    *,
    text_col: str = "text",
    label_col: str = "label",
    label_map: Mapping[str, str] | None = None,
    task: str | None = None,
    device: str = "auto",
    batch_size: int = 64,
) -> dict[str, Any]:
    """Accuracy, macro/weighted F1, per-class report and confusion matrix for one task."""
    from finsentry.models.runtime import ArtifactScorer
    from finsentry.training.report import task_report

    manifest = read_manifest(model_dir)
    frame = read_table(data)
    for column in (text_col, label_col):
        if column not in frame.columns:
            raise DataError(f"{data}: no column {column!r}; columns are {list(frame.columns)}")
    frame = frame[frame[text_col].notna() & frame[label_col].notna()]
    if frame.empty:
        raise DataError(f"{data}: no rows with both a text and a label")
    raw = [raw_key(v) for v in frame[label_col]]
    if label_map is None and (Path(data).parent / "label_map.json").is_file():
        label_map = read_label_map(Path(data).parent / "label_map.json")
    tasks = {t: spec.labels for t, spec in manifest.tasks.items()}
    if task is None:
        task = pick_task(raw, label_map, tasks)
    if task not in tasks:
        raise DataError(f"the model has no task {task!r}; it has {list(tasks)}")
    y, bad = map_labels(raw, label_map, tasks[task], task)
    if bad:
        raise DataError(
            f"{data}: labels {bad[:10]} do not map onto the model's {task} labels "
            f"{tasks[task]}; pass --label-map (JSON: file label -> model label)"
        )
    scorer = ArtifactScorer(model_dir, device=device, tasks=[task], batch_size=batch_size)
    probs = scorer.predict_proba(frame[text_col].astype(str).tolist())[task]
    report = task_report(y, probs.argmax(axis=1), tasks[task])
    return {
        "model": str(model_dir),
        "version": manifest.version,
        "task": task,
        "data": data,
        **report,
    }


def _entity_spans(
    text: str, entity: str, start: object, end: object
) -> tuple[list[tuple[int, int]], str | None]:
    """The entity's span in its text, or why there is none (an error row, not a crash)."""
    if start is not None and end is not None:
        try:
            a, b = int(start), int(end)  # type: ignore[call-overload]
        except (TypeError, ValueError):
            return [], "offsets not integers"
        return ([(a, b)], None) if text[a:b] == entity else ([], "offsets do not match")
    found = text.find(entity)
    if found < 0:
        found = text.casefold().find(entity.casefold())
    if found < 0 or not entity:
        return [], "entity not in text"
    return [(found, found + len(entity))], None


def evaluate_entities(
    model_dir: Path,
    data: str,
    *,
    text_col: str = "text",
    entity_col: str = "entity",
    label_col: str = "label",
    start_col: str | None = None,
    end_col: str | None = None,
    label_map: Mapping[str, str] | None = None,
    device: str = "auto",
) -> dict[str, Any]:
    """Per-company sentiment: one row per (text, entity, label), optionally with the
    entity's character offsets (else its first occurrence). Rows whose entity cannot be
    found are counted under `errors`, not scored."""
    from finsentry.models.runtime import ArtifactScorer
    from finsentry.training.report import task_report

    manifest = read_manifest(model_dir)
    if manifest.entity is None:
        raise DataError(f"the model {model_dir} has no per-company head (task entity)")
    frame = read_table(data)
    wanted = [text_col, entity_col, label_col] + [c for c in (start_col, end_col) if c]
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise DataError(f"{data}: no column(s) {missing}; columns are {list(frame.columns)}")
    frame = frame[frame[text_col].notna() & frame[entity_col].notna() & frame[label_col].notna()]
    if frame.empty:
        raise DataError(f"{data}: no rows with a text, an entity and a label")
    labels = manifest.entity.labels
    y_all, bad = map_labels([raw_key(v) for v in frame[label_col]], label_map, labels, SENTIMENT)
    if bad:
        raise DataError(
            f"{data}: labels {bad[:10]} do not map onto the per-company labels {labels}; "
            "pass --label-map (JSON: file label -> model label)"
        )
    errors: dict[str, int] = {}
    texts: dict[str, list[list[tuple[int, int]]]] = {}
    where: list[tuple[str, int]] = []
    y: list[int] = []
    for row, label in zip(frame.to_dict("records"), y_all, strict=True):
        text, entity = str(row[text_col]), str(row[entity_col])
        spans, error = _entity_spans(
            text,
            entity,
            row.get(start_col) if start_col else None,
            row.get(end_col) if end_col else None,
        )
        if error is not None:
            errors[error] = errors.get(error, 0) + 1
            continue
        companies = texts.setdefault(text, [])
        where.append((text, len(companies)))
        companies.append(spans)
        y.append(int(label))
    if not y:
        raise DataError(f"{data}: no row could be scored ({errors})")
    scorer = ArtifactScorer(model_dir, device=device)
    order = list(texts)
    probs = scorer.predict_proba(order, [texts[t] for t in order])
    first = dict(zip(order, np.cumsum([0] + [len(texts[t]) for t in order]), strict=False))
    rows = [int(first[text]) + k for text, k in where]
    predicted = probs["entity"][rows].argmax(axis=1)
    report = task_report(np.array(y), predicted, labels)
    return {
        "model": str(model_dir),
        "version": manifest.version,
        "task": "entity",
        "data": data,
        "errors": errors,
        **report,
    }
