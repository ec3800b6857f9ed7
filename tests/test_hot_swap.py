"""Hot swap: a real worker on real Kafka and Elasticsearch follows promote / rollback between
batches, indexes every item exactly once with the version that scored it, and refuses a
broken artifact while the old one keeps serving."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

from finsentry.models.artifact import read_manifest
from finsentry.models.registry import (
    LiveEntry,
    LivePointer,
    promote,
    read_live,
    rollback,
    write_live,
)
from finsentry.settings import Settings
from tests.support.tiny_artifact import build_tiny_artifact
from tests.support.worker_process import WorkerProcess, settings_env, wait_until

pytestmark = pytest.mark.integration


class FollowingWorker(WorkerProcess):
    """`finsentry worker` serving whatever is live in `models_dir` (no pinned model)."""

    def __init__(self, settings: Settings, models_dir: Path, log_path: Path) -> None:
        env = settings_env(settings, models_dir)
        del env["FINSENTRY_MODEL_PATH"]
        env.update(
            FINSENTRY_MODELS_DIR=str(models_dir),
            FINSENTRY_MODEL_POLL_INTERVAL="0.5",
            FINSENTRY_DEVICE="cpu",
        )
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "finsentry", "worker", "--loglevel", "WARNING"],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )


def send(settings: Settings, prefix: str, count: int, rate: float) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=5)
    for i in range(count):
        item = {"id": f"{prefix}{i}", "text": f"$MSFT item {i}: shares move on cloud news"}
        producer.send(settings.topic_raw, key=item["id"].encode(), value=json.dumps(item).encode())
        time.sleep(1.0 / rate)
    producer.flush()
    producer.close()


def docs(es: Any, index: str) -> list[dict[str, Any]]:
    """Every document with its `_version` (2+ would mean it was written more than once)."""
    es.indices.refresh(index=index, ignore_unavailable=True)
    hits = es.options(ignore_status=404).search(
        index=index, size=5000, version=True, source=["model_version", "scored_at"]
    )
    return [
        {"id": h["_id"], "_version": h["_version"], **h["_source"]}
        for h in hits.get("hits", {}).get("hits", [])
    ]


def by_prefix(found: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    return sorted((d for d in found if d["id"].startswith(prefix)), key=lambda d: d["scored_at"])


def test_swap_rollback_and_a_broken_artifact_under_a_running_stream(
    settings: Settings, es: Any, tmp_path: Path
) -> None:
    settings = settings.model_copy(update={"max_batch": 16, "max_wait": 0.1})
    data_dir = Settings().data_dir
    models = tmp_path / "models"
    a = build_tiny_artifact(models, seed=1)
    b = build_tiny_artifact(models, shared_encoder=False, seed=2)
    va, vb = read_manifest(a).version, read_manifest(b).version
    promote(models, va, data_dir=data_dir)

    worker = FollowingWorker(settings, models, tmp_path / "worker.log")
    try:
        # 1. A is live.
        send(settings, "a", 60, rate=200)
        wait_until(lambda: len(docs(es, settings.items_index)) >= 60, 180, "60 items", worker)

        # 2. B is promoted while a stream runs.
        feed = threading.Thread(target=send, args=(settings, "s", 300, 40.0))
        feed.start()
        wait_until(
            lambda: len(by_prefix(docs(es, settings.items_index), "s")) >= 80, 60, "80", worker
        )
        promoted_at = datetime.now().astimezone()
        promote(models, vb, data_dir=data_dir)
        feed.join()
        wait_until(lambda: len(docs(es, settings.items_index)) >= 360, 120, "360 items", worker)

        # 3. A broken artifact becomes "live" behind the registry's back: refused, B serves.
        broken = Path(shutil.copytree(b, models / "broken"))
        (broken / "sentiment" / "model.safetensors").unlink()
        manifest = json.loads((broken / "manifest.json").read_text())
        (broken / "manifest.json").write_text(json.dumps({**manifest, "version": "broken-1"}))
        pointer = read_live(models)
        assert pointer is not None
        write_live(
            models,
            LivePointer(
                live=LiveEntry(version="broken-1", path="broken", promoted_at=promoted_at),
                history=[*pointer.history, pointer.live],
            ),
        )
        wait_until(lambda: "refused model" in worker.log_text(), 30, "the refusal", worker)
        send(settings, "x", 40, rate=200)
        wait_until(lambda: len(docs(es, settings.items_index)) >= 400, 60, "400 items", worker)

        # 4. Roll back twice: past the broken one to B, then to A.
        assert rollback(models, data_dir=data_dir).version == vb
        assert rollback(models, data_dir=data_dir).version == va
        time.sleep(2.0)  # a few polls: the worker has A loaded and waits for a batch
        send(settings, "r", 40, rate=200)
        wait_until(lambda: len(docs(es, settings.items_index)) >= 440, 60, "440 items", worker)
        time.sleep(1.5)  # anything written twice would show in _version
        found = docs(es, settings.items_index)
    finally:
        worker.terminate()

    assert len(found) == 440
    assert {d["_version"] for d in found} == {1}, "every item indexed exactly once"
    assert {d["model_version"] for d in by_prefix(found, "a")} == {va}

    stream = [d["model_version"] for d in by_prefix(found, "s")]
    assert len(stream) == 300
    swap = stream.index(vb)
    assert 80 <= swap < 300 and stream == [va] * swap + [vb] * (300 - swap), stream
    for doc in by_prefix(found, "s"):
        if datetime.fromisoformat(doc["scored_at"]) < promoted_at:
            assert doc["model_version"] == va  # scored before the promotion: A

    assert {d["model_version"] for d in by_prefix(found, "x")} == {vb}  # the broken one refused
    assert {d["model_version"] for d in by_prefix(found, "r")} == {va}  # rolled back
    log = worker.log_text()
    assert "missing sentiment/model.safetensors" in log and f"still serving {vb}" in log
