"""Which model is live: a pointer file in the models folder, with history for rollbacks.

`<models_dir>/live.json` (a `LivePointer`) names the live artifact and the ones that were
live before it. It is replaced atomically (write a temporary file, `os.replace`), so a
worker polling it never reads half a pointer; promotions and rollbacks take a lock so two
of them never interleave. Without a pointer the newest servable artifact is served (as
before the registry existed).

An artifact is promoted only when it passes `validate_artifact`: a readable manifest, the
files its runtime needs, both tasks with exactly the expected label sets, and for an ONNX
export a recorded parity check with at least `MIN_PARITY` label agreement per task. A bad
artifact is refused with an `ArtifactError` that says why, and the live one stays live.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from finsentry.models.artifact import (
    ArtifactError,
    Manifest,
    list_artifacts,
    newest_servable,
    read_manifest,
    validate_for_serving,
)
from finsentry.models.labels import SENTIMENT, SENTIMENT_LABELS, TASKS, TOPIC, topic_label_names
from finsentry.settings import Settings

LIVE_FILE = "live.json"
LOCK_FILE = ".registry.lock"
PARITY_FILE = "parity.json"
MIN_PARITY = 0.99
_TORCH_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")


class LiveEntry(BaseModel):
    version: str
    path: str = Field(description="Artifact folder, relative to the models folder if inside.")
    promoted_at: datetime
    reason: str = ""


class LivePointer(BaseModel):
    """The live artifact and, most recent last, the ones that were live before it."""

    live: LiveEntry
    history: list[LiveEntry] = Field(default_factory=list)


class ModelInfo(BaseModel):
    """One artifact as `finsentry models list` shows it."""

    version: str
    path: Path
    runtime: str
    created_at: datetime
    parent_version: str | None = None
    accuracy: dict[str, float] = Field(default_factory=dict, description="Task -> test acc.")
    macro_f1: dict[str, float] = Field(default_factory=dict)
    parity: dict[str, float] = Field(default_factory=dict, description="Task -> agreement.")
    live: bool = False
    problem: str | None = Field(None, description="Why it cannot be promoted, if it cannot.")


# --- validation ------------------------------------------------------------------------------


def expected_labels(data_dir: Path) -> dict[str, set[str]]:
    """The label sets the stream serves: the three sentiments, and the topic data set's."""
    expected = {SENTIMENT: set(SENTIMENT_LABELS)}
    # Without the topic label map to compare with, any non-empty topic label set is served.
    with contextlib.suppress(OSError, ValueError, KeyError):
        expected[TOPIC] = set(topic_label_names(Path(data_dir)))
    return expected


def _missing_files(root: Path, manifest: Manifest) -> list[str]:
    missing: list[str] = []
    for task, spec in manifest.tasks.items():
        if manifest.runtime == "linear":
            from finsentry.models.linear_runtime import LINEAR_FILES

            needed = [Path(spec.path) / name for name in LINEAR_FILES]
        else:
            tokenizer = root / spec.tokenizer
            if not any((tokenizer / name).is_file() for name in _TOKENIZER_FILES):
                missing.append(f"{spec.tokenizer}/tokenizer.json (task {task})")
            needed = [Path(spec.path) / "config.json"]
            if manifest.runtime == "onnx":
                needed.append(Path(spec.onnx_file or "model.onnx"))
            elif not any((root / spec.path / w).is_file() for w in _TORCH_WEIGHTS):
                missing.append(f"{spec.path}/model.safetensors (task {task})")
        missing += [f"{p} (task {task})" for p in needed if not (root / p).is_file()]
    entity = getattr(manifest, "entity", None)  # the per-company head (PyTorch weights)
    if entity is not None and manifest.runtime == "torch":
        head = Path(entity.path) / "head.safetensors"
        if not (root / head).is_file():
            missing.append(f"{head} (per-company head)")
    return sorted(set(missing))


