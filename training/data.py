"""Labelled data: read a file (or a Hub data set), check it, map labels, split it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from finsentry.models.labels import SENTIMENT, dataset_label_names, read_label_map
from finsentry.training.config import DataSpec


class DataError(ValueError):
    """The input data cannot be used; the message says which file and why."""


@dataclass(frozen=True)
class TaskData:
    """One task's examples with label ids in `labels` order, split three ways."""

    task: str
    labels: list[str]
    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    fingerprint: dict[str, object]


_READERS = {
    ".csv": lambda p: pd.read_csv(p),
    ".tsv": lambda p: pd.read_csv(p, sep="\t"),
    ".jsonl": lambda p: pd.read_json(p, lines=True),
    ".json": lambda p: pd.read_json(p, lines=True),
    ".parquet": lambda p: pd.read_parquet(p),
    ".pq": lambda p: pd.read_parquet(p),
}


def read_table(source: str, split: str = "train") -> pd.DataFrame:
    """A local CSV / TSV / JSONL / Parquet file, or a Hugging Face dataset id (online)."""
    path = Path(source)
    if path.exists():
        reader = _READERS.get(path.suffix.lower())
        if reader is None:
            raise DataError(f"{path}: unsupported file type; use one of {sorted(_READERS)}")
        try:
            frame = reader(path)
        except Exception as exc:
            raise DataError(f"{path}: cannot read it as {path.suffix} ({exc})") from exc
        if not isinstance(frame, pd.DataFrame) or frame.empty:
            raise DataError(f"{path}: no rows")
        return frame
    if source.count("/") == 1 and not source.startswith((".", "/")):
        return _read_hub_dataset(source, split)
    raise DataError(f"{source}: no such file (and not a Hugging Face dataset id)")


def _read_hub_dataset(name: str, split: str) -> pd.DataFrame:
    """Download a dataset's data files from the Hub and read the ones of `split`."""
    try:
        from huggingface_hub import snapshot_download

        folder = Path(
            snapshot_download(
                name,
                repo_type="dataset",
                allow_patterns=["*.csv", "*.parquet", "*.jsonl", "*.json", "*.tsv"],
            )
        )
    except Exception as exc:
        raise DataError(
            f"cannot fetch Hugging Face dataset {name!r} ({type(exc).__name__}: {exc}); "
            "the Hub needs network access: pass a local CSV / JSONL / Parquet file instead"
        ) from exc
    files = [
        f
        for f in sorted(folder.rglob("*"))
        if f.suffix.lower() in _READERS and split in f.name.lower() and f.name != "label_map.json"
    ]
    if not files:
        raise DataError(f"Hugging Face dataset {name!r} has no data file for split {split!r}")
    return pd.concat([read_table(str(f)) for f in files], ignore_index=True)


def default_label_map(spec: DataSpec) -> dict[str, str] | None:
    """The spec's label map, else a `label_map.json` beside the data file."""
    if spec.label_map is not None:
        return spec.label_map
    beside = Path(spec.source).parent / "label_map.json"
    return read_label_map(beside) if Path(spec.source).exists() and beside.is_file() else None


