"""Re-training on analysts' labels with a tiny training configuration and the real
Elasticsearch: label -> export -> retrain -> a candidate that agrees with the corrected
items, promoted with the old model kept for rollback; a candidate worse on the held-out
split is not promoted and the output says why."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from finsentry.cli import app
from finsentry.feedback.export import is_held_out
from finsentry.index.template import apply_items_template
from finsentry.models.artifact import read_manifest
from finsentry.models.registry import entry_path, live_path, promote, read_live, rollback
from finsentry.models.runtime import ArtifactScorer
from finsentry.queries.api import create_api
from finsentry.settings import Settings
from finsentry.training.retrain import Figures, decide
from finsentry.training.train import run_training
from tests.conftest import unique_settings
from tests.support.crafted import crafted_item
from tests.support.tiny_artifact import build_tiny_base
from tests.test_training import DATA, tiny_config

pytestmark = pytest.mark.integration

ALICE = {"Authorization": "Bearer tok-alice"}
THREADS = '{"threads": 1}'  # two shared cores: one torch thread trains ~10x faster
LABELS = ("bearish", "neutral", "bullish")
HOLDOUT = 0.25
# Item ids: six on the training side of the 25 % hold-out, two held out (by their hash).
_IDS = [f"fb-{n}" for n in range(100)]
IDS = [i for i in _IDS if not is_held_out(i, HOLDOUT)][:6] + [
    i for i in _IDS if is_held_out(i, HOLDOUT)
][:2]
# Texts unlike the training tweets, so what the candidate says about them comes from the
# analysts' labels.
TEXTS = [
    "Zorblax quarterly glimmer fund update",
    "Quintaro plinth dividend memo arrives",
    "Vexmor snorkel revenue bulletin today",
    "Dralith ferrule guidance note posted",
    "Kelvane orbital bond notice filed",
    "Mirasco tundra equity briefing out",
    "Pelagor zinc ledger statement due",
    "Ostravel copper wick forecast issued",
]


@pytest.fixture(scope="module")
def trained_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder whose live model is a tiny trained one (trained once per module)."""
    base = build_tiny_base(tmp_path_factory.mktemp("base"))
    models = tmp_path_factory.mktemp("models")
    # Enough steps (no early stop: one evaluation at the end) for the tiny encoder to learn
    # its six corrected items; the re-training inherits this recipe from the live model.
    config = tiny_config(
        base,
        models,
        max_train_samples=100,
        epochs=8,
        lr=3e-3,
        eval_every=1000,
        baselines=False,
        threads=1,
    )
    live = run_training(config)
    promote(models, str(live), data_dir=DATA, reason="the live model of the test")
    return models


@pytest.fixture
def models(trained_models: Path, tmp_path: Path) -> Path:
    """A copy of the folder, so each test starts from the same live model."""
    return Path(shutil.copytree(trained_models, tmp_path / "models"))


def env(settings: Settings, models: Path, **more: str) -> dict[str, str]:
    return {
        "FINSENTRY_MODELS_DIR": str(models),
        "FINSENTRY_DEVICE": "cpu",
        "FINSENTRY_ES_URL": settings.es_url,
        "FINSENTRY_ITEMS_INDEX": settings.items_index,
        "FINSENTRY_FEEDBACK_INDEX": settings.feedback_index,
        **more,
    }


@pytest.fixture(scope="module")
def labelled(services: Settings, es: Elasticsearch, trained_models: Path) -> Iterator[Settings]:
    """Items the live model scored, each corrected by an analyst to a sentiment the live
    model did not give it (once per module; each test re-trains on its own models copy)."""
    settings = unique_settings(
        services,
        api_analyst_tokens={"alice": "tok-alice"},
        api_rate_limit=0,
    )
    settings = Settings.model_validate(settings.model_dump())
    live = ArtifactScorer(live_path(trained_models), device="cpu")
    apply_items_template(es, settings.items_index)
    now = datetime.now(UTC)
    said = live.score(TEXTS)
    for n, (text, scores) in enumerate(zip(TEXTS, said, strict=True)):
        item = crafted_item(
            IDS[n], now, scores.sentiment.label, [], text=text, model_version=live.version
        )
        es.index(index=settings.items_index, id=item.id, document=item.model_dump(mode="json"))
    es.indices.refresh(index=settings.items_index)
    with TestClient(create_api(settings, es)) as client:
        for n, scores in enumerate(said):
            corrected = LABELS[(LABELS.index(scores.sentiment.label) + 1 + n % 2) % 3]
            answer = client.post(
                f"/v1/items/{IDS[n]}/labels", json={"sentiment": corrected}, headers=ALICE
            )
            assert answer.status_code == 201, answer.text
    yield settings
    for index in (settings.items_index, settings.feedback_index):
        es.options(ignore_status=404).indices.delete(index=index)
    es.options(ignore_status=404).indices.delete_index_template(name=settings.items_index)


