"""The model registry: validation, promote / rollback, the models CLI, the bootstrap model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from finsentry.messages import CompanyMention, Mention
from finsentry.models.artifact import ArtifactError, read_manifest
from finsentry.models.registry import (
    LIVE_FILE,
    list_models,
    live_path,
    promote,
    read_live,
    rollback,
    serving_artifact,
    validate_artifact,
)
from finsentry.models.scorer import load_scorer
from finsentry.settings import Settings
from tests.support.tiny_artifact import build_tiny_artifact

DATA_DIR = Settings().data_dir


@pytest.fixture(scope="module")
def two_artifacts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    source = tmp_path_factory.mktemp("source-models")
    first = build_tiny_artifact(source, seed=1)
    second = build_tiny_artifact(source, shared_encoder=False, seed=2)
    return first, second


def _models_dir(tmp_path: Path, *artifacts: Path) -> tuple[Path, list[Path]]:
    models = tmp_path / "models"
    models.mkdir()
    copies = [Path(shutil.copytree(a, models / a.name)) for a in artifacts]
    return models, copies


def _settings(models: Path) -> Settings:
    return Settings(models_dir=models, device="cpu", data_dir=DATA_DIR)


def _version(path: Path) -> str:
    return read_manifest(path).version


def test_promote_and_rollback_with_history(tmp_path: Path, two_artifacts) -> None:
    models, (a, b) = _models_dir(tmp_path, *two_artifacts)
    settings = _settings(models)
    # Without a pointer the newest is served (as before the registry).
    assert serving_artifact(settings) == b and read_live(models) is None

    promote(models, _version(a), data_dir=DATA_DIR)
    pointer = read_live(models)
    assert pointer is not None and pointer.live.version == _version(a)
    assert [e.version for e in pointer.history] == [_version(b)]  # what was served before
    assert load_scorer(settings).version == _version(a)
    assert [(m.version, m.live) for m in list_models(models, DATA_DIR)] == [
        (_version(a), True),
        (_version(b), False),
    ]

    promote(models, _version(b)[:6], data_dir=DATA_DIR)  # a unique prefix will do
    assert live_path(models) == b
    assert promote(models, _version(b), data_dir=DATA_DIR).version == _version(b)  # no-op
    assert len(read_live(models).history) == 2  # type: ignore[union-attr]

    assert rollback(models, data_dir=DATA_DIR).version == _version(a)
    assert load_scorer(settings).version == _version(a)
    assert rollback(models, data_dir=DATA_DIR).version == _version(b)
    with pytest.raises(ArtifactError, match="nothing to roll back"):
        rollback(models, data_dir=DATA_DIR)
    assert live_path(models) == b


def _break(path: Path, how: str) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    if how == "missing files":
        (path / "topic" / "model.safetensors").unlink()
    elif how == "wrong labels":
        labels = manifest["tasks"]["topic"]["labels"]
        manifest["tasks"]["topic"]["labels"] = [*labels[:-1], "Crypto Memes"]
    elif how in ("failed parity", "no parity"):
        manifest["runtime"] = "onnx"
        manifest["parent_version"] = "0123456789ab"
        for task in manifest["tasks"].values():
            task.update(onnx_file="model.onnx", onnx_output="logits")
        (path / "model.onnx").write_bytes(b"not really a graph")
        if how == "failed parity":
            report = {"tasks": {"sentiment": {"label_agreement": 0.995},
                                "topic": {"label_agreement": 0.97}}}  # fmt: skip
            (path / "parity.json").write_text(json.dumps(report))
    elif how == "sentiment labels":
        manifest["tasks"]["sentiment"]["labels"] = ["negative", "neutral", "positive"]
    (path / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("missing files", "incomplete: missing topic/model.safetensors"),
        ("wrong labels", "topic labels .* are not the expected"),
        ("sentiment labels", "sentiment labels"),
        ("failed parity", r"failed its parity check \(label agreement sentiment 99.50%, topic"),
        ("no parity", "without a parity record"),
    ],
)
def test_a_bad_artifact_is_refused_and_the_live_one_stays(
    tmp_path: Path, two_artifacts, how: str, message: str
) -> None:
    models, (good, bad) = _models_dir(tmp_path, *two_artifacts)
    promote(models, _version(good), data_dir=DATA_DIR)
    before = (models / LIVE_FILE).read_bytes()
    _break(bad, how)
    with pytest.raises(ArtifactError, match=message):
        validate_artifact(bad, DATA_DIR)
    with pytest.raises(ArtifactError, match=message):
        promote(models, bad.name, data_dir=DATA_DIR)
    assert (models / LIVE_FILE).read_bytes() == before
    assert load_scorer(_settings(models)).version == _version(good)
    listed = {m.version: m for m in list_models(models, DATA_DIR)}
    assert listed[_version(good)].live and listed[_version(good)].problem is None
    assert listed[read_manifest(bad).version].problem is not None


def test_a_vanished_live_model_is_a_clear_error(tmp_path: Path, two_artifacts) -> None:
    models, (a, _) = _models_dir(tmp_path, *two_artifacts)
    promote(models, _version(a), data_dir=DATA_DIR)
    shutil.rmtree(a)
    with pytest.raises(ArtifactError, match=r"the live model .* is gone"):
        load_scorer(_settings(models))


def test_models_cli(tmp_path: Path, two_artifacts, monkeypatch: pytest.MonkeyPatch) -> None:
    from finsentry.cli import app

    models, (a, b) = _models_dir(tmp_path, *two_artifacts)
    monkeypatch.setenv("FINSENTRY_MODELS_DIR", str(models))
    runner = CliRunner()

    listed = runner.invoke(app, ["models", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    rows = [json.loads(line) for line in listed.output.splitlines()]
    assert [(r["version"], r["live"]) for r in rows] == [(_version(a), False), (_version(b), True)]

    promoted = runner.invoke(app, ["models", "promote", _version(a)])
    assert promoted.exit_code == 0 and f"live: {_version(a)}" in promoted.output
    table = runner.invoke(app, ["models", "list"], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and _version(a) in table.output

    _break(b, "wrong labels")
    refused = runner.invoke(app, ["models", "promote", _version(b)])
    assert refused.exit_code == 1 and "refused" in refused.output
    unknown = runner.invoke(app, ["models", "promote", "ffffffffffff"])
    assert unknown.exit_code == 1 and "no artifact 'ffffffffffff'" in unknown.output
    assert live_path(models) == a

    back = runner.invoke(app, ["models", "rollback"])
    # The one served before the first promotion is b, which is now broken: refused too.
    assert back.exit_code == 1 and "labels" in back.output
    assert live_path(models) == a


def test_bootstrap_model_scores_and_is_honestly_named(tmp_path: Path) -> None:
    from finsentry.models.bootstrap import train_bootstrap
    from finsentry.models.linear_runtime import LinearScorer

    path = train_bootstrap(DATA_DIR, tmp_path, max_samples=400)
    manifest = read_manifest(path)
    assert manifest.version.startswith("bootstrap-tfidf-") and manifest.runtime == "linear"
    metrics = json.loads((path / "metrics.json").read_text())
    card = (path / "README.md").read_text()
    for task in ("sentiment", "topic"):
        accuracy = metrics["tasks"][task]["test"]["accuracy"]
        assert 0.0 < accuracy <= 1.0 and f"{accuracy:.3f}" in card
        assert metrics["tasks"][task]["reconstruction_agreement"] >= 0.995

    promote(tmp_path, manifest.version, data_dir=DATA_DIR)
    scorer = load_scorer(_settings(tmp_path))
    assert isinstance(scorer, LinearScorer) and scorer.version == manifest.version
    texts = ["$AAPL beats estimates and raises guidance", "Fed holds rates steady"]
    companies = [
        [CompanyMention(ticker="AAPL", name="Apple", mentions=[Mention(start=0, end=5)])],
        [],
    ]
    scores = scorer.score(texts, companies)
    assert len(scores) == 2 and scores[1].companies == []
    (company,) = scores[0].companies
    assert company.source == "text" and company.ticker == "AAPL"
    assert company.sentiment == scores[0].sentiment.label
    assert company.mentions == [Mention(start=0, end=5)]
    assert sum(scores[0].topic.probs.values()) == pytest.approx(1.0, abs=1e-4)

    (path / "topic" / "weights.npz").unlink()
    with pytest.raises(ArtifactError, match=r"incomplete: missing topic/weights\.npz"):
        validate_artifact(path, DATA_DIR)
