"""The default model's life cycle ends with the fast student: distilled from the default
model, and served in its place only when it is as accurate (within 0.5 points on every
held-out test set) and its int8 export passes the parity gate; else the default model stays
live and the training status says why. Tiny models: the accuracy verdict itself is the
boundary faked here (its arithmetic has its own tests in test_training.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finsentry.models.artifact import read_manifest
from finsentry.models.registry import read_live, read_training_status
from finsentry.settings import Settings
from finsentry.training import defaults, distill
from finsentry.training.defaults import distill_and_promote, train_default
from tests.support.tiny_artifact import build_tiny_base

TINY_TRAINING = {
    "epochs": 1,
    "max_train_samples": 120,
    "baselines": False,
    "batch_size": 16,
    "eval_batch_size": 64,
    "max_length": 64,
    "entity_data": None,  # the per-company soft labels have their own test (test_entity_head)
}
TINY_STUDENT = {"student_layers": 1, "student_ffn": 16}


def _layers(artifact: Path) -> tuple[int, int]:
    manifest = read_manifest(artifact)
    config = json.loads((artifact / next(iter(manifest.tasks)) / "config.json").read_text())
    return config["num_hidden_layers"], config["intermediate_size"]


def test_the_student_serves_only_when_it_is_as_accurate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = build_tiny_base(tmp_path / "tiny-base")
    models = tmp_path / "models"
    settings = Settings(
        models_dir=models,
        device="cpu",
        default_student=True,
        default_train_overrides={**TINY_TRAINING, "base_model": str(base)},
        default_student_overrides=TINY_STUDENT,
    )
    # Tiny random models agree with their int8 exports less than real ones do.
    monkeypatch.setattr(defaults, "MIN_PARITY", 0.5)

    # Not within the bar: the default model's export stays live; the status says why.
    monkeypatch.setattr(distill, "within_bar", lambda gaps, max_loss=0.005: False)
    served = train_default(settings, progress=False, rescore_items=False)
    live = read_live(models)
    assert live is not None and live.live.version == read_manifest(served).version
    assert _layers(served.parent.parent) == (2, 64)  # the default model's export
    status = read_training_status(models)
    assert status is not None and status.phase == "done"
    assert "student not served: not within 0.5 points of the teacher" in status.message
    students = [
        p for p in models.iterdir() if (p / "distillation.json").is_file()
    ]  # it was trained (and kept, for a look), not promoted
    assert len(students) == 1 and _layers(students[0]) == (1, 16)

    # Within the bar: the student's int8 export is promoted over the default model's.
    monkeypatch.setattr(distill, "within_bar", lambda gaps, max_loss=0.005: True)
    teacher = served.parent.parent
    student = distill_and_promote(settings, teacher)
    assert student is not None and read_manifest(student).runtime == "onnx"
    assert _layers(student.parent.parent) == (1, 16)
    live = read_live(models)
    assert live is not None and live.live.version == read_manifest(student).version
    assert live.live.reason.startswith("default model: distilled student, within 0.5 points")
    assert [e.version for e in live.history][-1] == read_manifest(served).version
