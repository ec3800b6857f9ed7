"""The bootstrap model: TF-IDF + logistic regression on the vendored training data.

It trains in seconds on two CPU cores (the transformer takes the better part of an hour),
so a fresh machine scores items within minutes; `finsentry.training.defaults` serves it
while the default model trains, then swaps. It is honestly named (`bootstrap-tfidf-<hash>`)
and its model card gives its held-out accuracy (same splits as the transformer: stratified
80/10/10, seed 42).
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from finsentry.models.artifact import Manifest, TaskSpec, staging
from finsentry.models.labels import TASKS
from finsentry.models.linear_runtime import LINEAR_FILES, LinearTask, write_linear_task
from finsentry.models.text import preprocessor

BOOTSTRAP_PREFIX = "bootstrap-tfidf-"
PREPROCESS = "tweet-v1"
# Reconstructed (float32, no sklearn objects) vs the fitted model, argmax on the test split.
MIN_RECONSTRUCTION_AGREEMENT = 0.995


def is_bootstrap(version: str) -> bool:
    return version.startswith(BOOTSTRAP_PREFIX)


def _scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, average="weighted", zero_division=0)),
        "n": len(y_true),
    }


def _fit_task(
    texts: dict[str, list[str]], labels: dict[str, np.ndarray], n_labels: int, c: float
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, Any, Any]:
    """Fit one task; returns terms, idf, full coef / intercept (every label a row), and the
    fitted vectoriser and classifier (for the reconstruction check)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vectoriser = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, max_features=200_000)
    x_train = vectoriser.fit_transform(texts["train"])
    # saga at tol 1e-3: ~0.5 s for sentiment where lbfgs took 7-18 s, within 0.3 points.
    model = LogisticRegression(C=c, solver="saga", tol=1e-3, max_iter=1000)
    model.fit(x_train, labels["train"])
    terms = vectoriser.get_feature_names_out().tolist()
    coef = np.zeros((n_labels, len(terms)))
    # A label absent from (a tiny) training split can never win.
    intercept = np.full(n_labels, -30.0)
    classes = [int(c) for c in model.classes_]
    if len(classes) == 2:  # binary: sklearn keeps one row for the second class
        coef[classes[1]], intercept[classes[1]] = model.coef_[0], model.intercept_[0]
        intercept[classes[0]] = 0.0
    else:
        for row, label in enumerate(classes):
            coef[label], intercept[label] = model.coef_[row], model.intercept_[row]
    return terms, vectoriser.idf_, coef, intercept, vectoriser, model


def train_bootstrap(
    data_dir: Path,
    models_dir: Path,
    *,
    max_samples: int | None = None,
    seed: int = 42,
    c: float = 8.0,
) -> Path:
    """Train both tasks on the data in `data_dir`, write a linear artifact into `models_dir`
    and return its folder."""
    from finsentry.training.config import default_data
    from finsentry.training.data import load_task_data

    started = time.perf_counter()
    clean = preprocessor(PREPROCESS)
    specs = default_data(Path(data_dir), "multitask")
    params = {"recipe": "tfidf-1-2gram-sublinear+logreg-saga", "C": c, "seed": seed}
    params["max_samples"] = max_samples
    metrics: dict[str, Any] = {
        "model_name": "bootstrap: TF-IDF + logistic regression",
        "tasks": {},
    }
    fingerprints: dict[str, Any] = {}
    Path(models_dir).mkdir(parents=True, exist_ok=True)
    with staging(Path(models_dir)) as stage:
        tasks: dict[str, TaskSpec] = {}
        for task in TASKS:
            data = load_task_data(
                task, specs[task], val_frac=0.1, test_frac=0.1, seed=seed, max_samples=max_samples
            )
            fingerprints[task] = data.fingerprint
            frames = {"train": data.train, "val": data.val, "test": data.test}
            texts = {k: [clean(t) for t in f["text"]] for k, f in frames.items()}
            labels = {k: f["label"].to_numpy() for k, f in frames.items()}
            terms, idf, coef, intercept, vectoriser, model = _fit_task(
                texts, labels, len(data.labels), c
            )
            write_linear_task(stage.path / task, terms, idf, coef, intercept)
            served = LinearTask(stage.path / task, data.labels)
            fitted = model.predict(vectoriser.transform(texts["test"]))
            rebuilt = served.predict_proba(texts["test"]).argmax(axis=1)
            agreement = float(np.mean(fitted == rebuilt))
            if agreement < MIN_RECONSTRUCTION_AGREEMENT:
                raise RuntimeError(
                    f"bootstrap {task}: the saved model agrees with the fitted one on only "
                    f"{agreement:.2%} of the test texts"
                )
            metrics["tasks"][task] = {
                "test": _scores(labels["test"], rebuilt),
                "val": _scores(labels["val"], served.predict_proba(texts["val"]).argmax(axis=1)),
                "reconstruction_agreement": agreement,
                "terms": len(terms),
            }
            tasks[task] = TaskSpec(path=task, labels=data.labels, tokenizer=task)
        metrics["training"] = {"total_seconds": time.perf_counter() - started}
        digest = hashlib.sha256()
        for task in TASKS:
            for name in LINEAR_FILES:
                digest.update((stage.path / task / name).read_bytes())
        digest.update(json.dumps([fingerprints, params], sort_keys=True, default=str).encode())
        manifest = Manifest(
            version=f"{BOOTSTRAP_PREFIX}{digest.hexdigest()[:12]}",
            created_at=datetime.now(UTC),
            runtime="linear",
            preprocess=PREPROCESS,
            tasks=tasks,
            base_model="tfidf-logreg",
            data=fingerprints,
            params=params,
        )
        metrics["version"] = manifest.version
        (stage.path / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
        (stage.path / "README.md").write_text(model_card(manifest, metrics), encoding="utf-8")
        return stage.commit(manifest)


def model_card(manifest: Manifest, metrics: dict[str, Any]) -> str:
    rows = "\n".join(
        f"| {task} | {m['test']['n']:,} | {m['test']['accuracy']:.3f} | "
        f"{m['test']['macro_f1']:.3f} | {m['val']['accuracy']:.3f} |"
        for task, m in metrics["tasks"].items()
    )
    seconds = metrics["training"]["total_seconds"]
    return f"""# {manifest.version}: bootstrap model (TF-IDF + logistic regression)

A stop-gap served while the default transformer trains: word 1-2-gram TF-IDF (sublinear tf)
and a multinomial logistic regression per task, trained in {seconds:.0f} s on the vendored
data (`data/`). It is several points less accurate than the default model and has no
per-company head (each company gets the text's verdict). Items it scored are re-scored
once the default model is live (`finsentry rescore --from-version {manifest.version}`).

Held-out test split (stratified 80/10/10, seed {manifest.params["seed"]}, the transformer's):

| task | n | accuracy | macro-F1 | validation accuracy |
|---|---:|---:|---:|---:|
{rows}
"""