def _config_labels(root: Path, path: str) -> list[str] | None:
    try:
        config = json.loads((root / path / "config.json").read_text(encoding="utf-8"))
        id2label = config["id2label"]
        return [id2label[str(i)] for i in range(len(id2label))]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read_parity(root: Path) -> dict[str, float]:
    """Task -> label agreement with the parent model, from the export's parity.json."""
    try:
        report = json.loads((Path(root) / PARITY_FILE).read_text(encoding="utf-8"))
        return {t: float(v["label_agreement"]) for t, v in report["tasks"].items()}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def validate_artifact(root: Path, data_dir: Path) -> Manifest:
    """The artifact's manifest if it can be served; else an ArtifactError saying why."""
    root = Path(root)
    manifest = read_manifest(root)
    validate_for_serving(manifest, root)
    missing = _missing_files(root, manifest)
    if missing:
        raise ArtifactError(f"artifact {root} is incomplete: missing {', '.join(missing)}")
    for task, wanted in expected_labels(data_dir).items():
        labels = manifest.tasks[task].labels
        if set(labels) != wanted or len(labels) != len(wanted):
            raise ArtifactError(
                f"artifact {root}: {task} labels {sorted(labels)} are not the expected "
                f"{sorted(wanted)}"
            )
    if manifest.runtime != "linear":
        for task, spec in manifest.tasks.items():
            in_config = _config_labels(root, spec.path)
            if in_config is not None and in_config != spec.labels:
                raise ArtifactError(
                    f"artifact {root}: {task} labels in {spec.path}/config.json {in_config} "
                    f"differ from the manifest's {spec.labels}"
                )
    if manifest.runtime == "onnx":
        parity = read_parity(root)
        if not parity:
            raise ArtifactError(
                f"artifact {root} is an ONNX export without a parity record ({PARITY_FILE}); "
                "re-export it with `finsentry export`"
            )
        failed = {t: a for t, a in parity.items() if a < MIN_PARITY}
        if failed or not all(t in parity for t in TASKS):
            shown = ", ".join(f"{t} {a:.2%}" for t, a in sorted(parity.items()))
            raise ArtifactError(
                f"artifact {root} failed its parity check (label agreement {shown}; "
                f"at least {MIN_PARITY:.0%} per task needed)"
            )
    return manifest


# --- finding artifacts -----------------------------------------------------------------------


def all_artifacts(models_dir: Path) -> list[tuple[Path, Manifest]]:
    """Artifacts in `models_dir` and in their `exports/` folders, oldest first."""
    found = list_artifacts(models_dir)
    for path, _ in list(found):
        found += list_artifacts(path / "exports")
    return sorted(found, key=lambda pm: (pm[1].created_at, pm[0].name))


def find_artifact(models_dir: Path, ref: str) -> Path:
    """An artifact by version, version prefix, folder name or path."""
    as_path = Path(ref)
    if (as_path / "manifest.json").is_file():
        return as_path
    artifacts = all_artifacts(models_dir)
    for exact in (
        [p for p, m in artifacts if m.version == ref or p.name == ref],
        [p for p, m in artifacts if m.version.startswith(ref)],
    ):
        if len(exact) == 1:
            return exact[0]
        if len(exact) > 1:
            raise ArtifactError(f"{ref!r} matches several artifacts: {[p.name for p in exact]}")
    raise ArtifactError(f"no artifact {ref!r} in {models_dir} (see `finsentry models list`)")


def _stored_path(models_dir: Path, path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path(models_dir).resolve()))
    except ValueError:
        return str(Path(path).resolve())


def entry_path(models_dir: Path, entry: LiveEntry) -> Path:
    path = Path(entry.path)
    return path if path.is_absolute() else Path(models_dir) / path


# --- the pointer ------------------------------------------------------------------------------


def read_live(models_dir: Path) -> LivePointer | None:
    file = Path(models_dir) / LIVE_FILE
    try:
        return LivePointer.model_validate_json(file.read_bytes())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise ArtifactError(f"{file} is malformed: {exc}") from exc


