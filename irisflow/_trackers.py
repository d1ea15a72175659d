"""Trackers: steps that keep state per key across events and report what they find.

**Spike / drop** (``spike 2% in 1m [on EXPR]``, default ``on price``). For each event of a key,
with value ``p`` at time ``t``, the *base* is the value the key had ``window`` ago: the value
of the latest earlier event at or before ``t - window``. Then::

    change_pct = (p - base) / base · 100

A :class:`Spike` (direction ``up``) comes out when ``change_pct ≥ threshold``, a drop
(direction ``down``) when ``change_pct ≤ -threshold``. Each direction then stays quiet until
the change falls back inside the threshold (it re-arms), so a move is reported once, not on
every event while it lasts. Nothing is reported until a key has ``window`` of history. Events
older than the key's latest are remembered but not checked. (The seed compared each bar's
close with its own open and lost its state on every event.)

**RSI** (``rsi [PERIOD] [on EXPR]``, default ``rsi 14 on close``): Wilder's Relative Strength
Index over closed bars: venue candles with ``closed = true`` or irisflow's own window results.
With ``change = close - previous close``, ``gain = max(change, 0)``, ``loss = max(-change, 0)``::

    first avg_gain = (sum of the first PERIOD gains) / PERIOD          (same for avg_loss)
    then    avg_gain = (previous avg_gain · (PERIOD - 1) + gain) / PERIOD   (Wilder smoothing)
    RSI = 100 - 100 / (1 + avg_gain / avg_loss)
        = 100 when avg_loss = 0 (50 when avg_gain is 0 too)

The first value needs PERIOD + 1 closes. A bar that starts no later than the key's last one
(a candle heard twice) is ignored. Divisions use :data:`irisflow._aggregates.DIVISION`.
(The seed's RSI took differences of differences, used simple means and seeded a hard-coded
price, so it was not an RSI.)

Without ``by``, both track each venue and symbol apart (and, for RSI, each candle interval or
window key). Both pass gaps, and emit only their own events.

**Reorgs** (when on-chain kinds, or retractions, flow in; ``_reorg.py``). Retractions and
confirmations pass on. *Spike*: a retracted event leaves its key's history, so later bases
never use it (history is kept :data:`~irisflow._reorg.REORG_HORIZON` further back, so the base
before it is still there); a spike it triggered (``tx_hash`` and ``log_index`` name the
triggering event) is withdrawn by a ``retraction`` with target ``spike``. Spikes whose *base*
it was stay, and the re-arm state is not replayed. *RSI*: a window result with ``revision``
above 0 replaces the bar of the same ``start`` in its series: the Wilder state from before that
bar (kept for the last :data:`RSI_MEMORY` bars, within the horizon) is restored and the later
bars replayed; every RSI value that changed comes out again with ``revision`` one higher. A
bar revised to no close (its window emptied) leaves the series; an RSI value that no longer
exists comes out as a revision with ``rsi``, ``avg_gain`` and ``avg_loss`` None. A new bar
that starts before the last one but among the kept ones (a session split in two) is put in its
place the same way. A revision of a bar older than those kept is counted as ``expired``.
"""

from __future__ import annotations

import bisect
import collections
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any, ClassVar

import attrs

from ._chain import NaturalKey
from ._duration import format_duration
from ._errors import UsageError
from ._events import Event, Gap, described, event_kind
from ._filter import ARITH, Expression
from ._folds import DIVISION
from ._reorg import (
    MARK_CLASSES,
    MARKS,
    REORG_HORIZON,
    Ledger,
    carries_chain,
    reorg_key,
    withdrawal,
)
from ._steps import Located, PipelineError, expression, kind_set

__all__ = ["RSI_MEMORY", "Rsi", "RsiStep", "Spike", "SpikeStep", "TrackerStatistics"]

_HUNDRED = Decimal(100)

RSI_MEMORY = 1_000
"""Most bars per series whose Wilder state an rsi step keeps for revisions (on-chain only)."""


_doc = described


