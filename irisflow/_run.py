"""One run of irisflow: sources -> bounded channel -> pipeline task -> bounded channels -> sinks.

The shape (every task lives in one nursery owned by :meth:`Runner.run`)::

    subscriber/replay tasks ──Frames|Gap──▶ pipeline task ──list[Event]──▶ sink tasks
                          (bounded, blocking)      │         (bounded, one channel each)
                                                   └──FeedItem──▶ recorder

Stopping (Ctrl-C, SIGTERM, ``--duration``, ``--max-events``, a closed stdout) cancels only the
sources. Their channel ends close, the pipeline task drains what is queued and closes its
outputs, and every sink flushes and returns: nothing already received is lost.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

import attrs
import trio

from ._duration import format_duration
from ._errors import DecodeError, IrisflowError, RecordingError, UsageError
from ._events import Event, Gap
from ._feed import ConnectionState, FeedItem, FeedStatistics, FeedStats, Frames, now_ns
from ._groups import leaves
from ._pipeline import Pipeline
from ._record import CorruptLine, Recorder, read_recording, read_recordings
from ._reorg import REORG_HORIZON
from ._venue import Decoder, FeedOptions, Plan, get_venue

__all__ = [
    "Problem",
    "RunStatistics",
    "RunStatus",
    "RunSummary",
    "Runner",
    "Sink",
    "parse_speed",
]

EventBatch = list[Event]


class Sink(Protocol):
    """Something at the end of the pipeline: consumes batches until its channel closes."""

    async def run(
        self,
        batches: trio.MemoryReceiveChannel[EventBatch],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Consume every batch; flush and return once the channel is closed."""
        ...


@attrs.frozen
class Problem:
    """A frame or line that could not be used."""

    where: str
    """``'line 17'`` in a replay (``'b.jsonl line 17'`` of several files), ``'binance'`` live."""
    message: str
    """What was wrong."""


@attrs.frozen
class RunSummary:
    """What a run did, for the closing report."""

    frames: int
    """Frames read from venues or the recording."""
    events: int
    """Events decoded."""
    emitted: int
    """Events that came out of the pipeline."""
    problems: tuple[Problem, ...]
    """Frames or lines skipped (up to 100 are kept; ``problem_count`` has them all)."""
    problem_count: int
    """How many frames or lines were skipped in all."""
    elapsed: float
    """Seconds from start to the last flush."""
    interrupted: bool
    """True when stopped by Ctrl-C or SIGTERM."""
    notes: tuple[str, ...] = ()
    """Things worth a line at the end: messages skipped by kind, requests refused, errors."""


@attrs.frozen
class RunStatistics:
    """A snapshot of a run's counters, from :meth:`Runner.statistics`."""

    frames: int
    """Frames read."""
    events: int
    """Events decoded."""
    emitted: int
    """Events out of the pipeline."""
    problems: int
    """Frames or lines skipped."""
    gaps: int
    """Gap events seen."""
    queue: int
    """Batches waiting between the sources and the pipeline now."""
    feeds: tuple[FeedStatistics, ...]
    """One per venue connection."""


@attrs.define
class RunStatus:
    """Live counters for the status display (read-only for everyone but the runner)."""

    feeds: list[FeedStats] = attrs.field(factory=list)
    frames: int = 0
    events: int = 0
    emitted: int = 0
    problems: int = 0
    gaps: int = 0
    started: float = attrs.field(factory=time.monotonic)
    channel: trio.MemoryReceiveChannel[FeedItem] | None = None
    source: str = ""
    notes: list[Callable[[], str]] = attrs.field(factory=list)
    """More status for the display, e.g. the database sink's state (one short text each)."""

    def channel_depth(self) -> int:
        """Items waiting in the channel from the sources to the pipeline."""
        if self.channel is None:
            return 0
        return self.channel.statistics().current_buffer_used


