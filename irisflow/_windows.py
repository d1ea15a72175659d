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

**Results** are :class:`Window` events (kind ``window``) with the aggregates as typed fields.
``ts`` is the window's end; ``recv_ts`` is the receive-clock time at which the window became
due: the receive time of the event that moved the watermark past it, or, closed by the clock,
``last_recv + idle + (end + lateness - max_ts)``. Neither depends on how often ``advance``
ran.

**Late events** (their window is closed already) are counted in :meth:`statistics`, and with
``late emit`` come out as :class:`Late` events. **Gaps** pass through; a window whose span
overlaps a gap of its venue comes out with ``complete = false``, as does every window still
open when :meth:`flush` is called at the end of the stream.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any, ClassVar

import attrs

from ._aggregates import Aggregate
from ._chain import natural_key
from ._duration import format_duration
from ._events import Event, Gap, described, event_kind
from ._folds import BoundAggregate
from ._steps import (
    PipelineError,
    enriched_class,
    error,
    kind_set,
)

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


_doc = described


def _time(text: str) -> Any:
    return described(text, time=True)


@event_kind
@attrs.frozen
class Window(Event):
    """The result of a window or bar: its key, span, count and aggregate values.

    ``venue`` and ``symbol`` are those of the window's events (``'*'`` when they differ);
    ``ts`` is ``end``. A window step adds one typed field per aggregate (``vwap``, ``open``,
    ``sum_qty``, ...), so filters after it can use them: ``filter vwap > 46000``.
    """

    kind: ClassVar[str] = "window"

    key: str = _doc("the key of the window's events ('' when the stream is not keyed)")
    start: int = _time("window start (inclusive); for bars, the first event's time")
    end: int = _time("window end (exclusive); for bars, the last event's time")
    count: int = _doc("number of events in the window")
    complete: bool = _doc(
        "false when the window overlaps a gap in the data or the stream ended inside it"
    )
    spec: str = _doc("the window, e.g. 'tumbling 1m', 'sliding 5m/1m', 'session 30s'")


@event_kind
@attrs.frozen
class Late(Event):
    """An event that came after its window closed (``late emit``); ``event`` is that event."""

    kind: ClassVar[str] = "late"

    key: str = _doc("the event's key")
    watermark: int = _time("the watermark when it came: its window had closed at or before")
    event: Any = _doc("the late event itself, unchanged")  # noqa: RUF009


_RESERVED = frozenset(attrs.fields_dict(Window)) | {"kind"}


def window_class(fields: Sequence[tuple[str, str, str]]) -> type[Window]:
    """The :class:`Window` subclass with aggregate fields ``(name, type, doc)`` (cached)."""
    if not fields:
        return Window
    return enriched_class(Window, fields)  # type: ignore[return-value]


@attrs.frozen
class WindowStatistics:
    """What a window or bar step has done so far."""

    open: int
    """Windows (or bars) open now."""
    emitted: int
    """Results emitted."""
    late: int
    """Events that came after their window closed."""
    incomplete: int
    """Results emitted with ``complete = false``."""


MAX_OVERLAP = 1000
"""Most windows one event may fall in (size / slide): each costs work per event."""


_CHAIN_KINDS = frozenset({"token_transfer", "swap", "log", "transaction", "block"})
_MARKS_NAMES = ("retraction", "confirmation")


class _Marks:
    """The retraction and confirmation classes, looked up once the chain kinds exist."""

    def __contains__(self, cls: object) -> bool:
        return getattr(cls, "kind", None) in _MARKS_NAMES


_MARKS = _Marks()


def _remember(acc: OpenWindow, event: Event) -> None:
    key = natural_key(event)
    if key is not None:
        if acc.keys is None:
            acc.keys = set()
        acc.keys.add(key)


def _at(recv_ts: int) -> Callable[[int], int]:
    """Due-time function for windows closed by an event: its receive time."""
    return lambda end: recv_ts


class OpenWindow:
    """One open window: span, count, aggregate states."""

    __slots__ = (
        "complete",
        "count",
        "end",
        "folds",
        "key",
        "keys",
        "last",
        "start",
        "states",
        "symbol",
        "venue",
    )

    def __init__(self, key: str, start: int, end: int, event: Event, states: list[Any]) -> None:
        self.key, self.start, self.end = key, start, end
        self.count = 0
        self.venue, self.symbol = event.venue, event.symbol
        self.complete = True
        self.states = states
        self.folds: list[tuple[Callable[[list[Any], Event], None], list[Any]]] = []
        """``(add, state)`` per aggregate, for the tumbling fast path."""
        self.last = start  # sessions: the latest event time; bars: too
        self.keys: set[Any] | None = None
        """Natural keys of the on-chain events folded in (for their retractions)."""


