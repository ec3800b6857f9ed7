"""Serving an artifact: PyTorch (CUDA bf16/fp16 when present, else CPU) or ONNX Runtime."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from finsentry.messages import ItemScores, LabelScores
from finsentry.models.artifact import ArtifactError, Manifest, read_manifest
from finsentry.models.labels import SENTIMENT, TOPIC
from finsentry.models.text import preprocessor

log = logging.getLogger(__name__)

# Texts per forward pass when not set: on CPU small batches keep activations in cache (16
# beat 64 by ~10-20 % in benchmarks/classifier_throughput.py); a GPU wants large ones.
CPU_BATCH_SIZE = 16
CUDA_BATCH_SIZE = 128


class _Group(Protocol):
    tasks: list[str]

    def encode(self, texts: list[str]) -> Any: ...

    def run(self, encoded: Any) -> dict[str, np.ndarray]: ...


def tokenize(tokenizer: Any, texts: list[str], max_length: int, tensors: str) -> Any:
    """Padded to the longest text of the chunk. Called only from a scorer's one tokenizer
    thread: fast tokenizers fail ("Already borrowed") when threads share them."""
    return tokenizer(
        texts, padding=True, truncation=True, max_length=max_length, return_tensors=tensors
    )


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """No "Loading weights" / "Writing model shards" progress bars on stderr meanwhile."""
    from transformers.utils import logging as hf_logging

    was_disabled = not hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if not was_disabled:
            hf_logging.enable_progress_bar()


def pick_device(preference: str) -> tuple[Any, Any]:
    """(device, dtype): CUDA with bf16 (fp16 where bf16 is missing) when present, else CPU fp32."""
    import torch

    if preference not in {"auto", "cpu", "cuda"} and not preference.startswith("cuda:"):
        raise ValueError(f"device must be auto, cpu or cuda, not {preference!r}")
    if preference == "cpu" or not torch.cuda.is_available():
        if preference.startswith("cuda"):
            raise ArtifactError("FINSENTRY_DEVICE asks for cuda but no CUDA device is present")
        return torch.device("cpu"), torch.float32
    device = torch.device("cuda" if preference == "auto" else preference)
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return device, dtype


class _TorchGroup:
    """Tasks that share one tokenizer: tokenised once, run through one `TaskHeads`."""

    def __init__(
        self, root: Path, manifest: Manifest, tasks: list[str], device: Any, dtype: Any
    ) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from finsentry.models.heads import TaskHeads

        self.tasks = tasks
        self.max_length = manifest.max_length
        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(root / manifest.tasks[tasks[0]].tokenizer)
        with quiet_transformers():
            models = {
                t: AutoModelForSequenceClassification.from_pretrained(
                    root / manifest.tasks[t].path, dtype=dtype
                )
                for t in tasks
            }
        shared = manifest.shared_encoder and len(tasks) > 1
        self.module = TaskHeads(models, shared_encoder=shared).to(device).eval()

    def encode(self, texts: list[str]) -> Any:
        return tokenize(self.tokenizer, texts, self.max_length, "pt")

    def run(self, encoded: Any) -> dict[str, np.ndarray]:
        import torch

        batch = {k: v.to(self.device) for k, v in encoded.items()}
        with torch.inference_mode():
            logits = self.module.task_logits(batch)
        return {t: softmax(v.float().cpu().numpy()) for t, v in logits.items()}


class _OnnxGroup:
    """Tasks whose heads live in one ONNX graph (and share its tokenizer)."""

    def __init__(self, root: Path, manifest: Manifest, tasks: list[str], device: str) -> None:
        import onnxruntime as ort
        from transformers import AutoTokenizer

        self.tasks = tasks
        self.max_length = manifest.max_length
        spec = manifest.tasks[tasks[0]]
        assert spec.onnx_file is not None
        self.tokenizer = AutoTokenizer.from_pretrained(root / spec.tokenizer)
        providers = ["CPUExecutionProvider"]
        if device != "cpu" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(str(root / spec.onnx_file), providers=providers)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.outputs = [manifest.tasks[t].onnx_output or f"logits_{t}" for t in tasks]

    def encode(self, texts: list[str]) -> Any:
        enc = tokenize(self.tokenizer, texts, self.max_length, "np")
        return {name: np.asarray(enc[name], dtype=np.int64) for name in self.input_names}

    def run(self, encoded: Any) -> dict[str, np.ndarray]:
        out = self.session.run(self.outputs, encoded)
        return {t: softmax(np.asarray(v)) for t, v in zip(self.tasks, out, strict=True)}


def _groups_of(manifest: Manifest, tasks: Sequence[str]) -> list[list[str]]:
    key_of = (
        (lambda t: manifest.tasks[t].onnx_file)
        if manifest.runtime == "onnx"
        else (lambda t: manifest.tasks[t].tokenizer)
    )
    groups: dict[str | None, list[str]] = {}
    for task in tasks:
        groups.setdefault(key_of(task), []).append(task)
    return list(groups.values())


class ArtifactScorer:
    """Serves one artifact. `score` is the stream's `Scorer`; `predict_proba` is per task."""

    def __init__(
        self,
        root: Path,
        *,
        device: str = "auto",
        tasks: Sequence[str] | None = None,
        batch_size: int | None = None,
    ) -> None:
        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        self.version: str = self.manifest.version
        wanted = list(tasks) if tasks is not None else list(self.manifest.tasks)
        unknown = [t for t in wanted if t not in self.manifest.tasks]
        if unknown:
            raise ArtifactError(
                f"artifact {root} has no task(s) {unknown}; it has {list(self.manifest.tasks)}"
            )
        self.labels: dict[str, list[str]] = {t: self.manifest.tasks[t].labels for t in wanted}
        # Every tokenizer call happens on this one thread (see `tokenize`).
        self._tokenizing = ThreadPoolExecutor(1, thread_name_prefix="finsentry-tokenize")
        self.groups: list[_Group]
        if self.manifest.runtime == "onnx":
            self.device_name = "cpu (onnxruntime)"
            self.groups = [
                _OnnxGroup(self.root, self.manifest, g, device)
                for g in _groups_of(self.manifest, wanted)
            ]
        else:
            torch_device, dtype = pick_device(device)
            self.device_name = f"{torch_device} {str(dtype).removeprefix('torch.')}"
            self.groups = [
                _TorchGroup(self.root, self.manifest, g, torch_device, dtype)
                for g in _groups_of(self.manifest, wanted)
            ]
        on_gpu = self.device_name.startswith("cuda")
        self.batch_size = batch_size or (CUDA_BATCH_SIZE if on_gpu else CPU_BATCH_SIZE)
        log.info(
            "serving model %s from %s on %s, %d texts a pass",
            self.version, self.root, self.device_name, self.batch_size,
        )  # fmt: skip

    def predict_proba(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Class probabilities per task, rows in `texts` order, columns in `labels[task]` order.

        Texts are sorted by length and cut into `batch_size` chunks so padding stays small.
        Chunks are tokenised in the scorer's tokenizer thread while the model runs."""
        clean = preprocessor(self.manifest.preprocess)
        texts = [clean(t if isinstance(t, str) else str(t)) for t in texts]
        result = {t: np.zeros((len(texts), len(ls)), np.float32) for t, ls in self.labels.items()}
        order = np.argsort([len(t) for t in texts], kind="stable")
        steps = [
            (order[start : start + self.batch_size], group)
            for start in range(0, len(texts), self.batch_size)
            for group in self.groups
        ]

        encoded = self._tokenizing.map(
            lambda step: step[1].encode([texts[i] for i in step[0]]), steps
        )
        for (idx, group), batch in zip(steps, encoded, strict=True):
            for task, probs in group.run(batch).items():
                result[task][idx] = probs
        return result

    def score(self, texts: list[str]) -> list[ItemScores]:
        if not texts:
            return []
        probs = self.predict_proba(texts)
        return [
            _item_scores(
                _label_scores(self.labels[TOPIC], probs[TOPIC][i]),
                _label_scores(self.labels[SENTIMENT], probs[SENTIMENT][i]),
            )
            for i in range(len(texts))
        ]


def _label_scores(labels: list[str], row: np.ndarray) -> LabelScores:
    values = {name: min(max(float(p), 0.0), 1.0) for name, p in zip(labels, row, strict=True)}
    best = int(np.argmax(row))
    return LabelScores(label=labels[best], confidence=values[labels[best]], probs=values)


def _item_scores(topic: LabelScores, sentiment: LabelScores) -> ItemScores:
    score = sentiment.probs["bullish"] - sentiment.probs["bearish"]
    return ItemScores(topic=topic, sentiment=sentiment, sentiment_score=min(max(score, -1.0), 1.0))