def write_live(models_dir: Path, pointer: LivePointer) -> None:
    """Replace the pointer atomically (readers see the old one or the new one)."""
    Path(models_dir).mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".live-", suffix=".json", dir=models_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(pointer.model_dump_json(indent=2))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, Path(models_dir) / LIVE_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def registry_lock(models_dir: Path) -> Iterator[None]:
    Path(models_dir).mkdir(parents=True, exist_ok=True)
    with (Path(models_dir) / LOCK_FILE).open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def live_path(models_dir: Path) -> Path | None:
    """The promoted artifact's folder, or None when nothing was promoted."""
    pointer = read_live(models_dir)
    return entry_path(models_dir, pointer.live) if pointer is not None else None


def promote(models_dir: Path, ref: str, *, data_dir: Path, reason: str = "") -> LiveEntry:
    """Make an artifact live after validating it; the previous live one goes into history.

    Raises ArtifactError (and changes nothing) when the artifact cannot be served."""
    path = find_artifact(models_dir, ref)
    manifest = validate_artifact(path, data_dir)
    with registry_lock(models_dir):
        pointer = read_live(models_dir)
        now = datetime.now(UTC)
        entry = LiveEntry(
            version=manifest.version,
            path=_stored_path(models_dir, path),
            promoted_at=now,
            reason=reason,
        )
        if pointer is None:
            history = []
            served = newest_servable(models_dir)  # what was served without a pointer
            if served is not None and served.resolve() != path.resolve():
                implicit = read_manifest(served)
                history.append(
                    LiveEntry(
                        version=implicit.version,
                        path=_stored_path(models_dir, served),
                        promoted_at=implicit.created_at,
                        reason="newest artifact (served before any promotion)",
                    )
                )
        else:
            if pointer.live.version == manifest.version:
                return pointer.live
            history = [*pointer.history, pointer.live]
        write_live(models_dir, LivePointer(live=entry, history=history))
        return entry


def rollback(models_dir: Path, *, data_dir: Path) -> LiveEntry:
    """Make the previously live artifact live again (it is validated first)."""
    with registry_lock(models_dir):
        pointer = read_live(models_dir)
        if pointer is None or not pointer.history:
            raise ArtifactError(f"nothing to roll back to: no earlier live model in {models_dir}")
        previous = pointer.history[-1]
        validate_artifact(entry_path(models_dir, previous), data_dir)
        reason = f"rollback from {pointer.live.version}"
        entry = previous.model_copy(update={"promoted_at": datetime.now(UTC), "reason": reason})
        write_live(models_dir, LivePointer(live=entry, history=pointer.history[:-1]))
        return entry


# --- listing -----------------------------------------------------------------------------------


def _test_metrics(root: Path) -> tuple[dict[str, float], dict[str, float]]:
    try:
        metrics = json.loads((root / "metrics.json").read_text(encoding="utf-8"))
        tasks: dict[str, Any] = metrics["tasks"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}, {}
    accuracy = {t: float(v["test"]["accuracy"]) for t, v in tasks.items() if "test" in v}
    f1 = {t: float(v["test"]["macro_f1"]) for t, v in tasks.items() if "test" in v}
    return accuracy, f1


def list_models(models_dir: Path, data_dir: Path) -> list[ModelInfo]:
    """Every artifact with its test metrics (exports: their parent's and their parity),
    whether it is live, and why it could not be promoted (if it could not)."""
    try:
        live = live_path(models_dir)
    except ArtifactError:
        live = None
    if live is None:
        live = newest_servable(models_dir)
    artifacts = all_artifacts(models_dir)
    by_version = {m.version: p for p, m in artifacts}
    out = []
    for path, manifest in artifacts:
        accuracy, f1 = _test_metrics(path)
        parent = by_version.get(manifest.parent_version or "")
        if not accuracy and parent is not None:
            accuracy, f1 = _test_metrics(parent)
        try:
            validate_artifact(path, data_dir)
            problem = None
        except ArtifactError as exc:
            problem = str(exc)
        out.append(
            ModelInfo(
                version=manifest.version,
                path=path,
                runtime=manifest.runtime,
                created_at=manifest.created_at,
                parent_version=manifest.parent_version,
                accuracy=accuracy,
                macro_f1=f1,
                parity=read_parity(path),
                live=live is not None and path.resolve() == live.resolve(),
                problem=problem,
            )
        )
    return out


