"""HTTP push: `POST /v1/items` on the query API.

The body is one item (a JSON object), a JSON array of items, or NDJSON (one object a line;
`Content-Type: application/x-ndjson`, or any body that is not one JSON value). Each item is
checked by the worker's own parser (`streams.parser.parse_raw`: the `NewsItem` model, the
text cap, the id size), so what is accepted here is never dead-lettered later. Valid items
go to the raw topic and are acknowledged by all in-sync replicas before the answer:

- 202 `{"accepted": n, "ids": [...]}` when every item was valid;
- 422 with `errors` (index, error, reason) for each bad item, while the valid items of the
  same request are still accepted (`accepted`, `ids` say which);
- 413 past `FINSENTRY_PUSH_MAX_BYTES`; 401 without `Authorization: Bearer
  <FINSENTRY_API_TOKEN>`; 403 when no token is configured (push is never open);
- 503 when Kafka did not acknowledge: then nothing of the request counts as accepted (the
  client retries; ids make the retry idempotent in the index).
"""

import hmac
import json
import threading
from collections.abc import Callable
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from finsentry.messages import NewsItem
from finsentry.settings import Settings
from finsentry.sources import metrics
from finsentry.streams.parser import ParseError, parse_raw

MAX_ITEMS = 10_000


def request_body_schema() -> dict[str, Any]:
    """The body as OpenAPI declares it: an item, an array of items, or NDJSON text. The
    worker's parser checks more than the schema says (text cap, visible text, id bytes):
    an item it refuses is a 422 entry while the rest of the request is accepted."""
    item = NewsItem.model_json_schema(ref_template="#/components/schemas/{model}")
    item.pop("$defs", None)
    item["additionalProperties"] = True  # unknown fields are kept under `extra`
    one_or_many = {"oneOf": [item, {"type": "array", "items": item, "maxItems": MAX_ITEMS}]}
    return {
        "required": True,
        "content": {
            "application/json": {"schema": one_or_many},
            "application/x-ndjson": {"schema": {"type": "string"}},
        },
    }


class Sink(Protocol):
    def send(self, items: list[NewsItem]) -> None: ...


def split_body(body: bytes, content_type: str) -> list[bytes] | str:
    """The raw bytes of each item, or why the body as a whole cannot be read."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"body is not UTF-8: {exc.reason} at byte {exc.start}"
    if not text.strip():
        return "body is empty"
    media = content_type.split(";")[0].strip().lower()
    if "ndjson" not in media and "jsonl" not in media:
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = None  # maybe NDJSON sent as application/json
        except (RecursionError, ValueError) as exc:
            return f"body is not JSON: {exc}"[:300]
        if isinstance(value, list):
            return [json.dumps(v).encode() for v in value]
        if value is not None:
            return [json.dumps(value).encode()]
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) == 1 and "ndjson" not in media and "jsonl" not in media:
        return "body is not JSON, a JSON array or NDJSON"
    return [line.encode() for line in lines]


def validate_items(
    raws: list[bytes], max_text_chars: int
) -> tuple[list[tuple[int, NewsItem]], list[dict[str, Any]]]:
    good: list[tuple[int, NewsItem]] = []
    bad: list[dict[str, Any]] = []
    for index, raw in enumerate(raws):
        outcome = parse_raw(raw, max_text_chars)
        if isinstance(outcome, ParseError):
            bad.append({"index": index, "error": outcome.error, "reason": outcome.reason})
        else:
            good.append((index, outcome))
    return good, bad


async def read_capped(request: Request, cap: int) -> bytes | None:
    """The body, or None as soon as it is over `cap` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def push_router(settings: Settings, sink_factory: Callable[[], Sink] | None = None) -> APIRouter:
    """`POST /v1/items`; `sink_factory` defaults to a Kafka producer on the raw topic,
    made at the first push (the API starts without Kafka)."""
    token = settings.api_token.get_secret_value() if settings.api_token is not None else None
    bearer = HTTPBearer(auto_error=False, description="FINSENTRY_API_TOKEN")
    lock = threading.Lock()
    sinks: list[Sink] = []

    def make_sink() -> Sink:
        from finsentry.sources.runner import KafkaSink

        return KafkaSink(settings)

    def sink() -> Sink:
        with lock:
            if not sinks:
                sinks.append((sink_factory or make_sink)())
            return sinks[0]

    def authenticate(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        if token is None:
            raise HTTPException(403, "push is off: set FINSENTRY_API_TOKEN to turn it on")
        if credentials is None or not hmac.compare_digest(
            credentials.credentials.encode(), token.encode()
        ):
            raise HTTPException(
                401, "missing or invalid bearer token", headers={"WWW-Authenticate": "Bearer"}
            )

    router = APIRouter(prefix="/v1", dependencies=[Depends(authenticate)])

    @router.post(
        "/items",
        summary="Push items into the raw topic (one, a JSON array, or NDJSON)",
        status_code=202,
        responses={413: {}, 422: {}, 503: {}},
        openapi_extra={"requestBody": request_body_schema()},
    )
    async def push_items(request: Request) -> JSONResponse:
        cap = settings.push_max_bytes
        body = await read_capped(request, cap)
        if body is None:
            return JSONResponse({"detail": f"body is over {cap} bytes"}, status_code=413)
        raws = split_body(body, request.headers.get("content-type", ""))
        if isinstance(raws, str):
            return JSONResponse({"detail": raws, "accepted": 0, "ids": []}, status_code=422)
        if len(raws) > MAX_ITEMS:
            detail = f"{len(raws)} items, at most {MAX_ITEMS} a request"
            return JSONResponse({"detail": detail}, status_code=413)
        good, bad = await run_in_threadpool(validate_items, raws, settings.max_text_chars)
        items = [item for _, item in good]
        if items:
            try:
                await run_in_threadpool(lambda: sink().send(items))
            except Exception as exc:
                detail = f"Kafka did not take the items: {type(exc).__name__}"
                return JSONResponse({"detail": detail, "accepted": 0}, status_code=503)
        metrics.PUSHED.inc(len(items))
        metrics.PUSH_REJECTED.inc(len(bad))
        content: dict[str, Any] = {"accepted": len(items), "ids": [i.id for i in items]}
        if bad:
            content["detail"] = f"{len(bad)} of {len(raws)} items are invalid"
            content["errors"] = bad
            return JSONResponse(content, status_code=422)
        return JSONResponse(content, status_code=202)

    return router