@event_kind
@attrs.frozen
class Spike(Event):
    """A price spike or drop found by ``spike``: the change over a window passed a threshold.

    ``venue``, ``symbol``, ``ts`` and ``recv_ts`` are those of the event that showed it.
    """

    kind: ClassVar[str] = "spike"

    key: str = _doc("the key tracked, e.g. 'binance/BTCUSDT'")
    direction: str = _doc("'up' (a spike) or 'down' (a drop)")
    change_pct: Decimal = _doc("(value - base) / base · 100, percent")  # noqa: RUF009
    value: Decimal = _doc("the value now (e.g. the trade price)")  # noqa: RUF009
    base: Decimal = _doc("the value one window earlier")  # noqa: RUF009
    base_ts: int = _doc("time of the base value", time=True)
    threshold: Decimal = _doc("the threshold passed, percent")  # noqa: RUF009
    window: str = _doc("the look-back window, e.g. '1m'")
    tx_hash: str | None = _doc(
        "transaction hash of the on-chain event that showed it; None for market data",
        default=None,
    )
    log_index: int | None = _doc(
        "log index (internal_index for an internal_tx) of that event; None for market data or"
        " a transaction",
        default=None,
    )


@event_kind
@attrs.frozen
class Rsi(Event):
    """Wilder's RSI after one more closed bar (``rsi``); ``ts`` is the bar's.

    A revision (after a reorg changed a bar) replaces the value of the same ``key`` and ``ts``.
    """

    kind: ClassVar[str] = "rsi"

    key: str = _doc("the series, e.g. 'binance/BTCUSDT/1m'")
    period: int = _doc("bars in the smoothing (14 by default)")
    rsi: Decimal | None = _doc("relative strength index, 0 to 100; None: withdrawn")  # noqa: RUF009
    close: Decimal = _doc("the bar's close")  # noqa: RUF009
    avg_gain: Decimal | None = _doc("Wilder-smoothed average gain; None: withdrawn")  # noqa: RUF009
    avg_loss: Decimal | None = _doc("Wilder-smoothed average loss (positive); None: withdrawn")  # noqa: RUF009
    revision: int = _doc(
        "0 when first emitted; 1, 2, ... each time a revised bar changed it", default=0
    )


@attrs.frozen
class TrackerStatistics:
    """What a spike or rsi step has done so far."""

    emitted: int
    """Spikes or RSI values emitted (revisions not counted)."""
    withdrawn: int = 0
    """Spikes withdrawn by a retraction; RSI values withdrawn by a revision."""
    revised: int = 0
    """RSI revisions emitted."""
    expired: int = 0
    """Retractions (revisions, for RSI) that came after what they concern was forgotten."""


def _tracked(on: str, kinds: Iterable[type[Event]], step: str, default: str) -> Expression:
    classes = [cls for cls in kinds if cls is not Gap]
    try:
        return expression(on, classes, types=("number",))
    except UsageError as exc:
        if isinstance(on, Located) or on != default:
            raise
        raise PipelineError(
            f"{step} tracks {default!r} by default, which is not a number field of the events"
            f" reaching it (say what to track: {step} ... on EXPR)"
        ) from exc


def venue_symbol(event: Event) -> str:
    """``binance/BTCUSDT``: the default key of trackers."""
    return f"{event.venue}/{event.symbol}"


def bar_series(event: Event) -> str:
    """``binance/BTCUSDT/1m``: venue, symbol and the bar's interval or window key."""
    parts = [event.venue, event.symbol]
    for name in ("interval", "key"):
        value = getattr(event, name, None)
        if value:
            parts.append(str(value))
    return "/".join(parts)


@attrs.define
class _Series:
    times: list[int] = attrs.field(factory=list)
    values: list[Decimal] = attrs.field(factory=list)
    up: bool = True
    down: bool = True
    keys: list[NaturalKey | None] = attrs.field(factory=list)
    """With on-chain kinds: the natural key of each point."""


class _Fired:
    """An emitted spike, kept for a retraction of the event that triggered it."""

    __slots__ = ("key", "spike")

    def __init__(self, spike: Spike, key: NaturalKey) -> None:
        self.spike = spike
        self.key: NaturalKey | None = key
        """None once withdrawn."""


def _fired_keys(fired: _Fired) -> list[NaturalKey]:
    return [] if fired.key is None else [fired.key]


