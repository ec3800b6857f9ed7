"""Drift measures, pure: the population stability index and what it compares.

PSI = sum over bins of (a - e) * ln(a / e), with `e` the reference share of a bin and `a`
the observed share (both floored at `EPSILON` so an empty bin is finite). Conventional
reading: below 0.1 stable, 0.1-0.25 a moderate shift, 0.25 and above a significant one
(the default `FINSENTRY_DRIFT_THRESHOLD`). Class mixes are compared over their labels;
numbers (confidence, text length, share of unknown words) over the reference's decile bins.
"""

from __future__ import annotations

import bisect
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

import numpy as np
from pydantic import BaseModel, Field

EPSILON = 1e-4
_WORD = re.compile(r"[a-z]+")
MEASURES = ("sentiment", "topic", "confidence", "text_length", "unknown_words")


def psi(expected: Sequence[float], actual: Sequence[float]) -> float:
    """Population stability index of two distributions over the same bins."""
    if len(expected) != len(actual):
        raise ValueError(f"{len(expected)} reference bins but {len(actual)} observed")
    total = 0.0
    for e, a in zip(expected, actual, strict=True):
        e, a = max(e, EPSILON), max(a, EPSILON)
        total += (a - e) * math.log(a / e)
    return total


def mix(labels: Iterable[str]) -> dict[str, float]:
    """Each label's share."""
    counts = Counter(labels)
    n = sum(counts.values())
    return {k: v / n for k, v in sorted(counts.items())} if n else {}


def mix_psi(expected: Mapping[str, float], actual: Mapping[str, float]) -> float:
    keys = sorted(set(expected) | set(actual))
    return psi([expected.get(k, 0.0) for k in keys], [actual.get(k, 0.0) for k in keys])


class Binned(BaseModel):
    """A number's distribution: `edges` split it into len(edges) + 1 bins."""

    edges: list[float]
    shares: list[float]
    mean: float

    @classmethod
    def from_values(cls, values: Sequence[float], bins: int = 10) -> Binned:
        """Decile (or `bins`-quantile) edges of the values, and their shares."""
        array = np.asarray(values, dtype=float)
        quantiles = np.quantile(array, [i / bins for i in range(1, bins)]) if len(array) else []
        edges = sorted({float(q) for q in quantiles})
        return cls(edges=edges, shares=shares(edges, values), mean=float(array.mean()))

    def psi_of(self, values: Sequence[float]) -> float:
        return psi(self.shares, shares(self.edges, values))


def shares(edges: Sequence[float], values: Sequence[float]) -> list[float]:
    """Share of `values` in each bin (a value equal to an edge goes to the bin above)."""
    counts = [0] * (len(edges) + 1)
    for v in values:
        counts[bisect.bisect_right(edges, v)] += 1
    n = len(values)
    return [c / n for c in counts] if n else [0.0] * len(counts)


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def unknown_share(text: str, vocabulary: frozenset[str] | set[str]) -> float:
    """The share of a text's words that the training data never had."""
    found = words(text)
    return sum(w not in vocabulary for w in found) / len(found) if found else 0.0


class Observation(BaseModel):
    """One scored item as drift sees it."""

    text: str
    sentiment: str
    sentiment_confidence: float
    topic: str


class Reference(BaseModel):
    """What the training data looks like to the model: the class mix it predicts on the
    held-out texts, its confidence there, and the texts' length and unknown words."""

    model_version: str
    built_from: str = Field(description="Where the texts came from.")
    n: int
    sentiment: dict[str, float]
    topic: dict[str, float]
    confidence: Binned
    text_length: Binned
    unknown_words: Binned
    vocabulary: list[str] = Field(description="Words of the training texts.")


def build_reference(
    model_version: str,
    built_from: str,
    training_texts: Iterable[str],
    observations: Sequence[Observation],
) -> Reference:
    """The reference from the training texts (vocabulary) and the model's answers on
    held-out texts."""
    vocabulary = sorted({w for t in training_texts for w in words(t)})
    known = frozenset(vocabulary)
    return Reference(
        model_version=model_version,
        built_from=built_from,
        n=len(observations),
        sentiment=mix(o.sentiment for o in observations),
        topic=mix(o.topic for o in observations),
        confidence=Binned.from_values([o.sentiment_confidence for o in observations]),
        text_length=Binned.from_values([len(o.text) for o in observations]),
        unknown_words=Binned.from_values([unknown_share(o.text, known) for o in observations]),
        vocabulary=vocabulary,
    )


class DriftRow(BaseModel):
    """One hour of the stream against the reference."""

    hour: datetime
    items: int = Field(description="Items scored in the hour.")
    sampled: int = Field(description="Items the figures were computed on.")
    reference_version: str
    sentiment_mix: dict[str, float]
    topic_mix: dict[str, float]
    mean_confidence: float
    mean_text_length: float
    unknown_share: float = Field(description="Mean share of words the training data lacks.")
    psi_sentiment: float
    psi_topic: float
    psi_confidence: float
    psi_text_length: float
    psi_unknown_words: float
    max_psi: float
    worst: str = Field(description="The measure with the largest PSI.")
    enough: bool = Field(description="Enough items for a verdict (FINSENTRY_DRIFT_MIN_ITEMS).")
    drifted: bool = Field(description="enough and max_psi >= the threshold.")
    threshold: float

    def psi_by_measure(self) -> dict[str, float]:
        return {m: getattr(self, f"psi_{m}") for m in MEASURES}


def hour_row(
    hour: datetime,
    items: int,
    observations: Sequence[Observation],
    reference: Reference,
    *,
    threshold: float,
    min_items: int,
) -> DriftRow:
    """An hour's figures and their PSI against the reference."""
    known = frozenset(reference.vocabulary)
    confidence = [o.sentiment_confidence for o in observations]
    lengths = [float(len(o.text)) for o in observations]
    unknown = [unknown_share(o.text, known) for o in observations]
    sentiment_mix = mix(o.sentiment for o in observations)
    topic_mix = mix(o.topic for o in observations)
    values = {
        "sentiment": mix_psi(reference.sentiment, sentiment_mix),
        "topic": mix_psi(reference.topic, topic_mix),
        "confidence": reference.confidence.psi_of(confidence),
        "text_length": reference.text_length.psi_of(lengths),
        "unknown_words": reference.unknown_words.psi_of(unknown),
    }
    worst = max(values, key=lambda m: values[m])
    enough = len(observations) >= min_items
    return DriftRow(
        hour=hour,
        items=items,
        sampled=len(observations),
        reference_version=reference.model_version,
        sentiment_mix=sentiment_mix,
        topic_mix=topic_mix,
        mean_confidence=float(np.mean(confidence)) if confidence else 0.0,
        mean_text_length=float(np.mean(lengths)) if lengths else 0.0,
        unknown_share=float(np.mean(unknown)) if unknown else 0.0,
        **{f"psi_{m}": round(v, 6) for m, v in values.items()},
        max_psi=round(values[worst], 6),
        worst=worst,
        enough=enough,
        drifted=enough and values[worst] >= threshold,
        threshold=threshold,
    )
