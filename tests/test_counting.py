"""The fault tests' write accounting (`tests/support/counting.py`) catches what it claims to."""

from __future__ import annotations

from collections import Counter

from tests.support.counting import Tally, in_flight


def _tally(writes: dict[str, int], allowed: set[str], sent: Counter[str] | None = None) -> Tally:
    return Tally(set(writes), writes, Counter(writes), allowed, sent=sent or Counter())


def test_a_second_write_of_an_item_not_in_flight_is_caught() -> None:
    assert _tally({"a": 1, "b": 2}, allowed={"b"}).bounded
    assert not _tally({"a": 2, "b": 1}, allowed={"b"}).bounded
    assert not _tally({"a": 3}, allowed={"a"}).bounded  # in flight: once more, not twice


def test_an_item_the_producer_sent_twice_may_be_processed_twice_and_no_more() -> None:
    sent = Counter({"a": 2, "b": 1})
    tally = _tally({"a": 2, "b": 1}, allowed=set(), sent=sent)
    assert tally.bounded and tally.sent_twice == {"a"}
    assert "1 items on the raw topic twice" in tally.describe()
    assert not _tally({"a": 2, "b": 2}, allowed=set(), sent=sent).bounded
    assert _tally({"a": 3}, allowed={"a"}, sent=Counter({"a": 2})).bounded
    assert not _tally({"a": 4}, allowed={"a"}, sent=Counter({"a": 2})).bounded


def test_in_flight_is_what_was_done_at_offsets_not_yet_committed() -> None:
    placed = {(0, 0): "a", (0, 1): "b", (1, 0): "c", (1, 1): "d"}
    assert in_flight(placed, {0: 1, 1: 0}, done={"a", "b", "c"}) == {"b", "c"}
