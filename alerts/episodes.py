"""One story, one alert; one notification per watchlist + company + rule + episode.

`Episodes` remembers, in event time, when each (watchlist, company, rule) last alerted and
which stories it alerted on. An alert is admitted when its story is new for that key and the
key is not cooling down. At start the alerter restores this memory from the alerts index
(`restore_episodes`), so a restarted alerter does not notify again for an episode that was
already notified; a replayed item gives the same deterministic alert id, which the outbox
stores once.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from elasticsearch import AsyncElasticsearch, NotFoundError

from finsentry.alerts.stories import StoryTracker

EpisodeKey = tuple[str, str, str]


class Episodes:
    def __init__(self, cooldown_s: float) -> None:
        self.cooldown_s = cooldown_s
        self._last: dict[EpisodeKey, float] = {}
        self._stories: set[tuple[EpisodeKey, str]] = set()

    def admit(self, key: EpisodeKey, story: str, ts: float) -> bool:
        """Whether an alert for `key` about `story` at event time `ts` should go out; if so
        it is recorded."""
        if (key, story) in self._stories:
            return False
        last = self._last.get(key)
        if last is not None and abs(ts - last) < self.cooldown_s:
            return False
        self.record(key, story, ts)
        return True

    def record(self, key: EpisodeKey, story: str | None, ts: float) -> None:
        last = self._last.get(key)
        if last is None or ts > last:
            self._last[key] = ts
        if story is not None:
            self._stories.add((key, story))

    def restore(self, docs: Iterable[dict[str, Any]], stories: StoryTracker) -> int:
        """Record alerts as stored in the alerts index, and their items' texts under their
        stories (so a re-post after a restart is still the same story); returns how many."""
        n = 0
        for doc in docs:
            if not doc.get("watchlist"):
                continue
            key = (doc["watchlist"], doc["key"], doc["rule"])
            ts = datetime.fromisoformat(doc["window_end"]).timestamp()
            story = doc.get("story_id")
            self.record(key, story, ts)
            if story is not None:
                for item in doc.get("sample_items") or []:
                    if item.get("id") and item.get("title"):
                        stories.remember(
                            str(item["id"]), str(item["title"]), ts, story, [doc["key"]]
                        )
            n += 1
        return n


async def recent_watchlist_alerts(
    es: AsyncElasticsearch, index: str, since: datetime, size: int = 10_000
) -> list[dict[str, Any]]:
    """Watchlist alerts whose window ended at or after `since`."""
    try:
        found = await es.search(
            index=index,
            query={
                "bool": {
                    "filter": [
                        {"exists": {"field": "watchlist"}},
                        {"range": {"window_end": {"gte": since.isoformat()}}},
                    ]
                }
            },
            source=["watchlist", "key", "rule", "window_end", "story_id", "sample_items"],
            sort=[{"window_end": "asc"}],
            size=size,
        )
    except NotFoundError:
        return []
    return [hit["_source"] for hit in found["hits"]["hits"]]
