"""Table recovery that does not drop stream events: a fix for a race in Faust's recovery.

After a rebalance the alerter's tables are restored from their changelogs, and Faust
resumes the consumer's flow to read them. When that is done, `Recovery.on_recovery_completed`
resumes the stream partitions (the scored topic, the keyed topic), seeks them to their
committed offsets and only then calls `flow_control.resume()`, which clears every agent's
in-memory queue. The fetcher runs all along, so events it fetches from the stream partitions
during the seek are put in those queues and then cleared: never processed, never acked, and
the next events are processed past the gap. After a restart with non-empty changelogs the
alerter lost the items that were waiting in the topic (faust-streaming issue #596; the
restart test in tests/test_alerts_watchlists_e2e.py lost the item right after the first).

`GaplessRecovery` stops the consumer's flow before Faust resumes the stream partitions; Faust
itself resumes it after the queues are cleared, and a fetch that returns while the flow is
stopped is thrown away and its partitions are seeked back to the committed offsets (Faust's
own behaviour), so every event after the committed offset reaches the agents once the worker
is ready.
"""

from __future__ import annotations

from faust.tables import TableManager
from faust.tables.recovery import Recovery


class GaplessRecovery(Recovery):
    async def on_recovery_completed(self, generation_id: int = 0) -> None:
        self.app.consumer.stop_flow()
        await super().on_recovery_completed(generation_id)


class GaplessTableManager(TableManager):
    """The Faust `TableManager` setting that makes the app recover with `GaplessRecovery`."""

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = GaplessRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery
