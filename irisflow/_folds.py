"""How each aggregate folds events: the state, the update, the merge, the values.

The user-facing side (names, arguments, the text form) is ``_aggregates.py``; this module holds
what runs per event. Every state is a small list, updated in place; times (for first and last)
are ints, and ``None`` means "no value yet". Sums and products use
:data:`irisflow._filter.ARITH` (exact); divisions and square roots use :data:`DIVISION`.
"""

from __future__ import annotations

import builtins
import decimal
import operator
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import attrs

from ._events import Event
from ._filter import ARITH, Expression

if TYPE_CHECKING:
    from ._aggregates import Aggregate

__all__ = ["BUILDERS", "DIVISION", "BoundAggregate", "Getter", "State", "fast"]

DIVISION = decimal.Context(
    prec=28,
    rounding=decimal.ROUND_HALF_EVEN,
    Emax=decimal.MAX_EMAX,
    Emin=decimal.MIN_EMIN,
    traps=[],
)
"""The context for every division and square root an aggregate does: 28 significant digits,
rounded half-even, never raising. Used explicitly, so a caller's context has no effect."""

_add, _mul, _sub = ARITH.add, ARITH.multiply, ARITH.subtract
_div = DIVISION.divide
_HUNDRED = Decimal(100)

State = list[Any]
Getter = Callable[[Event], Any]


@attrs.define
class BoundAggregate:
    """An aggregate compiled for the event kinds of one window step.

    ``new()`` makes an empty state, ``add(state, event)`` folds an event in, ``merge(a, b)``
    combines two states (session windows), ``values(state, seconds)`` gives the field values
    in the order of ``fields`` (``seconds``: the window's length, for ``rate``).
    """

    fields: list[tuple[str, str, str]]
    """``(name, language type, doc)`` per output field."""
    new: Callable[[], State]
    add: Callable[[State, Event], None]
    merge: Callable[[State, State], State]
    values: Callable[[State, Decimal | None], tuple[Any, ...]]


def _output(
    agg: Aggregate, types: Sequence[str], docs: Sequence[str]
) -> list[tuple[str, str, str]]:
    return list(zip(agg.fields(), types, docs, strict=True))


def fast(expr: Expression, kinds: Sequence[type[Event]]) -> Getter:
    """A quicker getter for ``expr`` when it is a plain field that every kind has.

    ``operator.attrgetter`` is a C call; the compiled expression is a dict lookup and a
    closure. Any other expression is returned as it is.
    """
    name = str(expr)
    if expr.fields == {name} and kinds and all(k in expr.kinds for k in kinds):
        return operator.attrgetter(name)
    return expr


def _nothing(state: State, event: Event) -> None:
    return None


# Every state is a list; times (for first/last) are ints and ``None`` means "no value yet".


def _count(agg: Aggregate, exprs: list[Expression], gets: list[Getter]) -> BoundAggregate:
    get = gets[0] if gets else None
    if not agg.fields():  # plain ``count``: the window result's own count field
        return BoundAggregate([], list, _nothing, lambda a, b: a, lambda s, _: ())

    def add(s: State, e: Event) -> None:
        if get is None or get(e) is not None:
            s[0] += 1

    return BoundAggregate(
        _output(agg, ["integer"], [f"number of events{f' with {exprs[0]}' if exprs else ''}"]),
        lambda: [0],
        add,
        lambda a, b: [a[0] + b[0]],
        lambda s, _: (s[0],),
    )


def _sum_state(get: Getter) -> tuple[Callable[[], State], Callable[[State, Event], None]]:
    def add(s: State, e: Event) -> None:
        v = get(e)
        if v is not None:
            s[0] = v if s[0] is None else _add(s[0], v)
            s[1] += 1

    return (lambda: [None, 0]), add


def _merge_sum(a: State, b: State) -> State:
    if a[0] is None:
        return b
    if b[0] is None:
        return a
    return [_add(a[0], b[0]), a[1] + b[1]]


def _sum(agg: Aggregate, exprs: list[Expression], gets: list[Getter]) -> BoundAggregate:
    new, add = _sum_state(gets[0])
    return BoundAggregate(
        _output(agg, ["number"], [f"sum of {exprs[0]}"]),
        new,
        add,
        _merge_sum,
        lambda s, _: (None if s[0] is None else _add(s[0], 0),),
    )


