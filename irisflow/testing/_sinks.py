"""List-backed sinks for tests: what came out of a pipeline, in order."""

from __future__ import annotations

import attrs
import trio

from .._events import Event

__all__ = ["ListSink"]


@attrs.define
class ListSink:
    """Collects every event a run emits into ``events``.

    Args:
        hold: While set, the sink does not read its channel (to test backpressure); call
            :meth:`release` to let it go on.
    """

    events: list[Event] = attrs.field(factory=list)
    batches: int = 0
    hold: bool = False
    _released: trio.Event = attrs.field(factory=trio.Event)
    _changed: trio.Event = attrs.field(factory=trio.Event)

    def release(self) -> None:
        """Start reading the channel (after ``hold=True``)."""
        self._released.set()

    async def wait_for(self, count: int) -> list[Event]:
        """Wait until at least ``count`` events arrived; return them all."""
        while len(self.events) < count:
            await self._changed.wait()
        return self.events

    async def run(
        self,
        batches: trio.MemoryReceiveChannel[list[Event]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Collect every batch until the channel closes."""
        task_status.started()
        if self.hold:
            await self._released.wait()
        async with batches:
            async for batch in batches:
                self.events.extend(batch)
                self.batches += 1
                self._changed.set()
                self._changed = trio.Event()
