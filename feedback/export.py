"""Feedback as training data: one JSON line per labelled item, the format `finsentry train`
reads.

Each line has `text` (what the model read), `sentiment` and `topic` (absent when no analyst
gave one) and `entities` in FinEntity's format (`start`, `end`, `value`, `label`: one per
mention of each labelled company), plus `item_id`. So the file trains one task with
`finsentry train --task sentiment --data F --label-col sentiment` (rows without that label
are skipped), and the per-company head with `--entity-data F`. When several analysts
labelled the same item, the newest label of each kind wins.

Which items are held out of re-training is decided by the item id alone (a hash), so an
item stays on the same side in every re-training.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from finsentry.feedback.labels import FeedbackDocument
from finsentry.messages import Sentiment


class EntitySpan(BaseModel):
    start: int = Field(ge=0)
    end: int = Field(ge=0)
    value: str
    label: Sentiment


class FeedbackExample(BaseModel):
    """One labelled item as a training row."""

    item_id: str
    text: str = Field(min_length=1)
    sentiment: Sentiment | None = None
    topic: str | None = None
    entities: list[EntitySpan] = Field(default_factory=list)
    labelled_at: datetime


def training_examples(docs: Iterable[FeedbackDocument]) -> list[FeedbackExample]:
    """One example per item: the newest sentiment, topic and per-company label given."""
    newest_first = sorted(docs, key=lambda d: (d.labelled_at, d.analyst), reverse=True)
    merged: dict[str, FeedbackExample] = {}
    for doc in newest_first:
        example = merged.setdefault(
            doc.item_id,
            FeedbackExample(item_id=doc.item_id, text=doc.text, labelled_at=doc.labelled_at),
        )
        if example.sentiment is None:
            example.sentiment = doc.labels.sentiment
        if example.topic is None:
            example.topic = doc.labels.topic
        done = {e.value.casefold() for e in example.entities}
        for company in doc.labels.companies:
            spans = [
                (m.start, m.end)
                for m in company.mentions
                if 0 <= m.start < m.end <= len(example.text)
            ]
            value = example.text[spans[0][0] : spans[0][1]] if spans else ""
            if not spans or value.casefold() in done:
                continue
            done.add(value.casefold())
            example.entities += [
                EntitySpan(start=s, end=e, value=example.text[s:e], label=company.sentiment)
                for s, e in spans
            ]
    return sorted(merged.values(), key=lambda e: e.item_id)


def is_held_out(item_id: str, share: float) -> bool:
    """Whether an item belongs to the feedback hold-out (stable across runs)."""
    bucket = int.from_bytes(hashlib.sha256(item_id.encode()).digest()[:4], "big") / 2**32
    return bucket < share


def split_examples(
    examples: list[FeedbackExample], share: float
) -> tuple[list[FeedbackExample], list[FeedbackExample]]:
    """(train, hold-out)."""
    held = [e for e in examples if is_held_out(e.item_id, share)]
    return [e for e in examples if not is_held_out(e.item_id, share)], held


def write_examples(examples: list[FeedbackExample], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = (e.model_dump_json(exclude_none=True) for e in examples)
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


class FeedbackFileError(ValueError):
    """An exported feedback file that cannot be read; the message names the line."""


def read_examples(path: Path) -> list[FeedbackExample]:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise FeedbackFileError(f"{path}: cannot read it ({exc})") from exc
    out = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            out.append(FeedbackExample.model_validate(json.loads(line)))
        except (ValueError, ValidationError) as exc:
            raise FeedbackFileError(f"{path}, line {number}: {exc}") from exc
    return out
