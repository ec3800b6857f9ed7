"""One module that turns a tokenised batch into every task's logits.

With a shared encoder (multitask artifacts) the encoder runs once and each task's
classification head is applied to its output; otherwise each task's model runs in full.
Training, serving and ONNX export all go through `TaskHeads`, so they cannot disagree.

The optional per-company head (`EntityHead`) reads the same encoder output: for each
company it averages the hidden states of the tokens of all its mentions, puts the text's
pooled vector beside them, and classifies that. It adds no encoder pass per company."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel


def _pooled_head(model: Any, outputs: Any) -> torch.Tensor:
    return model.classifier(model.dropout(outputs.pooler_output))


def _sequence_head(model: Any, outputs: Any) -> torch.Tensor:
    return model.classifier(outputs.last_hidden_state)


# How a `*ForSequenceClassification` model of each family applies its head to the output
# of its base model. Families not listed still work, with one encoder pass per task.
_HEADS: dict[str, Callable[[Any, Any], torch.Tensor]] = {
    "bert": _pooled_head,
    "roberta": _sequence_head,
    "xlm-roberta": _sequence_head,
    "camembert": _sequence_head,
    "electra": _sequence_head,
}


def can_share_encoder(models: Mapping[str, PreTrainedModel]) -> bool:
    return all(m.config.model_type in _HEADS for m in models.values())


def tie_encoders(models: Mapping[str, PreTrainedModel]) -> None:
    """Make every model use the first model's base encoder (same object, same weights)."""
    first = next(iter(models.values()))
    for model in list(models.values())[1:]:
        setattr(model, model.base_model_prefix, first.base_model)


ENTITY = "entity"


class EntityHead(nn.Module):
    """Sentiment about one company from the encoder's output over its mentions.

    `entity_mask` (companies x tokens) holds each company's weights over the tokens of its
    mentions (summing to 1), `entity_row` the row of the batch its text is in."""

    def __init__(self, hidden: int, num_labels: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.hidden = hidden
        self.num_labels = num_labels
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(2 * hidden, hidden)
        self.classifier = nn.Linear(hidden, num_labels)

    def forward(
        self,
        last_hidden: torch.Tensor,
        entity_mask: torch.Tensor,
        entity_row: torch.Tensor,
    ) -> torch.Tensor:
        rows = last_hidden.index_select(0, entity_row)  # companies x tokens x hidden
        mention = (rows * entity_mask.unsqueeze(-1).to(rows.dtype)).sum(dim=1)
        context = rows[:, 0]  # the text's [CLS] vector
        features = torch.cat([mention, context], dim=-1)
        return self.classifier(self.dropout(torch.tanh(self.dense(self.dropout(features)))))


class TaskHeads(nn.Module):
    """Logits for every task, in `tasks` order, from one tokenised batch; with an entity
    head and entity inputs, the per-company logits come last."""

    def __init__(
        self,
        models: Mapping[str, PreTrainedModel],
        *,
        shared_encoder: bool,
        entity_head: EntityHead | None = None,
    ) -> None:
        super().__init__()
        self.tasks: list[str] = list(models)
        self.models = nn.ModuleDict(dict(models))
        self.shared_encoder = shared_encoder
        if shared_encoder:
            tie_encoders(models)
        self.encoder_once = shared_encoder and can_share_encoder(models)
        if entity_head is not None and not self.encoder_once:
            raise ValueError(
                "a per-company head needs one shared encoder (multitask, BERT/RoBERTa family)"
            )
        self.entity_head = entity_head

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        entity_mask: torch.Tensor | None = None,
        entity_row: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ...]:
        inputs: dict[str, torch.Tensor] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        if self.encoder_once:
            first = self.models[self.tasks[0]]
            outputs = first.base_model(**inputs)
            logits = tuple(
                _HEADS[self.models[t].config.model_type](self.models[t], outputs)
                for t in self.tasks
            )
            if self.entity_head is not None and entity_mask is not None and entity_row is not None:
                hidden = outputs.last_hidden_state
                logits += (self.entity_head(hidden, entity_mask, entity_row),)
            return logits
        return tuple(self.models[t](**inputs).logits for t in self.tasks)

    def task_logits(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per task; `entity` too when the batch carries `entity_mask` and `entity_row`."""
        out = self(
            batch["input_ids"],
            batch["attention_mask"],
            batch.get("token_type_ids"),
            batch.get("entity_mask"),
            batch.get("entity_row"),
        )
        names = list(self.tasks) + ([ENTITY] if len(out) > len(self.tasks) else [])
        return dict(zip(names, out, strict=True))
