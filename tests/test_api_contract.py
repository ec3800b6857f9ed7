"""The HTTP API keeps its OpenAPI contract (issue 13): a property-based fuzzer (schemathesis)
generates requests from /openapi.json, valid and invalid ones, sends them to a real uvicorn
server on 127.0.0.1 backed by a real index, and checks every response with all of
schemathesis' checks (the configuration, tests/fixtures/api_contract/schemathesis.toml,
says where it departs from the defaults, and why): no 5xx, each status and body as
declared, schema-valid requests accepted, schema-invalid ones rejected. The fuzzer runs as
a library (its hypothesis strategies, positive and negative, per operation), so the cases
are the same in every run and one report lists every failing operation.

One contract is ours, not the fuzzer's default, and the API declares it (queries/errors.py):
400 means every parameter is valid by the schema but together they make no query (from
after to, a timeline too long for its interval, a page beyond the result window);
schema-valid data may get a 400, never a 422.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from pydantic import SecretStr
from requests.adapters import BaseAdapter, HTTPAdapter
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig

from finsentry.index.template import apply_items_template
from finsentry.settings import Settings
from tests.conftest import unique_settings
from tests.support.crafted import crafted_item
from tests.support.private_services import free_port

pytestmark = pytest.mark.integration

CONFIG = Path(__file__).parent / "fixtures" / "api_contract" / "schemathesis.toml"
CASES = 10  # examples an operation and mode (the run: 32); see CONFIG
TOKEN = "contract-token"


def _load(es: Any, settings: Settings) -> None:
    """A few scored items in a fresh index (the ids the fuzzer cannot guess: 404s)."""
    apply_items_template(es, settings.items_index)
    now = datetime.now(UTC)
    operations: list[dict[str, Any]] = []
    for i, (sentiment, tickers) in enumerate(
        [("bullish", ["AAPL"]), ("bearish", ["JPM", "BAC"]), ("neutral", [])]
    ):
        item = crafted_item(f"c{i}", now - timedelta(hours=i), sentiment, tickers)
        operations.append({"index": {"_index": settings.items_index, "_id": item.id}})
        operations.append(item.model_dump(mode="json", exclude_none=True))
    assert not es.bulk(operations=operations, refresh="wait_for")["errors"]


@pytest.fixture(scope="module")
def api_url(services: Settings, es: Any) -> Iterator[str]:
    """`finsentry api`'s app under uvicorn on 127.0.0.1, on its own indices and topics."""
    import uvicorn

    from finsentry.queries.api import create_api

    config = unique_settings(services, api_rate_limit=0, api_token=SecretStr(TOKEN))
    config = config.model_copy(
        update={
            "api_analyst_tokens": {"analyst": SecretStr(TOKEN)},
            "watchlists_index": f"{config.items_index}-watchlists",
            "feedback_index": f"{config.items_index}-feedback",
        }
    )
    _load(es, config)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_api(config), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, name="api-under-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    for index in (
        config.items_index,
        config.watchlists_index,
        config.alerts_index,
        config.feedback_index,
    ):
        es.options(ignore_status=404).indices.delete(index=index)
    es.options(ignore_status=404).indices.delete_index_template(name=config.items_index)


@pytest.fixture(scope="module")
def api_schema(api_url: str) -> Any:
    config = SchemathesisConfig.from_path(CONFIG)
    # One token that is the API's and an analyst's: every route accepts it. Without it, or
    # with a wrong one: test_every_v1_operation_needs_the_token.
    config.projects.default.update(headers={"Authorization": f"Bearer {TOKEN}"})
    return schemathesis.openapi.from_url(f"{api_url}/openapi.json", config=config)


class _Transport(BaseAdapter):
    """requests' HTTPAdapter behind a plain BaseAdapter. schemathesis counts an HTTPAdapter's
    pooled connections through `urllib3`'s pool container, which `urllib3-future` (installed
    in urllib3's place by niquests, through grafana-client) does not have; it skips other
    adapters. The requests themselves are the same."""

    def __init__(self) -> None:
        super().__init__()
        self._http = HTTPAdapter()

    def send(self, request: Any, **kwargs: Any) -> Any:
        return self._http.send(request, **kwargs)

    def close(self) -> None:
        self._http.close()


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    with requests.Session() as opened:
        for prefix in ("http://", "https://"):
            opened.mount(prefix, _Transport())
        yield opened


def test_every_operation_keeps_its_contract(
    api_schema: Any, api_url: str, session: requests.Session
) -> None:
    failures: dict[str, str] = {}
    skipped: list[str] = []
    tried = 0
    for result in api_schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=CASES,
                deadline=None,
                derandomize=True,
                database=None,
                phases=[Phase.explicit, Phase.generate],  # no shrinking: report what failed
                suppress_health_check=list(HealthCheck),
            )
            def fuzz(case: Any) -> None:
                transport = {"base_url": api_url, "session": session, "timeout": 30}
                response = case.call(**transport)
                case.validate_response(response, transport_kwargs=transport)

            tried += 1
            try:
                fuzz()
            except Unsatisfiable:  # no invalid request exists (no parameters, no body)
                skipped.append(f"{operation.label} [{mode.value}]")
            except (Exception, BaseExceptionGroup) as exc:  # failures, requests, curl lines
                failures[f"{operation.label} [{mode.value}]"] = str(exc)[:3000]
    report = "\n\n".join(f"{name}:\n{text}" for name, text in failures.items())
    assert tried >= 2 * 14, tried
    assert not failures, f"{len(failures)} of {tried} operation/mode runs failed:\n{report}"


def test_every_v1_operation_needs_the_token(api_schema: Any, api_url: str) -> None:
    """What schemathesis' `ignored_auth` would probe: no token, or a wrong one, is a 401."""
    accepted: dict[str, list[int]] = {}
    operations = [r.ok() for r in api_schema.get_all_operations()]
    for operation in operations:
        if not operation.path.startswith("/v1/"):
            continue
        url = api_url + operation.path.replace("{", "").replace("}", "")
        body = {} if operation.method.upper() in ("PUT", "POST") else None
        statuses = [
            requests.request(operation.method, url, json=body, headers=headers, timeout=30)
            for headers in ({}, {"Authorization": "Bearer wrong"})
        ]
        accepted[operation.label] = [r.status_code for r in statuses if r.status_code != 401]
    refused = [label for label, codes in accepted.items() if not codes]
    assert len(refused) >= 12 and refused == list(accepted), accepted
