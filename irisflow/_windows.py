"""Windows and bars by event time: ``window 1m | agg vwap, ohlc`` (sans-IO).

Kinds of window, all keyed by the pipeline's ``by`` (one key ``''`` without it):

- **tumbling** ``window 1m``: ``[k·size, (k+1)·size)``, aligned to the Unix epoch.
- **sliding** ``window 5m slide 1m``: ``[k·slide, k·slide + size)``; an event is in every
  window that covers it.
- **session** ``window session 30s``: events of a key closer than the gap share a window
  ``[first ts, last ts + gap)``; out-of-order events may merge two sessions.
- **bars** ``bars count 100``, ``bars volume 10``, ``bars notional 1000000`` (``_bars.py``):
  results of the same kind, closed by what they hold instead of by time.

**When a window closes.** The watermark is the largest event time seen minus the allowed
``lateness``. A window ``[start, end)`` closes when the watermark reaches ``end``. So that a
window also closes when no later event comes, :meth:`WindowStep.advance` moves the
watermark on with the receive clock: once the stream has been quiet for ``idle`` (default 0),
at receive time ``now`` it is at least ``max_ts - lateness + (now - last_recv - idle)``
(``last_recv``: the latest receive time seen), as if event time went on at the pace of the
clock. The runner calls ``advance`` with each batch's receive time before the batch (and,
live, every 0.25 s while idle), so a replay closes the same windows, with the same results,
as the live run it recorded.

A venue's gap event comes when the connection is back, so a window that the clock closes
*during* an outage has come out before the gap is known, and is not marked. ``idle`` holds
the clock back: with ``idle`` above the time a venue takes to notice and report an outage
(its stale timeout plus a reconnect), such windows wait for the gap and are marked.

**Results** are :class:`Window` events (kind ``window``) with the aggregates as typed fields
(``_results.py``: what windows and bars share).
``ts`` is the window's end; ``recv_ts`` is the receive-clock time at which the window became
due: the receive time of the event that moved the watermark past it, or, closed by the clock,
``last_recv + idle + (end + lateness - max_ts)``. Neither depends on how often ``advance``
ran.

**Late events** (their window is closed already) are counted in :meth:`statistics`, and with
``late emit`` come out as :class:`Late` events. **Gaps** pass through; a window whose span
overlaps a gap of its venue comes out with ``complete = false``, as does every window still
open when :meth:`flush` is called at the end of the stream.

**Reorgs.** When on-chain kinds flow in, every window remembers its events (``_reorg.py``).
A retraction removes the event it names from the windows that counted it and refolds them,
so results stay exact: an open window simply comes out without it; an emitted one comes out
again, same key and span, with ``revision`` one higher (count 0 if nothing is left). A
session that loses the event that bridged it, or its first or last event, is split or
shrunk: the old span comes out again with count 0, the sessions left as new results.
Emitted windows are kept for :data:`~irisflow._reorg.REORG_HORIZON` of event time past their
end; a retraction after that is counted (``expired``). Retractions and confirmations are not
counted in windows; they pass on. Over window results, a revision replaces the result it
revises.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

import attrs

from ._chain import NaturalKey
from ._duration import format_duration
from ._events import Event, Gap
from ._reorg import MARKS
from ._results import (
    Late,
    OpenWindow,
    Window,
    WindowResults,
    WindowStatistics,
    window_class,
)
from ._steps import PipelineError

__all__ = [
    "Late",
    "OpenWindow",
    "Window",
    "WindowResults",
    "WindowStatistics",
    "WindowStep",
    "window_class",
]

_NEVER = -(2**63)
_FOREVER = 2**63

MAX_OVERLAP = 1000
"""Most windows one event may fall in (size / slide): each costs work per event."""


def _at(recv_ts: int) -> Callable[[int], int]:
    """Due-time function for windows closed by an event: its receive time."""
    return lambda end: recv_ts


@attrs.define(on_setattr=attrs.setters.NO_OP)  # plain attribute writes: hot path
class WindowStep(WindowResults):
    """Tumbling, sliding or session windows by event time (see the module docs).

    Args:
        size: Window length in ns (for sessions: the gap that ends a session).
        slide: For sliding windows, the distance between window starts in ns.
        session: Session windows instead of fixed ones.
        lateness: How far behind the largest event time an event may be and still count, ns.
        idle: Receive-clock silence before the clock moves the watermark on, ns.
        emit_late: Send late events on as :class:`Late` events.
        key: The key of an event (``by``).
        aggregates: What to compute.
        kinds: The event classes flowing in (the aggregates are checked against them).
        sample: Emit the latest event of each window instead of a result (``sample 1s``).
    """

    size: int = attrs.field(kw_only=True)
    slide: int | None = attrs.field(default=None, kw_only=True)
    session: bool = attrs.field(default=False, kw_only=True)
    lateness: int = attrs.field(default=0, kw_only=True)
    idle: int = attrs.field(default=0, kw_only=True)
    sample: bool = attrs.field(default=False, kw_only=True)
    _open: dict[tuple[str, int], OpenWindow] = attrs.field(init=False, factory=dict)
    _latest: dict[str, OpenWindow] = attrs.field(init=False, factory=dict)
    _sessions: dict[str, list[OpenWindow]] = attrs.field(init=False, factory=dict)
    _heap: list[tuple[int, int, str]] = attrs.field(init=False, factory=list)
    _max_ts: int = attrs.field(init=False, default=_NEVER)
    _last_recv: int = attrs.field(init=False, default=_NEVER)
    _watermark: int = attrs.field(init=False, default=_NEVER)

    def __attrs_post_init__(self) -> None:
        if self.size <= 0 or (self.slide is not None and self.slide <= 0):
            raise PipelineError("window size and slide must be positive")
        if self.lateness < 0 or self.idle < 0:
            raise PipelineError("window lateness and idle must not be negative")
        if self.slide is not None and self.size // self.slide > MAX_OVERLAP:
            raise PipelineError(
                f"window {format_duration(self.size)} slide {format_duration(self.slide)} puts"
                f" every event in {self.size // self.slide:,} windows (at most {MAX_OVERLAP:,}):"
                " use a longer slide"
            )
        if self.slide is not None and self.slide > self.size:
            raise PipelineError(
                f"window slide {format_duration(self.slide)} is longer than its size"
                f" {format_duration(self.size)}: events between windows would be lost"
            )
        if self.session:
            self.spec = f"session {format_duration(self.size)}"
        elif self.slide is not None and self.slide != self.size:
            self.spec = f"sliding {format_duration(self.size)}/{format_duration(self.slide)}"
        else:
            self.spec = f"tumbling {format_duration(self.size)}"
            self.slide = None
        if self.sample:
            self._bound = []
            self._cls = Window
            classes = frozenset(cls for cls in self.kinds)
            self.output_kinds = classes | {Gap} | ({Late} if self.emit_late else set())
            self._watch_chain()
        else:
            self._bind()

    # -- public

    def statistics(self) -> WindowStatistics:
        """Counters so far."""
        open_ = len(self._open) + sum(len(s) for s in self._sessions.values())
        return self._stats(open_, self._late)

    def process(self, events: list[Event]) -> list[Event]:
        """Fold events into their windows; return results that closed, late events, gaps."""
        if self.slide is None and not self.session and not self.sample:
            return self._process_tumbling(events)
        out: list[Event] = []
        lateness = self.lateness
        for event in events:
            if event.__class__ is Gap:
                assert isinstance(event, Gap)
                self._gap(event)
                out.append(event)
                continue
            if self._chain:
                if event.kind in MARKS:
                    self._mark(event, out)
                    continue
                if getattr(event, "revision", 0) and self._replace(event, out):
                    continue
            ts = event.ts
            if event.recv_ts > self._last_recv:
                self._last_recv = event.recv_ts
            if ts > self._max_ts:
                self._max_ts = ts
                if ts - lateness > self._watermark:
                    self._watermark = ts - lateness
                    if self._heap and self._heap[0][0] <= self._watermark:
                        self._close(self._watermark, _at(event.recv_ts), out)
            if self.session:
                self._add_session(event, ts, out)
            elif self.slide is None:
                self._add_tumbling(event, ts, out)
            else:
                self._add_sliding(event, ts, out)
        return out

    def _process_tumbling(self, events: list[Event]) -> list[Event]:
        """:meth:`process` for tumbling windows, the common case, with everything inlined.

        The clock fields live in locals inside the loop and are written back before anything
        that reads them (closing, gaps, late events) and at the end.
        """
        out: list[Event] = []
        lateness, size, key_of, windows, heap = (
            self.lateness,
            self.size,
            self.key,
            self._open,
            self._heap,
        )
        latest = self._latest  # key -> its newest window: most events land in it
        max_ts, last_recv, watermark = self._max_ts, self._last_recv, self._watermark
        chain = self._chain
        for event in events:
            if event.__class__ is Gap:
                assert isinstance(event, Gap)
                self._gap(event)
                out.append(event)
                continue
            if chain:
                if event.kind in MARKS:
                    self._mark(event, out)
                    continue
                if getattr(event, "revision", 0) and self._replace(event, out):
                    continue
            ts = event.ts
            if event.recv_ts > last_recv:
                last_recv = event.recv_ts
            if ts > max_ts:
                max_ts = ts
                if ts - lateness > watermark:
                    watermark = ts - lateness
                    if heap and heap[0][0] <= watermark:
                        self._max_ts, self._last_recv, self._watermark = (
                            max_ts,
                            last_recv,
                            watermark,
                        )
                        self._close(watermark, _at(event.recv_ts), out)
            key = key_of(event)
            start = ts - ts % size
            acc = newest = latest.get(key)
            if acc is None or acc.start != start:
                acc = windows.get((key, start))
                if acc is None:
                    if start + size <= watermark:
                        self._late_event(event, key, watermark, out)
                        continue
                    acc = windows[(key, start)] = self._open_window(key, start, start + size, event)
                    acc.folds = [(b.add, state) for b, state in zip(self._bound, acc.states)]  # noqa: B905
                if newest is None or start > newest.start:
                    latest[key] = acc
            acc.count += 1
            if event.venue != acc.venue:
                acc.venue = "*"
            if event.symbol != acc.symbol:
                acc.symbol = "*"
            for add, state in acc.folds:
                add(state, event)
            if chain:
                self._remember(acc, event)
        self._max_ts, self._last_recv, self._watermark = max_ts, last_recv, watermark
        return out

    def advance(self, now: int) -> list[Event]:
        """Receive time is ``now``: close the windows the clock says are due."""
        out: list[Event] = []
        quiet = now - self._last_recv - self.idle
        if self._max_ts == _NEVER or quiet <= 0:
            return out
        behind = self._max_ts - self.lateness
        if behind + quiet > self._watermark:
            self._watermark = behind + quiet
            since = self._last_recv + self.idle
            self._close(self._watermark, lambda end: since + (end - behind), out)
        return out

    def flush(self) -> list[Event]:
        """The stream ended: every open window comes out, marked incomplete."""
        out: list[Event] = []
        recv = self._last_recv
        self._close(_FOREVER, lambda end: recv, out, ended=True)
        return out

    # -- internals

    def _mark(self, event: Event, out: list[Event]) -> None:
        """A retraction or confirmation passes on; a retraction also takes back its event."""
        out.append(event)
        if event.kind == "retraction":
            self._retract(event, out)

    def _changed(self, acc: OpenWindow, cause: Event, out: list[Event]) -> None:
        if self.sample:
            acc.count, acc.states = 0, [_NEVER, None]
            for _, event in acc.events or ():
                self._add_sample(acc, event)
        elif self.session:
            self._resession(acc, cause, out)
        else:
            super()._changed(acc, cause, out)

    def _resession(self, acc: OpenWindow, cause: Event, out: list[Event]) -> None:
        """The sessions ``acc``'s events form now: the same span is refolded in place; else
        ``acc`` empties (an emitted one comes out with count 0) and each session left is new."""
        gap = self.size
        parts: list[list[tuple[NaturalKey | None, Event]]] = []
        for item in sorted(acc.events or (), key=lambda item: item[1].ts):
            if parts and item[1].ts < parts[-1][-1][1].ts + gap:
                parts[-1].append(item)
            else:
                parts.append([item])
        if len(parts) == 1 and (parts[0][0][1].ts, parts[0][-1][1].ts + gap) == (
            acc.start,
            acc.end,
        ):
            super()._changed(acc, cause, out)
            return
        ledger = self._ledger
        assert ledger is not None
        ledger.drop(acc)
        acc.events = []
        emitted = acc.revision >= 0
        if emitted:
            super()._changed(acc, cause, out)
        else:
            sessions = self._sessions[acc.key]
            sessions.remove(acc)  # its heap entry is stale now
            if not sessions and not parts:
                del self._sessions[acc.key]
        for part in parts:
            first, start, end = part[0][1], part[0][1].ts, part[-1][1].ts + gap
            if emitted:  # closed already: no heap entry
                new = OpenWindow(acc.key, start, end, first, [])
            else:
                new = self._open_window(acc.key, start, end, first)
            new.last, new.complete, new.events = part[-1][1].ts, acc.complete, part
            for key, _ in part:
                if key is not None:
                    ledger.add(key, new)
            self._refold(new)
            if emitted:
                out.append(self._result(new, cause.recv_ts, self.spec))
            else:
                self._sessions[acc.key].append(new)
        if not emitted and self._heap and self._heap[0][0] <= self._watermark:
            self._close(self._watermark, _at(cause.recv_ts), out)  # a session left is due

    def _gap(self, gap: Gap) -> None:
        self._gaps.append(gap)
        horizon = self._watermark - self.size - self.lateness
        if self._sessions:
            starts = [acc.start for accs in self._sessions.values() for acc in accs]
            horizon = min([horizon, *starts])
        self._gaps = [g for g in self._gaps if g.end >= horizon]

    def _close(
        self, watermark: int, due: Callable[[int], int], out: list[Event], *, ended: bool = False
    ) -> None:
        heap = self._heap
        while heap and heap[0][0] <= watermark:
            end, start, key = heapq.heappop(heap)
            if self.session:
                accs = self._sessions.get(key, [])
                acc = next((a for a in accs if a.start == start and a.end == end), None)
                if acc is None:
                    continue  # a session that grew or merged: its newer entry comes later
                accs.remove(acc)
                if not accs:
                    del self._sessions[key]
            else:
                found = self._open.pop((key, start), None)
                if found is None:
                    continue
                acc = found
                if self._latest.get(key) is acc:
                    del self._latest[key]
            if self.sample:
                out.append(acc.states[1])
                self._emitted += 1
                if self._ledger is not None:
                    self._ledger.drop(acc)  # the sample is the event: its retraction follows it
            else:
                out.append(self._result(acc, due(end), self.spec, ended=ended))
        if self._ledger is not None:
            self._ledger.expire(watermark)

    def _open_window(self, key: str, start: int, end: int, event: Event) -> OpenWindow:
        acc = OpenWindow(
            key, start, end, event, [_NEVER, None] if self.sample else self._new_states()
        )
        heapq.heappush(self._heap, (end, start, key))
        return acc

    def _add(self, acc: OpenWindow, event: Event) -> None:
        if self._chain:
            self._remember(acc, event)
        if self.sample:
            self._add_sample(acc, event)
        else:
            self._fold(acc, event)

    def _add_sample(self, acc: OpenWindow, event: Event) -> None:
        acc.count += 1
        if event.ts >= acc.states[0]:
            acc.states[0], acc.states[1] = event.ts, event

    def _add_tumbling(self, event: Event, ts: int, out: list[Event]) -> None:
        key = self.key(event)
        start = ts - ts % self.size
        acc = self._open.get((key, start))
        if acc is None:
            end = start + self.size
            if end <= self._watermark:
                self._late_event(event, key, self._watermark, out)
                return
            acc = self._open[(key, start)] = self._open_window(key, start, end, event)
        self._add(acc, event)

    def _add_sliding(self, event: Event, ts: int, out: list[Event]) -> None:
        key = self.key(event)
        slide, size = self.slide or self.size, self.size
        first = (ts - size) // slide + 1
        added = False
        for k in range(first, ts // slide + 1):
            start = k * slide
            acc = self._open.get((key, start))
            if acc is None:
                if start + size <= self._watermark:
                    continue
                acc = self._open[(key, start)] = self._open_window(key, start, start + size, event)
            self._add(acc, event)
            added = True
        if not added:
            self._late_event(event, key, self._watermark, out)

    def _add_session(self, event: Event, ts: int, out: list[Event]) -> None:
        key, gap = self.key(event), self.size
        accs = self._sessions.setdefault(key, [])
        touching = [a for a in accs if ts < a.end and ts + gap > a.start]
        if not touching:
            if ts + gap <= self._watermark:
                if not accs:
                    del self._sessions[key]
                self._late_event(event, key, self._watermark, out)
                return
            acc = self._open_window(key, ts, ts + gap, event)
            acc.last = ts
            accs.append(acc)
        else:
            acc = touching[0]
            before = (acc.start, acc.end)
            for other in touching[1:]:  # the event bridges sessions: merge them
                accs.remove(other)
                self._merge(acc, other)
            acc.start = min(acc.start, ts)
            acc.last = max(acc.last, ts)
            acc.end = acc.last + gap
            if (acc.start, acc.end) != before:  # the old heap entry is stale now
                heapq.heappush(self._heap, (acc.end, acc.start, key))
        self._add(acc, event)

    def _merge(self, acc: OpenWindow, other: OpenWindow) -> None:
        acc.start, acc.last = min(acc.start, other.start), max(acc.last, other.last)
        if other.events:
            assert self._ledger is not None
            self._ledger.drop(other)
            acc.events = [*(acc.events or ()), *other.events]
            for key, _ in other.events:
                if key is not None:
                    self._ledger.add(key, acc)
        acc.count += other.count
        acc.complete = acc.complete and other.complete
        if other.venue != acc.venue:
            acc.venue = "*"
        if other.symbol != acc.symbol:
            acc.symbol = "*"
        if self.sample:
            if other.states[0] > acc.states[0]:
                acc.states = other.states
            return
        acc.states = [
            bound.merge(a, b)
            for bound, a, b in zip(self._bound, acc.states, other.states, strict=True)
        ]