@attrs.define(on_setattr=attrs.setters.NO_OP)  # plain attribute writes: hot path
class SpikeStep:
    """Report moves of at least ``threshold`` percent within ``window`` (see the module docs).

    Args:
        threshold: Percent, e.g. ``Decimal(2)``.
        window: Look-back in ns.
        on: The value tracked (default ``price``).
        key: The series an event belongs to (default: its venue and symbol).
        kinds: The event classes flowing in.
    """

    timed: ClassVar[bool] = False

    threshold: Decimal
    window: int
    kinds: frozenset[type[Event]] = attrs.field(converter=kind_set)
    on: str = "price"
    key: Callable[[Event], str] | None = None
    output_kinds: frozenset[type[Event]] = attrs.field(init=False)
    _value: Expression = attrs.field(init=False)
    _series: dict[str, _Series] = attrs.field(init=False, factory=dict)
    _emitted: int = attrs.field(init=False, default=0)
    _chain: bool = attrs.field(init=False, default=False)
    _fired: Ledger[_Fired] | None = attrs.field(init=False, default=None)
    """With on-chain kinds: emitted spikes by the key of the event that triggered them."""
    _where: dict[NaturalKey, str] = attrs.field(init=False, factory=dict)
    """With on-chain kinds: the series each remembered point is in."""
    _withdrawn: int = attrs.field(init=False, default=0)

    def __attrs_post_init__(self) -> None:
        if self.threshold <= 0 or self.window <= 0:
            raise PipelineError("spike needs a positive threshold and window, e.g. spike 2% in 1m")
        self._value = _tracked(self.on, self.kinds, "spike", "price")
        self.output_kinds = frozenset({Spike, Gap})
        if carries_chain(self.kinds):
            self._chain, self._fired = True, Ledger(_fired_keys)
            self.output_kinds |= MARK_CLASSES

    def statistics(self) -> TrackerStatistics:
        """Counters so far."""
        expired = 0 if self._fired is None else self._fired.expired
        return TrackerStatistics(self._emitted, self._withdrawn, 0, expired)

    def process(self, events: list[Event]) -> list[Event]:
        """Spikes and drops the events show; gaps, retractions and confirmations pass."""
        out: list[Event] = []
        key_of = self.key or venue_symbol
        chain = self._chain
        for event in events:
            if event.__class__ is Gap:
                out.append(event)
                continue
            if chain and event.kind in MARKS:
                out.append(event)
                if event.kind == "retraction":
                    self._retract(event, out)
                continue
            value = self._value(event)
            if value is None:
                continue
            key = key_of(event)
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = _Series()
            self._track(series, key, event, value, out)
        return out

    def _track(self, s: _Series, key: str, event: Event, value: Any, out: list[Event]) -> None:
        ts = event.ts
        if s.times and ts < s.times[-1]:
            at = bisect.bisect_right(s.times, ts)
            s.times.insert(at, ts)
            s.values.insert(at, value)
            if self._chain:
                s.keys.insert(at, self._point(event, key))
            return
        s.times.append(ts)
        s.values.append(value)
        cutoff = ts - self.window
        natural = None
        if self._chain:
            natural = self._point(event, key)
            s.keys.append(natural)
            # Keep a horizon of points before the base too: a retraction may remove the base.
            drop = bisect.bisect_right(s.times, cutoff - REORG_HORIZON) - 1
            if drop > 0:
                for gone in s.keys[:drop]:
                    if gone is not None and self._where.get(gone) == key:
                        del self._where[gone]
                del s.times[:drop], s.values[:drop], s.keys[:drop]
            at = bisect.bisect_right(s.times, cutoff) - 1
            if at < 0:
                return  # less than a window of history
        else:
            # Keep one point at or before the cutoff (the base) and everything after it.
            drop = bisect.bisect_right(s.times, cutoff) - 1
            if drop > 0:
                del s.times[:drop], s.values[:drop]
            if s.times[0] > cutoff:
                return  # less than a window of history
            at = 0
        base = s.values[at]
        if not base:
            return
        change = DIVISION.divide(ARITH.multiply(ARITH.subtract(value, base), _HUNDRED), base)
        threshold = self.threshold
        direction = None
        if change >= threshold:
            direction, s.up = ("up" if s.up else None), False
        else:
            s.up = True
        if change <= -threshold:
            direction, s.down = ("down" if s.down else None), False
        else:
            s.down = True
        if direction is not None:
            tx_hash = log_index = None
            if natural is not None and natural[0] != "block":
                _, tx_hash, log_index = natural
            spike = Spike(
                event.venue,
                event.symbol,
                ts,
                event.recv_ts,
                key,
                direction,
                change,
                value,
                base,
                s.times[at],
                threshold,
                format_duration(self.window),
                tx_hash,
                log_index,
            )
            out.append(spike)
            self._emitted += 1
            if tx_hash is not None and natural is not None and self._fired is not None:
                fired = _Fired(spike, natural)
                self._fired.add(natural, fired)
                self._fired.keep(ts, fired)
                self._fired.expire(ts)

    def _point(self, event: Event, key: str) -> NaturalKey | None:
        """The natural key of a point of series ``key``, filed for its retraction."""
        natural = reorg_key(event)
        if natural is not None:
            self._where[natural] = key
        return natural

    def _retract(self, retraction: Event, out: list[Event]) -> None:
        """The event ``retraction`` names leaves its series; a spike it triggered is withdrawn."""
        key = reorg_key(retraction)
        if key is None:
            return
        where = self._where.pop(key, None)
        if where is not None:
            s = self._series[where]
            keep = [i for i, k in enumerate(s.keys) if k != key]
            s.times = [s.times[i] for i in keep]
            s.values = [s.values[i] for i in keep]
            s.keys = [s.keys[i] for i in keep]
        assert self._fired is not None
        for fired in self._fired.take(key):
            spike = fired.spike
            name = reorg_key(spike)
            assert name is not None
            out.append(withdrawal(spike, name, retraction))
            self._withdrawn += 1
            fired.key = None

    def advance(self, now: int) -> list[Event]:
        """Spikes come from events only."""
        return []


