"""Backfill re-scoring on the real Elasticsearch: killed half-way and resumed, every selected
item is re-scored exactly once (document `_version` 2: indexed once, updated once)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from finsentry.index.rescore import (
    RescoreQuery,
    checkpoint_file,
    parse_time,
    read_checkpoint,
    rescore,
    selection_query,
)
from finsentry.index.template import apply_company_verdicts_template, apply_items_template
from finsentry.models.registry import promote
from finsentry.models.scorer import load_scorer
from finsentry.settings import Settings
from tests.support.crafted import crafted_item

NOW = datetime.now(UTC).replace(microsecond=0)
SELECTED, OTHER = 300, 20


@pytest.fixture(scope="module")
def bootstrap_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from finsentry.models.bootstrap import train_bootstrap

    models = tmp_path_factory.mktemp("rescore-models")
    path = train_bootstrap(Settings().data_dir, models, max_samples=300)
    promote(models, str(path), data_dir=Settings().data_dir)
    return models


def _index_items(es: Any, index: str) -> None:
    apply_items_template(es, index)
    operations: list[dict[str, Any]] = []
    for i in range(SELECTED + OTHER):
        version = "v-old" if i < SELECTED else "v-other"
        item = crafted_item(
            f"r{i:04d}",
            NOW - timedelta(seconds=SELECTED + OTHER - i),
            "neutral",
            ["AAPL"] if i % 3 == 0 else [],
            text=f"Apple item {i}: shares slide after a weak outlook",
            model_version=version,
        )
        operations += [{"index": {"_index": index, "_id": item.id}}, item.model_dump(mode="json")]
    assert not es.bulk(operations=operations, refresh=True)["errors"]


def _docs(es: Any, index: str) -> dict[str, dict[str, Any]]:
    es.indices.refresh(index=index)
    hits = es.search(index=index, size=1000, version=True)["hits"]["hits"]
    return {h["_id"]: {"_version": h["_version"], **h["_source"]} for h in hits}


def _env(settings: Settings, models: Path, state: Path) -> dict[str, str]:
    return {
        **os.environ,
        "FINSENTRY_ITEMS_INDEX": settings.items_index,
        "FINSENTRY_MODELS_DIR": str(models),
        "FINSENTRY_STATE_DIR": str(state),
        "FINSENTRY_MANAGE_SERVICES": "false",
        "FINSENTRY_DEVICE": "cpu",
        "FINSENTRY_RESCORE_NICE": "0",
    }


@pytest.mark.integration
def test_rescore_killed_half_way_then_resumed(
    settings: Settings, es: Any, bootstrap_models: Path, tmp_path: Path
) -> None:
    _index_items(es, settings.items_index)
    target = load_scorer(Settings(models_dir=bootstrap_models)).version
    query = RescoreQuery(index=settings.items_index, from_version="v-old")
    checkpoint = checkpoint_file(tmp_path, query, target)
    command = [sys.executable, "-m", "finsentry", "rescore", "--from-version", "v-old"]
    command += ["--batch", "20", "--max-rate", "60", "--no-progress", "--json"]
    env = _env(settings, bootstrap_models, tmp_path)

    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while (read_checkpoint(checkpoint) or type("_", (), {"seen": 0})).seen < 100:
        assert first.poll() is None, first.stdout.read().decode()  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    killed_at = read_checkpoint(checkpoint)
    assert killed_at is not None and 100 <= killed_at.seen < SELECTED
    half = _docs(es, settings.items_index)
    done_before = sum(d["model_version"] == target for d in half.values())
    assert 100 <= done_before < SELECTED

    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert second.returncode == 0, second.stdout + second.stderr
    result = json.loads(second.stdout.strip().splitlines()[-1])
    assert result["resumed"] and result["finished"] and result["target_version"] == target
    assert result["updated"] == SELECTED - done_before and result["conflicts"] == 0
    assert not checkpoint.exists()

    docs = _docs(es, settings.items_index)
    selected = [d for i, d in docs.items() if int(i[1:]) < SELECTED]
    assert len(selected) == SELECTED
    assert {d["model_version"] for d in selected} == {target}
    assert {d["previous_model_version"] for d in selected} == {"v-old"}
    assert {d["_version"] for d in selected} == {2}, "each re-scored exactly once"
    assert all(d["rescored_at"] for d in selected)
    with_ticker = docs["r0003"]
    assert [(c["ticker"], c["source"]) for c in with_ticker["companies"]] == [("AAPL", "text")]
    others = [d for i, d in docs.items() if int(i[1:]) >= SELECTED]
    assert {(d["model_version"], d["_version"]) for d in others} == {("v-other", 1)}

    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert json.loads(again.stdout.strip().splitlines()[-1])["updated"] == 0


class RewritingScorer:
    """Delegates to a real scorer; while the first page is scored, the 'live worker'
    re-writes one of its items."""

    def __init__(self, inner: Any, es: Any, index: str, doc_id: str) -> None:
        self.inner, self.es, self.index, self.doc_id = inner, es, index, doc_id
        self.version = inner.version
        self.calls = 0

    def score(self, texts: list[str], companies: Any = None) -> Any:
        self.calls += 1
        if self.calls == 1:
            doc = self.es.get(index=self.index, id=self.doc_id)["_source"]
            self.es.index(index=self.index, id=self.doc_id, document={**doc, "text": "rewritten"})
        return self.inner.score(texts, companies)


@pytest.mark.integration
def test_rescore_time_range_and_a_concurrent_rewrite(
    settings: Settings, es: Any, bootstrap_models: Path, tmp_path: Path
) -> None:
    _index_items(es, settings.items_index)
    inner = load_scorer(Settings(models_dir=bootstrap_models))
    # scored_at of r{i} is NOW - (320 - i) s: this range holds r0100 .. r0199.
    query = RescoreQuery(
        index=settings.items_index,
        since=NOW - timedelta(seconds=220),
        until=NOW - timedelta(seconds=120),
    )
    scorer = RewritingScorer(inner, es, settings.items_index, "r0100")
    apply_company_verdicts_template(es, settings.company_verdicts_index)
    result = rescore(
        es,
        scorer,
        query,
        checkpoint_path=tmp_path / "cp.json",
        batch=50,
        progress=False,
        verdicts_index=settings.company_verdicts_index,
    )
    assert (result.selected, result.updated, result.conflicts) == (100, 99, 1)
    docs = _docs(es, settings.items_index)
    rescored = sorted(i for i, d in docs.items() if d["model_version"] == inner.version)
    assert rescored == [f"r{i:04d}" for i in range(101, 200)]
    assert docs["r0100"]["text"] == "rewritten" and docs["r0100"]["model_version"] == "v-old"
    # The flat per-company verdicts of the re-scored items (every third names AAPL) follow
    # them, written once each; the item the worker re-wrote meanwhile is left to the worker.
    verdicts = _docs(es, settings.company_verdicts_index)
    assert sorted(verdicts) == [f"r{i:04d}:AAPL" for i in range(101, 200) if i % 3 == 0]
    assert {(v["model_version"], v["_version"]) for v in verdicts.values()} == {(inner.version, 1)}
    for doc_id, verdict in verdicts.items():
        assert verdict["scored_at"] == docs[doc_id.split(":")[0]]["scored_at"]


@pytest.mark.integration
def test_rescore_waits_while_the_live_worker_is_behind(
    settings: Settings,
    es: Any,
    bootstrap_models: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Five items wait on the real raw topic, uncommitted by the live group: with a yield
    limit of 2 the rescore re-scores nothing until the group commits them, then all (in a
    new point in time: the pause is made longer than the reopen threshold)."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    from finsentry.index import rescore as rescore_module
    from finsentry.streams.consumer_lag import live_backlog

    monkeypatch.setattr(rescore_module, "REOPEN_AFTER_S", 1.0)
    opened: list[str] = []
    real_open = es.open_point_in_time

    def counting_open(**kwargs: Any) -> Any:
        response = real_open(**kwargs)
        opened.append(response["id"])
        return response

    monkeypatch.setattr(es, "open_point_in_time", counting_open)

    live = settings.model_copy(update={"topic_partitions": 1, "rescore_yield_lag": 2})
    producer = KafkaProducer(bootstrap_servers=live.kafka_bootstrap, acks="all")
    for i in range(5):
        producer.send(live.topic_raw, key=f"k{i}".encode(), value=b"{}", partition=0)
    producer.flush()
    producer.close()
    _index_items(es, live.items_index)
    scorer = load_scorer(Settings(models_dir=bootstrap_models))
    query = RescoreQuery(index=live.items_index, from_version="v-old")
    behind, close = live_backlog(live)
    assert behind is not None and behind()
    asked: list[int] = []

    def yield_to() -> bool:
        docs = _docs(es, live.items_index).values()
        asked.append(sum(d["model_version"] == scorer.version for d in docs))
        if len(asked) == 4:  # the live worker catches up: its group commits the five
            consumer = KafkaConsumer(bootstrap_servers=live.kafka_bootstrap, group_id=live.app_id)
            consumer.commit({TopicPartition(live.topic_raw, 0): OffsetAndMetadata(5, "", -1)})
            consumer.close()
        return behind()

    try:
        result = rescore(
            es, scorer, query, checkpoint_path=tmp_path / "cp.json", batch=100, yield_to=yield_to
        )
    finally:
        close()
    # Asked before every page: nothing re-scored during the three waits, then a page a call.
    assert asked == [0, 0, 0, 0, 100, 200, 300]
    assert result.yielded_s == 3 * 0.5 and result.updated == SELECTED and result.finished
    assert len(opened) == 2  # one at the start, one after the 1.5 s pause
    assert not live_backlog(live.model_copy(update={"rescore_yield_lag": 0}))[0]


def test_lag_is_end_minus_committed_per_partition() -> None:
    from finsentry.streams.consumer_lag import lag_of

    assert lag_of({0: 10, 1: 7, 2: 3}, {0: 4, 2: 3}) == 6 + 7 + 0
    assert lag_of({0: 5}, {0: 9}) == 0  # committed past a truncated end: never negative


def test_selection_and_time_parsing() -> None:
    now = datetime(2026, 1, 2, 12, 0, tzinfo=UTC)
    assert parse_time("2h", now) == datetime(2026, 1, 2, 10, 0, tzinfo=UTC)
    assert parse_time("1.5d", now) == datetime(2026, 1, 1, 0, 0, tzinfo=UTC)
    assert parse_time("2026-01-01T08:00", now) == datetime(2026, 1, 1, 8, 0, tzinfo=UTC)
    with pytest.raises(ValueError):
        parse_time("yesterday", now)
    query = selection_query(
        RescoreQuery(index="i", since=now, from_version="bootstrap-tfidf-*"), "v2"
    )
    assert query == {
        "bool": {
            "filter": [
                {"range": {"scored_at": {"gte": now.isoformat()}}},
                {"wildcard": {"model_version": {"value": "bootstrap-tfidf-*"}}},
            ],
            "must_not": [{"term": {"model_version": "v2"}}],
        }
    }
