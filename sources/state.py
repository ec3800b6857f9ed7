"""What each source has sent and how its polls went, persisted in the state dir.

`<state_dir>/sources/<name>.json` holds the ids the source has sent (the newest
`remember`), the validators of its last good response and its health. It is written
atomically (temp file + rename) after Kafka acknowledged the poll's items, so a runner that
is killed and restarted does not send a feed's entries again; the index's idempotent ids
remain the last line of defence (a kill between the ack and the write re-sends one poll).
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

log = logging.getLogger(__name__)


class SourceHealth(BaseModel):
    """One source's polls: what the live view and `finsentry sources health` show."""

    source: str
    kind: str = ""
    last_poll_at: datetime | None = None
    last_status: str = "never"  # ok | not_modified | error:<kind>
    last_items: int = 0  # new items the last poll sent
    last_error: str | None = None
    polls: int = 0
    items_total: int = 0
    errors_total: int = 0
    consecutive_errors: int = 0
    next_poll_at: datetime | None = None


class SourceState(BaseModel):
    sent: list[str] = Field(default_factory=list)  # oldest first
    etag: str | None = None
    last_modified: str | None = None
    health: SourceHealth

    def remember(self, ids: list[str], keep: int) -> None:
        known = set(self.sent)
        self.sent.extend(i for i in ids if i not in known)
        if len(self.sent) > keep:
            del self.sent[: len(self.sent) - keep]


def state_dir(root: Path) -> Path:
    return root / "sources"


def state_path(root: Path, name: str) -> Path:
    return state_dir(root) / f"{name}.json"


def load_state(root: Path, name: str, kind: str = "") -> SourceState:
    path = state_path(root, name)
    try:
        return SourceState.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        pass
    except (OSError, ValidationError, ValueError) as exc:
        # Never crash a source on its own bookkeeping: start afresh (the index dedups).
        log.warning("source %s: unreadable state %s (%s); starting afresh", name, path, exc)
    return SourceState(health=SourceHealth(source=name, kind=kind))


def save_state(root: Path, name: str, state: SourceState) -> None:
    path = state_path(root, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".json.{os.getpid()}.tmp")
    tmp.write_text(state.model_dump_json(), encoding="utf-8")
    os.replace(tmp, path)


def source_health_rows(root: Path, names: list[str] | None = None) -> list[SourceHealth]:
    """Every source's health as persisted under `root` (the state dir), by name. Pure
    reading, cheap: for the live view and the CLI."""
    folder = state_dir(root)
    if not folder.is_dir():
        return []
    rows = []
    for path in sorted(folder.glob("*.json")):
        name = path.stem
        if names is not None and name not in names:
            continue
        try:
            raw = json.loads(path.read_bytes())
            rows.append(SourceHealth.model_validate(raw.get("health", {"source": name})))
        except (OSError, ValueError, ValidationError):
            rows.append(SourceHealth(source=name, last_status="error:state_unreadable"))
    return rows
