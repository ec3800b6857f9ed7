"""The contract between the stream and the models: a Scorer turns a batch of texts into
topic and sentiment scores. `load_scorer` picks the artifact to serve from the settings."""

from __future__ import annotations

from typing import Protocol

from finsentry.messages import ItemScores
from finsentry.settings import Settings


class Scorer(Protocol):
    """Scores batches of texts. Called from an executor thread, never on the event loop."""

    version: str

    def score(self, texts: list[str]) -> list[ItemScores]: ...


def load_scorer(settings: Settings) -> Scorer:
    """The newest artifact in `settings.models_dir`, or `settings.model_path` when set.

    Raises `finsentry.models.artifact.ArtifactError` (saying how to get one) when there is
    no servable artifact. PyTorch artifacts run on CUDA in bf16/fp16 when present (see
    `settings.device`), else on CPU; ONNX artifacts run on ONNX Runtime."""
    from finsentry.models.artifact import read_manifest, resolve_artifact, validate_for_serving
    from finsentry.models.runtime import ArtifactScorer

    path = resolve_artifact(settings.models_dir, settings.model_path)
    validate_for_serving(read_manifest(path), path)
    return ArtifactScorer(path, device=settings.device, batch_size=settings.model_batch or None)
