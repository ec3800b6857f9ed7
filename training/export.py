"""Export an artifact to ONNX (optionally int8-quantised) and check it against PyTorch."""

from __future__ import annotations

import json
import re
import shutil
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np

from finsentry.models.artifact import ArtifactError, Manifest, read_manifest, staging
from finsentry.models.heads import ENTITY
from finsentry.models.registry import MIN_PARITY
from finsentry.models.runtime import ArtifactScorer, _groups_of, quiet_transformers
from finsentry.training.quantize import quantize_int8

Quantize = Literal["int8", "none"]
_WEIGHTS = {"model.safetensors", "pytorch_model.bin"}


def _export_group(
    root: Path,
    manifest: Manifest,
    tasks: list[str],
    out: Path,
    opset: int,
    *,
    attention: str = "eager",
) -> bool:
    """One ONNX graph: token ids in, `logits_<task>` for each task out (fp32); with the
    per-company head also `entity_mask` / `entity_row` in and `logits_entity` out.
    Returns whether the graph has the per-company head.

    Attention is traced in its plain ("eager") form by default: the scaled-dot-product form
    traces into NaN guards and masks that ONNX Runtime's transformer optimizer does not
    recognise as attention (`benchmarks/int8_recipes.py` compares the two graphs)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from finsentry.models.artifact import load_entity_head
    from finsentry.models.heads import TaskHeads

    tokenizer = AutoTokenizer.from_pretrained(root / manifest.tasks[tasks[0]].tokenizer)
    with quiet_transformers():
        models = {
            t: AutoModelForSequenceClassification.from_pretrained(
                root / manifest.tasks[t].path, attn_implementation=attention
            )
            for t in tasks
        }
    shared = manifest.shared_encoder and len(tasks) > 1
    entity = None
    if manifest.entity is not None and shared:
        entity = load_entity_head(root, manifest.entity)
    module = TaskHeads(models, shared_encoder=shared, entity_head=entity).eval()
    sample = dict(
        tokenizer(
            ["a short text", "a somewhat longer text to give the exporter two lengths"],
            padding=True,
            return_tensors="pt",
        )
    )
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]
    if "token_type_ids" not in names and entity is not None:
        names.append("token_type_ids")  # positional: the entity inputs come after it
        sample["token_type_ids"] = torch.zeros_like(sample["input_ids"])
    outputs = [f"logits_{t}" for t in tasks]
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes.update({o: {0: "batch"} for o in outputs})
    if entity is not None:
        width = sample["input_ids"].shape[1]
        sample["entity_mask"] = torch.full((3, width), 1.0 / width)
        sample["entity_row"] = torch.tensor([0, 1, 1])
        names += ["entity_mask", "entity_row"]
        outputs.append(f"logits_{ENTITY}")
        axes.update(
            {
                "entity_mask": {0: "companies", 1: "sequence"},
                "entity_row": {0: "companies"},
                f"logits_{ENTITY}": {0: "companies"},
            }
        )
    with torch.inference_mode(), warnings.catch_warnings():
        # Tracing notes about shape checks that are constant for encoder-only models.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Exporting aten::index")
        torch.onnx.export(
            module,
            tuple(sample[n] for n in names),
            str(out),
            input_names=names,
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=opset,
            dynamo=False,
        )
    return entity is not None


# Kept in float (ONNX node names, regular expressions): the feed-forward output projections,
# whose inputs (GELU outputs) have the widest range, and the pooler and heads (tiny, but
# straight before the logits). Quantising them cost 1-2 points of label agreement with fp32
# for little speed (measured on the default artifact's held-out texts).
KEEP_FLOAT = (r"layer\.\d+/output/dense/", r"/pooler/", r"/classifier", r"/entity_head/")


class WeightRecipe(NamedTuple):
    name: str
    attention: str  # how the fp32 graph traces attention: "sdpa" | "eager"
    weight_type: str  # "int8" | "uint8"
    reduce_range: bool  # 7-bit weights


# int8 exports try these in order, fastest first, and keep the first whose parity check passes
# (MIN_PARITY label agreement on every task); if none does, the last is kept and the gate
# refuses it. On x86 CPUs without VNNI (AVX2 only, like the 2-core machine this was measured
# on) ONNX Runtime multiplies u8 activations by s8 weights with a fast instruction that
# saturates sums of two products at 16 bits; 7-bit weights stay clear of most of that.
# uint8 weights (u8 x u8, widened first) agree best but run ~25 % slower. All three use the
# plain-attention graph: the scaled-dot-product graph guards every layer's softmax against
# NaN rows (IsNaN + Where over batch x heads x length^2), which cost ~10 % of a 4-layer
# student's time and cannot happen here (every text keeps its [CLS] token). Figures:
# BENCHMARKS.md, "Speed at full quality" (`benchmarks/int8_recipes.py`).
WEIGHT_RECIPES = (
    WeightRecipe("int8 weights, 7-bit, plain attention", "eager", "int8", True),
    WeightRecipe("int8 weights, plain attention", "eager", "int8", False),
    WeightRecipe("uint8 weights, plain attention", "eager", "uint8", False),
)


def _float_nodes(model_path: Path, patterns: Sequence[str]) -> list[str]:
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    return [n.name for n in graph.node if any(re.search(p, n.name) for p in patterns)]


def calibration_feeds(
    root: Path, manifest: Manifest, texts: Sequence[str], batch_size: int = 64
) -> list[dict[str, np.ndarray]]:
    """Tokenised batches (as the scorer tokenises them) for activation statistics."""
    from transformers import AutoTokenizer

    from finsentry.models.text import preprocessor

    clean = preprocessor(manifest.preprocess)
    tokenizer = AutoTokenizer.from_pretrained(root / next(iter(manifest.tasks.values())).tokenizer)
    feeds = []
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(
            [clean(t) for t in texts[start : start + batch_size]],
            padding=True,
            truncation=True,
            max_length=manifest.max_length,
            return_tensors="np",
        )
        feed = {k: np.asarray(v, dtype=np.int64) for k, v in enc.items()}
        if manifest.entity is not None:  # the graph also wants companies: one dummy row
            width = feed["input_ids"].shape[1]
            feed.setdefault("token_type_ids", np.zeros_like(feed["input_ids"]))
            feed["entity_mask"] = np.zeros((1, width), np.float32)
            feed["entity_row"] = np.zeros(1, np.int64)
        feeds.append(feed)
    return feeds


def parity(
    reference: ArtifactScorer,
    candidate: ArtifactScorer,
    texts: Sequence[str],
    companies: Sequence[Sequence[Sequence[tuple[int, int]]]] | None = None,
) -> dict[str, dict[str, float]]:
    """Label agreement and probability differences per task, on the same texts, and the
    throughput (texts per second, this machine) of both. With `companies` (mention spans
    per company per text) the per-company head is compared too (`entity`)."""
    started = time.perf_counter()
    ref = reference.predict_proba(texts, companies)
    middle = time.perf_counter()
    cand = candidate.predict_proba(texts, companies)
    ended = time.perf_counter()
    ref.pop("entity_covered", None)
    cand.pop("entity_covered", None)
    report: dict[str, dict[str, float]] = {
        "throughput": {
            "reference_texts_per_second": len(texts) / max(middle - started, 1e-9),
            "export_texts_per_second": len(texts) / max(ended - middle, 1e-9),
        }
    }
    for task in ref:
        diff = np.abs(ref[task] - cand[task])
        report[task] = {
            "n": len(ref[task]),
            "label_agreement": float(np.mean(ref[task].argmax(1) == cand[task].argmax(1))),
            "max_prob_diff": float(diff.max()) if len(texts) else 0.0,
            "mean_prob_diff": float(diff.mean()) if len(texts) else 0.0,
        }
    return report


def split_texts(manifest: Manifest, split: str = "test", limit: int | None = None) -> list[str]:
    """Texts of one split of the data the artifact was trained on (same seed, same split):
    `test` for parity checks, `train` for calibration."""
    from finsentry.training.config import TrainConfig
    from finsentry.training.train import load_all

    try:
        config = TrainConfig.from_manifest(manifest.params, output_dir=".")
    except ValueError as exc:
        raise ArtifactError(
            "the artifact does not record how it was trained; pass --data for the parity check"
        ) from exc
    data = load_all(config, preprocess=False)
    texts = [t for d in data.values() for t in getattr(d, split)["text"].tolist()]
    if limit and len(texts) > limit:
        picked = np.random.default_rng(config.seed).choice(len(texts), limit, replace=False)
        texts = [texts[i] for i in sorted(picked)]
    return texts


def news_parity_texts(
    manifest: Manifest,
) -> tuple[list[str], list[list[list[tuple[int, int]]]]] | None:
    """The held-out news paragraphs and their companies' spans, for the per-company head."""
    from finsentry.training.config import TrainConfig
    from finsentry.training.train import load_news

    if manifest.entity is None:
        return None
    try:
        config = TrainConfig.from_manifest(manifest.params, output_dir=".")
        news = load_news(config, manifest.entity.labels)
    except (ValueError, OSError):
        return None
    if news is None:
        return None
    return [t.text for t in news.test], [[list(e.spans) for e in t.entities] for t in news.test]


