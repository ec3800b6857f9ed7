"""Whole articles: sentence-aligned chunks that fit the window, scored together, aggregated
(models/chunking.py), with a keyword scorer whose verdicts are known, and with the real
tokenizer of the tiny test artifact."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from finsentry.messages import CompanyMention, CompanyScores, ItemScores, LabelScores, Mention
from finsentry.models.chunking import (
    Chunk,
    ChunkingScorer,
    aggregate,
    chunk_text,
    estimate_tokens,
    sentence_spans,
)

ARTICLE = (Path(__file__).parent / "fixtures" / "sources" / "long_article.txt").read_text()
NEGATIVE = {"bankruptcy", "fraud", "plunged", "default"}
POSITIVE = {"beats", "soars", "jumps"}


def label(probs: dict[str, float]) -> LabelScores:
    top = max(probs, key=probs.__getitem__)
    return LabelScores(label=top, confidence=probs[top], probs=probs)


def keyword_scores(text: str, companies: list[CompanyMention] | None = None) -> ItemScores:
    words = set(re.findall(r"[a-z]+", text.lower()))
    if words & NEGATIVE:
        sentiment = {"bearish": 0.9, "neutral": 0.08, "bullish": 0.02}
    elif words & POSITIVE:
        sentiment = {"bearish": 0.02, "neutral": 0.18, "bullish": 0.8}
    else:
        sentiment = {"bearish": 0.05, "neutral": 0.9, "bullish": 0.05}
    topic = {"Company | Product News": 0.7, "Macro": 0.3}
    per_company = [
        CompanyScores(
            ticker=c.ticker,
            sentiment=label(sentiment).label,  # type: ignore[arg-type]
            confidence=max(sentiment.values()),
            probs=sentiment,
            score=sentiment["bullish"] - sentiment["bearish"],
            mentions=c.mentions,
        )
        for c in companies or []
    ]
    return ItemScores(
        topic=label(topic),
        sentiment=label(sentiment),
        sentiment_score=sentiment["bullish"] - sentiment["bearish"],
        companies=per_company,
    )


class KeywordScorer:
    """Reads only its first `window` estimated tokens, like a model that truncates."""

    version = "keywords-1"
    max_length = 128

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], list[list[CompanyMention]] | None]] = []

    def score(
        self, texts: list[str], companies: list[list[CompanyMention]] | None = None
    ) -> list[ItemScores]:
        self.calls.append((list(texts), companies))
        seen = [" ".join(t.split()[: int(self.max_length / 1.5)]) for t in texts]
        return [keyword_scores(t, companies[i] if companies else None) for i, t in enumerate(seen)]


def test_sentences_split_on_ends_not_on_abbreviations() -> None:
    text = "U.S. stocks rose. Apple Inc. gained 2% on Monday! Why?  Demand.\nNext line here"
    assert [text[s:e] for s, e in sentence_spans(text)] == [
        "U.S. stocks rose.",
        "Apple Inc. gained 2% on Monday!",
        "Why?",
        "Demand.",
        "Next line here",
    ]
    assert sentence_spans("   ") == []


def test_chunks_fit_the_window_keep_offsets_and_align_on_sentences() -> None:
    chunks = chunk_text(ARTICLE, 128, estimate_tokens)
    assert len(chunks) > 30
    ends = {e for _, e in sentence_spans(ARTICLE)}
    starts = {s for s, _ in sentence_spans(ARTICLE)}
    for chunk in chunks:
        assert ARTICLE[chunk.start : chunk.end] == chunk.text
        assert estimate_tokens([chunk.text])[0] <= 128
        assert chunk.start in starts and chunk.end in ends
    assert [c.start for c in chunks] == sorted(c.start for c in chunks)
    covered = "".join(c.text for c in chunks).replace(" ", "").replace("\n", "")
    assert covered == ARTICLE.replace(" ", "").replace("\n", "")


def test_a_sentence_longer_than_the_window_is_cut_on_words() -> None:
    words = [f"word{i}" for i in range(300)]
    text = " ".join(words) + "."
    chunks = chunk_text(text, 64, estimate_tokens)
    assert len(chunks) >= 5
    assert all(estimate_tokens([c.text])[0] <= 64 for c in chunks)
    assert " ".join(c.text for c in chunks) == text  # every word once, none split
    huge = "x" * 1000
    pieces = chunk_text(huge, 64, lambda ts: [len(t) + 2 for t in ts])
    assert "".join(c.text for c in pieces) == huge and all(len(c.text) <= 62 for c in pieces)


def test_a_5000_word_article_with_bad_news_at_the_end_is_negative() -> None:
    assert len(ARTICLE.split()) >= 5000
    inner = KeywordScorer()
    # Read as a model reads it alone (its first window), the article is neutral ...
    assert inner.score([ARTICLE])[0].sentiment.label == "neutral"
    # ... read whole, it is what its last paragraph says.
    scorer = ChunkingScorer(inner)
    [scores] = scorer.score([ARTICLE])
    assert scores.sentiment.label == "bearish"
    assert scores.sentiment_score < -0.5
    assert scores.chunks == len(chunk_text(ARTICLE, 128, estimate_tokens)) > 30
    assert scores.evidence is not None and "bankruptcy" in scores.evidence
    assert scores.evidence in ARTICLE
    assert scores.topic.label == "Company | Product News"


def test_short_texts_pass_through_and_long_ones_share_one_call() -> None:
    inner = KeywordScorer()
    scorer = ChunkingScorer(inner)
    short = ["$NVDA beats estimates", "Fed holds rates"]
    direct = scorer.score(short)
    assert inner.calls == [(short, None)] and [s.chunks for s in direct] == [1, 1]
    assert direct == KeywordScorer().score(short)
    inner.calls.clear()
    results = scorer.score([short[0], ARTICLE, short[1]])
    assert len(inner.calls) == 1
    sent = inner.calls[0][0]
    assert sent[0] == short[0] and sent[-1] == short[1] and len(sent) == 2 + results[1].chunks
    assert [r.sentiment.label for r in results] == ["bullish", "bearish", "neutral"]
    assert results[0].evidence is None and results[1].evidence is not None
    assert scorer.version == "keywords-1" and scorer.max_length == 128  # delegated
    assert scorer.score([]) == [] and inner.calls[-1] == ([], None)


def test_company_verdicts_come_from_the_chunks_that_mention_them() -> None:
    text = ARTICLE
    fraud_at = text.index("Northwind Industries said it will file")
    early_at = text.index("Northwind Industries")
    company = CompanyMention(
        ticker="NWND",
        name="Northwind Industries",
        mentions=[Mention(start=fraud_at, end=fraud_at + 20)],
    )
    everywhere = CompanyMention(
        ticker="EARLY", mentions=[Mention(start=early_at, end=early_at + 20)]
    )
    inner = KeywordScorer()
    [scores] = ChunkingScorer(inner).score([text], [[company, everywhere]])
    by_ticker = {c.ticker: c for c in scores.companies}
    assert by_ticker["NWND"].sentiment == "bearish" and by_ticker["NWND"].source == "entity_head"
    assert by_ticker["NWND"].mentions == company.mentions  # offsets into the whole text
    assert by_ticker["EARLY"].sentiment == "neutral"
    # the inner scorer saw each mention shifted into its chunk, in that chunk only
    texts, companies = inner.calls[0]
    assert companies is not None
    with_nwnd = [i for i, cs in enumerate(companies) if any(c.ticker == "NWND" for c in cs)]
    assert len(with_nwnd) == 1
    [shifted] = [c for c in companies[with_nwnd[0]] if c.ticker == "NWND"]
    m = shifted.mentions[0]
    assert texts[with_nwnd[0]][m.start : m.end] == "Northwind Industries"


def test_aggregate_weights_by_length() -> None:
    chunks = [Chunk(0, 10, "a" * 10, 30), Chunk(11, 20, "b" * 9, 10)]
    bull = {"bearish": 0.1, "neutral": 0.2, "bullish": 0.7}
    bear = {"bearish": 0.7, "neutral": 0.2, "bullish": 0.1}
    scores = [
        ItemScores(topic=label({"A": 0.8, "B": 0.2}), sentiment=label(bull), sentiment_score=0.6),
        ItemScores(topic=label({"A": 0.0, "B": 1.0}), sentiment=label(bear), sentiment_score=-0.6),
    ]
    merged = aggregate(chunks, scores)
    assert merged.topic.probs == pytest.approx({"A": 0.6, "B": 0.4})
    assert merged.sentiment.probs == pytest.approx(
        {"bearish": 0.25, "neutral": 0.2, "bullish": 0.55}
    )
    assert merged.sentiment.label == "bullish" and merged.sentiment_score == pytest.approx(0.3)
    assert merged.evidence == "b" * 9 and merged.chunks == 2


def test_real_tokenizer_chunks_fit_the_tiny_artifact_window(tiny_artifact: Path) -> None:
    from finsentry.models.chunking import token_counter
    from finsentry.models.scorer import load_scorer
    from finsentry.settings import Settings

    scorer = load_scorer(Settings(models_dir=tiny_artifact.parent, model_path=tiny_artifact))
    assert isinstance(scorer, ChunkingScorer) and scorer.max_tokens == 128
    count = token_counter(scorer.inner)
    chunks = chunk_text(ARTICLE, scorer.max_tokens, count)
    assert all(n <= 128 for n in count([c.text for c in chunks]))
    [scores] = scorer.score([ARTICLE])
    assert scores.chunks == len(chunks) > 30
    assert scores.evidence in ARTICLE
    assert abs(sum(scores.sentiment.probs.values()) - 1.0) < 1e-4


class CountingTokenizer:
    """The real tokenizer, recording the texts of every call."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.calls: list[list[str]] = []

    def __call__(self, texts: list[str], *args: Any, **kwargs: Any) -> Any:
        self.calls.append(list(texts))
        return self.tokenizer(texts, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tokenizer, name)