def _mean(agg: Aggregate, exprs: list[Expression], gets: list[Getter]) -> BoundAggregate:
    new, add = _sum_state(gets[0])
    return BoundAggregate(
        _output(agg, ["number"], [f"mean of {exprs[0]} (28 significant digits)"]),
        new,
        add,
        _merge_sum,
        lambda s, _: (None if s[0] is None else _div(s[0], s[1]),),
    )


def _extreme(agg: Aggregate, exprs: list[Expression], gets: list[Getter]) -> BoundAggregate:
    get, smallest = gets[0], agg.func == "min"

    def better(v: Any, than: Any) -> bool:
        try:
            return bool(v < than) if smallest else bool(v > than)
        except ArithmeticError:  # a NaN: never the extreme
            return False

    def add(s: State, e: Event) -> None:
        v = get(e)
        if v is not None and (s[0] is None or better(v, s[0])):
            s[0] = v

    def merge(a: State, b: State) -> State:
        if a[0] is None or (b[0] is not None and better(b[0], a[0])):
            return b
        return a

    return BoundAggregate(
        _output(agg, ["number"], [f"{'smallest' if smallest else 'largest'} {exprs[0]}"]),
        lambda: [None],
        add,
        merge,
        lambda s, _: (s[0],),
    )


def _ends_state(
    get: Getter,
) -> tuple[Callable[[State, Event], None], Callable[[State, State], State]]:
    """State ``[first_ts, first, last_ts, last]``, by event time."""

    def add(s: State, e: Event) -> None:
        v = get(e)
        if v is None:
            return
        ts = e.ts
        if s[0] is None or ts < s[0]:
            s[0], s[1] = ts, v
        if s[2] is None or ts >= s[2]:
            s[2], s[3] = ts, v

    def merge(a: State, b: State) -> State:
        if a[0] is None:
            return b
        if b[0] is None:
            return a
        first = a[:2] if a[0] <= b[0] else b[:2]
        last = b[2:4] if b[2] >= a[2] else a[2:4]
        return [*first, *last, *a[4:]]

    return add, merge


def _ends(agg: Aggregate, exprs: list[Expression], gets: list[Getter]) -> BoundAggregate:
    get = gets[0]
    add, merge = _ends_state(get)
    pick = 1 if agg.func == "first" else 3
    return BoundAggregate(
        _output(agg, [exprs[0].type], [f"{agg.func} {exprs[0]} by event time"]),
        lambda: [None, None, None, None],
        add,
        merge,
        lambda s, _: (s[pick],),
    )


def _pct_change(agg: Aggregate, exprs: list[Expression], gets: list[Getter]) -> BoundAggregate:
    add, merge = _ends_state(gets[0])

    def values(s: State, _: Decimal | None) -> tuple[Any, ...]:
        first, last = s[1], s[3]
        if first is None or not first:
            return (None,)
        return (_div(_mul(_sub(last, first), _HUNDRED), first),)

    return BoundAggregate(
        _output(agg, ["number"], [f"change of {exprs[0]} from first to last, percent"]),
        lambda: [None, None, None, None],
        add,
        merge,
        values,
    )


def _vwap(agg: Aggregate, exprs: list[Expression], gets: list[Getter]) -> BoundAggregate:
    price, qty = gets

    def add(s: State, e: Event) -> None:
        p, q = price(e), qty(e)
        if p is not None and q is not None:
            s[0] = _add(s[0], _mul(p, q))
            s[1] = _add(s[1], q)

    def values(s: State, _: Decimal | None) -> tuple[Any, ...]:
        return (_div(s[0], s[1]) if s[1] else None,)

    return BoundAggregate(
        _output(agg, ["number"], [f"volume-weighted average of {exprs[0]} by {exprs[1]}"]),
        lambda: [Decimal(0), Decimal(0)],
        add,
        lambda a, b: [_add(a[0], b[0]), _add(a[1], b[1])],
        values,
    )


