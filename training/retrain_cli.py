"""`finsentry retrain`: re-train on analysts' labels; promote only when not worse."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from finsentry.settings import Settings

if TYPE_CHECKING:
    from finsentry.feedback.export import FeedbackExample

NOT_PROMOTED = 3


def _feedback(settings: Settings, file: Path | None) -> list[FeedbackExample]:
    from finsentry.feedback.export import read_examples, training_examples

    if file is not None:
        return read_examples(file)
    from finsentry.es_client import make_es_client
    from finsentry.feedback.store import scan_feedback

    es = make_es_client(settings)
    try:
        return training_examples(scan_feedback(es, settings.feedback_index))
    finally:
        es.close()


def _new_since_live(settings: Settings, examples: list[FeedbackExample]) -> int:
    from finsentry.models.artifact import read_manifest
    from finsentry.training.retrain import live_artifact

    live = live_artifact(settings)
    if live is None:
        return len(examples)
    created = read_manifest(live).created_at
    return sum(e.labelled_at > created for e in examples)


def retrain_once(
    settings: Settings,
    feedback_file: Path | None,
    min_new: int,
    int8: bool,
    overrides: dict[str, Any] | None = None,
) -> int:
    """One re-training; the exit code (0 promoted or skipped, 3 not promoted)."""
    from finsentry.training.retrain import retrain

    examples = _feedback(settings, feedback_file)
    new = _new_since_live(settings, examples)
    if new < min_new:
        typer.echo(f"skipped: {new} new label(s) since the live model, {min_new} wanted")
        return 0
    typer.echo(f"feedback: {len(examples)} labelled item(s), {new} newer than the live model")
    report = retrain(settings, examples, overrides=overrides, int8=int8)
    live, cand = report.live, report.new
    typer.echo(
        f"feedback split: {report.feedback_train} trained on ({report.weight}x each), "
        f"{report.feedback_holdout} held out"
    )
    typer.echo(f"candidate: {report.candidate}")
    _row("", f"live {live.version if live else '-'}", f"candidate {cand.version}")
    _row(
        "held-out split, mean macro-F1",
        _shown(live.heldout_macro_f1 if live else None),
        _shown(cand.heldout_macro_f1),
    )
    for task, scores in cand.heldout_tasks.items():
        before = live.heldout_tasks.get(task, {}) if live else {}
        _row(
            f"  {task} macro-F1 (n={int(scores['n'])})",
            _shown(before.get("macro_f1")),
            _shown(scores["macro_f1"]),
        )
    _row(
        f"feedback hold-out, accuracy (n={cand.feedback_n})",
        _shown(live.feedback_accuracy if live else None),
        _shown(cand.feedback_accuracy),
    )
    if report.promoted:
        typer.echo(f"promoted {cand.version}: {report.reason}")
        if live is not None:
            typer.echo(f"`finsentry models rollback` returns to {live.version}")
        return 0
    typer.echo(f"not promoted: {report.reason}; {live.version if live else '-'} stays live")
    return NOT_PROMOTED


def _row(what: str, live: str, candidate: str) -> None:
    typer.echo(f"{what:<40}{live:>22}{candidate:>26}")


def _shown(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def retrain(
    ctx: typer.Context,
    feedback: Path | None = typer.Option(
        None,
        exists=True,
        dir_okay=False,
        help="An exported feedback file (`finsentry feedback export`); default: the index.",
    ),
    weight: int | None = typer.Option(None, help="Copies of each feedback example."),
    holdout: float | None = typer.Option(None, help="Share of labelled items held out."),
    tolerance: float | None = typer.Option(None, help="How far below live a candidate may be."),
    min_new: int = typer.Option(0, help="Do nothing with fewer new labels than this."),
    override: str | None = typer.Option(
        None, help="TrainConfig fields over the live recipe (JSON), e.g. '{\"epochs\": 2}'."
    ),
    int8: bool = typer.Option(False, "--int8/--no-int8", help="Serve the int8 export."),
    every: float | None = typer.Option(
        None, help="Repeat every this many hours (as `finsentry run` does), forever."
    ),
) -> None:
    """Re-train the live recipe on the base data plus analysts' labels; compare candidate
    and live model on the held-out split and the feedback hold-out; promote only when the
    candidate is not worse on either (exit 3 when it is not promoted)."""
    from pydantic import ValidationError

    from finsentry.feedback.export import FeedbackFileError
    from finsentry.models.artifact import ArtifactError
    from finsentry.training.data import DataError

    updates = {
        "retrain_feedback_weight": weight,
        "retrain_holdout": holdout,
        "retrain_tolerance": tolerance,
    }
    try:
        overrides = json.loads(override) if override else None
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"--override is not JSON: {exc}") from exc
    if overrides is not None and not isinstance(overrides, dict):
        raise typer.BadParameter("--override must be a JSON object of TrainConfig fields")
    try:
        settings = Settings.model_validate(
            {**ctx.obj.model_dump(), **{k: v for k, v in updates.items() if v is not None}}
        )
    except ValidationError as exc:
        raise typer.BadParameter(str(exc)) from exc
    while True:
        try:
            code = retrain_once(settings, feedback, min_new, int8, overrides)
        except (DataError, ArtifactError, FeedbackFileError, ValidationError) as exc:
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            code = 2
        if every is None:
            raise typer.Exit(code)
        time.sleep(every * 3600)
