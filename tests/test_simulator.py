"""The market simulator: a seeded, endless, realistic stream of NewsItem dicts."""

from __future__ import annotations

import itertools
import json
import threading
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from finsentry.feeds.simulator import (
    ALL_TEMPLATES,
    COMPANY_TEMPLATES,
    Company,
    MarketSimulator,
    load_companies,
    simulate_to_kafka,
)
from finsentry.messages import NewsItem
from finsentry.settings import Settings
from finsentry.streams.entity_linking import CompanyIndex, find_tickers, load_company_index

N_ITEMS = 3000


@pytest.fixture(scope="module")
def company_files() -> list[Path]:
    files = Settings().company_files
    if not files:
        pytest.skip("no company lists under Settings.data_dir/companies")
    return files


@pytest.fixture(scope="module")
def companies(company_files: list[Path]) -> list[Company]:
    return load_companies(company_files)


@pytest.fixture(scope="module")
def linker(company_files: list[Path]) -> CompanyIndex:
    return load_company_index(company_files)


@pytest.fixture(scope="module")
def items(companies: list[Company]) -> list[dict[str, Any]]:
    simulator = MarketSimulator(companies, seed=42, burst_every=500, burst_length=100)
    return list(itertools.islice(simulator.items(), N_ITEMS))


def test_prefers_the_sp500_list(companies: list[Company]) -> None:
    assert 400 < len(companies) < 520
    assert all(c.sector for c in companies)
    assert len({c.symbol for c in companies}) == len(companies)
    names = {c.symbol: c.name for c in companies}
    assert names["MMM"] == "3M"
    assert names["TGT"] == "Target Corporation"  # 'Target' alone is an everyday word


def test_falls_back_to_any_list_with_symbol_and_name(tmp_path: Path) -> None:
    plain = tmp_path / "listed.csv"
    plain.write_text(
        "Symbol,Security Name\n"
        "ZZQX,Zentrovia Robotics Inc. - Common Stock\n"
        "ZZQF,Zentrovia Income ETF\n",
        encoding="utf-8",
    )
    unusable = tmp_path / "other.csv"
    unusable.write_text("a,b\n1,2\n", encoding="utf-8")
    assert load_companies([unusable, tmp_path / "missing.csv", plain]) == [
        Company(symbol="ZZQX", name="Zentrovia Robotics", sector=None)
    ]
    with pytest.raises(ValueError):
        load_companies([unusable])


def test_enough_varied_templates() -> None:
    assert len(ALL_TEMPLATES) >= 60
    assert len({t.id for t in ALL_TEMPLATES}) == len(ALL_TEMPLATES)
    kinds = Counter((t.sentiment, t.style) for t in COMPANY_TEMPLATES)
    assert all(
        kinds[(s, st)] >= 6 for s in ("bearish", "neutral", "bullish") for st in ("news", "social")
    )


def test_same_seed_same_stream(companies: list[Company], items: list[dict[str, Any]]) -> None:
    again = MarketSimulator(companies, seed=42, burst_every=500, burst_length=100)
    assert list(itertools.islice(again.items(), 200)) == items[:200]
    other = MarketSimulator(companies, seed=43, burst_every=500, burst_length=100)
    assert [i["text"] for i in itertools.islice(other.items(), 50)] != [
        i["text"] for i in items[:50]
    ]


def test_every_item_is_a_valid_news_item(items: list[dict[str, Any]]) -> None:
    for item in items:
        parsed = NewsItem.model_validate(item)
        assert parsed.lang == "en"
        assert parsed.published_at is not None
        assert parsed.extra["simulated"] is True
        assert parsed.extra["intended_sentiment"] in ("bearish", "neutral", "bullish")
        json.dumps(item)  # JSON-ready as it is
    assert len({i["id"] for i in items}) == len(items)
    assert {i["kind"] for i in items} == {"news", "comment", "post"}
    assert all(i["title"] for i in items if i["kind"] == "news")
    times = [datetime.fromisoformat(i["published_at"]) for i in items]
    assert times == sorted(times)
    # Every template (and so every slot in it) was rendered at least once.
    assert {i["extra"]["template"] for i in items} == {t.id for t in ALL_TEMPLATES}


def test_a_calm_market_is_mixed(items: list[dict[str, Any]]) -> None:
    calm = Counter(i["extra"]["intended_sentiment"] for i in items if not i["extra"]["burst"])
    total = sum(calm.values())
    assert all(0.2 < calm[s] / total < 0.45 for s in ("bearish", "neutral", "bullish"))
    macro = [i for i in items if i["extra"]["ticker"] is None]
    assert 0.03 < len(macro) / len(items) < 0.15


