"""Raw bytes -> NewsItem or a precise reason."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from finsentry.messages import NewsItem
from finsentry.streams.parser import ParseError, parse_raw

CAP = 1000


def _json(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def test_a_valid_message_becomes_a_news_item() -> None:
    item = parse_raw(
        _json(id="1", text="$AAPL beats", kind="comment", published_at="2026-01-02T03:04:05"),
        CAP,
    )
    assert isinstance(item, NewsItem)
    assert item.kind == "comment"
    assert item.published_at is not None and item.published_at.tzinfo is not None


def test_unknown_fields_are_kept_under_extra() -> None:
    item = parse_raw(_json(id="1", text="hi there", ticker_hint="AAPL"), CAP)
    assert isinstance(item, NewsItem) and item.extra == {"ticker_hint": "AAPL"}


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"", "empty"),
        (None, "empty"),
        (b"\xff\xfe", "invalid_utf8"),
        (b"{oops", "invalid_json"),
        (b"null", "not_an_object"),
        (b"[1]", "not_an_object"),
        (b"3.5", "not_an_object"),
        (_json(id="1"), "invalid_fields"),
        (_json(id="1", text=""), "invalid_fields"),
        (_json(id="1", text=7), "invalid_fields"),
        (_json(id=None, text="x"), "invalid_fields"),
        (_json(id="1", text="x", kind="rumour"), "invalid_fields"),
        (_json(id="1", text="x", published_at="soon"), "invalid_fields"),
        (_json(id="1", text="x" * (CAP + 1)), "text_too_long"),
        (b"x" * (9 * CAP + 70_000), "too_large"),
        (_json(id="1", text="\u0000\u0001 \u0007"), "no_content"),
        (b"[" * 50_000, "invalid_json"),
    ],
)
def test_bad_messages_get_a_reason(raw: bytes | None, error: str) -> None:
    outcome = parse_raw(raw, CAP)
    assert isinstance(outcome, ParseError)
    assert outcome.error == error
    assert outcome.reason


def test_the_reason_names_the_bad_field() -> None:
    outcome = parse_raw(_json(id="1", text="x", kind="rumour"), CAP)
    assert isinstance(outcome, ParseError) and "kind" in outcome.reason


@settings(deadline=None)  # a loaded CI machine must not turn slowness into a failure
@given(st.binary(max_size=300))
def test_any_bytes_give_an_item_or_a_reason(raw: bytes) -> None:
    outcome = parse_raw(raw, CAP)
    assert isinstance(outcome, NewsItem | ParseError)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)


@settings(deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["id", "text", "kind", "title", "published_at", "extra", "source", "x"]),
        json_values,
    )
)
def test_any_json_object_gives_an_item_or_a_reason(payload: dict) -> None:
    outcome = parse_raw(json.dumps(payload).encode(), CAP)
    if isinstance(outcome, NewsItem):
        assert outcome.text and outcome.id
    else:
        assert outcome.reason
