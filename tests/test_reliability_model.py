"""Model failure on a batch (issue 7, part 4): the batch is split until the failing item is
isolated; it is dead-lettered with the model's error, and the rest is scored.

End to end, the failure is a real one, not a mock: the served artifact is the tiny test model
with a manifest whose `max_length` (2048) exceeds the encoder's 512 positions, a plausible
misconfiguration. Short texts score; a text of over 512 tokens makes PyTorch raise inside the
model, as an out-of-memory error would. The out-of-memory exception type itself is checked
in-process, against the real scorer (a real CUDA OOM needs a GPU and is not provoked here).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

from finsentry.messages import ItemScores
from finsentry.models.runtime import ArtifactScorer
from finsentry.settings import Settings
from finsentry.streams.batch_processor import score_isolating_failures
from tests.conftest import unique_settings
from tests.support.counting import Tally, deliveries, write_counts
from tests.support.outcomes import record
from tests.support.streams import committed_offsets, count, documents, index_ids, kafka_admin
from tests.support.worker_process import WorkerProcess, wait_until

AREA = "model failure"
SHORT = 60
LONG_AT = (5, 20, 33, 50)
LONG_TEXT = " ".join(f"revenue{i % 50} grows" for i in range(400))  # ~1200 tokens


def _committed(settings: Settings) -> dict[int, int]:
    with kafka_admin(settings) as admin:
        return committed_offsets(admin, settings.app_id, settings.topic_raw)


def _over_long_artifact(tiny: Path, folder: Path) -> Path:
    """The tiny artifact, with a manifest that lets texts past the encoder's 512 positions."""
    broken = folder / tiny.name
    shutil.copytree(tiny, broken)
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest["max_length"] = 2048
    (broken / "manifest.json").write_text(json.dumps(manifest))
    return broken


@pytest.mark.integration
def test_a_batch_the_model_fails_on_is_split_and_only_the_bad_items_dead_lettered(
    services: Settings, es: Any, tiny_artifact: Path, tmp_path: Path
) -> None:
    settings = unique_settings(services, max_batch=16, max_wait=1.0)
    artifact = _over_long_artifact(tiny_artifact, tmp_path / "models")
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    long_ids = set()
    short_ids = set()
    for i in range(SHORT + len(LONG_AT)):
        if i in LONG_AT:
            item = {"id": f"long{i}", "text": LONG_TEXT}
            long_ids.add(item["id"])
        else:
            item = {"id": f"short{i}", "text": f"$AAPL item {i}: shares up on earnings"}
            short_ids.add(item["id"])
        producer.send(settings.topic_raw, key=item["id"].encode(), value=json.dumps(item).encode())
    producer.flush()
    producer.close()

    worker = WorkerProcess(settings, artifact, tmp_path / "worker.log")
    try:
        wait_until(
            lambda: (
                count(es, settings.items_index) >= SHORT
                and count(es, settings.dead_letters_index) >= len(LONG_AT)
            ),
            240,
            "short items indexed and long ones dead-lettered",
            worker,
        )
        wait_until(
            lambda: sum(_committed(settings).values()) >= SHORT + len(LONG_AT),
            60,
            "every offset committed (so every scored item published)",
            worker,
        )
        assert worker.proc.poll() is None
    finally:
        worker.terminate()
    try:
        indexed = index_ids(es, settings.items_index)
        letters = documents(es, settings.dead_letters_index)
        log = worker.log_text()
        tally = Tally(
            short_ids,
            write_counts(es, settings.items_index),
            deliveries(settings, settings.topic_scored),
            set(),
        )
    finally:
        for index in (settings.items_index, settings.dead_letters_index):
            es.options(ignore_status=404).indices.delete(index=index)
            es.options(ignore_status=404).indices.delete_index_template(name=index)

    splits = log.count("model failed on a batch of")
    dead_keys = {letter["key"] for letter in letters}
    all_scored = sorted(indexed) == sorted(short_ids)
    isolated = dead_keys == long_ids and all(letter["error"] == "model_error" for letter in letters)
    reasons = {letter["reason"] for letter in letters}
    record(
        AREA,
        f"{len(LONG_AT)} texts over the encoder's 512 positions among {SHORT} short ones, "
        "batches of 16, through the worker",
        "failing items isolated and dead-lettered (model_error); the rest scored",
        f"{len(indexed)}/{SHORT} short items indexed; dead letters {sorted(dead_keys)}; "
        f"{splits} batch split(s) logged; reason: {sorted(reasons)[0] if reasons else '-'}",
        all_scored and isolated and splits > 0,
    )
    record(
        AREA,
        "writes counted per item while batches are split (document _version, scored-topic "
        "messages)",
        "bisection re-scores, never re-writes: each short item indexed once, delivered once",
        tally.describe(),
        tally.complete and tally.bounded,
    )
    assert all_scored
    assert isolated, letters
    assert tally.complete and tally.bounded, tally.problems()
    assert all("RuntimeError" in r and "size of tensor" in r for r in reasons), reasons
    assert splits > 0


class OutOfMemoryOn:
    """The real scorer, raising torch's own OutOfMemoryError on a batch that holds `marker`
    (what CUDA raises when a batch of long texts does not fit)."""

    def __init__(self, scorer: ArtifactScorer, marker: str) -> None:
        self.scorer = scorer
        self.marker = marker
        self.version = scorer.version
        self.batches: list[int] = []

    def score(self, texts: list[str], companies: Any = None) -> list[ItemScores]:
        import torch

        self.batches.append(len(texts))
        if any(self.marker in t for t in texts):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return self.scorer.score(texts, companies)


def test_an_out_of_memory_error_is_isolated_to_its_item(tiny_artifact: Path) -> None:
    scorer = OutOfMemoryOn(ArtifactScorer(tiny_artifact, device="cpu"), "HUGE")
    texts = [f"$MSFT item {i}" for i in range(32)]
    texts[7] = "HUGE text that does not fit"
    results = score_isolating_failures(scorer, texts)
    failed = [i for i, r in enumerate(results) if not isinstance(r, ItemScores)]
    ok = failed == [7] and type(results[7]).__name__ == "OutOfMemoryError"
    record(
        AREA,
        "torch.OutOfMemoryError on one item of a batch of 32 (real scorer, in-process)",
        "only that item fails; 31 scored, by bisection",
        f"failed items {failed} ({type(results[7]).__name__}); "
        f"{len(scorer.batches)} scorer calls, batch sizes {scorer.batches}",
        ok,
    )
    assert ok
    assert len(scorer.batches) < len(texts)
