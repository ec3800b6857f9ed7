"""Per-company sentiment data: FinEntity's news paragraphs, and labels derived from tweets.

FinEntity labels every named financial entity of a paragraph with the sentiment the text
expresses about it. From it come (1) per-company examples for the entity head, (2) news
sentiment examples for the sentence head: whole paragraphs and their sentences whose
entities all carry one label, and (3) a news validation and test split. A tweet that names
exactly one company also lends its label to that company, weighted below the gold labels.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from finsentry.models.labels import normalise_sentiment
from finsentry.models.text import clean_with_spans
from finsentry.streams.entity_linking import CompanyIndex, find_mentions
from finsentry.training.data import DataError, stratified_split

Span = tuple[int, int]
MIXED = -1

# Sentence ends: . ! ? followed by space and a capital or a quote (good enough for wire copy;
# "U.S. Steel" style abbreviations only make a sentence longer, never wrong labels).
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'A-Z])")


@dataclass(frozen=True)
class EntityLabel:
    """One entity of a text: all its mentions, one label id, a training weight."""

    name: str
    spans: tuple[Span, ...]
    label: int
    weight: float = 1.0


@dataclass(frozen=True)
class NewsText:
    text: str
    entities: tuple[EntityLabel, ...]

    def consistent_label(self) -> int:
        """The label all its entities share, else MIXED."""
        labels = {e.label for e in self.entities}
        return labels.pop() if len(labels) == 1 else MIXED


def read_finentity(
    path: Path, labels: Sequence[str], clean: Callable[[str], str]
) -> list[NewsText]:
    """FinEntity JSON lines (`text`, `entities`: start, end, value, label), cleaned.

    Mentions of the same entity (same value, case-insensitive) with the same label become
    one entity with several spans. Offsets that do not match their value are an error."""
    index = {name: i for i, name in enumerate(labels)}
    out: list[NewsText] = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc})") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            text = str(row["text"])
            raw = row["entities"]
            grouped: dict[tuple[str, int], list[Span]] = {}
            for entity in raw:
                start, end = int(entity["start"]), int(entity["end"])
                if text[start:end] != entity["value"]:
                    raise ValueError(f"offsets {start}:{end} do not hold {entity['value']!r}")
                label = index[normalise_sentiment(str(entity["label"]))]
                grouped.setdefault((entity["value"].lower(), label), []).append((start, end))
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{path}, line {number}: {exc}") from exc
        keys = list(grouped)
        cleaned, moved = clean_with_spans(clean, text, [s for k in keys for s in grouped[k]])
        entities, i = [], 0
        for (name, label), spans in grouped.items():
            kept = tuple(s for s in moved[i : i + len(spans)] if s is not None)
            i += len(spans)
            if kept:
                entities.append(EntityLabel(name=name, spans=kept, label=label))
        if entities:
            out.append(NewsText(cleaned, tuple(entities)))
    if not out:
        raise DataError(f"{path}: no labelled entities")
    return out


def split_news(
    texts: Sequence[NewsText], val_frac: float, test_frac: float, seed: int
) -> tuple[list[NewsText], list[NewsText], list[NewsText]]:
    """Train / validation / test by paragraph, stratified by the paragraph's label (or mixed)."""
    strata = np.array([t.consistent_label() for t in texts])
    parts = stratified_split(strata, (val_frac, test_frac), seed)
    return tuple([texts[i] for i in part] for part in parts)  # type: ignore[return-value]


def sentences(news: NewsText, min_words: int = 5) -> list[NewsText]:
    """The sentences of a paragraph that hold whole entities, with spans moved into them."""
    out: list[NewsText] = []
    bounds = [0] + [m.end() for m in _SENTENCE_END.finditer(news.text)] + [len(news.text)]
    if len(bounds) <= 2:
        return out  # one sentence: the paragraph itself
    for start, end in itertools.pairwise(bounds):
        sentence = news.text[start:end].rstrip()
        if len(sentence.split()) < min_words:
            continue
        inside = []
        for entity in news.entities:
            spans = tuple(
                (a - start, b - start) for a, b in entity.spans if a >= start and b <= end
            )
            if spans:
                inside.append(replace(entity, spans=spans))
        if inside:
            out.append(NewsText(sentence, tuple(inside)))
    return out


def derived_entities(
    texts: Sequence[str], labels: Sequence[int], companies: CompanyIndex, weight: float
) -> list[tuple[EntityLabel, ...]]:
    """For each text naming exactly one company: that company with the text's label."""
    out: list[tuple[EntityLabel, ...]] = []
    for text, label in zip(texts, labels, strict=True):
        found = find_mentions(text, companies)
        if len(found) == 1 and found[0].mentions:
            spans = tuple((m.start, m.end) for m in found[0].mentions)
            out.append((EntityLabel(found[0].ticker, spans, int(label), weight),))
        else:
            out.append(())
    return out