# --- serving -----------------------------------------------------------------------------------


def serving_artifact(settings: Settings) -> Path:
    """What a worker serves: FINSENTRY_MODEL_PATH, else the live artifact, else the newest.

    On CUDA an int8 ONNX export gives way to its PyTorch parent (served in bf16)."""
    if settings.model_path is not None:
        if not (Path(settings.model_path) / "manifest.json").is_file():
            raise ArtifactError(
                f"FINSENTRY_MODEL_PATH={settings.model_path} is not an artifact folder"
            )
        return Path(settings.model_path)
    path = live_path(settings.models_dir)
    if path is None:
        from finsentry.models.artifact import resolve_artifact

        path = resolve_artifact(settings.models_dir, None)
    elif not (path / "manifest.json").is_file():
        raise ArtifactError(
            f"the live model {path} is gone; promote another (`finsentry models promote`) "
            "or roll back (`finsentry models rollback`)"
        )
    return for_device(settings.models_dir, path, settings.device)


def _cuda_serves(device: str) -> bool:
    if device == "cpu":
        return False
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def for_device(models_dir: Path, path: Path, device: str) -> Path:
    """The ONNX int8 export is what a CPU serves; on CUDA its PyTorch parent in bf16."""
    manifest = read_manifest(path)
    if manifest.runtime != "onnx" or manifest.parent_version is None or not _cuda_serves(device):
        return path
    candidates = [path.parent.parent] if path.parent.name == "exports" else []
    candidates += [p for p, m in list_artifacts(models_dir) if m.version == manifest.parent_version]
    for parent in candidates:
        if (parent / "manifest.json").is_file():
            found = read_manifest(parent)
            if found.version == manifest.parent_version and found.runtime == "torch":
                return parent
    return path


def load_artifact_scorer(path: Path, settings: Settings) -> Any:
    """A `Scorer` for the artifact at `path`, validated first (ArtifactError if unusable)."""
    manifest = validate_artifact(path, settings.data_dir)
    if manifest.runtime == "linear":
        from finsentry.models.linear_runtime import LinearScorer

        return LinearScorer(path)
    from finsentry.models.runtime import ArtifactScorer

    return ArtifactScorer(
        path,
        device=settings.device,
        batch_size=settings.model_batch or None,
        onnx_spinning=settings.onnx_spinning,
    )


# --- background training status (shown by the live view) -------------------------------------

TRAINING_STATUS_FILE = "training-status.json"


class TrainingStatus(BaseModel):
    """What the background training of the default model is doing, for the live view."""

    phase: str = Field(
        description="bootstrap | training | exporting | promoting | rescoring | done | failed"
    )
    message: str = ""
    step: int = 0
    total: int = 0
    started_at: datetime
    updated_at: datetime
    eta_s: float | None = None
    pid: int | None = None
    version: str | None = Field(None, description="The model it produced, once it has one.")

    @property
    def fraction(self) -> float:
        return min(1.0, self.step / self.total) if self.total else 0.0


def read_training_status(models_dir: Path) -> TrainingStatus | None:
    try:
        return TrainingStatus.model_validate_json(
            (Path(models_dir) / TRAINING_STATUS_FILE).read_bytes()
        )
    except (OSError, ValueError):
        return None


def write_training_status(models_dir: Path, status: TrainingStatus) -> None:
    """Atomic, like the live pointer: the live view never reads half a status."""
    Path(models_dir).mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".status-", suffix=".json", dir=models_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(status.model_dump_json())
        os.replace(tmp, Path(models_dir) / TRAINING_STATUS_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
