"""The live view: snapshot numbers from a real Elasticsearch index, and their rendering."""

from __future__ import annotations

import io
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from elasticsearch import Elasticsearch
from rich.console import Console

from finsentry.es_client import make_es_client
from finsentry.index.template import apply_dead_letters_template, apply_items_template
from finsentry.messages import DeadLetter
from finsentry.settings import Settings
from finsentry.streams.live_view import (
    LiveSnapshot,
    build_snapshot,
    fetch_snapshot,
    render,
    run_live_view,
)
from tests.support.crafted import crafted_item

NOW = datetime.now(UTC).replace(microsecond=0)

# (seconds ago, tickers, sentiment, model version, text)
DOCS: list[tuple[int, list[str], str, str, str]] = [
    (2, ["AAA"], "bearish", "sent-v2", "AAA recalls widgets over a wiring fault"),
    (3, ["AAA"], "bearish", "sent-v2", "AAA hit with a probe into its books"),
    (4, ["BBB"], "bullish", "sent-v2", "BBB beats estimates"),
    (30, ["AAA"], "bearish", "sent-v2", "AAA downgraded to sell"),
    (31, ["AAA"], "neutral", "sent-v2", "AAA sets meeting date"),
    (32, ["BBB"], "bullish", "sent-v2", "BBB raises guidance"),
    (33, ["CCC"], "bearish", "sent-v2", "CCC misses estimates"),
    (240, ["AAA", "BBB"], "bearish", "sent-v2", "AAA and BBB both slide"),
    (241, ["BBB"], "neutral", "sent-v2", "BBB files annual report"),
    (600, ["BBB"], "bearish", "sent-v2", "BBB cuts outlook"),
    (7200, ["AAA"], "bullish", "sent-v1", "AAA old news"),
    (7201, [], "bearish", "sent-v1", "Stocks slide as yields climb"),
]
# Per-company verdicts that differ from the item's, and the evidence of a chunked text.
OWN_VERDICTS = {7: {"BBB": "bullish"}}
EVIDENCE = {3: "Analysts cut AAA to sell as orders dry up"}


def _doc(i: int, ago: int, tickers: list[str], sentiment: str, model: str, text: str) -> dict:
    scored = NOW - timedelta(seconds=ago)
    item = crafted_item(
        f"doc-{i}",
        scored,
        sentiment,
        tickers,
        text=text,
        model_version=model,
        company_sentiment=OWN_VERDICTS.get(i),
    )
    if i in EVIDENCE:
        item = item.model_copy(update={"evidence": EVIDENCE[i], "chunks": 3})
    return item.model_dump(mode="json")


@pytest.fixture(scope="module")
def es() -> Iterator[Elasticsearch]:
    client = make_es_client(Settings())
    deadline = time.monotonic() + 60
    while True:
        try:
            if client.cluster.health(wait_for_status="yellow", timeout="5s")["status"] != "red":
                break
        except Exception:
            if time.monotonic() > deadline:
                pytest.fail("no Elasticsearch at localhost:9200: run `finsentry services up`")
            time.sleep(1)
    yield client
    client.close()


@pytest.fixture(scope="module")
def indices(es: Elasticsearch) -> Iterator[tuple[str, str]]:
    suffix = uuid.uuid4().hex[:12]
    items, dead = f"test-live-items-{suffix}", f"test-live-dead-{suffix}"
    apply_items_template(es, items)
    operations: list[dict[str, Any]] = []
    for i, row in enumerate(DOCS):
        operations += [{"index": {"_index": items, "_id": f"doc-{i}"}}, _doc(i, *row)]
    response = es.bulk(operations=operations, refresh=True)
    assert not response["errors"], response
    yield items, dead
    es.indices.delete(index=[items, dead], ignore_unavailable=True)
    for name in (items, dead):
        if es.indices.exists_index_template(name=name):
            es.indices.delete_index_template(name=name)