def raw_key(value: object) -> str:
    """Labels as strings; integral floats (pandas upcasts) lose their `.0`."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def clean_examples(
    frame: pd.DataFrame, spec: DataSpec, task: str, *, origin: str
) -> tuple[pd.DataFrame, list[str]]:
    """Columns `text` and `label` (an id into the returned label names), checked.

    Rows without text are dropped; a label outside the label map is an error, since a
    mislabelled file would otherwise train a wrong model silently."""
    for column in (spec.text_col, spec.label_col):
        if column not in frame.columns:
            raise DataError(
                f"{origin}: no column {column!r}; columns are {list(frame.columns)} "
                "(set the text / label column options)"
            )
    texts = frame[spec.text_col]
    keep = texts.notna() & texts.astype(str).str.strip().ne("") & frame[spec.label_col].notna()
    frame = frame.loc[keep]
    if frame.empty:
        raise DataError(f"{origin}: no rows with both a text and a label")
    raw = [raw_key(v) for v in frame[spec.label_col]]
    mapping = default_label_map(spec)
    try:
        if mapping is None:
            names_of = {r: r for r in sorted(set(raw))}
            if task == SENTIMENT:
                names_of = dataset_label_names(names_of, task)
        else:
            ordered = sorted(mapping, key=lambda k: (0, int(k)) if k.isdigit() else (1, 0))
            names_of = dataset_label_names({k: mapping[k] for k in ordered}, task)
    except ValueError as exc:
        raise DataError(f"{origin}: {exc}") from exc
    unknown = sorted(set(raw) - set(names_of))
    if unknown:
        raise DataError(
            f"{origin}: labels {unknown[:10]} are not in the label map {sorted(names_of)}; "
            "check the label column or pass a label map"
        )
    labels = list(dict.fromkeys(names_of.values()))
    index = {name: i for i, name in enumerate(labels)}
    out = pd.DataFrame(
        {
            "text": frame[spec.text_col].astype(str).to_numpy(),
            "label": [index[names_of[r]] for r in raw],
        }
    )
    out = out.drop_duplicates(subset="text", keep="first").reset_index(drop=True)
    return out, labels


def stratified_split(
    labels: np.ndarray, fractions: tuple[float, ...], seed: int
) -> list[np.ndarray]:
    """Indices for each fraction (the rest goes first), stratified by label, seeded.

    Per class, each split gets round(n * fraction) examples but the first keeps at least
    one, so tiny classes stay trainable."""
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in range(len(fractions) + 1)]
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        rng.shuffle(members)
        start = 0
        for i, fraction in enumerate(fractions, start=1):
            take = min(round(len(members) * fraction), len(members) - start - 1)
            take = max(take, 0)
            parts[i].extend(members[start : start + take].tolist())
            start += take
        parts[0].extend(members[start:].tolist())
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def fingerprint(source: str, frame: pd.DataFrame, spec: DataSpec) -> dict[str, object]:
    digest = hashlib.sha256()
    for text, label in zip(frame["text"], frame["label"], strict=True):
        digest.update(f"{label}\t{text}\n".encode())
    return {
        "source": source,
        "rows": len(frame),
        "sha256": digest.hexdigest()[:16],
        "columns": [spec.text_col, spec.label_col],
        "label_map": json.dumps(spec.label_map, sort_keys=True) if spec.label_map else None,
    }


def load_task_data(
    task: str,
    spec: DataSpec,
    *,
    val_frac: float,
    test_frac: float,
    seed: int,
    max_samples: int | None = None,
) -> TaskData:
    """Read, check and split one task's data: train / validation (early stopping) / test."""
    frame, labels = clean_examples(
        read_table(spec.source, spec.split), spec, task, origin=spec.source
    )
    if len(frame) < 10:
        raise DataError(f"{spec.source}: only {len(frame)} usable rows; need at least 10")
    print_ = fingerprint(spec.source, frame, spec)
    if max_samples is not None and len(frame) > max_samples:
        fraction = max_samples / len(frame)
        _, keep = stratified_split(frame["label"].to_numpy(), (fraction,), seed)
        frame = frame.iloc[keep].reset_index(drop=True)
        print_["sampled"] = max_samples
    train_idx, val_idx, test_idx = stratified_split(
        frame["label"].to_numpy(), (val_frac, test_frac), seed
    )
    if len(val_idx) == 0 or len(test_idx) == 0:
        raise DataError(f"{spec.source}: too few rows for validation and test splits")
    split = {"train": train_idx, "val": val_idx, "test": test_idx}
    print_["split"] = {k: len(v) for k, v in split.items()}
    print_["seed"] = seed
    return TaskData(
        task=task,
        labels=labels,
        train=frame.iloc[train_idx].reset_index(drop=True),
        val=frame.iloc[val_idx].reset_index(drop=True),
        test=frame.iloc[test_idx].reset_index(drop=True),
        fingerprint=print_,
    )