@attrs.define
class _Wilder:
    last_start: int | None = None
    previous: Decimal | None = None
    changes: int = 0
    gain: Decimal = Decimal(0)
    loss: Decimal = Decimal(0)


@attrs.define
class _Bar:
    """A bar an rsi step used, kept for revisions (on-chain only)."""

    start: int
    close: Decimal
    event: Event
    before: _Wilder
    """The series' state before this bar."""
    out: Rsi | None
    """What was emitted for it last."""


@attrs.define(on_setattr=attrs.setters.NO_OP)  # plain attribute writes: hot path
class RsiStep:
    """Wilder's RSI per series over closed bars (see the module docs).

    Args:
        period: Bars in the smoothing (14).
        on: The close value (default ``close``).
        key: The series a bar belongs to (default :func:`bar_series`).
        kinds: The event classes flowing in (with on-chain kinds or retractions among them,
            the step keeps the state before each recent bar, for revised window results).
    """

    timed: ClassVar[bool] = False

    kinds: frozenset[type[Event]] = attrs.field(converter=kind_set)
    period: int = 14
    on: str = "close"
    key: Callable[[Event], str] | None = None
    output_kinds: frozenset[type[Event]] = attrs.field(init=False)
    _value: Expression = attrs.field(init=False)
    _series: dict[str, _Wilder] = attrs.field(init=False, factory=dict)
    _bars: dict[str, collections.deque[_Bar]] | None = attrs.field(init=False, default=None)
    """With on-chain kinds: the last bars of each series, for revisions."""
    _counts: list[int] = attrs.field(init=False, factory=lambda: [0, 0, 0, 0])
    """Emitted, withdrawn, revised, expired."""

    def __attrs_post_init__(self) -> None:
        if self.period < 1:
            raise PipelineError(f"rsi needs a period of at least 1 (got {self.period})")
        self._value = _tracked(self.on, self.kinds, "rsi", "close")
        self.output_kinds = frozenset({Rsi, Gap})
        if carries_chain(self.kinds):
            self._bars = {}
            self.output_kinds |= MARK_CLASSES

    def statistics(self) -> TrackerStatistics:
        """Counters so far."""
        return TrackerStatistics(*self._counts)

    def process(self, events: list[Event]) -> list[Event]:
        """One RSI per closed bar once a series has ``period + 1`` closes; gaps pass."""
        out: list[Event] = []
        key_of = self.key or bar_series
        bars = self._bars
        for event in events:
            if event.__class__ is Gap:
                out.append(event)
                continue
            if bars is not None and event.kind in MARKS:
                out.append(event)
                continue
            if getattr(event, "closed", True) is not True:
                continue  # a candle still forming
            close = self._value(event)
            revised = bars is not None and getattr(event, "revision", 0) > 0
            if close is None and not revised:
                continue
            key = key_of(event)
            state = self._series.get(key)
            if state is None:
                state = self._series[key] = _Wilder()
            start = getattr(event, "start", event.ts)
            if state.last_start is not None and start <= state.last_start:
                if bars is not None:  # a revision, or a bar that fits among the kept ones
                    self._rebar(key, state, event, start, close, revised, out)
                continue  # the same bar again, or an older one
            if close is None:
                continue
            before = attrs.evolve(state) if bars is not None else None
            state.last_start = start
            rsi = self._step(state, Decimal(close))
            item = None
            if rsi is not None:
                item = self._rsi(event, event.recv_ts, key, rsi, Decimal(close), state, 0)
                out.append(item)
                self._counts[0] += 1
            if bars is not None and before is not None:
                kept = bars.setdefault(key, collections.deque())
                kept.append(_Bar(start, Decimal(close), event, before, item))
                while len(kept) > RSI_MEMORY or kept[0].event.ts + REORG_HORIZON <= event.ts:
                    kept.popleft()
        return out

    def _rsi(
        self,
        bar: Event,
        recv_ts: int,
        key: str,
        rsi: Decimal,
        close: Decimal,
        s: _Wilder,
        revision: int,
    ) -> Rsi:
        return Rsi(
            bar.venue,
            bar.symbol,
            bar.ts,
            recv_ts,
            key,
            self.period,
            rsi,
            close,
            s.gain,
            s.loss,
            revision,
        )

    def _rebar(
        self,
        key: str,
        state: _Wilder,
        event: Event,
        start: int,
        close: Any,
        revised: bool,
        out: list[Event],
    ) -> None:
        """A bar at or before the series' last one: a revision replaces (or, with no close,
        removes) the bar of its start; a new one is inserted among the kept bars. The state
        before it is restored and the later bars replayed."""
        assert self._bars is not None
        kept = self._bars.setdefault(key, collections.deque())
        at = next((i for i in range(len(kept) - 1, -1, -1) if kept[i].start == start), None)
        if at is not None:
            if not revised:
                return  # the same bar again (a candle heard twice)
            bar = kept[at]
            before = bar.before
            if close is None:
                del kept[at]
                self._reissue(bar, key, None, before, event, out)
            else:
                bar.close, bar.event = Decimal(close), event
        else:
            if not kept or start < kept[0].start:
                self._counts[3] += revised  # too old: forgotten already
                return
            if close is None:
                return
            at = next((i for i, bar in enumerate(kept) if bar.start > start), len(kept))
            before = kept[at].before if at < len(kept) else attrs.evolve(state)
            kept.insert(at, _Bar(start, Decimal(close), event, before, None))
        s = attrs.evolve(before)
        for i in range(at, len(kept)):
            bar = kept[i]
            bar.before = attrs.evolve(s)
            s.last_start = bar.start
            self._reissue(bar, key, self._step(s, bar.close), s, event, out)
        s.last_start = state.last_start
        self._series[key] = s

    def _reissue(
        self,
        bar: _Bar,
        key: str,
        rsi: Decimal | None,
        s: _Wilder,
        cause: Event,
        out: list[Event],
    ) -> None:
        """Emit what changed for ``bar``: a revised value, a new one, or a withdrawal."""
        old = bar.out
        if rsi is None:
            if old is None or old.rsi is None:
                return
            new = attrs.evolve(
                old,
                recv_ts=cause.recv_ts,
                rsi=None,
                avg_gain=None,
                avg_loss=None,
                revision=old.revision + 1,
            )
            self._counts[1] += 1
        else:
            if old is not None and (old.rsi, old.avg_gain, old.avg_loss, old.close) == (
                rsi,
                s.gain,
                s.loss,
                bar.close,
            ):
                return
            revision = 0 if old is None else old.revision + 1
            new = self._rsi(bar.event, cause.recv_ts, key, rsi, bar.close, s, revision)
            self._counts[2 if revision else 0] += 1
        bar.out = new
        out.append(new)

    def _step(self, s: _Wilder, close: Decimal) -> Decimal | None:
        previous, s.previous = s.previous, close
        if previous is None:
            return None
        change = ARITH.subtract(close, previous)
        gain = change if change > 0 else Decimal(0)
        loss = ARITH.minus(change) if change < 0 else Decimal(0)
        n = self.period
        if s.changes < n:  # seeding: plain sums, divided once the period is full
            s.changes += 1
            s.gain, s.loss = ARITH.add(s.gain, gain), ARITH.add(s.loss, loss)
            if s.changes < n:
                return None
            s.gain, s.loss = DIVISION.divide(s.gain, n), DIVISION.divide(s.loss, n)
        else:
            s.gain = DIVISION.divide(ARITH.add(ARITH.multiply(s.gain, n - 1), gain), n)
            s.loss = DIVISION.divide(ARITH.add(ARITH.multiply(s.loss, n - 1), loss), n)
        if not s.loss:
            return _HUNDRED if s.gain else Decimal(50)
        rs = DIVISION.divide(s.gain, s.loss)
        return ARITH.subtract(_HUNDRED, DIVISION.divide(_HUNDRED, ARITH.add(1, rs)))

    def advance(self, now: int) -> list[Event]:
        """RSI values come from bars only."""
        return []