def test_feedback_round_trip(labelled: Settings, models: Path, tmp_path: Path) -> None:
    before = read_live(models)
    assert before is not None
    exported = tmp_path / "feedback.jsonl"
    runner = CliRunner()
    result = runner.invoke(
        app, ["feedback", "export", "--out", str(exported)], env=env(labelled, models)
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in exported.read_text().splitlines()]
    assert len(rows) == len(TEXTS)
    held = {r["item_id"] for r in rows if is_held_out(r["item_id"], HOLDOUT)}
    assert len(held) == 2

    result = runner.invoke(
        app,
        [
            "retrain",
            "--feedback",
            str(exported),
            "--holdout",
            str(HOLDOUT),
            "--override",
            THREADS,
            "--weight",
            "30",
            "--tolerance",
            "0.2",
        ],
        env=env(labelled, models),
    )
    assert result.exit_code == 0, result.output
    out = result.output
    assert (
        f"feedback split: {len(rows) - len(held)} trained on (30x each), {len(held)} held out"
        in out
    )
    assert "held-out split, mean macro-F1" in out
    assert f"feedback hold-out, accuracy (n={len(held)})" in out
    assert "promoted " in out and "`finsentry models rollback` returns to" in out

    after = read_live(models)
    assert after is not None and after.live.version != before.live.version
    assert after.history[-1].version == before.live.version  # kept for rollback
    candidate = live_path(models)
    assert candidate is not None
    card = (candidate / "README.md").read_text()
    assert "## Re-training: candidate vs live model" in card and "**Promoted**" in card
    metrics = json.loads((candidate / "metrics.json").read_text())
    assert metrics["retrain"]["live"]["version"] == before.live.version
    assert metrics["retrain"]["feedback_train"] == len(rows) - len(held)

    # The candidate now agrees with the analysts on the items it was trained with; the
    # live model did not agree with any of them.
    scorer = ArtifactScorer(candidate, device="cpu")
    trained = [r for r in rows if r["item_id"] not in held]
    said = scorer.score([r["text"] for r in trained])
    assert [s.sentiment.label for s in said] == [r["sentiment"] for r in trained]
    old = ArtifactScorer(entry_path(models, before.live), device="cpu")
    assert all(
        s.sentiment.label != r["sentiment"]
        for s, r in zip(old.score([r["text"] for r in rows]), rows, strict=True)
    )

    rollback(models, data_dir=DATA)
    assert read_live(models).live.version == before.live.version  # type: ignore[union-attr]


def test_a_worse_candidate_is_not_promoted(labelled: Settings, models: Path) -> None:
    before = read_live(models)
    assert before is not None
    # An untrained candidate (a learning rate that moves nothing) is worse on the held-out
    # split than the live model.
    result = CliRunner().invoke(
        app,
        ["retrain", "--override", '{"lr": 1e-9, "epochs": 0.1, "threads": 1}'],
        env=env(labelled, models),
    )
    assert result.exit_code == 3, result.output
    assert "not promoted: held-out split mean macro-F1" in result.output
    assert "is below the live model's" in result.output
    assert f"{before.live.version} stays live" in result.output
    after = read_live(models)
    assert after is not None and after.live == before.live
    (candidate,) = [
        p
        for p in models.iterdir()
        if (p / "manifest.json").is_file() and read_manifest(p).version != before.live.version
    ]
    card = (candidate / "README.md").read_text()
    assert "**Not promoted**: held-out split mean macro-F1" in card


def test_too_few_new_labels_train_nothing(labelled: Settings, models: Path) -> None:
    before = sorted(p.name for p in models.iterdir())
    result = CliRunner().invoke(app, ["retrain", "--min-new", "9"], env=env(labelled, models))
    assert result.exit_code == 0, result.output
    assert "skipped: 8 new label(s) since the live model, 9 wanted" in result.output
    assert sorted(p.name for p in models.iterdir()) == before


def test_promotion_needs_both_figures_not_worse() -> None:
    live = Figures(version="old", heldout_macro_f1=0.80, feedback_accuracy=0.50, feedback_n=10)
    better = Figures(version="new", heldout_macro_f1=0.81, feedback_accuracy=0.70, feedback_n=10)
    assert decide(live, better, 0.0)[0]
    forgets = better.model_copy(update={"feedback_accuracy": 0.40})
    promoted, reason = decide(live, forgets, 0.0)
    assert not promoted
    assert reason == "feedback hold-out accuracy 0.4000 is below the live model's 0.5000"
    slightly = better.model_copy(update={"heldout_macro_f1": 0.795})
    assert not decide(live, slightly, 0.0)[0]
    assert decide(live, slightly, 0.01)[0]  # within the tolerance
    assert decide(None, slightly, 0.0) == (True, "no live model to compare with")