@pytest.mark.integration
def test_snapshot_numbers(es: Elasticsearch, indices: tuple[str, str]) -> None:
    items, dead = indices
    snapshot = fetch_snapshot(es, items, dead, now=NOW, min_volume=3)

    assert snapshot.total == 12
    assert (snapshot.count_10s, snapshot.count_1m) == (3, 7)
    assert snapshot.rate_10s == pytest.approx(0.3)
    assert snapshot.mix == {"bearish": 5, "neutral": 2, "bullish": 2}
    assert snapshot.mix_percent("bearish") == pytest.approx(500 / 9)
    # 15 min: AAA 4 of 5 bearish, BBB 2 of 5; CCC (1 item) is under the minimum volume.
    assert [(t.ticker, t.total, t.negative) for t in snapshot.top_negative] == [
        ("AAA", 5, 4),
        ("BBB", 5, 2),
    ]
    assert [n.text for n in snapshot.newest_negative][:3] == [
        "AAA recalls widgets over a wiring fault",
        "AAA hit with a probe into its books",
        "AAA downgraded to sell",
    ]
    assert len(snapshot.newest_negative) == 7
    both = next(n for n in snapshot.newest_negative if n.text == "AAA and BBB both slide")
    assert [(c.ticker, c.sentiment) for c in both.companies] == [
        ("AAA", "bearish"),
        ("BBB", "bullish"),
    ]
    assert [n.evidence for n in snapshot.newest_negative if n.evidence] == [EVIDENCE[3]]
    assert snapshot.model_versions == ["sent-v2", "sent-v1"]
    assert snapshot.dead_letters is None
    assert snapshot.error is None

    console = Console(record=True, width=140, file=io.StringIO())
    console.print(render(snapshot))
    text = console.export_text()
    for expected in (
        "0.3 items/s (3)",
        "0.1 items/s (7)",
        "55.6%",
        "22.2%",
        "AAA recalls widgets over a wiring fault",
        "AAA▼ BBB▲",  # each company with its own verdict
        f"» {EVIDENCE[3]}",  # a chunked text shows its most negative chunk
        "80%",
        "40%",
        "sent-v2, sent-v1",
        "dead letters: -",
        f"{NOW:%H:%M:%S}",
    ):
        assert expected in text, expected
    assert "CCC misses" in text  # a newest bearish item, though not a top ticker


@pytest.mark.integration
def test_dead_letters_and_missing_items_index(es: Elasticsearch, indices: tuple[str, str]) -> None:
    items, dead = indices
    apply_dead_letters_template(es, dead)
    for offset in range(2):
        letter = DeadLetter.from_raw(
            b"{not json", reason="bad", error="invalid_json", source_topic="t", partition=0,
            offset=offset,
        )  # fmt: skip
        es.index(index=dead, id=str(offset), document=letter.model_dump(mode="json"))
    es.indices.refresh(index=dead)
    assert fetch_snapshot(es, items, dead, now=NOW).dead_letters == 2

    missing = fetch_snapshot(es, f"{items}-missing", dead, now=NOW)
    assert missing.total == 0 and missing.dead_letters == 2
    assert missing.error is not None and "does not exist" in missing.error


@pytest.mark.integration
def test_run_live_view_stops_on_event(es: Elasticsearch, indices: tuple[str, str]) -> None:
    items, dead = indices
    settings = Settings(items_index=items, dead_letters_index=dead)
    console = Console(record=True, width=140, file=io.StringIO())
    stop = threading.Event()
    thread = threading.Thread(
        target=run_live_view, args=(settings, stop), kwargs={"refresh_s": 0.2, "console": console}
    )
    thread.start()
    time.sleep(1.0)
    stop.set()
    thread.join(timeout=10)
    assert not thread.is_alive()
    text = console.export_text()
    assert "finsentry live" in text and "sent-v2" in text and "AAA" in text


def test_empty_responses_render_zeros() -> None:
    snapshot = build_snapshot({}, {}, None, taken_at=NOW, error="Elasticsearch: down")
    assert snapshot == LiveSnapshot(taken_at=NOW, error="Elasticsearch: down")
    assert (snapshot.rate_1m, snapshot.mix_percent("bullish")) == (0.0, 0.0)
    console = Console(record=True, width=120, file=io.StringIO())
    console.print(render(snapshot))
    text = console.export_text()
    assert "Elasticsearch: down" in text and "0.0 items/s" in text


def test_company_verdicts_and_evidence_from_the_indexed_source() -> None:
    hit = {
        "scored_at": None,
        "tickers": ["AAPL", "MSFT", "ODD"],
        "companies": [
            {"ticker": "AAPL", "sentiment": "bullish"},
            {"ticker": "MSFT", "sentiment": "bearish"},
            {"ticker": "ODD"},  # no verdict: left out
        ],
        "text": "Apple and Microsoft ...",
        "evidence": "Microsoft " + "warns " * 50,
    }
    snapshot = build_snapshot({}, {"hits": {"hits": [{"_source": hit}]}}, None, taken_at=NOW)
    [item] = snapshot.newest_negative
    assert [(c.ticker, c.sentiment) for c in item.companies] == [
        ("AAPL", "bullish"),
        ("MSFT", "bearish"),
    ]
    assert item.evidence is not None and len(item.evidence) == 140
    assert item.evidence.startswith("Microsoft warns") and item.evidence.endswith("…")


def test_long_texts_are_truncated() -> None:
    negatives = {
        "hits": {
            "hits": [{"_source": {"text": "word " * 100, "tickers": ["X"], "scored_at": None}}]
        }
    }
    snapshot = build_snapshot({}, negatives, 3, taken_at=NOW, text_chars=40)
    assert len(snapshot.newest_negative[0].text) == 40
    assert snapshot.newest_negative[0].text.endswith("…")
    assert snapshot.dead_letters == 3


# --- fits a terminal, shows the model life cycle, alerts and sources -------------------------


