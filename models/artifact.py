"""Model artifacts: a versioned folder with a `manifest.json` that says what is inside.

Layout of one artifact (`<models_dir>/<UTC stamp>-<version>/`)::

    manifest.json       this file's schema is `Manifest` below
    <task>/             one `save_pretrained` sequence-classification checkpoint per task
                        (config.json with id2label, model.safetensors, tokenizer files);
                        with `shared_encoder` the checkpoints hold the same encoder weights
                        (one encoder, one head per task) and the encoder runs once per batch
    entity/             optional per-company head on the shared encoder (`EntityHead`):
                        head.safetensors + config.json (labels, hidden size)
    model.onnx          ONNX runtime only: one graph, input ids in, `logits_<task>` out
                        (with a per-company head also `entity_mask`, `entity_row` in
                        and `logits_entity` out)
    metrics.json, README.md, *.png   training report (training artifacts)

The version is a hash of the weights, the training data fingerprint and the parameters.
Folders are written under a hidden staging name and renamed into place, so a reader never
sees half an artifact.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from finsentry.models.labels import SENTIMENT, SENTIMENT_LABELS, TASKS
from finsentry.models.text import Preprocess

MANIFEST = "manifest.json"
FORMAT = "finsentry-artifact"

HOW_TO_GET_ONE = (
    "train one with `finsentry train --task multitask` (writes into FINSENTRY_MODELS_DIR), "
    "or point FINSENTRY_MODEL_PATH at an existing artifact folder"
)


class ArtifactError(RuntimeError):
    """No usable artifact, or one that is malformed."""


class TaskSpec(BaseModel):
    """One classification task inside an artifact."""

    path: str = Field(description="Checkpoint folder, relative to the artifact.")
    labels: list[str] = Field(description="Label names in logit order.")
    tokenizer: str = Field(description="Tokenizer folder, relative to the artifact.")
    onnx_file: str | None = Field(None, description="ONNX graph holding this task's head.")
    onnx_output: str | None = Field(None, description="Output name of this task's logits.")


class EntityHeadSpec(BaseModel):
    """The per-company sentiment head: reads the shared encoder's output over mentions."""

    path: str = Field("entity", description="Folder of head.safetensors, relative.")
    labels: list[str] = Field(description="Label names in logit order.")
    hidden: int = Field(ge=1, description="Encoder hidden size.")
    onnx_output: str | None = Field(None, description="Output name of its logits (ONNX).")


class Manifest(BaseModel):
    format: Literal["finsentry-artifact"] = FORMAT
    format_version: int = 1
    version: str
    created_at: datetime
    runtime: Literal["torch", "onnx", "linear"] = "torch"
    shared_encoder: bool = Field(
        False, description="All tasks share one encoder (multitask); it runs once per batch."
    )
    max_length: int = Field(128, ge=8, le=8192)
    preprocess: Preprocess = Field("none", description="Text normalisation before tokenising.")
    tasks: dict[str, TaskSpec]
    entity: EntityHeadSpec | None = Field(None, description="Per-company head, if trained.")
    base_model: str = ""
    parent_version: str | None = Field(None, description="The artifact this was exported from.")
    quantization: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)

    def servable(self) -> bool:
        """Has every task the stream needs."""
        return all(t in self.tasks for t in TASKS)


def read_manifest(path: Path) -> Manifest:
    file = Path(path) / MANIFEST
    try:
        return Manifest.model_validate_json(file.read_bytes())
    except FileNotFoundError as exc:
        raise ArtifactError(
            f"{path} is not a model artifact (no {MANIFEST}); {HOW_TO_GET_ONE}"
        ) from exc
    except ValueError as exc:
        raise ArtifactError(f"{file} is malformed: {exc}") from exc


def list_artifacts(models_dir: Path) -> list[tuple[Path, Manifest]]:
    """Readable artifacts directly under `models_dir`, oldest first."""
    found: list[tuple[Path, Manifest]] = []
    if not Path(models_dir).is_dir():
        return found
    for child in Path(models_dir).iterdir():
        if child.name.startswith(".") or not (child / MANIFEST).is_file():
            continue
        try:
            found.append((child, read_manifest(child)))
        except ArtifactError:
            continue
    return sorted(found, key=lambda pm: (pm[1].created_at, pm[0].name))


def newest_servable(models_dir: Path) -> Path | None:
    """The newest artifact under `models_dir` that has both the topic and sentiment tasks."""
    servable = [path for path, manifest in list_artifacts(models_dir) if manifest.servable()]
    return servable[-1] if servable else None


def resolve_artifact(models_dir: Path, model_path: Path | None) -> Path:
    """`model_path` when given, else the newest servable artifact in `models_dir`."""
    if model_path is not None:
        if not (Path(model_path) / MANIFEST).is_file():
            raise ArtifactError(f"FINSENTRY_MODEL_PATH={model_path} is not an artifact folder")
        return Path(model_path)
    found = newest_servable(models_dir)
    if found is None:
        raise ArtifactError(f"no model artifact in {models_dir}: {HOW_TO_GET_ONE}")
    return found


