"""Raw Kafka bytes -> NewsItem, or a precise reason why not. Pure: no I/O."""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass

from pydantic import ValidationError
from pydantic_core import PydanticSerializationError

from finsentry.messages import NewsItem

# Elasticsearch refuses a whole bulk request holding an _id over 512 bytes.
MAX_ID_BYTES = 512


@dataclass(frozen=True)
class ParseError:
    """Why a raw message cannot become a NewsItem."""

    error: str
    reason: str


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "message"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def _has_letters_or_digits(text: str) -> bool:
    return any(unicodedata.category(ch)[0] in "LNS" for ch in text)


def parse_raw(raw: bytes | None, max_text_chars: int) -> NewsItem | ParseError:
    """Decode, validate and bound one raw message."""
    if raw is None or len(raw) == 0:
        return ParseError("empty", "message value is empty")
    # A message far larger than the text cap cannot be valid: refuse it before decoding.
    if len(raw) > 8 * max_text_chars + 65_536:
        return ParseError("too_large", f"message is {len(raw)} bytes, over the size cap")
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return ParseError("invalid_utf8", f"not valid UTF-8: {exc.reason} at byte {exc.start}")
    try:
        payload = json.loads(decoded)
    except json.JSONDecodeError as exc:
        return ParseError("invalid_json", f"not JSON: {exc.msg} at line {exc.lineno}")
    except RecursionError:
        return ParseError("invalid_json", "not JSON: nested too deeply")
    except ValueError as exc:  # e.g. a number over sys.get_int_max_str_digits() digits
        return ParseError("invalid_json", f"not JSON: {exc}"[:300])
    if not isinstance(payload, dict):
        return ParseError("not_an_object", f"expected a JSON object, got {type(payload).__name__}")
    text = payload.get("text")
    if isinstance(text, str) and len(text) > max_text_chars:
        return ParseError(
            "text_too_long", f"text has {len(text)} characters, cap is {max_text_chars}"
        )
    try:
        item = NewsItem.model_validate(payload)
    except ValidationError as exc:
        return ParseError("invalid_fields", _describe(exc))
    if not _has_letters_or_digits(item.text):
        return ParseError("no_content", "text has no letters, digits or symbols")
    id_bytes = len(item.id.encode("utf-8"))
    if id_bytes > MAX_ID_BYTES:
        return ParseError("invalid_fields", f"id: {id_bytes} UTF-8 bytes, over {MAX_ID_BYTES}")
    try:
        item.model_dump_json()  # what the worker publishes must be writable as JSON
    except PydanticSerializationError as exc:
        return ParseError("invalid_fields", f"cannot be written as JSON: {exc}"[:300])
    return item
