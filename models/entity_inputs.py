"""From company mentions (character spans) to the per-company head's inputs.

A tokenizer's offset mapping says which characters each token covers; a company's row of
`entity_mask` spreads weight 1 evenly over the tokens that overlap any of its mentions.
Pure numpy, shared by training, serving and export."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Span = tuple[int, int]


def mention_tokens(offsets: Sequence[Sequence[int]], spans: Sequence[Span]) -> list[int]:
    """Indices of the tokens that overlap any span (special tokens have empty offsets)."""
    return [
        t
        for t, (a, b) in enumerate(offsets)
        if b > a and any(a < end and b > start for start, end in spans)
    ]


def entity_tensors(
    offsets: Sequence[Sequence[Sequence[int]]],
    entities: Sequence[tuple[int, Sequence[Span]]],
    width: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(`entity_mask` companies x width float32, `entity_row` int64, `covered` bool).

    `entities` are (row in the batch, the company's spans in that row's text). A company
    whose mentions were all cut off by truncation is not covered: its mask row is zero."""
    mask = np.zeros((len(entities), width), np.float32)
    rows = np.zeros(len(entities), np.int64)
    covered = np.zeros(len(entities), bool)
    for e, (row, spans) in enumerate(entities):
        rows[e] = row
        tokens = [t for t in mention_tokens(offsets[row], spans) if t < width]
        if tokens:
            mask[e, tokens] = 1.0 / len(tokens)
            covered[e] = True
    return mask, rows, covered
