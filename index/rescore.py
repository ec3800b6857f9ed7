"""Backfill re-scoring: score indexed items again with the live model, resumably.

The selection (a time range on `scored_at`, optionally the model version that scored them)
is read through a point-in-time in (`scored_at`, `id`) order with `search_after`, in pages
of `batch` items; each page is scored and written back as bulk partial updates (the scores,
`model_version`, `rescored_at`, `previous_model_version`). After every page a checkpoint
file records the sort key of its last item, so a rescore that is killed resumes where it
stopped: a new point-in-time, `search_after` from the checkpoint.

Nothing is re-scored twice and nothing is missed:
- items the target model already scored are never selected (a page written just before a
  kill, but after the last checkpoint, is therefore skipped on resume);
- each update is conditional on the document's `_seq_no` / `_primary_term` as read, so an
  item the live worker re-wrote meanwhile (a replay) is left alone (counted as a conflict).

Throttling, so live scoring keeps its latency: the command runs at a lower CPU priority
(`FINSENTRY_RESCORE_NICE`), at most `FINSENTRY_RESCORE_MAX_RATE` items/s, and it yields to
live traffic: before each page it asks `yield_to` (the CLI: is the live worker's backlog on
the raw topic over `FINSENTRY_RESCORE_YIELD_LAG` items?, streams/consumer_lag.py) and waits
while the answer is yes. Nice alone does not do it: the Elasticsearch work a rescore causes
runs at the node's priority, and a page in scoring holds both cores for its length.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from finsentry.index.company_verdicts import RESCORE_SOURCE_FIELDS, rescored_verdict_docs
from finsentry.index.date_range import date_range_filters
from finsentry.messages import CompanyMention, ItemScores, NewsItem

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

    from finsentry.models.scorer import Scorer
    from finsentry.settings import Settings

log = logging.getLogger(__name__)

PIT_KEEP_ALIVE = "5m"
YIELD_POLL_S = 0.5  # while yielding to live traffic: how often to ask again
# After a pause this long a new point in time is opened (the old one lives PIT_KEEP_ALIVE
# after its last use); search_after from the checkpoint continues in it, as on a resume.
REOPEN_AFTER_S = 60.0
SORT: list[dict[str, Any]] = [{"scored_at": "asc"}, {"id": "asc"}]
RESCORE_MAPPING: dict[str, Any] = {
    "rescored_at": {"type": "date"},
    "previous_model_version": {"type": "keyword"},
}
_SOURCE = sorted(
    {"id", "title", "text", "tickers", "companies", "model_version", *RESCORE_SOURCE_FIELDS}
)
_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class RescoreError(RuntimeError):
    """Elasticsearch refused updates for a reason retrying does not fix."""


class RescoreQuery(BaseModel):
    """Which items to re-score."""

    index: str
    since: datetime | None = Field(None, description="scored_at >= since")
    until: datetime | None = Field(None, description="scored_at < until")
    from_version: str | None = Field(
        None, description="Only items this model version scored (`*` wildcards allowed)."
    )


class RescoreCheckpoint(BaseModel):
    query: RescoreQuery
    target_version: str
    search_after: list[Any] | None = None
    seen: int = 0
    updated: int = 0
    conflicts: int = 0
    total: int = Field(0, description="Items selected when the rescore started.")
    started_at: datetime
    updated_at: datetime


class RescoreResult(BaseModel):
    target_version: str
    selected: int = Field(description="Items in the selection when this run started.")
    updated: int = Field(description="Items re-scored by this run.")
    conflicts: int = Field(description="Items the live worker re-wrote meanwhile (skipped).")
    resumed: bool
    seconds: float
    finished: bool
    yielded_s: float = Field(0.0, description="Seconds paused for live traffic.")

    @property
    def items_per_s(self) -> float:
        return self.updated / self.seconds if self.seconds > 0 else 0.0


# --- pure parts ------------------------------------------------------------------------------


def parse_time(value: str, now: datetime) -> datetime:
    """An ISO-8601 time (UTC if no zone) or a span back from now: `90s`, `30m`, `2h`, `7d`."""
    match = _RELATIVE.match(value)
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
    parsed = datetime.fromisoformat(value.strip())
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def selection_query(query: RescoreQuery, target_version: str) -> dict[str, Any]:
    """The items to re-score: in range, by `from_version`, not already by the target."""
    filters = date_range_filters("scored_at", query.since, query.until)
    if query.from_version:
        if "*" in query.from_version or "?" in query.from_version:
            filters.append({"wildcard": {"model_version": {"value": query.from_version}}})
        else:
            filters.append({"term": {"model_version": query.from_version}})
    return {
        "bool": {
            "filter": filters,
            "must_not": [{"term": {"model_version": target_version}}],
        }
    }


def mentions_of(source: Mapping[str, Any]) -> list[CompanyMention]:
    """The companies an indexed item names, as the scorer takes them (offsets kept)."""
    companies = source.get("companies") or []
    if companies:
        return [
            CompanyMention(ticker=c["ticker"], name=c.get("name"), mentions=c.get("mentions") or [])
            for c in companies
        ]
    return [CompanyMention(ticker=t) for t in source.get("tickers") or []]


def model_text(source: Mapping[str, Any]) -> str:
    """The text the stream gave the model for this item (headline + body)."""
    from finsentry.streams.batch_processor import text_for_model

    item = NewsItem(id=source.get("id") or "-", title=source.get("title"), text=source["text"])
    return text_for_model(item)


def update_fields(
    scores: ItemScores, target_version: str, previous_version: str | None, now: datetime
) -> dict[str, Any]:
    """The partial document a re-scored item gets."""
    return {
        "topic": scores.topic.label,
        "topic_confidence": scores.topic.confidence,
        "topic_probs": scores.topic.probs,
        "sentiment": scores.sentiment.label,
        "sentiment_confidence": scores.sentiment.confidence,
        "sentiment_probs": scores.sentiment.probs,
        "sentiment_score": scores.sentiment_score,
        "companies": [c.model_dump(mode="json") for c in scores.companies],
        "evidence": scores.evidence,
        "chunks": scores.chunks,
        "model_version": target_version,
        "previous_model_version": previous_version,
        "rescored_at": now.isoformat(),
    }


def update_actions(
    index: str,
    hits: Sequence[Mapping[str, Any]],
    scores: Sequence[ItemScores],
    target_version: str,
    now: datetime,
) -> list[dict[str, Any]]:
    """Bulk updates, each conditional on the document being as it was read."""
    return [
        {
            "_op_type": "update",
            "_index": index,
            "_id": hit["_id"],
            "if_seq_no": hit["_seq_no"],
            "if_primary_term": hit["_primary_term"],
            "doc": update_fields(score, target_version, hit["_source"].get("model_version"), now),
        }
        for hit, score in zip(hits, scores, strict=True)
    ]


def checkpoint_file(state_dir: Path, query: RescoreQuery, target_version: str) -> Path:
    key = json.dumps([query.model_dump(mode="json"), target_version], sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return Path(state_dir) / "rescore" / f"{query.index}-{digest}.json"


# --- I/O ---------------------------------------------------------------------------------------


def read_checkpoint(path: Path) -> RescoreCheckpoint | None:
    try:
        return RescoreCheckpoint.model_validate_json(Path(path).read_bytes())
    except FileNotFoundError:
        return None
    except ValueError:
        log.warning("ignoring unreadable rescore checkpoint %s", path)
        return None


def write_checkpoint(path: Path, checkpoint: RescoreCheckpoint) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".rescore-", dir=Path(path).parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(checkpoint.model_dump_json())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def ensure_rescore_mapping(es: Elasticsearch, index: str) -> None:
    """The items mapping is strict: add the rescore fields (idempotent)."""
    es.indices.put_mapping(index=index, properties=RESCORE_MAPPING)


def _takes_companies(scorer: Scorer) -> bool:
    try:
        return "companies" in inspect.signature(scorer.score).parameters
    except (TypeError, ValueError):
        return False


def score_hits(scorer: Scorer, hits: Sequence[Mapping[str, Any]]) -> list[ItemScores]:
    texts = [model_text(h["_source"]) for h in hits]
    if _takes_companies(scorer):
        return list(scorer.score(texts, [mentions_of(h["_source"]) for h in hits]))
    return list(scorer.score(texts))


def _write(es: Elasticsearch, actions: list[dict[str, Any]]) -> tuple[int, set[str]]:
    """(updated, ids of the conflicts); anything else Elasticsearch refuses stops the rescore
    (the checkpoint is not advanced, so a rerun retries the page)."""
    from elasticsearch import helpers

    updated, errors = helpers.bulk(
        es, actions, raise_on_error=False, max_retries=8, initial_backoff=1, max_backoff=30
    )
    conflicts: set[str] = set()
    for error in errors:  # type: ignore[union-attr]
        detail = next(iter(error.values()))
        if detail.get("status") == 409:
            conflicts.add(detail["_id"])
        else:
            raise RescoreError(f"Elasticsearch refused an update: {detail}")
    return int(updated), conflicts


def verdict_actions(
    index: str,
    hits: Sequence[Mapping[str, Any]],
    scores: Sequence[ItemScores],
    target_version: str,
    skip: set[str],
) -> list[dict[str, Any]]:
    """The flat per-company documents of the re-scored items (not of those in `skip`: the
    worker re-wrote them, verdicts included)."""
    return [
        {"_op_type": "index", "_index": index, "_id": doc_id, "_source": doc}
        for hit, score in zip(hits, scores, strict=True)
        if hit["_id"] not in skip
        for doc_id, doc in rescored_verdict_docs(hit["_source"], score, target_version).items()
    ]


def rescore(
    es: Elasticsearch,
    scorer: Scorer,
    query: RescoreQuery,
    *,
    checkpoint_path: Path,
    batch: int = 256,
    max_rate: float = 0.0,
    progress: bool = False,
    stop: threading.Event | None = None,
    verdicts_index: str | None = None,
    yield_to: Callable[[], bool] | None = None,
) -> RescoreResult:
    """Re-score the selection with `scorer`, resuming from `checkpoint_path` if it holds a
    checkpoint of the same selection and target model. Returns when the selection is done
    (the checkpoint is then removed) or `stop` is set (it is kept). With `verdicts_index`,
    the items' flat per-company verdicts (index/company_verdicts.py) are rewritten too.
    Before each page, waits while `yield_to()` says live traffic is behind."""
    from tqdm.auto import tqdm

    target = scorer.version
    ensure_rescore_mapping(es, query.index)
    es.indices.refresh(index=query.index)
    started = time.perf_counter()
    now = datetime.now(UTC)
    checkpoint = read_checkpoint(checkpoint_path)
    resumed = (
        checkpoint is not None and checkpoint.query == query and checkpoint.target_version == target
    )
    selection = selection_query(query, target)
    if not resumed or checkpoint is None:
        total = int(es.count(index=query.index, query=selection)["count"])
        checkpoint = RescoreCheckpoint(
            query=query, target_version=target, total=total, started_at=now, updated_at=now
        )
    run_updated = run_conflicts = 0
    pit = es.open_point_in_time(index=query.index, keep_alive=PIT_KEEP_ALIVE)["id"]
    bar = tqdm(
        total=checkpoint.total,
        initial=checkpoint.seen,
        desc=f"rescore -> {target}",
        unit="item",
        disable=not progress,
        dynamic_ncols=True,
    )
    finished = False
    yielded = 0.0
    try:
        while stop is None or not stop.is_set():
            waited = _yield(yield_to, stop, bar)
            yielded += waited
            if stop is not None and stop.is_set():
                break
            if waited >= REOPEN_AFTER_S:  # the point in time may have expired meanwhile
                _close_pit(es, pit)
                pit = es.open_point_in_time(index=query.index, keep_alive=PIT_KEEP_ALIVE)["id"]
            tick = time.perf_counter()
            body: dict[str, Any] = {
                "size": batch,
                "query": selection,
                "sort": SORT,
                "pit": {"id": pit, "keep_alive": PIT_KEEP_ALIVE},
                "seq_no_primary_term": True,
                "source": _SOURCE,
            }
            if checkpoint.search_after is not None:
                body["search_after"] = checkpoint.search_after
            response = es.search(**body)
            pit = response.get("pit_id", pit)
            hits = response["hits"]["hits"]
            if not hits:
                finished = True
                break
            scores = score_hits(scorer, hits)
            updated, conflicted = _write(
                es, update_actions(query.index, hits, scores, target, datetime.now(UTC))
            )
            conflicts = len(conflicted)
            if verdicts_index is not None:
                _write(es, verdict_actions(verdicts_index, hits, scores, target, conflicted))
            run_updated += updated
            run_conflicts += conflicts
            checkpoint = checkpoint.model_copy(
                update={
                    "search_after": hits[-1]["sort"],
                    "seen": checkpoint.seen + len(hits),
                    "updated": checkpoint.updated + updated,
                    "conflicts": checkpoint.conflicts + conflicts,
                    "updated_at": datetime.now(UTC),
                }
            )
            write_checkpoint(checkpoint_path, checkpoint)
            bar.update(len(hits))
            if max_rate > 0:
                wait = len(hits) / max_rate - (time.perf_counter() - tick)
                if wait > 0 and stop is not None:
                    stop.wait(wait)
                elif wait > 0:
                    time.sleep(wait)
    finally:
        bar.close()
        _close_pit(es, pit)
    if finished:
        Path(checkpoint_path).unlink(missing_ok=True)
    return RescoreResult(
        target_version=target,
        selected=checkpoint.total,
        updated=run_updated,
        conflicts=run_conflicts,
        resumed=resumed,
        seconds=time.perf_counter() - started,
        finished=finished,
        yielded_s=yielded,
    )


def rescore_as_configured(
    es: Elasticsearch,
    scorer: Scorer,
    query: RescoreQuery,
    settings: Settings,
    *,
    batch: int | None = None,
    max_rate: float | None = None,
    progress: bool = False,
) -> RescoreResult:
    """`rescore` as the settings say: its checkpoint under the state dir, page size and rate
    cap (unless given), the per-company verdicts index, and yielding to the live worker."""
    from finsentry.streams.consumer_lag import live_backlog

    behind, close_backlog = live_backlog(settings)
    try:
        return rescore(
            es,
            scorer,
            query,
            checkpoint_path=checkpoint_file(settings.state_dir, query, scorer.version),
            batch=batch or settings.rescore_batch,
            max_rate=settings.rescore_max_rate if max_rate is None else max_rate,
            progress=progress,
            verdicts_index=settings.company_verdicts_index,
            yield_to=behind,
        )
    finally:
        close_backlog()


def _close_pit(es: Elasticsearch, pit: str) -> None:
    try:
        es.close_point_in_time(id=pit)
    except Exception as exc:  # expired meanwhile: it goes by itself
        log.debug("closing the point in time failed: %s", exc)


def _yield(yield_to: Callable[[], bool] | None, stop: threading.Event | None, bar: Any) -> float:
    """Wait while `yield_to()` is true (or until `stop`); returns the seconds waited."""
    if yield_to is None:
        return 0.0
    waited = 0.0
    while yield_to():
        if waited == 0.0:
            bar.set_postfix_str("live traffic behind: waiting")
        if stop is not None:
            if stop.wait(YIELD_POLL_S):
                break
        else:
            time.sleep(YIELD_POLL_S)
        waited += YIELD_POLL_S
    if waited:
        bar.set_postfix_str("")
    return waited


def remaining(es: Elasticsearch, query: RescoreQuery, target_version: str) -> int:
    """Items of the selection the target model has not scored yet."""
    es.indices.refresh(index=query.index)
    return int(es.count(index=query.index, query=selection_query(query, target_version))["count"])
