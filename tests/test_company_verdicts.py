"""The flat per-company documents Grafana reads (index/company_verdicts.py)."""

from __future__ import annotations

from datetime import UTC, datetime

from finsentry.index.company_verdicts import rescored_verdict_docs, verdict_docs
from finsentry.messages import CompanyScores, ItemScores, LabelScores
from tests.support.crafted import crafted_item

SCORED_AT = datetime(2026, 11, 27, 15, 30, tzinfo=UTC)


def test_each_company_of_an_item_gets_its_own_verdict_document() -> None:
    mixed = crafted_item(
        "m1",
        SCORED_AT,
        "bearish",
        ["M", "PANW"],
        title="Macy's up, Palo Alto down",
        company_sentiment={"M": "bullish", "PANW": "bearish"},
    )
    no_company = crafted_item("n1", SCORED_AT, "neutral", [])
    docs = verdict_docs([mixed, no_company])
    assert {k: (d["sentiment"], d["item_sentiment"]) for k, d in docs.items()} == {
        "m1:M": ("bullish", "bearish"),
        "m1:PANW": ("bearish", "bearish"),
    }
    assert docs["m1:M"]["verdict_from"] == "entity_head"
    assert docs["m1:M"]["title"] == "Macy's up, Palo Alto down"
    assert docs["m1:M"]["scored_at"] == SCORED_AT.isoformat().replace("+00:00", "Z")


def test_a_rescored_item_keeps_its_place_and_takes_the_new_verdicts() -> None:
    probs = {"bearish": 0.7, "neutral": 0.2, "bullish": 0.1}
    scores = ItemScores(
        topic=LabelScores(label="Company | Legal", confidence=0.9, probs={}),
        sentiment=LabelScores(label="bearish", confidence=0.7, probs=probs),
        sentiment_score=-0.6,
        companies=[
            CompanyScores(ticker="AAPL", sentiment="bearish", confidence=0.7, score=-0.6),
        ],
    )
    source = {"id": "i1", "title": "t", "source": "rss", "scored_at": "2026-11-27T15:30:00Z"}
    docs = rescored_verdict_docs(source, scores, "v2")
    assert list(docs) == ["i1:AAPL"]
    doc = docs["i1:AAPL"]
    assert (doc["model_version"], doc["topic"], doc["sentiment"]) == (
        "v2",
        "Company | Legal",
        "bearish",
    )
    assert doc["scored_at"] == "2026-11-27T15:30:00Z"
