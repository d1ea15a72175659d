"""The live terminal table: run status, the latest events, and figures per symbol."""

from __future__ import annotations

from typing import Any

import trio

from .._events import Event
from .._render import LiveView, TableState, live_display

__all__ = ["TableSink"]

REFRESH_INTERVAL = 0.1
"""Seconds between screen refreshes (10 Hz at most, however fast events come)."""


class TableSink:
    """Shows the pipeline's output in a Rich live table that refreshes at most 10 times a second.

    Args:
        status: The run's live counters (``irisflow._run.RunStatus``) for the header.
    """

    def __init__(self, status: Any) -> None:
        self.state = TableState()
        self.view = LiveView(self.state, status)

    async def run(
        self,
        batches: trio.MemoryReceiveChannel[list[Event]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Fold batches into the view; redraw on a timer, not per event; final redraw at the end."""
        with live_display(self.view) as live:
            task_status.started()
            async with batches, trio.open_nursery() as nursery:
                nursery.start_soon(self._refresh, live)
                async for batch in batches:
                    self.state.add(batch)
                nursery.cancel_scope.cancel()
            live.update(self.view.render(), refresh=True)

    async def _refresh(self, live: Any) -> None:
        while True:
            await trio.sleep(REFRESH_INTERVAL)
            live.update(self.view.render(), refresh=True)
