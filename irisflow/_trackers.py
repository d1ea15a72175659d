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
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any, ClassVar

import attrs

from ._duration import format_duration
from ._errors import UsageError
from ._events import Event, Gap, described, event_kind
from ._filter import ARITH, Expression
from ._folds import DIVISION
from ._steps import Located, PipelineError, expression, kind_set

__all__ = ["Rsi", "RsiStep", "Spike", "SpikeStep"]

_HUNDRED = Decimal(100)


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


@event_kind
@attrs.frozen
class Rsi(Event):
    """Wilder's RSI after one more closed bar (``rsi``); ``ts`` is the bar's."""

    kind: ClassVar[str] = "rsi"

    key: str = _doc("the series, e.g. 'binance/BTCUSDT/1m'")
    period: int = _doc("bars in the smoothing (14 by default)")
    rsi: Decimal = _doc("relative strength index, 0 to 100")  # noqa: RUF009
    close: Decimal = _doc("the bar's close")  # noqa: RUF009
    avg_gain: Decimal = _doc("Wilder-smoothed average gain")  # noqa: RUF009
    avg_loss: Decimal = _doc("Wilder-smoothed average loss (positive)")  # noqa: RUF009


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

    def __attrs_post_init__(self) -> None:
        if self.threshold <= 0 or self.window <= 0:
            raise PipelineError("spike needs a positive threshold and window, e.g. spike 2% in 1m")
        self._value = _tracked(self.on, self.kinds, "spike", "price")
        self.output_kinds = frozenset({Spike, Gap})

    def process(self, events: list[Event]) -> list[Event]:
        """Spikes and drops the events show; gaps pass."""
        out: list[Event] = []
        key_of = self.key or venue_symbol
        for event in events:
            if event.__class__ is Gap:
                out.append(event)
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
            return
        s.times.append(ts)
        s.values.append(value)
        cutoff = ts - self.window
        # Keep one point at or before the cutoff (the base) and everything after it.
        drop = bisect.bisect_right(s.times, cutoff) - 1
        if drop > 0:
            del s.times[:drop], s.values[:drop]
        if s.times[0] > cutoff:
            return  # less than a window of history
        base = s.values[0]
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
            out.append(
                Spike(
                    event.venue,
                    event.symbol,
                    ts,
                    event.recv_ts,
                    key,
                    direction,
                    change,
                    value,
                    base,
                    s.times[0],
                    threshold,
                    format_duration(self.window),
                )
            )

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


@attrs.define(on_setattr=attrs.setters.NO_OP)  # plain attribute writes: hot path
class RsiStep:
    """Wilder's RSI per series over closed bars (see the module docs).

    Args:
        period: Bars in the smoothing (14).
        on: The close value (default ``close``).
        key: The series a bar belongs to (default :func:`bar_series`).
        kinds: The event classes flowing in.
    """

    timed: ClassVar[bool] = False

    kinds: frozenset[type[Event]] = attrs.field(converter=kind_set)
    period: int = 14
    on: str = "close"
    key: Callable[[Event], str] | None = None
    output_kinds: frozenset[type[Event]] = attrs.field(init=False)
    _value: Expression = attrs.field(init=False)
    _series: dict[str, _Wilder] = attrs.field(init=False, factory=dict)

    def __attrs_post_init__(self) -> None:
        if self.period < 1:
            raise PipelineError(f"rsi needs a period of at least 1 (got {self.period})")
        self._value = _tracked(self.on, self.kinds, "rsi", "close")
        self.output_kinds = frozenset({Rsi, Gap})

    def process(self, events: list[Event]) -> list[Event]:
        """One RSI per closed bar once a series has ``period + 1`` closes; gaps pass."""
        out: list[Event] = []
        key_of = self.key or bar_series
        for event in events:
            if event.__class__ is Gap:
                out.append(event)
                continue
            if getattr(event, "closed", True) is not True:
                continue  # a candle still forming
            close = self._value(event)
            if close is None:
                continue
            key = key_of(event)
            state = self._series.get(key)
            if state is None:
                state = self._series[key] = _Wilder()
            start = getattr(event, "start", event.ts)
            if state.last_start is not None and start <= state.last_start:
                continue  # the same bar again, or an older one
            state.last_start = start
            rsi = self._step(state, Decimal(close))
            if rsi is not None:
                out.append(
                    Rsi(
                        event.venue,
                        event.symbol,
                        event.ts,
                        event.recv_ts,
                        key,
                        self.period,
                        rsi,
                        Decimal(close),
                        state.gain,
                        state.loss,
                    )
                )
        return out

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
