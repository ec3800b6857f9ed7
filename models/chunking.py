"""Whole articles: texts longer than the model window are cut into sentence-aligned chunks
that fit it, every chunk is scored, and the item's verdict comes from the chunks.

Pure part: `sentence_spans`, `chunk_text` (chunks with their character offsets, each within
the window by the scorer's own token count; a sentence too long for the window is cut on
words) and `aggregate`: topic probabilities length-weighted over all chunks; sentiment
length-weighted over the chunks that take a side (bearish or bullish), over all when none
does, so that 40 neutral paragraphs do not outvote the one that carries the news; the most
negative chunk as evidence; per company, the same over only the chunks that mention it.
`ChunkingScorer` wraps any `Scorer`. With a scorer that has `score_fitting` (an
`ArtifactScorer`), the batch is tokenised once: the texts that fit the window are scored
straight away and only those the window would cut are chunked (and their chunks scored in
one more call). Other scorers get a token count first; texts that fit then pass straight
through and all chunks of all long texts of a batch share the one inner call.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from finsentry.messages import CompanyMention, CompanyScores, ItemScores, LabelScores, Mention

TokenCounter = Callable[[list[str]], list[int]]
DEFAULT_WINDOW = 128
# English news runs ~1.3 word pieces a word; estimate high so that chunks still fit.
_TOKENS_PER_WORD = 1.5
_SPECIAL_TOKENS = 2

# A sentence ends at . ! ? (and closing quotes/brackets) before whitespace, or at a line
# break; abbreviations like "U.S." or "Inc." followed by a lower-case word do not end one.
_BOUNDARY = re.compile(r"(?<=[.!?])[\"'”’)\]]*\s+(?=[\"'“‘(\[]?[A-Z0-9$])|\n\s*")
_WORD = re.compile(r"\S+")


def estimate_tokens(texts: list[str]) -> list[int]:
    """A cheap, deliberately high token count for scorers that cannot count their own."""
    return [math.ceil(len(text.split()) * _TOKENS_PER_WORD) + _SPECIAL_TOKENS for text in texts]


@dataclass(frozen=True)
class Chunk:
    start: int  # character offsets into the text
    end: int
    text: str
    tokens: int  # without the special tokens


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence, whitespace trimmed, in order."""
    spans = []
    position = 0
    for match in _BOUNDARY.finditer(text):
        spans.append((position, match.start()))
        position = match.end()
    spans.append((position, len(text)))
    trimmed = []
    for start, end in spans:
        piece = text[start:end]
        stripped = piece.strip()
        if stripped:
            offset = start + (len(piece) - len(piece.lstrip()))
            trimmed.append((offset, offset + len(stripped)))
    return trimmed


def _word_pieces(
    text: str, span: tuple[int, int], budget: int, count: TokenCounter, overhead: int
) -> list[tuple[tuple[int, int], int]]:
    """A sentence over the window, cut on words into pieces that fit it."""
    start, end = span
    words = [(start + m.start(), start + m.end()) for m in _WORD.finditer(text[start:end])]
    sizes = [max(1, n - overhead) for n in count([text[s:e] for s, e in words])]
    pieces: list[tuple[tuple[int, int], int]] = []
    for (ws, we), size in zip(words, sizes, strict=True):
        if size > budget:  # one "word" over the window (a huge URL): cut on characters
            for cs in range(ws, we, budget):
                pieces.append(((cs, min(we, cs + budget)), budget))
            continue
        if pieces and pieces[-1][1] + size <= budget:
            (ps, _), psize = pieces[-1]
            pieces[-1] = ((ps, we), psize + size)
        else:
            pieces.append(((ws, we), size))
    return pieces


def _pack(pieces: Sequence[tuple[tuple[int, int], int]], budget: int) -> list[list[int]]:
    groups: list[list[int]] = []
    total = 0
    for index, (_, size) in enumerate(pieces):
        if groups and total + size <= budget:
            groups[-1].append(index)
            total += size
        else:
            groups.append([index])
            total = size
    return groups


def chunk_text(text: str, max_tokens: int, count: TokenCounter) -> list[Chunk]:
    """Sentence-aligned chunks of `text`, each at most `max_tokens` by `count` (which
    counts a text's tokens including the model's special tokens)."""
    overhead = count([""])[0]
    budget = max(1, max_tokens - overhead)
    spans = sentence_spans(text)
    if not spans:
        return []
    sizes = [max(1, n - overhead) for n in count([text[s:e] for s, e in spans])]
    pieces: list[tuple[tuple[int, int], int]] = []
    for span, size in zip(spans, sizes, strict=True):
        if size <= budget:
            pieces.append((span, size))
        else:
            pieces.extend(_word_pieces(text, span, budget, count, overhead))
    groups = _pack(pieces, budget)
    chunks = [_chunk(text, [pieces[i] for i in group]) for group in groups]
    # Counting pieces apart can differ from counting them together by a token or two:
    # check the chunks themselves and halve any that do not fit.
    actual = count([c.text for c in chunks])
    fitted: list[Chunk] = []
    for chunk, group, n in zip(chunks, groups, actual, strict=True):
        if n <= max_tokens or len(group) == 1:
            fitted.append(chunk)
        else:
            middle = len(group) // 2
            fitted.append(_chunk(text, [pieces[i] for i in group[:middle]]))
            fitted.append(_chunk(text, [pieces[i] for i in group[middle:]]))
    return fitted