def export_onnx(
    model_dir: Path,
    *,
    output: Path | None = None,
    quantize: Quantize = "int8",
    texts: Sequence[str] | None = None,
    opset: int = 17,
    min_agreement: float = MIN_PARITY,
) -> tuple[Path, dict[str, Any]]:
    """Write an ONNX artifact (a sibling manifest, tokenizer and label configs) and its parity.

    `output` is the folder the new artifact goes into (default: `<model_dir>/exports`);
    `texts` are the held-out texts for the parity check (default: the training test split).
    int8: the first of `WEIGHT_RECIPES` whose label agreement reaches `min_agreement` on
    every task is kept (else the last); `parity.json` says which, and what each gave."""
    model_dir = Path(model_dir)
    manifest = read_manifest(model_dir)
    if manifest.runtime != "torch":
        raise ArtifactError(f"{model_dir} is already an ONNX export; export its PyTorch parent")
    texts = list(texts) if texts is not None else split_texts(manifest, "test")
    output = Path(output) if output is not None else model_dir / "exports"
    output.mkdir(parents=True, exist_ok=True)
    tasks = list(manifest.tasks)
    entity_spec = None
    with staging(output) as stage:
        specs: dict[str, Any] = {}
        groups: list[tuple[list[str], str, list[dict[str, np.ndarray]]]] = []
        for i, group in enumerate(_groups_of(manifest, tasks)):
            name = "model.onnx" if i == 0 else f"model_{i}.onnx"
            feeds: list[dict[str, np.ndarray]] = []
            if quantize == "int8":
                try:
                    calibration = split_texts(manifest, "train", limit=256)
                except (ArtifactError, ValueError):
                    calibration = list(texts[:256])  # artifacts that do not record their data
                feeds = calibration_feeds(model_dir, manifest, calibration)
            groups.append((group, name, feeds))
            for task in group:
                src = model_dir / manifest.tasks[task].path
                dst = stage.path / manifest.tasks[task].path
                dst.mkdir(parents=True, exist_ok=True)
                for file in src.iterdir():
                    if file.is_file() and file.name not in _WEIGHTS:
                        shutil.copy2(file, dst / file.name)
                specs[task] = manifest.tasks[task].model_copy(
                    update={"onnx_file": name, "onnx_output": f"logits_{task}"}
                )
        fp32_files: dict[tuple[str, str], Path] = {}  # (attention, graph name) -> fp32 graph

        def fp32_graph(attention: str, group: list[str], name: str) -> Path:
            nonlocal entity_spec
            path = fp32_files.get((attention, name))
            if path is None:
                path = fp32_files[attention, name] = stage.path / f"fp32-{attention}-{name}"
                has_entity = _export_group(
                    model_dir, manifest, group, path, opset, attention=attention
                )
                if has_entity and manifest.entity is not None and entity_spec is None:
                    (stage.path / manifest.entity.path).mkdir(parents=True, exist_ok=True)
                    shutil.copy2(
                        model_dir / manifest.entity.path / "config.json",
                        stage.path / manifest.entity.path / "config.json",
                    )
                    entity_spec = manifest.entity.model_copy(
                        update={"onnx_output": f"logits_{ENTITY}"}
                    )
            return path

        reference = ArtifactScorer(model_dir, device="cpu")
        news = news_parity_texts(manifest)  # once, not per recipe (None: no per-company head)
        tried: list[dict[str, Any]] = []
        for recipe in WEIGHT_RECIPES if quantize == "int8" else (None,):
            for group, name, feeds in groups:
                fp32 = fp32_graph(recipe.attention if recipe else "eager", group, name)
                if recipe is None:
                    shutil.copy2(fp32, stage.path / name)
                    continue
                quantize_int8(
                    fp32,
                    stage.path / name,
                    feeds,
                    keep_float=_float_nodes(fp32, KEEP_FLOAT),
                    weight_type=recipe.weight_type,
                    reduce_range=recipe.reduce_range,
                )
            params = {"parent": manifest.params, "export": {"quantize": quantize, "opset": opset}}
            fields = {
                **manifest.model_dump(
                    exclude={"version", "created_at", "data", "params", "tasks", "entity"}
                ),
                "runtime": "onnx",
                "tasks": specs,
                "entity": entity_spec,
                "parent_version": manifest.version,
                "quantization": (
                    f"int8 dynamic, per-channel {recipe.name}, SmoothQuant-calibrated "
                    f"activations (onnxruntime); float: {', '.join(KEEP_FLOAT)}"
                    if recipe is not None
                    else None
                ),
            }
            new = stage.manifest(fields, data=manifest.data, params=params)
            (stage.path / "manifest.json").write_text(
                new.model_dump_json(indent=2), encoding="utf-8"
            )
            candidate = ArtifactScorer(stage.path, device="cpu")
            checked = parity(reference, candidate, texts)
            throughput = checked.pop("throughput")
            if news is not None and entity_spec is not None:
                checked[ENTITY] = parity(reference, candidate, news[0], news[1])[ENTITY]
            agreement = {task: c["label_agreement"] for task, c in checked.items()}
            tried.append({"recipe": recipe.name if recipe else None, "agreement": agreement})
            if min(agreement.values(), default=1.0) >= min_agreement:
                break
        for fp32 in fp32_files.values():
            fp32.unlink()
        report = {
            "parent_version": manifest.version,
            "version": new.version,
            "quantize": quantize,
            "recipe": tried[-1]["recipe"],
            "tried": tried,
            "tasks": checked,
            "throughput": throughput,
            "onnx_bytes": sum(f.stat().st_size for f in stage.path.glob("*.onnx")),
            "torch_bytes": sum(f.stat().st_size for f in model_dir.rglob("model.safetensors")),
        }
        (stage.path / "parity.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
        path = stage.commit(new)
    return path, report