def test_bursts_are_mostly_bearish_about_one_ticker(items: list[dict[str, Any]]) -> None:
    bursts: dict[int, list[dict[str, Any]]] = {}
    for item in items:
        if item["extra"]["burst"]:
            bursts.setdefault(item["extra"]["burst_no"], []).append(item)
    assert len(bursts) >= 4
    for burst in bursts.values():
        assert len({i["extra"]["ticker"] for i in burst}) == 1
        bearish = sum(i["extra"]["intended_sentiment"] == "bearish" for i in burst)
        assert bearish / len(burst) > 0.7
        # During the burst the ticker dominates the whole stream, not just its own items.
        first = items.index(burst[0])
        window = items[first : first + 100]
        ticker = burst[0]["extra"]["ticker"]
        about = [i for i in window if i["extra"]["ticker"] == ticker]
        assert len(about) / len(window) > 0.3
        assert sum(i["extra"]["intended_sentiment"] == "bearish" for i in about) > len(about) / 2


def test_the_entity_linker_finds_the_companies(
    items: list[dict[str, Any]], linker: CompanyIndex
) -> None:
    about_companies = [i for i in items if i["extra"]["ticker"] is not None]
    found = sum(i["extra"]["ticker"] in find_tickers(i["text"], linker) for i in about_companies)
    assert found / len(about_companies) > 0.97
    macro = [i for i in items if i["extra"]["ticker"] is None]
    assert sum(bool(find_tickers(i["text"], linker)) for i in macro) / len(macro) < 0.02


def test_burst_tickers_and_wall_clock(companies: list[Company]) -> None:
    fixed = datetime(2030, 5, 1, 12, tzinfo=UTC)
    simulator = MarketSimulator(
        companies,
        seed=1,
        burst_every=40,
        burst_length=20,
        burst_tickers=["MMM"],
        clock=lambda: fixed,
    )
    items = list(itertools.islice(simulator.items(), 200))
    assert {i["extra"]["ticker"] for i in items if i["extra"]["burst"]} == {"MMM"}
    for item in items:
        published = datetime.fromisoformat(item["published_at"])
        assert fixed - timedelta(seconds=91) <= published <= fixed
    with pytest.raises(ValueError):
        MarketSimulator(companies, burst_tickers=["NOPE-NOT-LISTED"])
    with pytest.raises(ValueError):
        MarketSimulator([])


@pytest.mark.integration
def test_simulate_to_kafka_sends_json_keyed_by_id(kafka_servers: str) -> None:
    from kafka import KafkaAdminClient, KafkaConsumer

    settings = Settings(kafka_bootstrap=kafka_servers, topic_raw=f"test-sim-{uuid.uuid4().hex}")
    stats = simulate_to_kafka(settings, rate=500.0, limit=25, seed=5, progress=False)
    assert (stats.sent, stats.failed, stats.seed) == (25, 0, 5)

    consumer = KafkaConsumer(
        settings.topic_raw,
        bootstrap_servers=kafka_servers,
        auto_offset_reset="earliest",
        consumer_timeout_ms=10_000,
    )
    try:
        records = list(itertools.islice(consumer, 25))
    finally:
        consumer.close()
    assert len(records) == 25
    for record in records:
        item = NewsItem.model_validate(json.loads(record.value.decode("utf-8")))
        assert record.key.decode("utf-8") == item.id
        assert item.id.startswith("sim-5-")

    stop = threading.Event()
    stop.set()
    assert simulate_to_kafka(settings, rate=1.0, seed=5, stop_event=stop).sent == 0

    admin = KafkaAdminClient(bootstrap_servers=kafka_servers)
    try:
        admin.delete_topics([settings.topic_raw])
    finally:
        admin.close()


@pytest.fixture(scope="module")
def kafka_servers() -> str:
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    bootstrap = Settings().kafka_bootstrap
    try:
        KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000).close()
    except KafkaError:
        pytest.fail(f"no Kafka broker at {bootstrap}: run `finsentry services up`")
    return bootstrap


def test_bursts_are_plain_headlines_about_the_company(items: list[dict[str, Any]]) -> None:
    """A burst reads as news a classifier calls bearish: mostly wire headlines that name the
    company, not ambiguous chatter (issue 12: the demo's alerts)."""
    burst = [i for i in items if i["extra"]["burst"]]
    news = [i for i in burst if i["kind"] == "news"]
    assert len(news) / len(burst) > 0.75
    bearish_news = [i for i in news if i["extra"]["intended_sentiment"] == "bearish"]
    assert len(bearish_news) / len(news) > 0.8