def _chunk(text: str, pieces: Sequence[tuple[tuple[int, int], int]]) -> Chunk:
    start, end = pieces[0][0][0], pieces[-1][0][1]
    return Chunk(start, end, text[start:end], sum(size for _, size in pieces))


def _sided(probs: Sequence[dict[str, float]]) -> list[int]:
    """The chunks that take a side: their most likely sentiment is not neutral."""
    return [i for i, row in enumerate(probs) if row and max(row, key=row.__getitem__) != "neutral"]


def _sentiment(probs: Sequence[dict[str, float]], weights: Sequence[float]) -> dict[str, float]:
    """Length-weighted over the chunks that take a side (all chunks when none does): the
    neutral background of a long article does not dilute its one piece of news."""
    chosen = _sided(probs) or list(range(len(probs)))
    return _weighted([probs[i] for i in chosen], [weights[i] for i in chosen])


def _weighted(probs: Sequence[dict[str, float]], weights: Sequence[float]) -> dict[str, float]:
    total = sum(weights) or 1.0
    labels: dict[str, float] = {}
    for row, weight in zip(probs, weights, strict=True):
        for label, p in row.items():
            labels[label] = labels.get(label, 0.0) + p * weight / total
    return labels


def _label_scores(probs: dict[str, float]) -> LabelScores:
    label = max(probs, key=probs.__getitem__)
    return LabelScores(label=label, confidence=min(1.0, probs[label]), probs=probs)


def _net(probs: dict[str, float]) -> float:
    return max(-1.0, min(1.0, probs.get("bullish", 0.0) - probs.get("bearish", 0.0)))


def chunk_mentions(company: CompanyMention, chunk: Chunk) -> list[Mention]:
    """The company's mentions inside the chunk, as offsets into the chunk's text."""
    return [
        Mention(start=m.start - chunk.start, end=min(m.end, chunk.end) - chunk.start)
        for m in company.mentions
        if chunk.start <= m.start < chunk.end
    ]


def chunk_companies(
    companies: Sequence[CompanyMention], chunks: Sequence[Chunk]
) -> list[list[CompanyMention]]:
    """Per chunk, the companies it mentions (offsets shifted into it); a company without
    offsets goes with every chunk."""
    out: list[list[CompanyMention]] = []
    for chunk in chunks:
        here = []
        for company in companies:
            mentions = chunk_mentions(company, chunk)
            if mentions or not company.mentions:
                here.append(company.model_copy(update={"mentions": mentions}))
        out.append(here)
    return out


def _company_verdict(
    company: CompanyMention, chunks: Sequence[Chunk], scores: Sequence[ItemScores]
) -> CompanyScores:
    relevant = [
        i
        for i, chunk in enumerate(chunks)
        if not company.mentions or chunk_mentions(company, chunk)
    ] or list(range(len(chunks)))
    probs, weights, sources = [], [], []
    for i in relevant:
        own = next((c for c in scores[i].companies if c.ticker == company.ticker), None)
        probs.append(own.probs if own is not None and own.probs else scores[i].sentiment.probs)
        sources.append(own.source if own is not None and own.probs else "text")
        weights.append(float(max(1, chunks[i].tokens)))
    merged = _sentiment(probs, weights)
    verdict = _label_scores(merged)
    return CompanyScores(
        ticker=company.ticker,
        name=company.name,
        sentiment=verdict.label,  # type: ignore[arg-type]
        confidence=verdict.confidence,
        probs=merged,
        score=_net(merged),
        source="entity_head" if all(s == "entity_head" for s in sources) else "text",
        mentions=company.mentions,
    )


def aggregate(
    chunks: Sequence[Chunk],
    scores: Sequence[ItemScores],
    companies: Sequence[CompanyMention] | None = None,
) -> ItemScores:
    """One item's scores from its chunks' scores (same order)."""
    weights = [float(max(1, c.tokens)) for c in chunks]
    topic = _weighted([s.topic.probs for s in scores], weights)
    sentiment = _sentiment([s.sentiment.probs for s in scores], weights)
    worst = min(range(len(chunks)), key=lambda i: scores[i].sentiment_score)
    return ItemScores(
        topic=_label_scores(topic),
        sentiment=_label_scores(sentiment),
        sentiment_score=_net(sentiment),
        companies=[_company_verdict(c, chunks, scores) for c in companies or []],
        evidence=chunks[worst].text,
        chunks=len(chunks),
    )


