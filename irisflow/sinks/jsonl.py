"""JSON lines output: one object per event, written as it is produced."""

from __future__ import annotations

from collections.abc import Callable
from typing import BinaryIO

import trio

from .._events import Event
from .._jsonl import encode_events

__all__ = ["JsonLinesSink"]


class JsonLinesSink:
    """Writes events as JSON lines to a binary stream (stdout by default).

    Lines are flushed whenever the channel runs dry, so ``jq`` or ``head`` downstream see events
    live without a flush per event. Writes happen in a worker thread, one per burst, so a
    reader that stops reading blocks the output, never the event loop. A closed stream
    (``| head -3``) is not an error: the sink calls ``on_closed`` (the runner stops the
    sources) and discards the rest.

    Args:
        stream: Where to write.
        on_closed: Called once when the reader of ``stream`` went away.
    """

    def __init__(self, stream: BinaryIO, on_closed: Callable[[], None] = lambda: None) -> None:
        self.stream = stream
        self.on_closed = on_closed
        self.closed = False
        self.written = 0

    async def run(
        self,
        batches: trio.MemoryReceiveChannel[list[Event]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Write every batch until the channel closes."""
        task_status.started()
        async with batches:
            async for batch in batches:
                chunks = [encode_events(batch)]
                count = len(batch)
                while True:  # take what is already queued: one write and one flush per burst
                    try:
                        more = batches.receive_nowait()
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                    chunks.append(encode_events(more))
                    count += len(more)
                if not self.closed:
                    # In a thread: a reader that stops reading must not freeze the event loop
                    # (a second Ctrl-C still has to work). One hop per burst, not per event.
                    gone = await trio.to_thread.run_sync(
                        self._write, b"".join(chunks), count, abandon_on_cancel=True
                    )
                    if gone:
                        self.closed = True
                        self.on_closed()  # back in Trio: the callback may stop the run

    def _write(self, data: bytes, count: int) -> bool:
        """Write and flush (in a worker thread); True when the reader went away."""
        try:
            self.stream.write(data)
            self.stream.flush()
        except (BrokenPipeError, ValueError):  # ValueError: the stream object was closed
            return True
        self.written += count
        return False
