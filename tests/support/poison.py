"""A catalogue of bad input for the raw topic, each with the outcome the product promises.

`expect` lists the acceptable outcomes: "scored" (indexed under `item_id`) or the `error` of a
dead letter ("invalid_json", "text_too_long", ...; "dead_letter" accepts any error)."""

from __future__ import annotations

import json
from dataclasses import dataclass

SCORED = ("scored",)

MiB = 1024 * 1024


@dataclass(frozen=True)
class Poison:
    name: str
    value: bytes | None
    expect: tuple[str, ...]
    item_id: str | None = None
    key: bytes | None = None
    note: str = ""

    def describe(self) -> str:
        size = "null value" if self.value is None else f"{len(self.value):,} bytes"
        return f"{self.name} ({size}){': ' + self.note if self.note else ''}"


def _doc(fields: dict[str, object], ascii_only: bool = False) -> bytes:
    return json.dumps(fields, ensure_ascii=ascii_only).encode("utf-8")


def _scored(name: str, note: str = "", key: bytes | None = None, **fields: object) -> Poison:
    item_id = f"p-{name}"
    return Poison(name, _doc({"id": item_id, **fields}), SCORED, item_id, key, note)


def _dead(name: str, value: bytes | None, error: str, note: str = "") -> Poison:
    return Poison(name, value, (error,), note=note)


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def poison_cases(max_text_chars: int) -> list[Poison]:
    """Every kind of bad (or merely odd) input, in the order they are sent."""
    cap = max_text_chars
    words = " ".join(f"word{i}" for i in range(cap // 6 + 10))[: cap + 1]
    return [
        # --- bytes that are not UTF-8 JSON -----------------------------------------------
        _dead("invalid_utf8", b'\xff\xfe{"id": "x", "text": "bad bytes"}', "invalid_utf8"),
        _dead("truncated_utf8", b'{"id": "x", "text": "price \xe2\x82"}', "invalid_utf8"),
        _dead("overlong_utf8", b'{"id": "x", "text": "\xc0\xaf"}', "invalid_utf8"),
        _dead("utf16_json", '{"id": "x", "text": "utf16"}'.encode("utf-16"), "invalid_utf8"),
        _dead("utf8_bom", b'\xef\xbb\xbf{"id": "x", "text": "bom"}', "invalid_json"),
        _dead("not_json", b"{not json", "invalid_json"),
        _dead("truncated_json", b'{"id": "x", "text": "cut off', "invalid_json"),
        _dead("trailing_garbage", b'{"id": "x", "text": "ok"} trailing', "invalid_json"),
        _dead("empty_value", b"", "empty"),
        Poison("tombstone", None, ("empty",), key=b"k", note="Kafka record with a null value"),
        _dead("deep_json_100k", _nested(100_000).encode(), "invalid_json", "100k nested arrays"),
        _dead(
            "huge_integer",
            b'{"id": "x", "text": "ok", "n": ' + b"9" * 5000 + b"}",
            "invalid_json",
            "5000-digit number (over Python's int-from-string limit)",
        ),
        # --- JSON that is not an object -----------------------------------------------------
        _dead("json_null", b"null", "not_an_object"),
        _dead("json_array", b'[{"id": "x", "text": "in a list"}]', "not_an_object"),
        _dead("json_number", b"42", "not_an_object"),
        _dead("json_string", b'"just a string"', "not_an_object"),
        _dead("json_bool", b"true", "not_an_object"),
        # --- missing or wrong-typed fields -------------------------------------------------
        _dead("empty_object", b"{}", "invalid_fields"),
        _dead("missing_text", _doc({"id": "x"}), "invalid_fields"),
        _dead("missing_id", _doc({"text": "no id"}), "invalid_fields"),
        _dead("text_number", _doc({"id": "x", "text": 12345}), "invalid_fields"),
        _dead("id_number", _doc({"id": 42, "text": "numeric id"}), "invalid_fields"),
        _dead("id_list", _doc({"id": ["a"], "text": "list id"}), "invalid_fields"),
        _dead("id_blank", _doc({"id": "   ", "text": "blank id"}), "invalid_fields"),
        _dead("kind_unknown", _doc({"id": "x", "text": "ok", "kind": "rumour"}), "invalid_fields"),
        _dead(
            "date_garbage",
            _doc({"id": "x", "text": "ok", "published_at": "yesterday-ish"}),
            "invalid_fields",
        ),
        _dead(
            "date_1e20",
            _doc({"id": "x", "text": "ok", "published_at": 1e20}),
            "invalid_fields",
            "epoch seconds far past year 9999",
        ),
        _dead("extra_not_object", _doc({"id": "x", "text": "ok", "extra": [1]}), "invalid_fields"),
        _dead("title_object", _doc({"id": "x", "text": "ok", "title": {"a": 1}}), "invalid_fields"),
        _dead("title_4097", _doc({"id": "x", "text": "ok", "title": "t" * 4097}), "invalid_fields"),
        _dead("url_5000", _doc({"id": "x", "text": "ok", "url": "h" * 5000}), "invalid_fields"),
        _dead(
            "id_600_utf8_bytes",
            _doc({"id": "€" * 200, "text": "id of 200 chars, 600 UTF-8 bytes"}),
            "invalid_fields",
            "Elasticsearch's _id limit is 512 bytes",
        ),
        _dead(
            "lone_surrogate_text",
            b'{"id": "x", "text": "half \\ud800 a pair"}',
            "invalid_fields",
        ),
        _dead(
            "lone_surrogate_unknown_field",
            b'{"id": "x", "text": "ok $AAPL", "note": "\\ud800"}',
            "invalid_fields",
            "kept under `extra`, which is not validated",
        ),
        _dead(
            "deep_unknown_field",
            b'{"id": "x", "text": "ok", "tree": ' + _nested(300).encode() + b"}",
            "invalid_fields",
            "300 nested arrays under an unknown field",
        ),
        Poison(
            "nan_unknown_field",
            b'{"id": "p-nan", "text": "ok $AAPL", "ratio": NaN}',
            ("dead_letter", "scored"),
            "p-nan",
            note="NaN is not JSON; Python reads it",
        ),
        # --- empty or content-free text ------------------------------------------------------
        _dead("blank_text", _doc({"id": "x", "text": "   "}), "invalid_fields"),
        _dead("control_chars_only", _doc({"id": "x", "text": "\x00\x01\x02\x1b"}), "no_content"),
        _dead("punctuation_only", _doc({"id": "x", "text": "...!!! ?? --"}), "no_content"),
        # --- size ----------------------------------------------------------------------------
        _dead("text_over_cap", _doc({"id": "x", "text": words}), "text_too_long"),
        _dead("token_100k_chars", _doc({"id": "x", "text": "A" * 100_000}), "text_too_long"),
        _dead(
            "message_300kb",
            _doc({"id": "x", "text": "B" * 300_000}),
            "too_large",
            "over the parser's byte cap",
        ),
        _dead(
            "message_900kb",
            _doc({"id": "x", "text": "C" * 900_000}),
            "too_large",
            "within the broker's default 1 MB limit",
        ),
        _dead(
            "message_10mb",
            _doc({"id": "x", "text": "D" * (10 * MiB)}),
            "too_large",
            "raw topic and producer limits raised to 16 MiB for this case",
        ),
        # --- odd but valid: must be scored -------------------------------------------------
        _scored("token_19k_chars", text="$MSFT " + "E" * 19_000, note="one 19k-character token"),
        _scored(
            "control_chars_mixed",
            text="Apple\x00 shares\x07 up\x1b[31m 3%",
            note="control characters become spaces",
        ),
        _scored("nul_in_title", title="Head\x00line", text="ok $AAPL"),
        _scored("emoji_only", text="🚀📈💰🔥"),
        _scored("mixed_scripts", text="Apple 苹果 Яблоко تفاحة सेब 사과 $AAPL +2%"),
        _scored(
            "bidi_and_zero_width",
            text="\u202e\u200b$TSLA\u200d \u2066up\u2069 \ufeff5%",
            note="RTL override, zero-width joiners, BOM inside text",
        ),
        _scored("zalgo", text="T\u0336\u0353e\u0338\u0324s\u0335l\u0334a\u0337 falls"),
        _scored(
            "html_script",
            text="<script>alert('x')</script><b>$NVDA</b> &amp; <img src=x onerror=1> rally",
        ),
        _scored(
            "query_injection",
            text='"}}], "query": {"match_all": {}}, "script": "ctx._source.x=1"',
        ),
        _scored("cashtag_only", text="$AAPL"),
        _scored("future_date", text="ok", published_at="9999-12-31T23:59:59Z"),
        _scored("ancient_date", text="ok", published_at="0001-01-01T00:00:00Z"),
        _scored("epoch_ms_far_future", text="ok", published_at=99_999_999_999_999),
        Poison(
            "odd_timezone",
            _doc({"id": "p-odd-tz", "text": "ok", "published_at": "2024-01-01T00:00:00-23:59"}),
            ("invalid_fields", "index_rejected"),
            "p-odd-tz",
            note="UTC offset -23:59; Elasticsearch dates allow at most ±18:00",
        ),
        _scored(
            "many_unknown_fields",
            note="5000 unknown keys (kept under extra, not indexed)",
            text="ok",
            **{f"k{i}": i for i in range(5000)},
        ),
        _scored("binary_kafka_key", key=b"\xff\x00\xfe", text="ok, key is not UTF-8"),
        Poison(
            "duplicate_json_keys",
            b'{"id": "p-dup-first", "id": "p-dup-keys", "text": "ok"}',
            SCORED,
            "p-dup-keys",
            note="the last key wins, as in JSON parsers",
        ),
        Poison(
            "same_id_first",
            _doc({"id": "p-same-id", "text": "first version $AAPL"}),
            SCORED,
            "p-same-id",
        ),
        Poison(
            "same_id_second",
            _doc({"id": "p-same-id", "text": "second version $AAPL"}),
            SCORED,
            "p-same-id",
            note="same id, other content: one document, the later one",
        ),
    ]


def final_valid() -> tuple[str, bytes]:
    item_id = "p-final-valid"
    return item_id, _doc({"id": item_id, "text": "$AAPL final valid message after the poison"})
