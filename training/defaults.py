"""The model life cycle on a fresh machine: bootstrap first, the default model in the background.

1. `ensure_bootstrap` (seconds): with no model at all, train the TF-IDF + logistic
   regression bootstrap (`finsentry.models.bootstrap`) and promote it, so the worker scores
   items within minutes.
2. `train_default` (the better part of an hour on two CPU cores, minutes on a GPU): train the
   default transformer recipe, export it to ONNX int8, and promote the export when its parity
   check passes (>= 99 % label agreement on the held-out test split; else the PyTorch model,
   saying why). A running worker swaps it in between batches. Then the items the bootstrap
   model scored are re-scored (`finsentry.index.rescore`). Progress goes to the models
   folder's `training-status.json`, which the live view shows.

3. `distill_and_promote` (about 25 minutes more on two CPU cores; off unless
   `FINSENTRY_DEFAULT_STUDENT=true`):
   distil the fast student from the default model (4 of its 6 layers, half the feed-forward
   units; ~2x the items/s) and serve the student's int8 export instead, but only when the
   student is within 0.5 points of the default model on every held-out test set and its
   export passes the parity gate; else the default model stays live, and the status says why.

`ensure_default_artifact` is the blocking form of 2 (returns what the worker would serve).
A lock file keeps two processes from training at once.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from finsentry.models.artifact import ArtifactError, list_artifacts, newest_servable
from finsentry.models.registry import (
    MIN_PARITY,
    TrainingStatus,
    promote,
    read_live,
    serving_artifact,
    write_training_status,
)
from finsentry.settings import Settings
from finsentry.training.config import TrainConfig, default_data, default_entity_data

log = logging.getLogger(__name__)

TRAIN_LOCK = ".train.lock"
BOOTSTRAP_LOCK = ".bootstrap.lock"
BOOTSTRAP_VERSIONS = "bootstrap-tfidf-*"
STATUS_EVERY_S = 1.0


def default_config(settings: Settings, *, progress: bool = True) -> TrainConfig:
    """The default recipe: one MiniLM encoder with a sentiment head, a topic head and a
    per-company head (when the data folder has FinEntity), sentiment trained on tweets and
    news (`FINSENTRY_DEFAULT_TRAIN_OVERRIDES` changes fields, e.g. for a quick test run)."""
    fields: dict[str, Any] = {
        "task": "multitask",
        "data": default_data(settings.data_dir, "multitask"),
        "entity_data": default_entity_data(settings.data_dir),
        "company_files": [str(p) for p in settings.company_files],
        "output_dir": settings.models_dir,
        "progress": progress,
    }
    return TrainConfig.model_validate({**fields, **settings.default_train_overrides})


# The student that serves in the default model's place when it is as accurate: 4 of the
# teacher's 6 layers, the 768 of 1,536 feed-forward units a layer that add most on training
# texts, 6 epochs on the teacher's soft labels of every text and company. The best of the
# students tried (BENCHMARKS.md, issue 14, "Per-company soft labels"): within 0.5 points on
# three of the four test sets, 2 of 101 news sentences short on the fourth.
STUDENT_RECIPE: dict[str, Any] = {
    "student_layers": 4,
    "student_ffn": 768,
    "distill_alpha": 0.5,
    "distill_temperature": 2.0,
    "epochs": 6.0,
    "baselines": False,
}


def student_config(settings: Settings, teacher: Path, *, progress: bool = True) -> TrainConfig:
    """The default recipe's data and settings, distilled into `STUDENT_RECIPE`'s student,
    which starts from `teacher`'s layers (`FINSENTRY_DEFAULT_STUDENT_OVERRIDES` changes
    fields, e.g. for a quick test run)."""
    fields = default_config(settings, progress=progress).model_dump(mode="json")
    fields.update(STUDENT_RECIPE, init_from=str(teacher))
    return TrainConfig.model_validate({**fields, **settings.default_student_overrides})


def default_models(models_dir: Path) -> list[Path]:
    """Servable artifacts that are not the bootstrap model (trained transformers, exports)."""
    from finsentry.models.bootstrap import is_bootstrap

    return [
        path
        for path, manifest in list_artifacts(models_dir)
        if manifest.servable() and not is_bootstrap(manifest.version)
    ]


@contextmanager
def _locked(models_dir: Path, name: str) -> Iterator[None]:
    Path(models_dir).mkdir(parents=True, exist_ok=True)
    with (Path(models_dir) / name).open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _has_servable(settings: Settings) -> bool:
    if settings.model_path is not None or read_live(settings.models_dir) is not None:
        return True
    return newest_servable(settings.models_dir) is not None


def needs_default_model(settings: Settings) -> bool:
    """No pinned model, and nothing but the bootstrap model (or nothing at all) to serve:
    the default model must be trained (or, trained already, promoted)."""
    from finsentry.models.bootstrap import is_bootstrap

    if settings.model_path is not None:
        return False
    if not default_models(settings.models_dir):
        return True
    try:
        live = read_live(settings.models_dir)
    except ArtifactError:
        return False
    return live is not None and is_bootstrap(live.live.version)


def ensure_bootstrap(settings: Settings) -> Path:
    """What the worker will serve; with no model at all, trains the bootstrap one (seconds)
    and promotes it."""
    if not _has_servable(settings):
        from finsentry.models.bootstrap import train_bootstrap

        with _locked(settings.models_dir, BOOTSTRAP_LOCK):
            if not _has_servable(settings):
                path = train_bootstrap(
                    settings.data_dir,
                    settings.models_dir,
                    max_samples=settings.bootstrap_max_samples,
                )
                promote(
                    settings.models_dir,
                    str(path),
                    data_dir=settings.data_dir,
                    reason="bootstrap: served while the default model trains",
                )
    return serving_artifact(settings)


class StatusReporter:
    """Writes `TrainingStatus` for the live view, at most every `STATUS_EVERY_S`."""

    def __init__(self, models_dir: Path) -> None:
        self.models_dir = Path(models_dir)
        now = datetime.now(UTC)
        self.status = TrainingStatus(
            phase="training", started_at=now, updated_at=now, pid=os.getpid()
        )
        self._last = 0.0

    def update(self, *, force: bool = True, **fields: Any) -> None:
        self.status = self.status.model_copy(update={**fields, "updated_at": datetime.now(UTC)})
        if force or time.monotonic() - self._last >= STATUS_EVERY_S:
            self._last = time.monotonic()
            try:
                write_training_status(self.models_dir, self.status)
            except OSError as exc:
                log.warning("cannot write the training status: %s", exc)


@contextmanager
def _reporting_progress(
    reporter: StatusReporter, doing: str = "fine-tuning the default model"
) -> Iterator[None]:
    """The training loop's progress bar also reports to `reporter` (steps, ETA, loss)."""
    from tqdm.auto import tqdm

    from finsentry.training import loop

    class ReportingBar(tqdm):  # type: ignore[misc, valid-type]
        def update(self, n: float | None = 1) -> bool | None:
            shown = super().update(n)
            elapsed = self.format_dict.get("elapsed") or 0.0
            rate = self.n / elapsed if elapsed > 0 else 0.0
            eta = (self.total - self.n) / rate if rate > 0 and self.total else None
            postfix = getattr(self, "postfix", None) or ""  # a disabled bar has none
            reporter.update(
                force=False,
                phase="training",
                step=int(self.n),
                total=int(self.total or 0),
                eta_s=eta,
                message=f"{doing} {postfix}".strip(),
            )
            return shown

    original = loop.tqdm
    loop.tqdm = ReportingBar
    try:
        yield
    finally:
        loop.tqdm = original


