"""What window and bar steps share: the ``window`` result, ``late`` events, open windows.

:class:`WindowResults` is the base of :class:`~irisflow._windows.WindowStep` and
:class:`~irisflow._bars.BarStep`: it binds the aggregates to the kinds flowing in, folds events
into an :class:`OpenWindow`, marks results that overlap a gap, and builds :class:`Window`
events with one typed field per aggregate.

**Reorgs.** When on-chain kinds flow in (``_reorg.py``), an open window also keeps the events it
folded, and an emitted one is kept for :data:`~irisflow._reorg.REORG_HORIZON`. A retraction
takes the event it names out of every window that counted it and *refolds* the window from the
events left, so the aggregates are exact (a sum could be undone, a max could not). An emitted
window then comes out again with ``revision`` one higher, ``complete`` as it first was, and
``recv_ts`` the retraction's. A window over window results takes such a revision in place of
the result it revises (:meth:`WindowResults._replace`; with count 0, the result leaves it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any, ClassVar

import attrs

from ._aggregates import Aggregate
from ._chain import NaturalKey
from ._events import Event, Gap, described, event_kind
from ._folds import BoundAggregate
from ._reorg import MARK_CLASSES, Ledger, carries_chain, reorg_key
from ._steps import enriched_class, error, kind_set

__all__ = [
    "Late",
    "OpenWindow",
    "Window",
    "WindowResults",
    "WindowStatistics",
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
    revision: int = _doc(
        "0 when first emitted; 1, 2, ... for each correction after a reorg took back an event"
        " it counted",
        default=0,
    )


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
    retracted: int = 0
    """Retractions (reorgs) that took an event out of at least one window or bar."""
    revised: int = 0
    """Corrected results emitted (``revision`` above 0) for windows emitted already."""
    expired: int = 0
    """Retractions that came after the window that counted the event was forgotten."""


def _keys(acc: OpenWindow) -> list[NaturalKey]:
    return [key for key, _ in acc.events or () if key is not None]


class OpenWindow:
    """One open window: span, count, aggregate states."""

    __slots__ = (
        "complete",
        "count",
        "end",
        "events",
        "folds",
        "key",
        "last",
        "revision",
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
        self.events: list[tuple[NaturalKey | None, Event]] | None = None
        """With on-chain kinds: every event folded in, and its natural key (for refolds)."""
        self.revision = -1
        """-1 while open; then the revision last emitted."""


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
    spec: str = attrs.field(init=False, default="")
    _chain: bool = attrs.field(init=False, default=False)
    """On-chain kinds flow in: windows remember their events for retractions."""
    _ledger: Ledger[OpenWindow] | None = attrs.field(init=False, default=None)
    """With on-chain kinds: which windows (open or emitted) counted each event."""
    retracted: int = attrs.field(init=False, default=0)
    """Retractions (reorgs) that took an event out of at least one window."""
    _revised: int = attrs.field(init=False, default=0)

    def _watch_chain(self) -> None:
        """With on-chain kinds flowing in: keep a ledger, pass retractions and confirmations."""
        if carries_chain(self.kinds):
            self._chain = True
            self._ledger = Ledger(_keys)
            self.output_kinds = self.output_kinds | MARK_CLASSES

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
        self._watch_chain()

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
        self._emitted += 1
        self._incomplete += not complete
        if self._ledger is not None:  # kept for corrections: a revision says what this said
            acc.complete, acc.revision = complete, 0
            self._ledger.keep(acc.end, acc)
        return self._window(acc, recv_ts, spec, complete, 0)

    def _window(
        self, acc: OpenWindow, recv_ts: int, spec: str, complete: bool, revision: int
    ) -> Window:
        seconds = Decimal(acc.end - acc.start).scaleb(-9) if acc.end > acc.start else None
        values: list[Any] = []
        for bound, state in zip(self._bound, acc.states, strict=True):
            values.extend(bound.values(state, seconds))
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
            revision,
            *values,
        )

    # -- reorgs (only with on-chain kinds)

    def _remember(self, acc: OpenWindow, event: Event) -> None:
        key = reorg_key(event)
        if acc.events is None:
            acc.events = []
        acc.events.append((key, event))
        if key is not None:
            assert self._ledger is not None
            self._ledger.add(key, acc)

    def _retract(self, retraction: Event, out: list[Event]) -> None:
        """Take the event ``retraction`` names out of every window that counted it."""
        key = reorg_key(retraction)
        assert self._ledger is not None
        assert key is not None
        holders = self._ledger.take(key)
        if holders:
            self.retracted += 1
        for acc in holders:
            acc.events = [(k, e) for k, e in acc.events or () if k != key]
            self._changed(acc, retraction, out)

    def _replace(self, revised: Event, out: list[Event]) -> bool:
        """A revised result (``revision`` above 0, from a window or bar step before this one)
        takes the place of the one it revises in every window that counted it; one with count
        0 leaves them. False if none did (then it counts as a result of its own)."""
        key, count = reorg_key(revised), getattr(revised, "count", 0)
        assert self._ledger is not None
        assert key is not None
        holders = self._ledger.take(key)
        for acc in holders:
            if count:
                self._ledger.add(key, acc)
                acc.events = [(k, revised if k == key else e) for k, e in acc.events or ()]
            else:
                acc.events = [(k, e) for k, e in acc.events or () if k != key]
            self._changed(acc, revised, out)
        return bool(holders) or not count

    def _changed(self, acc: OpenWindow, cause: Event, out: list[Event]) -> None:
        """``acc`` lost or changed events: refold it; an emitted one comes out again, revised."""
        self._refold(acc)
        if acc.revision >= 0:
            self._revise(acc, cause.recv_ts, out)

    def _refold(self, acc: OpenWindow) -> None:
        """Recompute ``acc`` from the events it holds, as if it had only ever seen those."""
        acc.count = 0
        if acc.events:
            first = acc.events[0][1]
            acc.venue, acc.symbol = first.venue, first.symbol
        acc.states = self._new_states()
        for _, event in acc.events or ():
            self._fold(acc, event)
        if acc.folds:
            acc.folds = [(b.add, state) for b, state in zip(self._bound, acc.states, strict=True)]

    def _revise(self, acc: OpenWindow, recv_ts: int, out: list[Event]) -> None:
        acc.revision += 1
        self._revised += 1
        out.append(self._window(acc, recv_ts, self.spec, acc.complete, acc.revision))

    def _stats(self, open_: int, late: int) -> WindowStatistics:
        expired = 0 if self._ledger is None else self._ledger.expired
        return WindowStatistics(
            open_, self._emitted, late, self._incomplete, self.retracted, self._revised, expired
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
