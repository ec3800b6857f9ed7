"""The drift reference of the live model: its answers on its training recipe's held-out
texts, and the training texts' vocabulary. Built once per model version (the held-out texts
scored with the live model, at most FINSENTRY_DRIFT_SAMPLE of them) and kept in
`FINSENTRY_STATE_DIR/drift/reference-<version>.json`; FINSENTRY_DRIFT_REFERENCE pins a file."""

from __future__ import annotations

import random
from pathlib import Path

from finsentry.drift.measure import Observation, Reference, build_reference
from finsentry.models.artifact import ArtifactError, read_manifest
from finsentry.settings import Settings


def reference_file(settings: Settings, version: str) -> Path:
    return settings.state_dir / "drift" / f"reference-{version}.json"


def load_reference(path: Path) -> Reference:
    try:
        return Reference.model_validate_json(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"drift reference {path} is unreadable: {exc}") from exc


def save_reference(reference: Reference, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(reference.model_dump_json(), encoding="utf-8")
    tmp.replace(path)


def live_reference(settings: Settings) -> Reference:
    """The pinned reference, else the live model's (built and cached on first use)."""
    if settings.drift_reference is not None:
        return load_reference(settings.drift_reference)
    from finsentry.training.retrain import current_recipe, live_artifact

    live = live_artifact(settings)
    if live is None:
        raise ArtifactError("no live model: drift needs one (or FINSENTRY_DRIFT_REFERENCE)")
    version = read_manifest(live).version
    cached = reference_file(settings, version)
    if cached.is_file():
        return load_reference(cached)
    from finsentry.models.chunking import with_chunking
    from finsentry.models.registry import load_artifact_scorer
    from finsentry.training.train import load_all

    config = current_recipe(settings, live)
    data = load_all(config, preprocess=False)
    heldout = [t for d in data.values() for t in d.test["text"].tolist()]
    if len(heldout) > settings.drift_sample:  # a seeded sample over every task's texts
        heldout = random.Random(0).sample(heldout, settings.drift_sample)
    scores = with_chunking(load_artifact_scorer(live, settings)).score(heldout)
    observations = [
        Observation(
            text=text,
            sentiment=s.sentiment.label,
            sentiment_confidence=s.sentiment.confidence,
            topic=s.topic.label,
        )
        for text, s in zip(heldout, scores, strict=True)
    ]
    sources = ", ".join(sorted(str(d.fingerprint.get("source", "?")) for d in data.values()))
    reference = build_reference(
        version,
        f"held-out split of {sources}",
        (t for d in data.values() for t in d.train["text"]),
        observations,
    )
    save_reference(reference, cached)
    return reference