def _ohlc(agg: Aggregate, exprs: list[Expression], gets: list[Getter]) -> BoundAggregate:
    """State ``[first_ts, open, last_ts, close, high, low, volume]``."""
    price: Getter = gets[0]
    qty: Getter | None = gets[1] if len(gets) > 1 else None
    _, merge_ends = _ends_state(price)

    def add(s: State, e: Event) -> None:
        p = price(e)
        if p is None:
            return
        ts = e.ts
        try:
            if s[0] is None:
                s[0] = s[2] = ts
                s[1] = s[3] = s[4] = s[5] = p
            else:
                if ts < s[0]:
                    s[0], s[1] = ts, p
                if ts >= s[2]:
                    s[2], s[3] = ts, p
                if p > s[4]:
                    s[4] = p
                elif p < s[5]:
                    s[5] = p
        except ArithmeticError:  # a NaN price: no extreme, no end
            pass
        if qty is not None:
            q = qty(e)
            if q is not None:
                s[6] = _add(s[6], q)

    def merge(a: State, b: State) -> State:
        out = merge_ends(a, b)
        highs = [v for v in (a[4], b[4]) if v is not None]
        lows = [v for v in (a[5], b[5]) if v is not None]
        out[4] = builtins.max(highs) if highs else None
        out[5] = builtins.min(lows) if lows else None
        out[6] = _add(a[6], b[6])
        return out

    def values(s: State, _: Decimal | None) -> tuple[Any, ...]:
        head = (s[1], s[4], s[5], s[3])
        return (*head, s[6]) if qty is not None else head

    docs = [f"first {exprs[0]}", f"highest {exprs[0]}", f"lowest {exprs[0]}", f"last {exprs[0]}"]
    if qty is not None:
        docs.append(f"sum of {exprs[1]}")
    return BoundAggregate(
        _output(agg, ["number"] * len(docs), docs),
        lambda: [None, None, None, None, None, None, Decimal(0)],
        add,
        merge,
        values,
    )


def _stddev(agg: Aggregate, exprs: list[Expression], gets: list[Getter]) -> BoundAggregate:
    """State ``[n, Σx, Σx²]``, exact; the sample deviation needs two values."""
    get = gets[0]

    def add(s: State, e: Event) -> None:
        v = get(e)
        if v is not None:
            s[0] += 1
            s[1] = _add(s[1], v)
            s[2] = _add(s[2], _mul(v, v))

    def values(s: State, _: Decimal | None) -> tuple[Any, ...]:
        n, total, squares = s
        if n < 2:
            return (None,)
        # (n·Σx² - (Σx)²) is exact; one division and one square root are rounded.
        spread = _sub(_mul(n, squares), _mul(total, total))
        if spread <= 0:
            return (Decimal(0),)
        return (DIVISION.sqrt(_div(spread, n * (n - 1))),)

    return BoundAggregate(
        _output(agg, ["number"], [f"sample standard deviation of {exprs[0]} (n - 1)"]),
        lambda: [0, Decimal(0), Decimal(0)],
        add,
        lambda a, b: [a[0] + b[0], _add(a[1], b[1]), _add(a[2], b[2])],
        values,
    )


def _rate(agg: Aggregate, exprs: list[Expression], gets: list[Getter]) -> BoundAggregate:
    get = gets[0] if gets else None
    if get is None:
        count = _count(agg, [], [])
        new, add, merge = count.new, count.add, count.merge
    else:
        new, add = _sum_state(get)
        merge = _merge_sum

    def values(s: State, seconds: Decimal | None) -> tuple[Any, ...]:
        if s[0] is None or seconds is None or seconds <= 0:
            return (None,)
        return (_div(s[0], seconds),)

    what = f"sum of {exprs[0]}" if exprs else "events"
    return BoundAggregate(
        _output(agg, ["number"], [f"{what} per second of the window"]),
        new,
        add,
        merge,
        values,
    )


BUILDERS: dict[str, Callable[[Aggregate, list[Expression], list[Getter]], BoundAggregate]] = {
    "count": _count,
    "sum": _sum,
    "mean": _mean,
    "min": _extreme,
    "max": _extreme,
    "first": _ends,
    "last": _ends,
    "vwap": _vwap,
    "ohlc": _ohlc,
    "ohlcv": _ohlc,
    "stddev": _stddev,
    "pct_change": _pct_change,
    "rate": _rate,
}
