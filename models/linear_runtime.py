"""Serving a linear artifact (`runtime: "linear"`): TF-IDF features + logistic regression.

This is the bootstrap model: it trains in seconds (`finsentry.models.bootstrap`), so a fresh
machine scores items within minutes while the transformer trains in the background.

Layout, one folder per task::

    <task>/vocabulary.json   {"ngram_range": [1, 2], "terms": [...]}  (terms in column order)
    <task>/weights.npz       idf (n_terms), coef (n_labels x n_terms), intercept (n_labels)

No pickles: the artifact is data, and loading it runs no code from the artifact. Features
are computed exactly as scikit-learn's `TfidfVectorizer(sublinear_tf=True)` does (word
1-2-grams, lower case, `1 + log(tf)`, times idf, L2-normalised rows); the probabilities
are the multinomial logistic regression's softmax.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from finsentry.messages import CompanyMention, CompanyScores, ItemScores, LabelScores
from finsentry.models.artifact import ArtifactError, Manifest, read_manifest
from finsentry.models.labels import SENTIMENT, TOPIC
from finsentry.models.text import preprocessor

log = logging.getLogger(__name__)

VOCABULARY = "vocabulary.json"
WEIGHTS = "weights.npz"
LINEAR_FILES = (VOCABULARY, WEIGHTS)


class Vocabulary(BaseModel):
    ngram_range: tuple[int, int] = (1, 2)
    terms: list[str] = Field(description="Feature names in column order.")


class LinearTask:
    """One task's vectoriser and classifier, rebuilt from plain arrays."""

    def __init__(self, folder: Path, labels: list[str]) -> None:
        from sklearn.feature_extraction.text import CountVectorizer

        try:
            vocab = Vocabulary.model_validate_json((folder / VOCABULARY).read_bytes())
            with np.load(folder / WEIGHTS) as weights:
                self.idf = np.asarray(weights["idf"], np.float64)
                self.coef = np.asarray(weights["coef"], np.float64)
                self.intercept = np.asarray(weights["intercept"], np.float64)
        except (OSError, ValueError, KeyError) as exc:
            raise ArtifactError(f"linear model in {folder} is unreadable: {exc}") from exc
        n_terms = len(vocab.terms)
        if self.idf.shape != (n_terms,) or self.coef.shape != (len(labels), n_terms):
            raise ArtifactError(
                f"linear model in {folder}: weights {self.coef.shape} do not fit "
                f"{len(labels)} labels x {n_terms} terms"
            )
        if self.intercept.shape != (len(labels),):
            raise ArtifactError(f"linear model in {folder}: intercept has the wrong shape")
        self.labels = labels
        self.counter = CountVectorizer(
            vocabulary={term: i for i, term in enumerate(vocab.terms)},
            ngram_range=vocab.ngram_range,
            dtype=np.float64,
        )

    def features(self, texts: list[str]) -> Any:
        from sklearn.preprocessing import normalize

        counts = self.counter.transform(texts).tocsr()
        np.log(counts.data, out=counts.data)
        counts.data += 1.0
        return normalize(counts.multiply(self.idf).tocsr(), norm="l2", copy=False)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        logits = np.asarray(self.features(texts) @ self.coef.T) + self.intercept
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


def label_scores(labels: list[str], row: np.ndarray) -> LabelScores:
    values = {name: min(max(float(p), 0.0), 1.0) for name, p in zip(labels, row, strict=True)}
    best = labels[int(np.argmax(row))]
    return LabelScores(label=best, confidence=values[best], probs=values)


def text_verdict_for_companies(
    sentiment: LabelScores, score: float, companies: list[CompanyMention]
) -> list[CompanyScores]:
    """No per-company head: each company gets the text's own verdict (`source="text"`)."""
    return [
        CompanyScores(
            ticker=company.ticker,
            name=company.name,
            sentiment=sentiment.label,  # type: ignore[arg-type]
            confidence=sentiment.confidence,
            probs=dict(sentiment.probs),
            score=score,
            source="text",
            mentions=list(company.mentions),
        )
        for company in companies
    ]


class LinearScorer:
    """The stream's `Scorer` for a linear artifact."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.manifest: Manifest = read_manifest(self.root)
        if self.manifest.runtime != "linear":
            raise ArtifactError(f"{root} is a {self.manifest.runtime} artifact, not a linear one")
        self.version: str = self.manifest.version
        self.tasks = {
            task: LinearTask(self.root / spec.path, spec.labels)
            for task, spec in self.manifest.tasks.items()
        }
        self.device_name = "cpu (linear)"
        log.info("serving linear model %s from %s", self.version, self.root)

    def predict_proba(self, texts: list[str]) -> dict[str, np.ndarray]:
        clean = preprocessor(self.manifest.preprocess)
        cleaned = [clean(t if isinstance(t, str) else str(t)) for t in texts]
        return {task: model.predict_proba(cleaned) for task, model in self.tasks.items()}

    def score(
        self, texts: list[str], companies: list[list[CompanyMention]] | None = None
    ) -> list[ItemScores]:
        if not texts:
            return []
        probs = self.predict_proba(texts)
        out: list[ItemScores] = []
        for i in range(len(texts)):
            topic = label_scores(self.tasks[TOPIC].labels, probs[TOPIC][i])
            sentiment = label_scores(self.tasks[SENTIMENT].labels, probs[SENTIMENT][i])
            score = min(max(sentiment.probs["bullish"] - sentiment.probs["bearish"], -1.0), 1.0)
            mentions = companies[i] if companies is not None else []
            out.append(
                ItemScores(
                    topic=topic,
                    sentiment=sentiment,
                    sentiment_score=score,
                    companies=text_verdict_for_companies(sentiment, score, mentions),
                )
            )
        return out


def write_linear_task(folder: Path, terms: list[str], idf: Any, coef: Any, intercept: Any) -> None:
    """Save one task's fitted vectoriser and classifier as plain data."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / VOCABULARY).write_text(
        Vocabulary(terms=list(terms)).model_dump_json(), encoding="utf-8"
    )
    np.savez_compressed(
        folder / WEIGHTS,
        idf=np.asarray(idf, np.float32),
        coef=np.asarray(coef, np.float32),
        intercept=np.asarray(intercept, np.float32),
    )
