"""Replay a JSONL or CSV file into the raw topic, paced, with a progress bar.

Rows become NewsItem-shaped JSON. A row without an id gets one derived from the file name
and row number, so replaying the same file twice writes the same ids (no duplicates in
the index). A JSONL line that is not JSON is sent as it is: the worker dead-letters it.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from finsentry.feeds.producer import Pacer, make_producer
from finsentry.settings import Settings


def stable_id(path: Path, row: int) -> str:
    return hashlib.sha1(f"{path.name}:{row}".encode()).hexdigest()[:20]


def _with_defaults(record: dict, path: Path, row: int, source: str) -> dict:
    record = {k: v for k, v in record.items() if v not in (None, "")}
    record.setdefault("id", stable_id(path, row))
    record.setdefault("source", source)
    if "label" in record:  # labelled training files: keep the label as metadata
        record.setdefault("extra", {})["label"] = record.pop("label")
    return record


def _message(record: dict) -> tuple[bytes, bytes]:
    return str(record["id"]).encode(), json.dumps(record).encode()


def read_records(path: Path, source: str | None = None) -> Iterator[tuple[bytes | None, bytes]]:
    """The file's rows as raw (key, value) messages."""
    source = source or f"replay:{path.name}"
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            for row, record in enumerate(csv.DictReader(handle)):
                yield _message(_with_defaults(dict(record), path, row, source))
        return
    with path.open("rb") as handle:
        for row, line in enumerate(handle):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                yield None, line.rstrip(b"\r\n")
                continue
            if isinstance(record, dict):
                yield _message(_with_defaults(record, path, row, source))
            else:
                yield None, line.rstrip(b"\r\n")


def count_rows(path: Path) -> int:
    with path.open("rb") as handle:
        lines = sum(1 for line in handle if line.strip())
    return lines - 1 if path.suffix.lower() == ".csv" else lines


def replay(
    settings: Settings,
    path: Path,
    rate: float = 0.0,
    limit: int | None = None,
    progress: bool = True,
    source: str | None = None,
) -> int:
    """Send the file's rows to the raw topic; returns how many were sent."""
    producer = make_producer(settings)
    pacer = Pacer(rate)
    total = count_rows(path) if limit is None else min(limit, count_rows(path))
    sent = 0
    with tqdm(total=total, unit="item", desc=f"replay {path.name}", disable=not progress) as bar:
        for key, value in read_records(path, source):
            if limit is not None and sent >= limit:
                break
            pacer.wait()
            producer.send(settings.topic_raw, key=key, value=value)
            sent += 1
            bar.update()
    producer.flush()
    producer.close()
    return sent