def test_a_batch_is_tokenised_once_and_only_long_texts_again(tiny_artifact: Path) -> None:
    from finsentry.models.runtime import ArtifactScorer
    from finsentry.models.scorer import load_scorer
    from finsentry.settings import Settings

    scorer = load_scorer(Settings(models_dir=tiny_artifact.parent, model_path=tiny_artifact))
    assert isinstance(scorer, ChunkingScorer)
    tokenizer = CountingTokenizer(scorer.inner.groups[0].tokenizer)
    scorer.inner.groups[0].tokenizer = tokenizer
    short = ["Nvidia beats estimates", "Fed holds rates", "Oil slides as supply grows"]
    reference = ArtifactScorer(tiny_artifact, device="cpu")

    assert scorer.score(short) == reference.score(short)
    assert [len(texts) for texts in tokenizer.calls] == [3]  # one call, the whole batch

    tokenizer.calls.clear()
    mixed = [short[0], ARTICLE, short[1]]
    companies = [[CompanyMention(ticker="NVDA", mentions=[Mention(start=0, end=6)])], [], []]
    results = scorer.score(mixed, companies)
    first, *rest = tokenizer.calls
    assert len(first) == 3  # the batch, once; then only the article's pieces and chunks
    assert not any("estimates" in t or "holds rates" in t for texts in rest for t in texts)
    alone = [reference.score([short[0]], companies[:1])[0], reference.score([short[1]])[0]]
    for got, want in zip([results[0], results[2]], alone, strict=True):  # padding may differ
        assert got.sentiment.probs == pytest.approx(want.sentiment.probs, abs=1e-5)
        assert got.topic.label == want.topic.label and got.chunks == 1
    assert results[0].companies[0].ticker == "NVDA"
    assert results[1].chunks == len(chunk_text(ARTICLE, 128, scorer.count)) > 30
