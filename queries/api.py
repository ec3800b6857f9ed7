"""The HTTP query API: the CLI's queries over FastAPI, plus /healthz and /metrics.

`/v1/*` take validated query parameters (unknown ones are refused), need `Authorization:
Bearer <FINSENTRY_API_TOKEN>` when a token is configured, and are rate limited per client
address (`FINSENTRY_API_RATE_LIMIT` requests a minute). `/healthz` and `/metrics` are open
for probes and scrapers; they reveal no item data.
"""

import hmac
import math
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from pydantic import BaseModel

import finsentry.metrics  # noqa: F401  (registers the worker's metrics for /metrics)
from finsentry.alerts.api import alerts_router
from finsentry.es_client import make_es_client
from finsentry.feedback.api import feedback_router
from finsentry.queries.errors import error_responses
from finsentry.queries.metrics import API_LATENCY, API_RATE_LIMITED, API_REQUESTS
from finsentry.queries.params import (
    ItemsParams,
    QueryError,
    TickersParams,
    TimelineParams,
    TopicsParams,
)
from finsentry.queries.results import (
    BreakdownResult,
    ItemsResult,
    TimelineResult,
    es_reason,
    run_breakdown,
    run_items,
    run_timeline,
)
from finsentry.settings import Settings
from finsentry.sources.push_api import push_router

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

RATE_WINDOW_SECONDS = 60.0
# The statuses each group of routes can answer (queries/errors.py says what each means).
QUERY_ERRORS = error_responses(400, 401, 404, 422, 429, 502, 503)
ALERTS_ERRORS = error_responses(400, 401, 404, 422, 429, 502, 503)
PUSH_ERRORS = error_responses(401, 403)  # its 413/422/503 bodies are its own (sources/)
FEEDBACK_ERRORS = error_responses(400, 401, 403, 404, 422, 429, 502, 503)


class Health(BaseModel):
    status: str
    elasticsearch: dict[str, Any]