def export_and_promote(
    settings: Settings, trained: Path, reporter: StatusReporter | None = None
) -> Path:
    """Export `trained` to ONNX int8; promote the export when its parity check passes,
    else the PyTorch model. Returns the promoted artifact."""
    from finsentry.training.export import export_onnx

    if reporter is not None:
        reporter.update(phase="exporting", message="ONNX int8 export and parity check")
    try:
        exported, report = export_onnx(trained, quantize="int8")
    except (ArtifactError, ValueError, RuntimeError) as exc:
        log.warning("int8 export of %s failed (%s): serving the PyTorch model", trained, exc)
        exported, report = None, {"tasks": {}}
    agreement = {t: float(v["label_agreement"]) for t, v in report["tasks"].items()}
    passed = exported is not None and agreement and min(agreement.values()) >= MIN_PARITY
    shown = ", ".join(f"{t} {a:.2%}" for t, a in sorted(agreement.items())) or "no export"
    chosen = exported if passed and exported is not None else trained
    reason = (
        f"default model, int8 export (label agreement {shown})"
        if passed
        else f"default model, PyTorch (int8 parity failed: {shown})"
    )
    if reporter is not None:
        reporter.update(phase="promoting", message=reason)
    entry = promote(settings.models_dir, str(chosen), data_dir=settings.data_dir, reason=reason)
    log.info("promoted %s: %s", entry.version, reason)
    return chosen


