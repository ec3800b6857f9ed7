"""The real worker, made to die between processing a batch and acknowledging it.

`python -m tests.support.crash_before_ack RECORD_FILE AFTER_ITEMS` runs `finsentry worker`
(settings from FINSENTRY_* as usual) with `ack_batch` wrapped: the first batch that ends
past AFTER_ITEMS processed items is indexed and published as usual, then, instead of being
acknowledged, its (partition, offset) pairs are written to RECORD_FILE and the process
waits three commit intervals and exits hard (no shutdown, no final commit). Any offset of
that batch committed by then was committed before the batch was acknowledged.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

CRASH_EXIT = 70
WAIT_SECONDS = 3.0  # > broker_commit_interval (1 s): a premature commit would land


def main(record_file: Path, after_items: int) -> None:
    from finsentry.settings import Settings
    from finsentry.streams import app as streams_app
    from finsentry.streams.worker import run_worker

    acknowledge = streams_app.ack_batch
    processed = 0

    async def ack_or_crash(stream: Any, events: list[Any]) -> None:
        nonlocal processed
        processed += len(events)
        if processed < after_items:
            await acknowledge(stream, events)
            return
        placed = [[e.message.partition, e.message.offset] for e in events]
        record_file.write_text(json.dumps({"batch": placed, "processed": processed}))
        await asyncio.sleep(WAIT_SECONDS)  # Faust's commit timer runs meanwhile
        os._exit(CRASH_EXIT)

    streams_app.ack_batch = ack_or_crash  # type: ignore[assignment]
    run_worker(Settings(), loglevel="WARNING")


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
