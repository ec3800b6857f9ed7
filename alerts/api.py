"""HTTP routes of the alerts stage, included in the query API (queries/api.py):

    GET    /v1/watchlists              every watchlist
    GET    /v1/watchlists/{name}       one
    PUT    /v1/watchlists/{name}       create or replace (entries resolved to tickers first)
    DELETE /v1/watchlists/{name}
    GET    /v1/alerts                  alerts, newest first (watchlist, company, rule, time)
    POST   /v1/alerts/{id}/ack         acknowledge one

Bad input is a 4xx with a message that says what is wrong; a watchlist is validated and
resolved in full before its one document is written, so nothing is stored half-way.

(No `from __future__ import annotations`: FastAPI resolves these annotations at runtime.)
"""

import re
import threading
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Response
from pydantic import BaseModel, Field

from finsentry.alerts.store import AlertDocument, AlertFilter, acknowledge, search_alerts
from finsentry.alerts.watchlists import (
    NAME_PATTERN,
    CompanyDirectory,
    Watchlist,
    WatchlistError,
    WatchlistIn,
    delete_watchlist,
    get_watchlist,
    list_watchlists,
    put_watchlist,
    resolve_watchlist,
)
from finsentry.messages import utcnow
from finsentry.settings import Settings

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch


class WatchlistsResult(BaseModel):
    watchlists: list[Watchlist]


class AlertsResult(BaseModel):
    alerts: list[AlertDocument]


class Acknowledgement(BaseModel):
    by: str | None = Field(None, max_length=128, description="Who acknowledges.")


# Declared in the OpenAPI schema; checked by `_checked_name` (its message says what is wrong).
WatchlistName = Annotated[str, Path(json_schema_extra={"pattern": NAME_PATTERN})]
ALERT_ID_PATTERN = r"^[0-9a-f]{1,64}$"
AlertId = Annotated[str, Path(json_schema_extra={"pattern": ALERT_ID_PATTERN})]


def _checked_name(name: str) -> str:
    if not re.match(NAME_PATTERN, name):
        raise HTTPException(
            status_code=422,
            detail=(
                f"invalid watchlist name {name[:80]!r}: use 1-63 characters of a-z, 0-9, "
                "'-' and '_', starting with a letter or a digit"
            ),
        )
    return name


def alerts_router(settings: Settings, es: "Elasticsearch") -> APIRouter:
    """The routes; the caller adds authentication and rate limiting as dependencies."""
    router = APIRouter(prefix="/v1")
    index = settings.watchlists_index
    lock = threading.Lock()
    loaded: list[CompanyDirectory] = []

    def directory() -> CompanyDirectory:
        with lock:
            if not loaded:
                loaded.append(CompanyDirectory.from_files(settings.company_files))
            return loaded[0]

    @router.get("/watchlists", summary="Every watchlist", tags=["alerts"])
    def watchlists() -> WatchlistsResult:
        return WatchlistsResult(watchlists=list_watchlists(es, index))

    @router.get("/watchlists/{name}", summary="One watchlist", tags=["alerts"])
    def watchlist(name: WatchlistName) -> Watchlist:
        found = get_watchlist(es, index, _checked_name(name))
        if found is None:
            raise HTTPException(status_code=404, detail=f"no watchlist {name!r}")
        return found

    @router.put(
        "/watchlists/{name}",
        summary="Create or replace a watchlist (tickers or company names)",
        tags=["alerts"],
    )
    def store_watchlist(name: WatchlistName, body: WatchlistIn) -> Watchlist:
        try:
            resolved = resolve_watchlist(
                _checked_name(name),
                body,
                directory(),
                known_channels=list(settings.alert_channel_urls),
            )
        except WatchlistError as error:
            raise HTTPException(status_code=422, detail=str(error)) from error
        put_watchlist(es, index, resolved)
        return resolved

    @router.delete(
        "/watchlists/{name}", status_code=204, summary="Delete a watchlist", tags=["alerts"]
    )
    def remove_watchlist(name: WatchlistName) -> Response:
        if not delete_watchlist(es, index, _checked_name(name)):
            raise HTTPException(status_code=404, detail=f"no watchlist {name!r}")
        return Response(status_code=204)

    @router.get("/alerts", summary="Alerts, newest first", tags=["alerts"])
    def alerts(params: Annotated[AlertFilter, Query()]) -> AlertsResult:
        return AlertsResult(alerts=search_alerts(es, settings.alerts_index, params))

    @router.post("/alerts/{alert_id}/ack", summary="Acknowledge an alert", tags=["alerts"])
    def ack(alert_id: AlertId, body: Acknowledgement | None = None) -> AlertDocument:
        if not re.fullmatch(ALERT_ID_PATTERN, alert_id):
            raise HTTPException(status_code=422, detail=f"invalid alert id {alert_id[:80]!r}")
        by = body.by if body is not None else None
        done = acknowledge(es, settings.alerts_index, alert_id, by, utcnow())
        if done is None:
            raise HTTPException(status_code=404, detail=f"no alert {alert_id!r}")
        return done

    return router