def distill_and_promote(
    settings: Settings, teacher: Path, reporter: StatusReporter | None = None
) -> Path | None:
    """Distil the student from `teacher` (`student_config`) and promote its int8 export when
    the student is within 0.5 points of the teacher on every held-out test set and the
    export passes its parity gate. Returns the promoted export, or None (the reason is the
    reporter's message and the log's)."""
    from finsentry.training.distill import run_distillation
    from finsentry.training.export import export_onnx

    def say(phase: str, message: str) -> None:
        log.info(message)
        if reporter is not None:
            reporter.update(phase=phase, message=message, eta_s=None)

    say("distilling", "distilling the fast student from the default model")
    config = student_config(settings, teacher, progress=reporter is not None)
    reporting = (
        _reporting_progress(reporter, "distilling the student")
        if reporter is not None
        else nullcontext()
    )
    with reporting:
        student, summary = run_distillation([teacher], config, compare=False)
    verdict = summary["accuracy_vs_teacher"]
    gaps = ", ".join(f"{task} {100 * gap:+.2f}" for task, gap in sorted(verdict["gaps"].items()))
    if not verdict["within"]:
        say("distilling", f"student not served: not within 0.5 points of the teacher ({gaps})")
        return None
    say("exporting", "ONNX int8 export of the student and parity check")
    try:
        exported, report = export_onnx(student, quantize="int8")
    except (ArtifactError, ValueError, RuntimeError) as exc:
        say("exporting", f"student not served: its int8 export failed ({exc})")
        return None
    agreement = {t: float(v["label_agreement"]) for t, v in report["tasks"].items()}
    shown = ", ".join(f"{t} {a:.2%}" for t, a in sorted(agreement.items()))
    if not agreement or min(agreement.values()) < MIN_PARITY:
        say("exporting", f"student not served: int8 parity failed ({shown})")
        return None
    reason = (
        f"default model: distilled student, within 0.5 points of its teacher on every "
        f"test set (points: {gaps}); int8 export (label agreement {shown})"
    )
    say("promoting", reason)
    promote(settings.models_dir, str(exported), data_dir=settings.data_dir, reason=reason)
    return exported


def rescore_bootstrap_items(
    settings: Settings, reporter: StatusReporter | None = None, *, passes: int = 10
) -> int:
    """Re-score, with the live model, every item a bootstrap model scored. A worker scores
    with the old model until it has loaded the new one, so passes repeat (a few poll
    intervals apart) until none is left. Returns the items updated."""
    from finsentry.es_client import make_es_client
    from finsentry.index.rescore import RescoreQuery, remaining, rescore_as_configured
    from finsentry.models.scorer import load_scorer

    es = make_es_client(settings)
    try:
        if not es.indices.exists(index=settings.items_index):
            return 0
        scorer = load_scorer(settings)
        query = RescoreQuery(index=settings.items_index, from_version=BOOTSTRAP_VERSIONS)
        total = 0
        for attempt in range(passes):
            time.sleep(2 * settings.model_poll_interval + attempt)
            left = remaining(es, query, scorer.version)
            if left == 0:
                break
            if reporter is not None:
                reporter.update(
                    phase="rescoring",
                    message=f"re-scoring {left:,} items the bootstrap model scored",
                    step=0,
                    total=left,
                    eta_s=None,
                )
            total += rescore_as_configured(es, scorer, query, settings).updated
        return total
    finally:
        es.close()


def train_default(
    settings: Settings, *, progress: bool = True, rescore_items: bool = True, student: bool = True
) -> Path:
    """Train the default model (unless one exists), export, promote, re-score the bootstrap
    model's items; then (with `student` and `settings.default_student`) distil the student
    and serve it instead if it is as accurate. Returns the promoted (or present) artifact."""
    reporter = StatusReporter(settings.models_dir)
    with _locked(settings.models_dir, TRAIN_LOCK):
        existing = default_models(settings.models_dir)
        try:
            if existing:
                live = read_live(settings.models_dir)
                from finsentry.models.bootstrap import is_bootstrap

                if live is None or not is_bootstrap(live.live.version):
                    return serving_artifact(settings)
                chosen = export_and_promote(settings, existing[-1], reporter)
            else:
                from finsentry.training.train import run_training

                reporter.update(phase="training", message="loading data and the base model")
                with _reporting_progress(reporter):
                    trained = run_training(default_config(settings, progress=progress))
                chosen = export_and_promote(settings, trained, reporter)
            from finsentry.models.artifact import read_manifest

            version = read_manifest(chosen).version
            reporter.update(version=version)
            if rescore_items:
                count = rescore_bootstrap_items(settings, reporter)
                reporter.update(phase="rescoring", message=f"re-scored {count:,} items")
            done = f"serving {version}"
            if student and settings.default_student and not existing:
                try:
                    student_export = distill_and_promote(settings, trained, reporter)
                except Exception as exc:  # the default model is live already: keep it
                    log.exception("distilling the student failed")
                    reporter.update(message=f"student not served: {type(exc).__name__}: {exc}")
                    student_export = None
                if student_export is None:
                    done += f" ({reporter.status.message})"
                else:
                    chosen = student_export
                    version = read_manifest(chosen).version
                    done = f"serving {version}, the distilled student"
                    reporter.update(version=version)
            reporter.update(phase="done", message=done, eta_s=None)
            return chosen
        except BaseException as exc:
            reporter.update(phase="failed", message=f"{type(exc).__name__}: {exc}"[:300])
            raise


def ensure_default_artifact(settings: Settings, progress: bool = True) -> Path:
    """The artifact the scorer would serve; trains the default one first when there is none
    but the bootstrap model (blocking: about an hour on two CPU cores)."""
    if settings.model_path is not None:
        return Path(settings.model_path)
    if default_models(settings.models_dir):
        try:
            return serving_artifact(settings)
        except ArtifactError:
            pass
    return train_default(settings, progress=progress, rescore_items=False, student=False)
