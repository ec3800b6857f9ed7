"""Reference points for the model card, on the same splits as the fine-tuned model:
TF-IDF + logistic regression, and the pretrained encoder (frozen) with only a head trained."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from torch import nn
from transformers import PreTrainedTokenizerBase

from finsentry.models.heads import TaskHeads
from finsentry.training.loop import classification_scores, collate, set_seed, tokenize


def tfidf_logreg(
    train: tuple[Sequence[str], np.ndarray],
    val: tuple[Sequence[str], np.ndarray],
    test: tuple[Sequence[str], np.ndarray],
    *,
    class_weight: str | None = None,
) -> dict[str, float]:
    """Word 1-2-gram TF-IDF + logistic regression; C picked on validation macro-F1."""
    vectoriser = TfidfVectorizer(
        ngram_range=(1, 2), min_df=1, sublinear_tf=True, max_features=200_000
    )
    x_train = vectoriser.fit_transform(train[0])
    x_val, x_test = vectoriser.transform(val[0]), vectoriser.transform(test[0])
    best: tuple[float, Any] = (-1.0, None)
    for c in (1.0, 4.0, 16.0):
        model = LogisticRegression(C=c, max_iter=2000, class_weight=class_weight)
        model.fit(x_train, train[1])
        score = f1_score(val[1], model.predict(x_val), average="macro", zero_division=0)
        if score > best[0]:
            best = (score, model)
    return classification_scores(test[1], best[1].predict(x_test))


def _feature_fn(
    model: Any,
) -> tuple[Callable[[Any], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]] | None:
    """What the head reads from the encoder output, and how the head applies to it."""
    if model.config.model_type == "bert":
        return (lambda out: out.pooler_output), (lambda x: model.classifier(model.dropout(x)))
    if model.config.model_type in {"roberta", "xlm-roberta", "camembert", "electra"}:
        return (lambda out: out.last_hidden_state[:, :1]), model.classifier
    return None


def _features(
    encoder: nn.Module,
    pick: Callable[[Any], torch.Tensor],
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    max_length: int,
    batch_size: int = 128,
) -> torch.Tensor:
    ids = tokenize(tokenizer, texts, max_length)
    order = np.argsort([len(x) for x in ids], kind="stable")
    chunks: list[torch.Tensor] = []
    with torch.inference_mode():
        for start in range(0, len(ids), batch_size):
            idx = order[start : start + batch_size]
            chunks.append(pick(encoder(**collate(tokenizer, [ids[i] for i in idx]))).float())
    feats = torch.cat(chunks)
    out = torch.empty_like(feats)
    out[torch.from_numpy(order)] = feats
    return out


def head_only(
    module: TaskHeads,
    tokenizer: PreTrainedTokenizerBase,
    splits: dict[str, dict[str, tuple[list[str], np.ndarray]]],
    *,
    max_length: int,
    epochs: int,
    seed: int,
    lr: float = 2e-3,
    batch_size: int = 64,
    patience: int = 5,
) -> dict[str, dict[str, float]]:
    """Train only each task's head on frozen, pretrained encoder features (computed once).

    `module` must be freshly built from the base checkpoint; it is not modified."""
    set_seed(seed)
    out: dict[str, dict[str, float]] = {}
    encoder = module.models[module.tasks[0]].base_model.eval()
    for task, split in splits.items():
        model = module.models[task]
        fns = _feature_fn(model)
        if fns is None:
            continue
        pick, _ = fns
        feats = {k: _features(encoder, pick, tokenizer, v[0], max_length) for k, v in split.items()}
        head_model = copy.deepcopy(model)
        _, apply_head = _feature_fn(head_model)  # type: ignore[misc]
        params = list(head_model.classifier.parameters())
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
        y_train = torch.tensor(split["train"][1], dtype=torch.long)
        best, best_state, waited = -1.0, None, 0
        generator = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            head_model.train()
            for idx in torch.randperm(len(y_train), generator=generator).split(batch_size):
                loss = nn.functional.cross_entropy(apply_head(feats["train"][idx]), y_train[idx])
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
            head_model.eval()
            with torch.no_grad():
                pred = apply_head(feats["val"]).argmax(-1).numpy()
            score = f1_score(split["val"][1], pred, average="macro", zero_division=0)
            if score > best:
                best, waited = score, 0
                best_state = [p.detach().clone() for p in params]
            else:
                waited += 1
                if waited >= patience:
                    break
        if best_state is not None:
            with torch.no_grad():
                for p, saved in zip(params, best_state, strict=True):
                    p.copy_(saved)
        head_model.eval()
        with torch.no_grad():
            pred = apply_head(feats["test"]).argmax(-1).numpy()
        out[task] = classification_scores(split["test"][1], pred)
    return out