def validate_for_serving(manifest: Manifest, where: Path) -> None:
    missing = [t for t in TASKS if t not in manifest.tasks]
    if missing:
        raise ArtifactError(
            f"artifact {where} lacks task(s) {missing}; the stream needs both topic and "
            f"sentiment: {HOW_TO_GET_ONE}"
        )
    if sorted(manifest.tasks[SENTIMENT].labels) != sorted(SENTIMENT_LABELS):
        raise ArtifactError(
            f"artifact {where}: sentiment labels {manifest.tasks[SENTIMENT].labels} must be "
            f"exactly {list(SENTIMENT_LABELS)}"
        )
    if manifest.entity is not None and sorted(manifest.entity.labels) != sorted(SENTIMENT_LABELS):
        raise ArtifactError(
            f"artifact {where}: per-company labels {manifest.entity.labels} must be "
            f"exactly {list(SENTIMENT_LABELS)}"
        )


def hash_files(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for file in sorted(files):
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def compute_version(
    weight_files: list[Path], data: Mapping[str, Any], params: Mapping[str, Any]
) -> str:
    """12 hex digits of sha256 over the weights, the data fingerprint and the parameters."""
    digest = hashlib.sha256()
    digest.update(hash_files(weight_files).encode())
    digest.update(json.dumps(data, sort_keys=True, default=str).encode())
    digest.update(json.dumps(params, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:12]


def weight_files(root: Path) -> list[Path]:
    patterns = ("*.safetensors", "*.bin", "*.onnx", "*.onnx.data")
    return sorted(p for pattern in patterns for p in Path(root).rglob(pattern))


class Staging:
    """A hidden folder that becomes an artifact when `finish` writes its manifest."""

    def __init__(self, models_dir: Path) -> None:
        self.models_dir = Path(models_dir)
        self.path = self.models_dir / f".staging-{uuid.uuid4().hex}"
        self.final: Path | None = None

    def manifest(
        self, fields: dict[str, Any], *, data: Mapping[str, Any], params: Mapping[str, Any]
    ) -> Manifest:
        """The manifest for what is in the folder now (the version hashes its weights)."""
        version = compute_version(weight_files(self.path), data, params)
        return Manifest.model_validate(
            {
                **fields,
                "version": version,
                "created_at": datetime.now(UTC),
                "data": dict(data),
                "params": dict(params),
            }
        )

    def commit(self, manifest: Manifest) -> Path:
        """Write the manifest and move the folder into place."""
        (self.path / MANIFEST).write_text(manifest.model_dump_json(indent=2), encoding="utf-8")
        final = self.models_dir / f"{manifest.created_at:%Y%m%dT%H%M%S}-{manifest.version}"
        if final.exists():
            # Same second, same weights, data and parameters: that artifact is this one.
            shutil.rmtree(self.path)
        else:
            self.path.rename(final)
        self.final = final
        return final

    def finish(
        self, fields: dict[str, Any], *, data: Mapping[str, Any], params: Mapping[str, Any]
    ) -> tuple[Path, Manifest]:
        manifest = self.manifest(fields, data=data, params=params)
        return self.commit(manifest), manifest


@contextmanager
def staging(models_dir: Path) -> Iterator[Staging]:
    """Write an artifact atomically: the staging folder is removed if anything fails."""
    stage = Staging(models_dir)
    stage.path.mkdir(parents=True)
    try:
        yield stage
    finally:
        if stage.final is None:
            shutil.rmtree(stage.path, ignore_errors=True)


def save_task_models(
    root: Path,
    task_models: Mapping[str, Any],
    tokenizer: Any,
) -> dict[str, TaskSpec]:
    """`save_pretrained` each task's model (label names in its config) and the tokenizer.

    The tokenizer is saved in every task folder so each is a complete checkpoint; the
    manifest names the first one as the tokenizer all tasks share."""
    from finsentry.models.runtime import quiet_transformers

    specs: dict[str, TaskSpec] = {}
    first: str | None = None
    for task, model in task_models.items():
        folder = Path(root) / task
        with quiet_transformers():
            model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        first = first or task
        labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
        specs[task] = TaskSpec(path=task, labels=labels, tokenizer=first)
    return specs


def save_entity_head(root: Path, head: Any, labels: list[str]) -> EntityHeadSpec:
    """The per-company head's weights (safetensors) and its spec."""
    from safetensors.torch import save_file

    spec = EntityHeadSpec(labels=list(labels), hidden=head.hidden)
    folder = Path(root) / spec.path
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in head.state_dict().items()}
    save_file(state, str(folder / "head.safetensors"))
    (folder / "config.json").write_text(spec.model_dump_json(indent=2), encoding="utf-8")
    return spec


def load_entity_head(root: Path, spec: EntityHeadSpec) -> Any:
    """An `EntityHead` with the artifact's weights (eval mode)."""
    from safetensors.torch import load_file

    from finsentry.models.heads import EntityHead

    file = Path(root) / spec.path / "head.safetensors"
    if not file.is_file():
        raise ArtifactError(f"artifact {root}: per-company head weights {file} are missing")
    head = EntityHead(spec.hidden, len(spec.labels))
    head.load_state_dict(load_file(str(file)))
    return head.eval()
