"""One module that turns a tokenised batch into every task's logits.

With a shared encoder (multitask artifacts) the encoder runs once and each task's
classification head is applied to its output; otherwise each task's model runs in full.
Training, serving and ONNX export all go through `TaskHeads`, so they cannot disagree."""

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


class TaskHeads(nn.Module):
    """Logits for every task, in `tasks` order, from one tokenised batch."""

    def __init__(self, models: Mapping[str, PreTrainedModel], *, shared_encoder: bool) -> None:
        super().__init__()
        self.tasks: list[str] = list(models)
        self.models = nn.ModuleDict(dict(models))
        self.shared_encoder = shared_encoder
        if shared_encoder:
            tie_encoders(models)
        self.encoder_once = shared_encoder and can_share_encoder(models)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ...]:
        inputs: dict[str, torch.Tensor] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        if self.encoder_once:
            first = self.models[self.tasks[0]]
            outputs = first.base_model(**inputs)
            return tuple(
                _HEADS[self.models[t].config.model_type](self.models[t], outputs)
                for t in self.tasks
            )
        return tuple(self.models[t](**inputs).logits for t in self.tasks)

    def task_logits(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = self(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
        return dict(zip(self.tasks, out, strict=True))
