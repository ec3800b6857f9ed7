"""The contract between the stream and the models: a Scorer turns a batch of texts into
topic and sentiment scores. `load_scorer` picks the artifact to serve from the settings."""

from __future__ import annotations

from typing import Protocol

from finsentry.messages import CompanyMention, ItemScores
from finsentry.settings import Settings


class Scorer(Protocol):
    """Scores batches of texts. Called from an executor thread, never on the event loop.

    `companies[i]` are the companies the entity linker found in `texts[i]` (with character
    offsets into that text); each gets its own verdict in `ItemScores.companies` (from the
    per-company head where the artifact has one, else the text's own)."""

    version: str

    def score(
        self, texts: list[str], companies: list[list[CompanyMention]] | None = None
    ) -> list[ItemScores]: ...


def load_scorer(settings: Settings) -> Scorer:
    """`settings.model_path` when set, else the live artifact (`finsentry models promote`),
    else the newest in `settings.models_dir` (`finsentry.models.registry.serving_artifact`).

    Raises `finsentry.models.artifact.ArtifactError` (saying how to get one) when there is
    no servable artifact. PyTorch artifacts run on CUDA in bf16/fp16 when present (see
    `settings.device`), else on CPU; ONNX artifacts run on ONNX Runtime (on CUDA an int8
    export gives way to its PyTorch parent); linear (bootstrap) artifacts on scikit-learn."""
    from finsentry.models.chunking import with_chunking
    from finsentry.models.registry import load_artifact_scorer, serving_artifact

    # Texts over the model window are scored whole, in chunks (models/chunking.py).
    return with_chunking(load_artifact_scorer(serving_artifact(settings), settings))