def parse_speed(text: str) -> float:
    """``'max'`` -> inf, ``'realtime'`` -> 1, ``'10x'`` -> 10.

    Raises:
        UsageError: anything else.
    """
    value = text.strip().lower()
    if value == "max":
        return math.inf
    if value in ("realtime", "1x"):
        return 1.0
    if value.endswith("x"):
        try:
            speed = float(value[:-1])
        except ValueError:
            speed = -1.0
        if 0.001 <= speed <= 1e6:
            return speed
    raise UsageError(
        f"bad --speed {text!r}: use max, realtime or a factor from 0.001x to 1000000x, e.g. 10x"
    )


_MAX_PROBLEMS_KEPT = 100
_DRAIN = 64
"""Most queued feed items the pipeline task takes before it sends their output on."""


@attrs.define
class Runner:
    """Wires sources, the pipeline and sinks for one run.

    Args:
        pipeline: The synchronous pipeline.
        sinks: Outputs; each gets its own bounded channel.
        buffer: Capacity of every channel, in batches (a batch is one socket read).
        max_events: Stop after this many output events (None: no limit).
        duration: Stop the sources after this many seconds (None: no limit).
        record: Write every frame heard to this file.
        strict: Stop at the first frame or line that cannot be used.
        warn: Where diagnostics go (one line each).
        signals: Handle Ctrl-C and SIGTERM (drain, then stop; a second Ctrl-C quits). Only
            possible in the main thread; elsewhere the caller handles them.
    """

    pipeline: Pipeline
    sinks: Sequence[Sink] = ()
    taps: Sequence[Sink] = ()
    """Sinks that get every decoded event, before the pipeline (e.g. ``--store all``)."""
    services: Sequence[Callable[[], Awaitable[None]]] = ()
    """Tasks that run beside the pipeline until the run ends (e.g. a saved-filter listener)."""
    buffer: int = 16
    max_events: int | None = None
    duration: float | None = None
    record: Path | None = None
    strict: bool = False
    warn: Callable[[str], None] = lambda _msg: None
    live: bool = False
    tick: float = 0.25
    """Seconds of wall time between advances of time-driven steps while the feed is idle."""
    signals: bool = True
    status: RunStatus = attrs.field(factory=RunStatus)
    _decoders: dict[str, Decoder] = attrs.field(factory=dict)
    _problems: list[Problem] = attrs.field(factory=list)
    _stop: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    _interrupted: bool = False
    _done: bool = False
    _failure: BaseException | None = None

    def stop(self) -> None:
        """Stop the sources; what was received still flows to the sinks."""
        self._stop.cancel()

    def statistics(self) -> RunStatistics:
        """A frozen snapshot of the run's counters."""
        status = self.status
        return RunStatistics(
            frames=status.frames,
            events=status.events,
            emitted=status.emitted,
            problems=status.problems,
            gaps=status.gaps,
            queue=status.channel_depth(),
            feeds=tuple(feed.statistics() for feed in status.feeds),
        )

    async def watch(
        self,
        plans: Sequence[Plan],
        options: FeedOptions | None = None,
        *,
        controls: Mapping[str, object] | None = None,
    ) -> RunSummary:
        """Run live subscriptions until stopped.

        Args:
            plans: One validated plan per venue.
            options: Timeouts, backoff and overflow policy for every connection.
            controls: Per venue name, a handle to change its subscription while it runs
                (e.g. :class:`~irisflow.venues.binance.BinanceControl`).
        """
        options = options or FeedOptions()
        controls = controls or {}
        venues = [get_venue(plan.venue) for plan in plans]
        self.live = True
        self.status.source = ", ".join(f"{p.venue} ({len(p.streams)} streams)" for p in plans)

        async def sources(send: trio.MemorySendChannel[FeedItem]) -> None:
            async with send, trio.open_nursery() as nursery:
                for venue, plan in zip(venues, plans, strict=True):
                    self._decoders.setdefault(venue.name, venue.decoder())
                    subscribe: Callable[..., Awaitable[None]] = venue.subscribe
                    if plan.venue in controls:  # only venues that take one get a control
                        subscribe = functools.partial(subscribe, control=controls[plan.venue])
                    await nursery.start(subscribe, plan, send.clone(), options, self.status.feeds)
                for feed in self.status.feeds:
                    address = getattr(feed, "address", "")
                    if address:  # a webhook receiver: say where (--listen HOST:0 picks a port)
                        self.warn(f"{feed.venue} listening on {address}")

        return await self._run(sources)

    async def replay(
        self,
        paths: Path | Sequence[Path],
        *,
        venue: str | None = None,
        speed: float = math.inf,
    ) -> RunSummary:
        """Replay recordings (or bare frames of ``venue``) through the same path as live.

        Several recordings replay as one live run that heard them all: merged by receive
        time, ties in the order given, then line order (see
        :func:`~irisflow._record.read_recordings`); several files of bare frames play one
        after another.

        Args:
            paths: A recording, or several.
            venue: The venue of files of bare frames (one per line).
            speed: ``inf`` (as fast as possible), or a factor of the recorded pace (the merged
                receive times): 1 is real time, 10 ten times as fast.

        Raises:
            RecordingError: before anything starts: a file cannot be read, holds bare frames
                and no ``venue`` is given, or bare files are mixed with recordings. Later,
                with ``strict``, the first corrupt line.
        """
        # A str or Path is one file (a str is a sequence too, of characters).
        files = [Path(paths)] if isinstance(paths, str | os.PathLike) else [Path(p) for p in paths]
        if not files:
            raise UsageError("nothing to replay: give at least one file")
        self.status.source = ", ".join(str(p) for p in files)
        # Fail on an unreadable file or a missing --venue before anything starts. One file is
        # read as it is, without a merge.
        if len(files) == 1:
            items = read_recording(files[0], venue=venue)
        else:
            items = read_recordings(files, venue=venue)
        first = next(items, None)

        async def sources(send: trio.MemorySendChannel[FeedItem]) -> None:
            async with send:
                clock_start: float | None = None
                recv_start = 0
                head = [first] if first is not None else []
                for item in itertools.chain(head, items):
                    if isinstance(item, CorruptLine):
                        self._problem(_where(item.file, item.line), item.reason)
                        continue
                    if item.venue not in self._decoders:
                        try:
                            self._decoders[item.venue] = get_venue(item.venue).decoder()
                        except UsageError as exc:  # a line naming a venue irisflow lacks
                            line = item.first_line if isinstance(item, Frames) else 0
                            file = getattr(item, "file", "")
                            self._problem(
                                _where(file, line) if line else self.status.source, str(exc)
                            )
                            continue
                    if math.isfinite(speed) and item.recv_ts:
                        if clock_start is None:
                            clock_start, recv_start = trio.current_time(), item.recv_ts
                        await trio.sleep_until(
                            clock_start + (item.recv_ts - recv_start) / 1e9 / speed
                        )
                    try:
                        # Fill the channel without yielding, so the pipeline task takes
                        # several items per wake-up; wait (backpressure) only when full.
                        send.send_nowait(item)
                    except trio.WouldBlock:
                        await send.send(item)

        return await self._run(sources)

    async def _run(
        self, sources: Callable[[trio.MemorySendChannel[FeedItem]], Awaitable[None]]
    ) -> RunSummary:
        started = time.monotonic()
        feed_send, feed_recv = trio.open_memory_channel[FeedItem](self.buffer)
        self.status.channel = feed_recv
        try:
            async with trio.open_nursery() as outer:
                outer.start_soon(self._signals, outer.cancel_scope)
                await self._run_inside(sources, feed_send, feed_recv)
                outer.cancel_scope.cancel()  # done: stop watching for signals
        except BaseExceptionGroup as group:
            raise _unwrap(group) from None
        if self._failure is not None:
            raise self._failure
        return RunSummary(
            frames=self.status.frames,
            events=self.status.events,
            emitted=self.status.emitted,
            problems=tuple(self._problems),
            problem_count=self.status.problems,
            elapsed=time.monotonic() - started,
            interrupted=self._interrupted,
            notes=tuple(self._notes()),
        )

    async def _run_inside(
        self,
        sources: Callable[[trio.MemorySendChannel[FeedItem]], Awaitable[None]],
        feed_send: trio.MemorySendChannel[FeedItem],
        feed_recv: trio.MemoryReceiveChannel[FeedItem],
    ) -> None:
        async with trio.open_nursery() as services:
            for service in self.services:
                services.start_soon(service)
            async with trio.open_nursery() as nursery:
                outputs = [await self._start_sink(nursery, sink) for sink in self.sinks]
                taps = [await self._start_sink(nursery, tap) for tap in self.taps]
                recorder: trio.MemorySendChannel[FeedItem] | None = None
                if self.record is not None:
                    rec_send, rec_recv = trio.open_memory_channel[FeedItem](self.buffer)
                    await nursery.start(Recorder(self.record).run, rec_recv)
                    recorder = rec_send
                nursery.start_soon(self._pipeline_task, feed_recv, outputs, taps, recorder)
                with self._stop:
                    if self.duration is not None:
                        self._stop.deadline = trio.current_time() + self.duration
                    try:
                        await sources(feed_send)
                    except IrisflowError as exc:
                        # Let what was received drain to the sinks, then report.
                        self._failure = exc
                await feed_send.aclose()
            services.cancel_scope.cancel()  # everything drained: the services go too

    async def _start_sink(
        self, nursery: trio.Nursery, sink: Sink
    ) -> trio.MemorySendChannel[EventBatch]:
        send, recv = trio.open_memory_channel[EventBatch](self.buffer)
        await nursery.start(sink.run, recv)
        return send

    async def _signals(self, everything: trio.CancelScope) -> None:
        if not self.signals or threading.current_thread() is not threading.main_thread():
            return
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as received:
            async for _ in received:
                if self._interrupted:
                    # A second Ctrl-C: stop now, without draining.
                    everything.cancel()
                    raise KeyboardInterrupt
                self._interrupted = True
                self.warn("stopping: draining what was received (Ctrl-C again to quit at once)")
                self.stop()

    async def _pipeline_task(
        self,
        feed: trio.MemoryReceiveChannel[FeedItem],
        outputs: list[trio.MemorySendChannel[EventBatch]],
        taps: list[trio.MemorySendChannel[EventBatch]],
        recorder: trio.MemorySendChannel[FeedItem] | None,
    ) -> None:
        """Decode, run the pipeline, fan out.

        Whatever is already queued is taken in one go (up to ``_DRAIN`` items) and its output
        sent on as one batch: when the pipeline falls behind, sinks get fewer, larger batches
        instead of a task switch per socket read. Time-driven steps are advanced to each
        item's receive time before it is processed, so a replay closes windows exactly where
        the live run did; live, an idle feed still advances them every ``tick`` seconds.
        """
        advance = self.pipeline.advance
        tick = self.tick if self.live and self.pipeline.timed else math.inf
        try:
            async with feed:
                while True:
                    with trio.move_on_after(tick) as idle:
                        try:
                            item = await feed.receive()
                        except trio.EndOfChannel:
                            break
                    if idle.cancelled_caught:
                        if not self._done:
                            await self._emit(advance(now_ns()), outputs)
                        continue
                    items = [item]
                    while len(items) < _DRAIN:  # what is queued already comes along
                        try:
                            items.append(feed.receive_nowait())
                        except (trio.WouldBlock, trio.EndOfChannel):
                            break
                    out: list[Event] = []
                    for item in items:
                        if recorder is not None:
                            await recorder.send(item)
                        if self._done:  # after --max-events: drain without emitting
                            continue
                        events = self._decode(item)
                        for tap in taps:
                            await tap.send(events)
                        out += advance(item.recv_ts)
                        out += self.pipeline.process(list(events) if taps else events)
                    if out:
                        await self._emit(out, outputs)
                # The feed ended (its end, a stop, Ctrl-C): open windows come out now,
                # marked incomplete, so nothing received is held back.
                await self._emit(self.pipeline.flush(), outputs)
        finally:
            for output in [*outputs, *taps]:
                output.close()
            if recorder is not None:
                recorder.close()

    def _decode(self, item: FeedItem) -> list[Event]:
        """The events of one feed item, counted; bad frames become problems."""
        status = self.status
        if isinstance(item, Frames):  # FileFrames too, from several files replayed together
            events: list[Event] = []
            errors: list[tuple[int, DecodeError]] = []
            self._decoders[item.venue].decode_batch(item.frames, item.recv_ts, events, errors)
            status.frames += len(item.frames)
            if errors:
                self._decode_errors(item, errors)
        else:
            assert isinstance(item, Gap)
            events = [item]
            status.gaps += 1
        status.events += len(events)
        return events

    async def _emit(
        self, out: list[Event], outputs: list[trio.MemorySendChannel[EventBatch]]
    ) -> None:
        """Send pipeline output to every sink, up to ``max_events`` in all."""
        if not out or self._done:
            return
        status = self.status
        limit = self.max_events
        if limit is not None and status.emitted + len(out) >= limit:
            out = out[: limit - status.emitted]
            self._done = True
            self.stop()
        status.emitted += len(out)
        for output in outputs:
            await output.send(out)

    def _notes(self) -> list[str]:
        """What the decoders and connections counted but no event shows."""
        notes = []
        for step in self.pipeline.steps:
            stats = getattr(step, "statistics", lambda: None)()
            late = getattr(stats, "late", 0)
            spec = getattr(step, "spec", type(step).__name__)
            if late and not getattr(step, "emit_late", False):
                notes.append(
                    f"{spec}: {late:,} late events were left out (allow for them with"
                    " 'lateness 2s', or see them with 'late emit')"
                )
            expired = getattr(stats, "expired", 0)
            if expired:
                notes.append(
                    f"{spec}: {expired:,} retractions came too late to correct results already"
                    f" emitted (more than {format_duration(REORG_HORIZON)} of event time after"
                    " them)"
                )
        for name, decoder in sorted(self._decoders.items()):
            skipped = getattr(decoder, "skipped", None)
            if skipped:
                total = sum(skipped.values())
                kinds = ", ".join(f"{k} {n:,}" for k, n in sorted(skipped.items())[:8])
                notes.append(
                    f"{name}: ignored {total:,} messages of kinds irisflow does not decode"
                    f" ({kinds})"
                )
        for feed in self.status.feeds:
            refused = {
                "a bad signature": getattr(feed, "bad_signatures", 0),
                "a body over the size limit": getattr(feed, "too_large", 0),
                "a malformed request": getattr(feed, "bad_requests", 0),
                "a full pipeline (503)": getattr(feed, "busy", 0),
            }
            for why, count in refused.items():
                if count:
                    notes.append(f"{feed.venue}: refused {count:,} requests for {why}")
            if feed.last_error and (feed.reconnects or feed.state is not ConnectionState.LIVE):
                notes.append(f"{feed.venue}: last connection error: {feed.last_error}")
        return notes

    def _decode_errors(self, item: Frames, errors: list[tuple[int, DecodeError]]) -> None:
        file = getattr(item, "file", "")  # FileFrames: from one of several files
        for index, error in errors:
            where = _where(file, item.first_line + index) if item.first_line else item.venue
            if self.strict:
                # No stop() first: a cancelled scope would swallow this error on its way out.
                raise RecordingError(f"{where}: {error}") from error
            self._problem(where, str(error))

    def _problem(self, where: str, message: str) -> None:
        if self.strict:
            raise RecordingError(f"{where}: {message}")
        self.status.problems += 1
        if len(self._problems) < _MAX_PROBLEMS_KEPT:
            self._problems.append(Problem(where, message))
        if self.live and self.status.problems <= 5:
            self.warn(f"skipped a frame from {where}: {message}")


def _where(file: str, line: int) -> str:
    """``'line 7'`` in a replay of one file, ``'b.jsonl line 7'`` of several."""
    return f"{file} line {line}" if file else f"line {line}"


def _unwrap(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The exception to show for a failed nursery: irisflow's own first, then the rest."""
    found = list(leaves(group))
    for cls in (KeyboardInterrupt, IrisflowError):
        for leaf in found:
            if isinstance(leaf, cls):
                return leaf
    return found[0] if len(found) == 1 else group
