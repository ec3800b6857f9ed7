"""HTTP routes of the feedback stage, included in the query API (queries/api.py):

    POST /v1/items/{id}/labels   an analyst's labels for a scored item (201)
    GET  /v1/items/{id}/labels   every analyst's labels for the item
    GET  /v1/labels              labels, newest first (analyst, item, ticker, disagrees, time)

Who labels comes from the bearer token: `FINSENTRY_API_ANALYST_TOKENS` maps analyst names
to tokens, and a label is stored under the name whose token came with it. The shared
`FINSENTRY_API_TOKEN` may read labels but not write them (it names nobody). Bad labels
are a 4xx that says what is wrong, and nothing is stored (queries/errors.py: the error body
and what each status means): 422 for a body the schema refuses (an unknown class: the schema
lists the sentiments and topics), 404 for an unknown item, 400 for a body that is valid by
the schema but not for the item (a company it does not name, a company twice, no label).

(No `from __future__ import annotations`: FastAPI resolves these annotations at runtime.)
"""

import hmac
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from finsentry.feedback.labels import FeedbackDocument, FeedbackError, check_feedback, topic_body
from finsentry.feedback.store import FeedbackFilter, get_item, put_feedback, search_feedback
from finsentry.messages import utcnow
from finsentry.models.labels import topic_label_names
from finsentry.queries.errors import error_responses
from finsentry.settings import Settings

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch


class FeedbackList(BaseModel):
    total: int = Field(description="How many labels match (all pages).")
    labels: list[FeedbackDocument]


ITEM_ID = Path(min_length=1, max_length=512, description="The scored item's id.")


def feedback_router(settings: Settings, es: "Elasticsearch") -> APIRouter:
    """The routes; the caller adds rate limiting (authentication is the analysts' own)."""
    # An empty token would let a request without one in: it names nobody.
    analysts = {
        name: token.get_secret_value().encode()
        for name, token in settings.api_analyst_tokens.items()
        if token.get_secret_value()
    }
    shared = settings.api_token.get_secret_value().encode() if settings.api_token else None
    bearer = HTTPBearer(
        auto_error=False, description="An analyst's token (FINSENTRY_API_ANALYST_TOKENS)."
    )
    topics = topic_label_names(settings.data_dir)
    Labels = topic_body(topics)  # the request body: topics as an enum in the schema
    router = APIRouter(prefix="/v1", tags=["feedback"])

    def identity(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> str | None:
        """The analyst's name; "" for the shared token; None when the API has no tokens."""
        if not analysts and shared is None:
            return None
        given = credentials.credentials.encode() if credentials is not None else b""
        matches = [name for name, token in analysts.items() if hmac.compare_digest(given, token)]
        if given and matches:
            return matches[0]
        if given and shared and hmac.compare_digest(given, shared):
            return ""
        raise HTTPException(
            401, "missing or invalid bearer token", headers={"WWW-Authenticate": "Bearer"}
        )

    def analyst(who: Annotated[str | None, Depends(identity)]) -> str:
        if not analysts:
            raise HTTPException(
                403,
                "feedback is off: name analysts and their tokens in FINSENTRY_API_ANALYST_TOKENS",
            )
        if not who:
            raise HTTPException(403, "labels need an analyst's token, which says who labels")
        return who

    @router.post(
        "/items/{item_id}/labels",
        status_code=201,
        summary="Label a scored item (sentiment, topic, per-company sentiment)",
        responses=error_responses(400, 401, 403, 404, 422, 429, 502, 503),
    )
    def label_item(
        item_id: Annotated[str, ITEM_ID],
        body: Labels,  # type: ignore[valid-type]
        who: Annotated[str, Depends(analyst)],
    ) -> FeedbackDocument:
        # Elasticsearch ids are at most 512 bytes: a longer one names no item.
        fits = len(item_id.encode()) <= 512
        item = get_item(es, settings.items_index, item_id) if fits else None
        if item is None:
            raise HTTPException(404, f"no item {item_id[:80]!r} in {settings.items_index!r}")
        try:
            doc = check_feedback(body, item, analyst=who, topics=topics, now=utcnow())
        except FeedbackError as error:  # valid by the schema, not for this item
            raise HTTPException(400, str(error)) from error
        put_feedback(es, settings.feedback_index, doc)
        return doc

    @router.get(
        "/items/{item_id}/labels",
        summary="Every analyst's labels of one item",
        responses=error_responses(401, 422, 429, 502, 503),
    )
    def item_labels(
        item_id: Annotated[str, ITEM_ID],
        _: Annotated[str | None, Depends(identity)],
    ) -> FeedbackList:
        where = FeedbackFilter(item=item_id, size=1000)
        total, docs = search_feedback(es, settings.feedback_index, where)
        return FeedbackList(total=total, labels=docs)

    @router.get(
        "/labels",
        summary="Analysts' labels, newest first",
        responses=error_responses(401, 422, 429, 502, 503),
    )
    def labels(
        params: Annotated[FeedbackFilter, Query()],
        _: Annotated[str | None, Depends(identity)],
    ) -> FeedbackList:
        total, docs = search_feedback(es, settings.feedback_index, params)
        return FeedbackList(total=total, labels=docs)

    return router
