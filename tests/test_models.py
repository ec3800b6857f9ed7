"""The models stage: artifact selection and the Scorer contract, on tiny random models."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from finsentry.messages import ItemScores
from finsentry.models.artifact import ArtifactError, list_artifacts, read_manifest, staging
from finsentry.models.labels import SENTIMENT_LABELS, topic_label_names
from finsentry.models.scorer import load_scorer
from finsentry.settings import Settings
from tests.support.tiny_artifact import build_tiny_artifact

TEXTS = [
    "$AAPL beats earnings estimates, shares jump 5% after hours",
    "Fed signals more rate hikes as inflation stays hot",
    "",
    "x " * 2000,
]


def test_scores_follow_the_contract(tmp_path: Path) -> None:
    path = build_tiny_artifact(tmp_path)
    scorer = load_scorer(Settings(models_dir=tmp_path, device="cpu"))
    assert scorer.version == read_manifest(path).version
    scores = scorer.score(TEXTS)
    assert len(scores) == len(TEXTS) and all(isinstance(s, ItemScores) for s in scores)
    topics = set(topic_label_names(Settings().data_dir))
    for item in scores:
        assert set(item.sentiment.probs) == set(SENTIMENT_LABELS)
        assert set(item.topic.probs) == topics and len(topics) == 20
        assert item.sentiment.label in SENTIMENT_LABELS and item.topic.label in topics
        assert sum(item.sentiment.probs.values()) == pytest.approx(1.0, abs=1e-4)
        expected = item.sentiment.probs["bullish"] - item.sentiment.probs["bearish"]
        assert item.sentiment_score == pytest.approx(expected, abs=1e-6)
    assert scorer.score([]) == []


def test_batch_order_and_chunking_do_not_change_scores(tmp_path: Path) -> None:
    build_tiny_artifact(tmp_path)
    scorer = load_scorer(Settings(models_dir=tmp_path, device="cpu", max_batch=2))
    together = scorer.score(TEXTS)
    alone = [scorer.score([t])[0] for t in TEXTS]
    for a, b in zip(together, alone, strict=True):
        assert a.sentiment.probs == pytest.approx(b.sentiment.probs, abs=1e-5)
        assert a.topic.label == b.topic.label


def test_shared_encoder_runs_once_and_matches_full_models(tmp_path: Path) -> None:
    import torch

    build_tiny_artifact(tmp_path)
    scorer = load_scorer(Settings(models_dir=tmp_path, device="cpu"))
    group = scorer.groups[0]
    assert group.module.encoder_once
    batch = group.tokenizer(TEXTS[:2], padding=True, return_tensors="pt")
    with torch.inference_mode():
        once = group.module.task_logits(batch)
        for task, model in group.module.models.items():
            assert torch.allclose(once[task], model(**batch).logits, atol=1e-5)


def test_newest_servable_artifact_is_served(tmp_path: Path) -> None:
    older = build_tiny_artifact(tmp_path, seed=1)
    time.sleep(1.1)
    newer = build_tiny_artifact(tmp_path, shared_encoder=False, seed=2)
    assert read_manifest(older).version != read_manifest(newer).version
    assert (
        load_scorer(Settings(models_dir=tmp_path, device="cpu")).version
        == read_manifest(newer).version
    )
    pinned = Settings(models_dir=tmp_path, model_path=older, device="cpu")
    assert load_scorer(pinned).version == read_manifest(older).version
    assert [p for p, _ in list_artifacts(tmp_path)] == [older, newer]


def test_single_task_artifacts_are_not_served(tmp_path: Path) -> None:
    path = build_tiny_artifact(tmp_path)
    manifest = json.loads((path / "manifest.json").read_text())
    del manifest["tasks"]["topic"]
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="finsentry train"):
        load_scorer(Settings(models_dir=tmp_path))
    with pytest.raises(ArtifactError, match="topic"):
        load_scorer(Settings(models_dir=tmp_path, model_path=path))


def test_missing_artifact_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="finsentry train"):
        load_scorer(Settings(models_dir=tmp_path / "nothing-here"))


def test_scoring_from_several_threads(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    build_tiny_artifact(tmp_path)
    scorer = load_scorer(Settings(models_dir=tmp_path, device="cpu"))
    expected = scorer.score(TEXTS)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: scorer.score(TEXTS), range(16)))
    for result in results:
        assert [r.topic.label for r in result] == [e.topic.label for e in expected]


def test_the_same_artifact_committed_twice_in_one_second_lands_once(tmp_path: Path) -> None:
    committed = []
    for _ in range(2):
        with staging(tmp_path) as stage:
            (stage.path / "model.safetensors").write_bytes(b"same weights")
            manifest = stage.manifest({"tasks": {}}, data={"rows": 1}, params={"seed": 42})
            manifest = manifest.model_copy(update={"created_at": datetime(2026, 1, 1, tzinfo=UTC)})
            committed.append(stage.commit(manifest))
    assert committed[0] == committed[1]
    assert [p.name for p in tmp_path.iterdir()] == [committed[0].name]
    assert read_manifest(committed[0]).version == manifest.version