class RateLimiter:
    """At most `limit` hits per key in any sliding `window` seconds (0 = unlimited)."""

    def __init__(
        self,
        limit: int,
        window: float = RATE_WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()
        self._calls = 0

    def hit(self, key: str) -> float | None:
        """Record a hit; None when allowed, else the seconds until the key may try again."""
        if self.limit <= 0:
            return None
        now = self._clock()
        with self._lock:
            self._calls += 1
            if self._calls % 1024 == 0:
                self._forget_idle(now)
            hits = self._hits.setdefault(key, deque())
            while hits and hits[0] <= now - self.window:
                hits.popleft()
            if len(hits) >= self.limit:
                return hits[0] + self.window - now
            hits.append(now)
            return None

    def _forget_idle(self, now: float) -> None:
        idle = [k for k, h in self._hits.items() if not h or h[-1] <= now - self.window]
        for key in idle:
            del self._hits[key]


def _param_name(loc: tuple[Any, ...] | list[Any]) -> str:
    names = [str(part) for part in loc if part not in ("query", "body")]
    return ".".join(names) or "parameters"


def _clean(message: str) -> str:
    return message.removeprefix("Value error, ")


def is_combination_error(error: dict[str, Any]) -> bool:
    """An error of the parameters together (a model validator's), not of one parameter."""
    whole = tuple(error.get("loc", ())) in {("query",), ("body",)}
    return whole and error.get("type") == "value_error"


def validation_errors(exc: RequestValidationError) -> list[dict[str, str]]:
    return [
        {
            "param": _param_name(error.get("loc", ())),
            "message": _clean(str(error.get("msg", ""))),
            "type": str(error.get("type", "")),
        }
        for error in exc.errors()
    ]


def _json(status: int, content: dict[str, Any]) -> JSONResponse:
    return JSONResponse(status_code=status, content=content)


def _error(status: int, detail: str, **extra: Any) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": detail, **extra})


def create_api(settings: Settings, es: "Elasticsearch | None" = None) -> FastAPI:
    """The API app over `settings.items_index`; `es` defaults to a client from settings.

    (No `from __future__ import annotations` here: FastAPI resolves the annotations of the
    dependencies defined in this closure at runtime.)
    """
    from elasticsearch import ApiError, NotFoundError, TransportError

    client = es if es is not None else make_es_client(settings)
    index = settings.items_index
    token = settings.api_token.get_secret_value() if settings.api_token is not None else None
    limiter = RateLimiter(settings.api_rate_limit)
    bearer = HTTPBearer(auto_error=False, description="FINSENTRY_API_TOKEN, when configured.")

    app = FastAPI(
        title="finsentry query API",
        version="1",
        description=(
            "Ad-hoc questions on scored financial items: newest items, sentiment timelines "
            "with the net sentiment index (bullish - bearish) / total, and ticker and topic "
            "rankings. Times are UTC; ranges are half-open [from, to)."
        ),
    )
    app.state.es = client

    def rate_limit(request: Request) -> None:
        client_key = request.client.host if request.client else "unknown"
        retry_after = limiter.hit(client_key)
        if retry_after is not None:
            API_RATE_LIMITED.inc()
            raise HTTPException(
                status_code=429,
                detail=f"rate limit of {limiter.limit} requests a minute exceeded",
                headers={"Retry-After": str(max(1, math.ceil(retry_after)))},
            )

    def authenticate(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        if token is None:
            return
        if credentials is None or not hmac.compare_digest(
            credentials.credentials.encode(), token.encode()
        ):
            raise HTTPException(
                status_code=401,
                detail="missing or invalid bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            )

    router = APIRouter(
        prefix="/v1",
        dependencies=[Depends(rate_limit), Depends(authenticate)],
        responses=QUERY_ERRORS,
    )

    @router.get("/items", summary="Matching items, newest first by default, one page")
    def items(params: Annotated[ItemsParams, Query()]) -> ItemsResult:
        return run_items(client, index, params, datetime.now(UTC))

    @router.get("/timeline", summary="Counts per sentiment and net sentiment per interval")
    def timeline(params: Annotated[TimelineParams, Query()]) -> TimelineResult:
        return run_timeline(client, index, params, datetime.now(UTC))

    @router.get("/tickers", summary="Tickers ranked by volume, negative share or mean score")
    def tickers(params: Annotated[TickersParams, Query()]) -> BreakdownResult:
        return run_breakdown(client, index, params, "tickers", datetime.now(UTC))

    @router.get("/topics", summary="Topics ranked by volume, negative share or mean score")
    def topics(params: Annotated[TopicsParams, Query()]) -> BreakdownResult:
        return run_breakdown(client, index, params, "topics", datetime.now(UTC))

    app.include_router(router)
    app.include_router(
        alerts_router(settings, client), dependencies=router.dependencies, responses=ALERTS_ERRORS
    )
    # POST /v1/items: its own auth (sources/)
    app.include_router(push_router(settings), responses=PUSH_ERRORS)
    # Labels: analysts' own tokens (feedback/), the API's rate limit.
    app.include_router(
        feedback_router(settings, client),
        dependencies=[Depends(rate_limit)],
        responses=FEEDBACK_ERRORS,
    )

    @app.get(
        "/healthz",
        summary="Liveness and Elasticsearch reachability",
        responses={200: {"model": Health}, 503: {"model": Health}},
    )
    def healthz() -> JSONResponse:
        try:
            health = client.options(request_timeout=5).cluster.health()
            exists = bool(client.options(request_timeout=5).indices.exists(index=index))
        except (ApiError, TransportError) as exc:
            body = {"reachable": False, "error": type(exc).__name__}
            return _json(503, {"status": "unavailable", "elasticsearch": body})
        cluster = str(health.get("status", "unknown"))
        body = {
            "reachable": True,
            "cluster_status": cluster,
            "items_index": index,
            "items_index_exists": exists,
        }
        status = "ok" if cluster in {"green", "yellow"} else "degraded"
        code = 200 if status == "ok" else 503
        return _json(code, {"status": status, "elasticsearch": body})

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    @app.middleware("http")
    async def record_request(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = getattr(request.scope.get("route"), "path", "unmatched")
            API_REQUESTS.labels(request.method, route, str(status)).inc()
            API_LATENCY.labels(route).observe(time.perf_counter() - started)

    @app.exception_handler(RequestValidationError)
    async def invalid_parameters(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = validation_errors(exc)
        detail = "; ".join(f"{e['param']}: {e['message']}" for e in errors)
        # Each parameter valid, the combination not (from after to, ...): 400, as QueryError.
        together = all(is_combination_error(e) for e in exc.errors())
        return _error(400 if together else 422, f"invalid parameters: {detail}", errors=errors)

    @app.exception_handler(QueryError)
    async def bad_query(_: Request, exc: QueryError) -> JSONResponse:
        return _error(400, f"invalid parameters: {exc}")

    @app.exception_handler(NotFoundError)
    async def no_index(_: Request, exc: NotFoundError) -> JSONResponse:
        return _error(404, f"index {index!r} not found")

    @app.exception_handler(ApiError)
    async def es_refused(_: Request, exc: ApiError) -> JSONResponse:
        status = 400 if exc.meta.status == 400 else 502
        return _error(status, f"elasticsearch refused the query: {es_reason(exc)}")

    @app.exception_handler(TransportError)
    async def es_unreachable(_: Request, exc: TransportError) -> JSONResponse:
        return _error(503, f"elasticsearch unreachable: {type(exc).__name__}")

    return app