def _full_snapshot() -> LiveSnapshot:
    from finsentry.models.registry import TrainingStatus
    from finsentry.streams.live_view import (
        AlertRow,
        CompanyVerdict,
        NegativeItem,
        SourceRow,
        TickerStat,
    )

    return LiveSnapshot(
        taken_at=NOW,
        index="finsentry-items",
        total=12345,
        count_10s=1500,
        count_1m=9000,
        top_negative=[TickerStat(ticker=f"T{i}", total=50, negative=40 - i) for i in range(8)],
        newest_negative=[
            NegativeItem(
                scored_at=NOW,
                tickers=["AAPL", "MSFT", "NVDA"],
                companies=[
                    CompanyVerdict(ticker="AAPL", sentiment="bullish"),
                    CompanyVerdict(ticker="MSFT", sentiment="bearish"),
                    CompanyVerdict(ticker="NVDA", sentiment="neutral"),
                ],
                text="word " * 60,
                evidence="MSFT warns on cloud margins " + "word " * 40 if i % 2 else None,
            )
            for i in range(8)
        ],
        model_versions=["bootstrap-tfidf-0123456789ab"],
        dead_letters=3,
        live_model="bootstrap-tfidf-0123456789ab",
        training=TrainingStatus(
            phase="training",
            message="fine-tuning the default model loss=0.4",
            step=1234,
            total=3984,
            eta_s=1860,
            started_at=NOW,
            updated_at=NOW,
        ),
        alerts=[
            AlertRow(
                created_at=NOW,
                rule="ticker_negative_burst",
                key=f"T{i}",
                negative_share=0.8,
                total=40,
            )
            for i in range(6)
        ],
        sources=[
            SourceRow(source=f"feed-{i}", status="ok" if i else "error:http_503", items_total=10)
            for i in range(6)
        ],
        error="Elasticsearch: ConnectionError: " + "x" * 300,
    )


def _lines(snapshot: LiveSnapshot, height: int, width: int) -> list[str]:
    console = Console(record=True, width=width, file=io.StringIO())
    console.print(render(snapshot, height=height))
    return console.export_text().rstrip("\n").split("\n")


@pytest.mark.parametrize("width", [80, 100, 160])
def test_a_full_view_fits_40_lines_and_shows_the_model_life_cycle(width: int) -> None:
    lines = _lines(_full_snapshot(), 40, width)
    assert len(lines) <= 40
    text = "\n".join(lines)
    for expected in (
        "bootstrap-tfidf",
        "31%",
        "1,234/3,984",
        "ETA 31 min",
        "newest alerts",
        "AAPL▲ MSFT▼ NVDA·",
        "» MSFT warns on cloud",
    ):
        assert expected in text, expected
    assert "T4" in text and "sources" in text and "error:http_503" in text  # worst first


def test_a_small_terminal_crops_the_panels_that_matter_least() -> None:
    snapshot = _full_snapshot()
    for height in (12, 18, 24, 30):
        lines = _lines(snapshot, height, 120)
        assert len(lines) <= height, (height, len(lines))
    text = "\n".join(_lines(snapshot, 18, 120))
    assert "newest bearish items" in text and "top tickers" in text
    assert "sources" not in text and "newest alerts" not in text
    assert "live" in text and "bootstrap-tfidf" in text


def test_training_phases_render() -> None:
    from finsentry.models.registry import TrainingStatus

    done = TrainingStatus(
        phase="done", message="serving 93c97afbde4f", version="93c97afbde4f",
        started_at=NOW, updated_at=NOW,
    )  # fmt: skip
    text = "\n".join(_lines(_full_snapshot().model_copy(update={"training": done}), 40, 120))
    assert "done: 93c97afbde4f" in text


def test_lifecycle_state_reads_the_registry_and_notices_a_dead_trainer(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from finsentry.models.registry import TrainingStatus, write_training_status
    from finsentry.streams.live_view import lifecycle_state

    assert lifecycle_state(tmp_path) == (None, None)
    gone = TrainingStatus(
        phase="training", step=3, total=10, pid=2**22 + 12345, started_at=NOW, updated_at=NOW
    )
    write_training_status(tmp_path, gone)
    live, training = lifecycle_state(tmp_path)
    assert live is None and training is not None and training.phase == "stopped"


@pytest.mark.integration
def test_newest_alerts_come_from_the_alerts_index(es: Elasticsearch) -> None:
    from finsentry.messages import Alert
    from finsentry.streams.live_view import fetch_alerts

    index = f"test-live-alerts-{uuid.uuid4().hex[:12]}"
    assert fetch_alerts(es, index) == []  # no index yet
    try:
        for i in range(3):
            alert = Alert(
                id=f"a{i}", rule="burst", key_type="ticker", key=f"K{i}",
                window_start=NOW, window_end=NOW, total=10 + i, negative=8,
                negative_share=0.8, threshold=0.5, created_at=NOW + timedelta(seconds=i),
            )  # fmt: skip
            es.index(index=index, id=alert.id, document=alert.model_dump(mode="json"))
        es.indices.refresh(index=index)
        rows = fetch_alerts(es, index, limit=2)
        assert [(r.key, r.total) for r in rows] == [("K2", 12), ("K1", 11)]
    finally:
        es.indices.delete(index=index, ignore_unavailable=True)
