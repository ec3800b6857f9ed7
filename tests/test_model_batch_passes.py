"""A batch of more texts than `FINSENTRY_MODEL_BATCH` is scored in passes (sorted by length,
so padding stays small): every text must get its own scores back, in its place.

The tiny random-weight artifact gives each text its own probabilities (close together, but
about 4e-6 apart at least, while padding changes them by about 3e-8), so a text that got
another's row, or a pass written to the wrong rows, shows as a mismatch with that text
scored alone.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from finsentry.messages import CompanyMention, ItemScores, Mention
from finsentry.models.scorer import load_scorer
from finsentry.settings import Settings

MODEL_BATCH = 3
TOLERANCE = 1e-6
# Lengths out of order, some equal, so that sorting moves texts across passes.
TEXTS = [
    "$AAPL beats estimates and raises its full-year guidance on strong iPhone demand in Asia",
    "$TSLA falls",
    "Banks rally as yields climb; $JPM leads",
    "$MSFT",
    "Oil slides for a third day as inventories build up and demand worries return to markets",
    "$NVDA up",
    "Retail sales miss; $WMT and $TGT lower in early trade after the report",
    "$AMZN flat",
    "Guidance cut: $INTC warns of weaker data-centre orders into next year, shares drop",
    "Fed holds",
    "$GOOGL hits a record after cloud revenue tops forecasts",
]


def _company(text: str) -> list[CompanyMention]:
    """The first cashtag of a text as its one company (enough for the per-company path)."""
    start = text.find("$")
    if start < 0:
        return []
    end = start + 1
    while end < len(text) and text[end].isalpha():
        end += 1
    ticker = text[start + 1 : end]
    return [CompanyMention(ticker=ticker, name=ticker, mentions=[Mention(start=start, end=end)])]


def _probs(scores: ItemScores) -> list[float]:
    return [
        *scores.topic.probs.values(),
        *scores.sentiment.probs.values(),
        *(p for c in scores.companies for p in c.probs.values()),
    ]


def test_more_texts_than_the_model_batch_keep_their_own_scores(tiny_artifact: Path) -> None:
    scorer = load_scorer(Settings(model_path=tiny_artifact, model_batch=MODEL_BATCH, device="cpu"))
    assert scorer.batch_size == MODEL_BATCH  # type: ignore[attr-defined]  # 11 texts: 4 passes
    companies = [_company(t) for t in TEXTS]
    together = scorer.score(TEXTS, companies)
    alone = [scorer.score([t], [c])[0] for t, c in zip(TEXTS, companies, strict=True)]

    assert len(together) == len(TEXTS)
    for i, (batched, single) in enumerate(zip(together, alone, strict=True)):
        assert [c.ticker for c in batched.companies] == [c.ticker for c in companies[i]]
        assert _probs(batched) == pytest.approx(_probs(single), abs=TOLERANCE), TEXTS[i]
    # The check can fail: random weights score texts alike, but each text's scores are
    # farther from every other text's than the tolerance (padding noise is ~3e-8).
    for i, single in enumerate(alone):
        for j in range(i):
            gap = max(abs(a - b) for a, b in zip(_probs(single), _probs(alone[j]), strict=False))
            assert gap > 2 * TOLERANCE, (TEXTS[i], TEXTS[j])
