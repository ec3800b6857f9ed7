"""Write batches of documents into Elasticsearch, retrying until they are safely indexed.

Blocking by design: the stream calls `write` from an executor thread. Documents carry
their own `_id`, so a retried or replayed write never duplicates anything.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from elastic_transport import ConnectionError as TransportConnectionError
from elastic_transport import ConnectionTimeout
from elasticsearch import ApiError, Elasticsearch, helpers

log = logging.getLogger(__name__)

# Overload, outages, and blocks an operator must lift (403: a read-only index after a full
# disk; 401: credentials being rotated): retried, loudly, rather than dropping documents.
RETRYABLE_STATUS = {401, 403, 408, 429, 500, 502, 503, 504}


class SinkStopped(RuntimeError):
    """The sink was asked to stop before the batch could be written."""


@dataclass
class BulkOutcome:
    indexed: list[str] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    attempts: int = 0


@dataclass
class BulkSink:
    es: Elasticsearch
    index: str
    initial_backoff: float = 0.5
    max_backoff: float = 30.0
    chunk_size: int = 500
    stop: threading.Event = field(default_factory=threading.Event)
    on_retry: Callable[[int, str], None] | None = None

    def write(self, docs: Mapping[str, Mapping[str, Any]]) -> BulkOutcome:
        """Index `docs` (id -> source). Returns when every document is either indexed or
        rejected by Elasticsearch for a reason retrying cannot fix (e.g. a mapping error).
        Connection failures and overload are retried with capped exponential backoff until
        they succeed or `stop` is set (then SinkStopped is raised and nothing is confirmed)."""
        outcome = BulkOutcome()
        pending = dict(docs)
        backoff = self.initial_backoff
        while pending:
            outcome.attempts += 1
            try:
                retry = self._attempt(pending, outcome)
            except (TransportConnectionError, ConnectionTimeout, ApiError) as exc:
                status = getattr(exc, "status_code", None) or getattr(
                    getattr(exc, "meta", None), "status", None
                )
                if isinstance(exc, ApiError) and status not in RETRYABLE_STATUS:
                    raise
                retry = pending
                reason = f"{type(exc).__name__}: {str(exc)[:200]}"
            else:
                reason = f"{len(retry)} documents refused for now"
            pending = dict(retry)
            if not pending:
                break
            if self.on_retry is not None:
                self.on_retry(outcome.attempts, reason)
            log.warning(
                "bulk write to %s: %s; retrying %d documents in %.1fs",
                self.index,
                reason,
                len(pending),
                backoff,
            )
            if self.stop.wait(backoff):
                raise SinkStopped(f"stopped with {len(pending)} documents not indexed")
            backoff = min(backoff * 2, self.max_backoff)
        return outcome

    def _attempt(
        self, pending: Mapping[str, Mapping[str, Any]], outcome: BulkOutcome
    ) -> dict[str, Mapping[str, Any]]:
        """One bulk request. Returns the documents that should be tried again."""
        actions = (
            {"_op_type": "index", "_index": self.index, "_id": doc_id, "_source": source}
            for doc_id, source in pending.items()
        )
        retry: dict[str, Mapping[str, Any]] = {}
        for ok, result in helpers.streaming_bulk(
            self.es,
            actions,
            chunk_size=self.chunk_size,
            max_retries=0,
            raise_on_error=False,
            raise_on_exception=True,
        ):
            info = result["index"]
            doc_id = info["_id"]
            if ok:
                outcome.indexed.append(doc_id)
            elif info.get("status") in RETRYABLE_STATUS:
                retry[doc_id] = pending[doc_id]
            else:
                error = info.get("error", {})
                reason = f"{error.get('type', 'error')}: {error.get('reason', '')}"[:500]
                outcome.rejected.append((doc_id, reason))
        return retry