def model_window(scorer: Any) -> int | None:
    """The scorer's window in tokens: `max_length`, else its artifact's; None for a scorer
    that reads whole texts anyway (a linear, bag-of-words artifact)."""
    window = getattr(scorer, "max_length", None)
    if window:
        return int(window)
    manifest = getattr(scorer, "manifest", None)
    if manifest is not None and getattr(manifest, "runtime", None) != "linear":
        length = getattr(manifest, "max_length", None)
        return int(length) if length else None
    return None


def token_counter(scorer: Any) -> TokenCounter:
    """The scorer's own `token_lengths`; else its tokenizer's count; else an estimate."""
    counter = getattr(scorer, "token_lengths", None)
    if callable(counter):
        return counter
    groups = getattr(scorer, "groups", None)
    tokenizer = getattr(groups[0], "tokenizer", None) if groups else None
    if tokenizer is not None:

        def count(texts: list[str]) -> list[int]:
            if not texts:
                return []
            encoded = tokenizer(
                list(texts), add_special_tokens=True, truncation=False, verbose=False
            )
            return [len(ids) for ids in encoded["input_ids"]]

        return count
    return estimate_tokens


def with_chunking(scorer: Any) -> Any:
    """`scorer` wrapped in a ChunkingScorer when it has a window, else itself."""
    return scorer if model_window(scorer) is None else ChunkingScorer(scorer)


class ChunkingScorer:
    """A Scorer that reads long texts whole. Other attributes are the inner scorer's."""

    def __init__(
        self, inner: Any, max_tokens: int | None = None, count: TokenCounter | None = None
    ) -> None:
        self.inner = inner
        self.version: str = inner.version
        self.max_tokens = int(max_tokens or model_window(inner) or DEFAULT_WINDOW)
        self.count: TokenCounter = count or token_counter(inner)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _inner(
        self, texts: list[str], companies: list[list[CompanyMention]] | None
    ) -> list[ItemScores]:
        if companies is None:
            return list(self.inner.score(texts))
        return list(self.inner.score(texts, companies))

    def score(
        self, texts: list[str], companies: list[list[CompanyMention]] | None = None
    ) -> list[ItemScores]:
        fitting = getattr(self.inner, "score_fitting", None)
        if callable(fitting):
            return self._score_once(fitting, texts, companies)
        lengths = self.count(texts) if texts else []
        if all(n <= self.max_tokens for n in lengths):
            return self._inner(texts, companies)
        return self._chunked(texts, companies, [n > self.max_tokens for n in lengths])

    def _score_once(
        self,
        fitting: Callable[..., list[ItemScores | None]],
        texts: list[str],
        companies: list[list[CompanyMention]] | None,
    ) -> list[ItemScores]:
        """The texts that fit, from the inner scorer's one tokenisation; then the chunks of
        those it left out (the window would cut them)."""
        first = fitting(texts) if companies is None else fitting(texts, companies)
        long = [i for i, scores in enumerate(first) if scores is None]
        if not long:
            return [s for s in first if s is not None]
        rest = self._chunked(
            [texts[i] for i in long],
            [companies[i] for i in long] if companies is not None else None,
            [True] * len(long),
        )
        out = list(first)
        for i, scores in zip(long, rest, strict=True):
            out[i] = scores
        return [s for s in out if s is not None]

    def _chunked(
        self,
        texts: list[str],
        companies: list[list[CompanyMention]] | None,
        too_long: list[bool],
    ) -> list[ItemScores]:
        """Texts `too_long` cut into chunks, all scored in one inner call with the rest."""
        plans: list[list[Chunk] | None] = []
        batch: list[str] = []
        batch_companies: list[list[CompanyMention]] = []
        for i, (text, long) in enumerate(zip(texts, too_long, strict=True)):
            mine = companies[i] if companies is not None else []
            chunks = chunk_text(text, self.max_tokens, self.count) if long else []
            if len(chunks) > 1:
                plans.append(chunks)
                batch.extend(c.text for c in chunks)
                batch_companies.extend(chunk_companies(mine, chunks))
            else:
                plans.append(None)
                batch.append(text)
                batch_companies.append(list(mine))
        results = self._inner(batch, batch_companies if companies is not None else None)
        out: list[ItemScores] = []
        position = 0
        for i, plan in enumerate(plans):
            if plan is None:
                out.append(results[position])
                position += 1
            else:
                mine = companies[i] if companies is not None else []
                out.append(aggregate(plan, results[position : position + len(plan)], mine))
                position += len(plan)
        return out
