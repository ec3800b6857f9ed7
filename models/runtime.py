"""Serving an artifact: PyTorch (CUDA bf16/fp16 when present, else CPU) or ONNX Runtime."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from finsentry.messages import CompanyMention, CompanyScores, ItemScores, LabelScores
from finsentry.models.artifact import ArtifactError, Manifest, load_entity_head, read_manifest
from finsentry.models.entity_inputs import entity_tensors
from finsentry.models.heads import ENTITY
from finsentry.models.labels import SENTIMENT, SENTIMENT_LABELS, TOPIC
from finsentry.models.text import Span, clean_with_spans, preprocessor

log = logging.getLogger(__name__)

# Texts per forward pass when not set: on CPU small batches keep activations in cache (16
# beat 64 by ~10-20 % in benchmarks/classifier_throughput.py); a GPU wants large ones.
CPU_BATCH_SIZE = 16
CUDA_BATCH_SIZE = 128


Companies = list[tuple[int, list[Span]]]
"""Companies of a chunk: (row of its text in the chunk, its mentions' spans in that text)."""


class _Group(Protocol):
    tasks: list[str]
    has_entity: bool
    tokenizer: Any

    def encode(
        self, texts: list[str], companies: Companies, drop_truncated: bool = False
    ) -> tuple[Any, np.ndarray]: ...

    def run(self, encoded: Any) -> dict[str, np.ndarray]: ...


def tokenize(
    tokenizer: Any, texts: list[str], max_length: int, tensors: str, offsets: bool = False
) -> Any:
    """Padded to the longest text of the chunk. Called only from a scorer's one tokenizer
    thread: fast tokenizers fail ("Already borrowed") when threads share them."""
    return tokenizer(
        texts,
        padding=True,
        truncation=True,
        max_length=max_length,
        return_tensors=tensors,
        return_offsets_mapping=offsets,
    )


def entity_inputs(encoded: Any, companies: Companies) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`entity_mask`, `entity_row`, `covered` for a tokenised chunk (offsets popped)."""
    offsets = np.asarray(encoded.pop("offset_mapping"))
    width = offsets.shape[1]
    return entity_tensors(offsets.tolist(), companies, width)


def truncated_rows(encoded: Any, max_length: int) -> np.ndarray:
    """Per row of a tokenised chunk, whether the window cut the text: a fast tokenizer keeps
    what truncation removed (`overflowing`); else, to be safe, a row that fills the window."""
    encodings = getattr(encoded, "encodings", None)
    if encodings:
        return np.array([bool(e.overflowing) for e in encodings], dtype=bool)
    return np.asarray(encoded["attention_mask"]).sum(axis=1) >= max_length


def keep_rows(
    encoded: dict[str, Any], companies: Companies, keep: np.ndarray
) -> tuple[dict[str, Any], Companies]:
    """Only the `keep` rows of a tokenised chunk (numpy or torch), padding trimmed to the
    longest of them; the companies' rows renumbered."""
    index = np.flatnonzero(keep).tolist()
    lengths = np.asarray(encoded["attention_mask"]).sum(axis=1)
    width = int(lengths[index].max()) if index else 0
    renumbered = np.cumsum(keep) - 1
    rows = {name: value[index][:, :width] for name, value in encoded.items()}
    return rows, [(int(renumbered[row]), spans) for row, spans in companies if keep[row]]


def _tokenized(
    tokenizer: Any,
    texts: list[str],
    companies: Companies,
    max_length: int,
    tensors: str,
    *,
    offsets: bool,
    drop_truncated: bool,
) -> tuple[dict[str, Any], Companies, np.ndarray]:
    """One tokenisation of a chunk: its inputs, its companies and the rows kept (all, or
    with `drop_truncated` those the window does not cut)."""
    encoded = tokenize(tokenizer, texts, max_length, tensors, offsets)
    keep = ~truncated_rows(encoded, max_length) if drop_truncated else np.ones(len(texts), bool)
    if keep.all():
        return dict(encoded), companies, keep
    rows, kept_companies = keep_rows(dict(encoded), companies, keep)
    return rows, kept_companies, keep


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
        entity = None
        if manifest.entity is not None and shared:
            entity = load_entity_head(root, manifest.entity).to(dtype)
        self.has_entity = entity is not None
        self.module = TaskHeads(models, shared_encoder=shared, entity_head=entity)
        self.module = self.module.to(device).eval()

    def encode(
        self, texts: list[str], companies: Companies, drop_truncated: bool = False
    ) -> tuple[Any, np.ndarray]:
        """(model inputs, covered) of the kept rows, and which rows were kept."""
        import torch

        encoded, companies, keep = _tokenized(
            self.tokenizer,
            texts,
            companies,
            self.max_length,
            "pt",
            offsets=self.has_entity and bool(companies),
            drop_truncated=drop_truncated,
        )
        if not keep.any():
            return None, keep
        covered = None
        if self.has_entity and companies:
            mask, rows, covered = entity_inputs(encoded, companies)
            encoded["entity_mask"] = torch.from_numpy(mask)
            encoded["entity_row"] = torch.from_numpy(rows)
        encoded.pop("offset_mapping", None)  # the companies' rows were all dropped
        return (encoded, covered), keep

    def run(self, encoded: Any) -> dict[str, np.ndarray]:
        import torch

        inputs, covered = encoded
        batch = {k: v.to(self.device) for k, v in inputs.items()}
        with torch.inference_mode():
            logits = self.module.task_logits(batch)
        out = {t: softmax(v.float().cpu().numpy()) for t, v in logits.items()}
        if covered is not None:
            out["entity_covered"] = covered
        return out


class _OnnxGroup:
    """Tasks whose heads live in one ONNX graph (and share its tokenizer)."""

    def __init__(
        self,
        root: Path,
        manifest: Manifest,
        tasks: list[str],
        device: str,
        spinning: bool | None,
    ) -> None:
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
        options = ort.SessionOptions()
        # ONNX Runtime's pool threads spin for a while after each run, waiting for the next
        # (its default, kept when `spinning` is None); between the worker's batches
        # (tokenising, Kafka, bulk writes) that takes the cores Elasticsearch and Kafka need,
        # so the served path passes Settings.onnx_spinning (BENCHMARKS.md, "Where the cores go").
        if spinning is not None:
            options.add_session_config_entry("session.intra_op.allow_spinning", str(int(spinning)))
        self.session = ort.InferenceSession(
            str(root / spec.onnx_file), options, providers=providers
        )
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.outputs = [manifest.tasks[t].onnx_output or f"logits_{t}" for t in tasks]
        self.has_entity = "entity_mask" in self.input_names
        if self.has_entity:
            assert manifest.entity is not None
            self.outputs.append(manifest.entity.onnx_output or f"logits_{ENTITY}")

    def encode(
        self, texts: list[str], companies: Companies, drop_truncated: bool = False
    ) -> tuple[Any, np.ndarray]:
        """(feeds, covered) of the kept rows, and which rows were kept."""
        enc, companies, keep = _tokenized(
            self.tokenizer,
            texts,
            companies,
            self.max_length,
            "np",
            offsets=self.has_entity,
            drop_truncated=drop_truncated,
        )
        if not keep.any():
            return None, keep
        covered = None
        if self.has_entity:
            # The graph always takes company inputs: with none, one dummy row (dropped).
            mask, rows, covered = entity_inputs(enc, companies or [(0, [])])
            enc["entity_mask"], enc["entity_row"] = mask, rows
            covered = covered[: len(companies)]
        feeds = {
            name: np.asarray(enc[name], dtype=np.float32 if name == "entity_mask" else np.int64)
            for name in self.input_names
        }
        return (feeds, covered), keep

    def run(self, encoded: Any) -> dict[str, np.ndarray]:
        feeds, covered = encoded
        out = self.session.run(self.outputs, feeds)
        names = self.tasks + ([ENTITY] if self.has_entity else [])
        result = {t: softmax(np.asarray(v)) for t, v in zip(names, out, strict=True)}
        if covered is not None:
            result[ENTITY] = result[ENTITY][: len(covered)]
            result["entity_covered"] = covered
        return result


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
        onnx_spinning: bool | None = None,
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
        self.entity_labels: list[str] = (
            self.manifest.entity.labels if self.manifest.entity is not None else []
        )
        # Every tokenizer call happens on this one thread (see `tokenize`).
        self._tokenizing = ThreadPoolExecutor(1, thread_name_prefix="finsentry-tokenize")
        self.groups: list[_Group]
        if self.manifest.runtime == "onnx":
            self.device_name = "cpu (onnxruntime)"
            self.groups = [
                _OnnxGroup(self.root, self.manifest, g, device, onnx_spinning)
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

    @property
    def max_length(self) -> int:
        """The model window, in tokens."""
        return self.manifest.max_length

    @property
    def has_entity_head(self) -> bool:
        return any(g.has_entity for g in self.groups)

    def token_lengths(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text (special tokens included, no truncation), as the model sees it."""
        clean = preprocessor(self.manifest.preprocess)
        tokenizer = self.groups[0].tokenizer
        cleaned = [clean(t) for t in texts]
        ids = self._tokenizing.submit(lambda: tokenizer(cleaned)["input_ids"]).result()
        return [len(x) for x in ids]

    def predict_proba(
        self,
        texts: Sequence[str],
        companies: Sequence[Sequence[Sequence[Span]]] | None = None,
    ) -> dict[str, np.ndarray]:
        """Class probabilities per task, rows in `texts` order, columns in `labels[task]` order.

        With `companies` (for each text, each company's mention spans in it) and a
        per-company head, also `entity`: a row per company, texts in order and each text's
        companies in order, and `entity_covered` (False where truncation cut off every
        mention: that row is zero). Texts are sorted by length and cut into `batch_size`
        chunks so padding stays small; chunks are tokenised in the scorer's tokenizer
        thread while the model runs."""
        return self._predict(texts, companies, skip_truncated=False)[0]

    def _predict(
        self,
        texts: Sequence[str],
        companies: Sequence[Sequence[Sequence[Span]]] | None,
        *,
        skip_truncated: bool,
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """`predict_proba`'s result, and per text whether it was run: with `skip_truncated`,
        a text the window would cut is not (its rows stay zero), known from the one
        tokenisation every text gets (the first group's)."""
        clean = preprocessor(self.manifest.preprocess)
        raw = [t if isinstance(t, str) else str(t) for t in texts]
        spans: list[list[list[Span]]] = [[] for _ in raw]
        if companies is not None and self.has_entity_head:
            cleaned = []
            for i, (text, company_spans) in enumerate(zip(raw, companies, strict=True)):
                flat = [tuple(s) for c in company_spans for s in c]
                text_clean, moved = clean_with_spans(clean, text, flat)  # type: ignore[arg-type]
                cleaned.append(text_clean)
                k = 0
                for c in company_spans:
                    spans[i].append([m for m in moved[k : k + len(c)] if m is not None])
                    k += len(c)
        else:
            cleaned = [clean(t) for t in raw]
        result = {t: np.zeros((len(raw), len(ls)), np.float32) for t, ls in self.labels.items()}
        first_company = np.cumsum([0] + [len(s) for s in spans])
        if companies is not None and self.has_entity_head:
            result[ENTITY] = np.zeros(
                (int(first_company[-1]), len(self.entity_labels or SENTIMENT_LABELS)), np.float32
            )
            result["entity_covered"] = np.zeros(int(first_company[-1]), bool)
        run = np.zeros(len(raw), bool)
        order = np.argsort([len(t) for t in cleaned], kind="stable")
        chunks = [
            order[start : start + self.batch_size]
            for start in range(0, len(cleaned), self.batch_size)
        ]

        def chunk_companies(idx: np.ndarray) -> tuple[Companies, list[int]]:
            refs = [(row, s) for row, i in enumerate(idx) for s in spans[i]]
            where = [int(first_company[i]) + j for i in idx for j in range(len(spans[i]))]
            return refs, where

        def encode(idx: np.ndarray) -> tuple[np.ndarray, list[tuple[_Group, Any]]]:
            """The chunk's rows to run and each group's inputs for them: the first group
            decides which rows are kept, the others tokenise only those."""
            encoded = []
            for k, group in enumerate(self.groups):
                refs = chunk_companies(idx)[0] if group.has_entity else []
                inputs, keep = group.encode(
                    [cleaned[i] for i in idx], refs, drop_truncated=skip_truncated and k == 0
                )
                idx = idx[keep]
                encoded.append((group, inputs))
                if not len(idx):
                    return idx, []
            return idx, encoded

        for idx, encoded in self._tokenizing.map(encode, chunks):
            run[idx] = True
            for group, inputs in encoded:
                out = group.run(inputs)
                for task in self.labels:
                    if task in out:
                        result[task][idx] = out[task]
                if ENTITY in result and "entity_covered" in out:
                    where = chunk_companies(idx)[1]
                    result[ENTITY][where] = out[ENTITY]
                    result["entity_covered"][where] = out["entity_covered"]
        if ENTITY in result:
            result[ENTITY][~result["entity_covered"]] = 0.0
        return result, run

    def score(
        self, texts: list[str], companies: list[list[CompanyMention]] | None = None
    ) -> list[ItemScores]:
        """Topic and sentiment per text, and a verdict per company (the per-company head's
        where the artifact has one and a mention survived truncation, else the text's)."""
        return [s for s in self._score(texts, companies, skip_truncated=False) if s is not None]

    def score_fitting(
        self, texts: list[str], companies: list[list[CompanyMention]] | None = None
    ) -> list[ItemScores | None]:
        """`score` for the texts that fit the window; None for a text it would cut, which
        is not run through the model (a `ChunkingScorer` scores its chunks instead). From
        the one tokenisation the texts get anyway: no separate token count."""
        return self._score(texts, companies, skip_truncated=True)

    def _score(
        self,
        texts: list[str],
        companies: list[list[CompanyMention]] | None,
        *,
        skip_truncated: bool,
    ) -> list[ItemScores | None]:
        if not texts:
            return []
        spans = None
        if companies is not None:
            spans = [[[(m.start, m.end) for m in c.mentions] for c in cs] for cs in companies]
        probs, run = self._predict(texts, spans, skip_truncated=skip_truncated)
        out: list[ItemScores | None] = []
        k = 0
        for i in range(len(texts)):
            mine = companies[i] if companies is not None else []
            if not run[i]:
                out.append(None)
                k += len(mine)
                continue
            sentiment = _label_scores(self.labels[SENTIMENT], probs[SENTIMENT][i])
            verdicts = []
            for company in mine:
                if ENTITY in probs and probs["entity_covered"][k]:
                    own = _label_scores(self.entity_labels, probs[ENTITY][k])
                    verdicts.append(_company_scores(company, own, "entity_head"))
                else:
                    verdicts.append(_company_scores(company, sentiment, "text"))
                k += 1
            item = _item_scores(_label_scores(self.labels[TOPIC], probs[TOPIC][i]), sentiment)
            out.append(item.model_copy(update={"companies": verdicts}))
        return out


def _label_scores(labels: list[str], row: np.ndarray) -> LabelScores:
    values = {name: min(max(float(p), 0.0), 1.0) for name, p in zip(labels, row, strict=True)}
    best = int(np.argmax(row))
    return LabelScores(label=labels[best], confidence=values[labels[best]], probs=values)


def _company_scores(company: CompanyMention, own: LabelScores, source: str) -> CompanyScores:
    score = own.probs.get("bullish", 0.0) - own.probs.get("bearish", 0.0)
    return CompanyScores(
        ticker=company.ticker,
        name=company.name,
        sentiment=own.label,  # type: ignore[arg-type]
        confidence=own.confidence,
        probs=own.probs,
        score=min(max(score, -1.0), 1.0),
        source=source,  # type: ignore[arg-type]
        mentions=company.mentions,
    )


def _item_scores(topic: LabelScores, sentiment: LabelScores) -> ItemScores:
    score = sentiment.probs["bullish"] - sentiment.probs["bearish"]
    return ItemScores(topic=topic, sentiment=sentiment, sentiment_score=min(max(score, -1.0), 1.0))
