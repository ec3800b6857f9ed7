"""The error body every API route answers with, and the statuses the routes declare.

One shape for every 4xx/5xx: `{"detail": "...", "errors": [...]}` (`errors` only for 422).
The statuses mean one thing each, on every route:
- 400: each parameter is valid by the schema, but together they make no query (from after
  to, a timeline too long for its interval, a page beyond the result window, unbalanced
  quotes in free text): no schema can state these;
- 422: a parameter or the body does not match the schema (`errors` names each);
- 404: what the path names (an item, a watchlist, an alert) or the index does not exist.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ParamError(BaseModel):
    param: str = Field(description="The parameter (dotted path into the body for bodies).")
    message: str
    type: str = Field(description="Pydantic's error type, e.g. missing, value_error.")


class ErrorBody(BaseModel):
    detail: str = Field(description="What is wrong, for people.")
    errors: list[ParamError] | None = Field(None, description="422: each invalid parameter.")


DESCRIPTIONS: dict[int, str] = {
    400: "Every parameter is valid by this schema, but together they make no query.",
    401: "Missing or invalid bearer token.",
    403: "Not allowed with this token, or the feature is off.",
    404: "What the path names, or the index, does not exist.",
    413: "The body is too large.",
    422: "A parameter or the body does not match this schema; `errors` names each.",
    429: "Over the rate limit; see Retry-After.",
    502: "Elasticsearch refused the request.",
    503: "Elasticsearch (or Kafka) is unreachable.",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these statuses, each with the ErrorBody schema."""
    return {code: {"model": ErrorBody, "description": DESCRIPTIONS[code]} for code in codes}