@attrs.define(on_setattr=attrs.setters.NO_OP)  # plain attribute writes: hot path
class WindowResults:
    """What window and bar steps share: aggregates, the result class, gaps, counters."""

    key: Callable[[Event], str]
    aggregates: Sequence[Aggregate]
    kinds: frozenset[type[Event]] = attrs.field(converter=kind_set)
    emit_late: bool = False
    output_kinds: frozenset[type[Event]] = attrs.field(init=False)
    _bound: list[BoundAggregate] = attrs.field(init=False)
    _cls: type[Window] = attrs.field(init=False)
    _gaps: list[Gap] = attrs.field(init=False, factory=list)
    _emitted: int = attrs.field(init=False, default=0)
    _late: int = attrs.field(init=False, default=0)
    _incomplete: int = attrs.field(init=False, default=0)

    def _bind(self) -> None:
        classes = [cls for cls in dict.fromkeys(self.kinds) if cls is not Gap]
        self._bound = []
        fields: list[tuple[str, str, str]] = []
        for agg in self.aggregates:
            bound = agg.bind(classes)
            for name, kind, doc in bound.fields:
                if name in _RESERVED or any(name == f[0] for f in fields):
                    what = "a window result's own field" if name in _RESERVED else "taken"
                    raise error(
                        agg.text or agg.func,
                        f"field name {name!r} of {str(agg.text or agg.func)!r} is {what}"
                        f" (name it: x = {agg.text or agg.func})",
                    )
                fields.append((name, kind, doc))
            if bound.fields:
                self._bound.append(bound)
        self._cls = window_class(fields)
        late = {Late} if self.emit_late else set()
        self.output_kinds = frozenset({self._cls, Gap, *late})

    def _new_states(self) -> list[Any]:
        return [bound.new() for bound in self._bound]

    def _fold(self, acc: OpenWindow, event: Event) -> None:
        acc.count += 1
        if event.venue != acc.venue:
            acc.venue = "*"
        if event.symbol != acc.symbol:
            acc.symbol = "*"
        for bound, state in zip(self._bound, acc.states, strict=True):
            bound.add(state, event)

    def _result(self, acc: OpenWindow, recv_ts: int, spec: str, *, ended: bool = False) -> Window:
        complete = acc.complete and not ended and not self._touches_gap(acc)
        seconds = Decimal(acc.end - acc.start).scaleb(-9) if acc.end > acc.start else None
        values: list[Any] = []
        for bound, state in zip(self._bound, acc.states, strict=True):
            values.extend(bound.values(state, seconds))
        self._emitted += 1
        self._incomplete += not complete
        return self._cls(
            acc.venue,
            acc.symbol,
            acc.end,
            recv_ts,
            acc.key,
            acc.start,
            acc.end,
            acc.count,
            complete,
            spec,
            *values,
        )

    def _touches_gap(self, acc: OpenWindow) -> bool:
        for gap in self._gaps:
            venue_matches = gap.venue in (acc.venue, "*") or acc.venue == "*"
            if venue_matches and gap.start < acc.end and gap.end >= acc.start:
                return True
        return False

    def _late_event(self, event: Event, key: str, watermark: int, out: list[Event]) -> None:
        self._late += 1
        if self.emit_late:
            out.append(
                Late(event.venue, event.symbol, event.ts, event.recv_ts, key, watermark, event)
            )


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
    spec: str = attrs.field(init=False)
    _open: dict[tuple[str, int], OpenWindow] = attrs.field(init=False, factory=dict)
    _latest: dict[str, OpenWindow] = attrs.field(init=False, factory=dict)
    _sessions: dict[str, list[OpenWindow]] = attrs.field(init=False, factory=dict)
    _heap: list[tuple[int, int, str]] = attrs.field(init=False, factory=list)
    _max_ts: int = attrs.field(init=False, default=_NEVER)
    _last_recv: int = attrs.field(init=False, default=_NEVER)
    _watermark: int = attrs.field(init=False, default=_NEVER)
    _chain: bool = attrs.field(init=False, default=False)
    """On-chain kinds flow in: windows remember their events for retractions."""
    retracted: int = attrs.field(init=False, default=0)
    """Windows marked incomplete because an event in them was retracted (a reorg)."""

    def __attrs_post_init__(self) -> None:
        self._chain = any(cls.kind in _CHAIN_KINDS for cls in self.kinds or ())
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
        else:
            self._bind()

    # -- public

    def statistics(self) -> WindowStatistics:
        """Counters so far."""
        open_ = len(self._open) + sum(len(s) for s in self._sessions.values())
        return WindowStatistics(open_, self._emitted, self._late, self._incomplete)

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
            if self._chain and event.__class__ in _MARKS:
                self._mark(event)
                out.append(event)
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
            if chain and event.__class__ in _MARKS:
                self._mark(event)
                out.append(event)
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
                _remember(acc, event)
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

    def _mark(self, event: Event) -> None:
        """A retraction (a reorg) voids an event: open windows that counted it are incomplete.

        Their aggregates still hold the event (a sum cannot always be undone); the result says
        ``complete = false``. Windows already emitted cannot be changed. Confirmations change
        nothing here. Both pass on, so later steps and sinks see them.
        """
        if event.kind != "retraction":
            return
        key = natural_key(event)
        accs = [*self._open.values(), *(a for s in self._sessions.values() for a in s)]
        for acc in accs:
            if acc.keys is not None and key in acc.keys:
                acc.complete = False
                acc.keys.discard(key)
                self.retracted += 1

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
            else:
                out.append(self._result(acc, due(end), self.spec, ended=ended))

    def _open_window(self, key: str, start: int, end: int, event: Event) -> OpenWindow:
        acc = OpenWindow(
            key, start, end, event, [_NEVER, None] if self.sample else self._new_states()
        )
        heapq.heappush(self._heap, (end, start, key))
        return acc

    def _add(self, acc: OpenWindow, event: Event) -> None:
        if self._chain:
            _remember(acc, event)
        if self.sample:
            acc.count += 1
            if event.ts >= acc.states[0]:
                acc.states[0], acc.states[1] = event.ts, event
        else:
            self._fold(acc, event)

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
