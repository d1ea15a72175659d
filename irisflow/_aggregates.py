"""Aggregates: what a window or bar computes over its events (``agg vwap, ohlc, count``).

Each aggregate becomes one or more typed fields of the window result (see ``_windows.py``):

============================ ==================================== =============================
written                      fields                               value
============================ ==================================== =============================
``count``                    (the result's own ``count``)         events in the window
``count(x)``                 ``count_x``                          events where ``x`` has a value
``sum(x)``                   ``sum_x``                            Σx
``mean(x)``                  ``mean_x``                           Σx / n
``min(x)``, ``max(x)``       ``min_x``, ``max_x``                 smallest, largest x
``first(x)``, ``last(x)``    ``first_x``, ``last_x``              x of the earliest, latest event
``vwap`` / ``vwap(p, q)``    ``vwap``                             Σ(p·q) / Σq (p=price, q=qty)
``ohlc`` / ``ohlc(x)``       ``open high low close``              first, max, min, last of x
``ohlcv`` / ``ohlcv(p, q)``  ``open high low close volume``       ohlc of p, Σq
``stddev(x)``                ``stddev_x``                         sample standard deviation
``pct_change(x)``            ``pct_change_x``                     (last - first) / first · 100
``rate`` / ``rate(x)``       ``rate`` / ``rate_x``                n or Σx per second of window
============================ ==================================== =============================

``NAME = agg(...)`` names the field (for several fields, ``NAME`` prefixes them: ``bid =
ohlc(bid_price)`` gives ``bid_open`` ...). An argument that is not a plain field needs a
name: ``notional = sum(price * qty)``.

"First" and "last" follow event time (``ts``), not arrival order; on equal times the later
arrival is last. Events where an argument has no value (``None``, e.g. a quote in a window of
trades) are skipped by that aggregate. An aggregate with no values gives ``None``.

Arithmetic is exact: sums and products use :data:`irisflow._filter.ARITH` (80 significant
digits, so exact for market data). Every division (mean, vwap, stddev, pct_change, rate) and
the square root use :data:`DIVISION`: 28 significant digits, rounded half-even. What runs per
event is in ``_folds.py``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import attrs

from ._errors import UsageError
from ._events import Event
from ._filter import Expression
from ._folds import BUILDERS, DIVISION, BoundAggregate, fast
from ._steps import Located, error, expression, nearest, split_top, sub

__all__ = ["DIVISION", "Agg", "Aggregate", "BoundAggregate", "parse_aggregates"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@attrs.frozen
class Aggregate:
    """One aggregate as written: a function name, argument expressions, an optional name.

    Build them with :class:`Agg` (``Agg.vwap()``, ``Agg.sum("qty")``) or from text with
    :func:`parse_aggregates`.
    """

    func: str
    """``'vwap'``, ``'sum'``, ..."""
    args: tuple[str, ...] = ()
    """Argument expressions (empty: the function's defaults)."""
    name: str | None = None
    """The field name (or prefix) to use instead of the default."""
    text: str = ""
    """The text as written, for messages."""

    def __attrs_post_init__(self) -> None:
        spec = _FUNCS.get(self.func)
        at = self.text or self.func
        if spec is None:
            raise error(self.func, f"unknown aggregate {self.func!r}{nearest(self.func, _FUNCS)}")
        low, high, _ = spec
        if not low <= len(self.args) <= high:
            want = f"{low}" if low == high else f"{low} to {high}"
            example = _EXAMPLES[self.func]
            raise error(
                at,
                f"{self.func} takes {want} argument{'s' * (high != 1)}, got {len(self.args)}"
                f" (e.g. {example})",
            )
        if self.name is not None and not _NAME.fullmatch(self.name):
            raise error(self.name, f"bad field name {self.name!r} (use letters, digits, _)")

    def fields(self) -> list[str]:
        """The field names this aggregate adds to a window result."""
        base = self.name
        if self.func in ("ohlc", "ohlcv"):
            names = ["open", "high", "low", "close"] + (["volume"] if self.func == "ohlcv" else [])
            return [f"{base}_{n}" for n in names] if base else names
        if base:
            return [base]
        if self.func == "count" and not self.args:
            return []  # the result's own count
        if self.func in ("vwap", "rate") and not self.args:
            return [self.func]
        if self.func == "vwap":
            return ["vwap"]
        arg = self.args[0]
        if not _NAME.fullmatch(arg.strip()):
            raise error(
                self.text or arg,
                f"name the value of {self.text or self.func!r}"
                f" (e.g. total = {self.func}({arg.strip()}))",
            )
        return [f"{self.func}_{arg.strip()}"]

    def bind(self, kinds: Iterable[type[Event]]) -> BoundAggregate:
        """Type-check the arguments against ``kinds`` and build the aggregate.

        Raises:
            FilterError: an argument does not parse or uses an unknown field.
            PipelineError: an argument of the wrong type, or no kind has the default fields.
        """
        classes = list(kinds)
        _, _, defaults = _FUNCS[self.func]
        texts = self.args or defaults
        exprs: list[Expression] = []
        for index, text in enumerate(texts):
            wanted = _ARG_TYPES.get(self.func, ("number",))
            if self.args:
                exprs.append(expression(text, classes, types=wanted))
                continue
            try:
                exprs.append(expression(text, classes, types=wanted))
            except UsageError:
                fields = " and ".join(defaults)
                raise error(
                    self.text or self.func,
                    f"{self.func} uses {fields} by default, and {texts[index]!r} is not a"
                    f" number field of the events reaching it"
                    f" (write the fields: {_EXAMPLES[self.func]})",
                ) from None
        return BUILDERS[self.func](self, exprs, [fast(expr, classes) for expr in exprs])


# func -> (fewest args, most args, default args)
_FUNCS: dict[str, tuple[int, int, tuple[str, ...]]] = {
    "count": (0, 1, ()),
    "sum": (1, 1, ()),
    "mean": (1, 1, ()),
    "min": (1, 1, ()),
    "max": (1, 1, ()),
    "first": (1, 1, ()),
    "last": (1, 1, ()),
    "vwap": (0, 2, ("price", "qty")),
    "ohlc": (0, 1, ("price",)),
    "ohlcv": (0, 2, ("price", "qty")),
    "stddev": (1, 1, ()),
    "pct_change": (1, 1, ()),
    "rate": (0, 1, ()),
}
_EXAMPLES = {
    "count": "count or count(price)",
    "sum": "sum(qty)",
    "mean": "mean(price)",
    "min": "min(price)",
    "max": "max(price)",
    "first": "first(price)",
    "last": "last(price)",
    "vwap": "vwap or vwap(price, qty)",
    "ohlc": "ohlc or ohlc(price)",
    "ohlcv": "ohlcv or ohlcv(price, qty)",
    "stddev": "stddev(price)",
    "pct_change": "pct_change(price)",
    "rate": "rate or rate(qty)",
}
_ARG_TYPES: dict[str, tuple[str, ...]] = {
    "count": ("number", "string", "bool"),
    "first": ("number", "string", "bool"),
    "last": ("number", "string", "bool"),
}


class Agg:
    """The aggregates for the Python API: ``.agg(Agg.vwap(), Agg.ohlc(), Agg.count())``.

    Every method takes the same arguments as the text form and a keyword ``name`` for the
    field. ``.agg()`` also takes the text form itself: ``.agg("vwap", "sum(qty)")``.
    """

    @staticmethod
    def count(field: str | None = None, *, name: str | None = None) -> Aggregate:
        """Events in the window, or events where ``field`` has a value."""
        return _make("count", field, name=name)

    @staticmethod
    def sum(field: str, *, name: str | None = None) -> Aggregate:
        """Σ field."""
        return _make("sum", field, name=name)

    @staticmethod
    def mean(field: str, *, name: str | None = None) -> Aggregate:
        """Σ field / n."""
        return _make("mean", field, name=name)

    @staticmethod
    def min(field: str, *, name: str | None = None) -> Aggregate:
        """The smallest value."""
        return _make("min", field, name=name)

    @staticmethod
    def max(field: str, *, name: str | None = None) -> Aggregate:
        """The largest value."""
        return _make("max", field, name=name)

    @staticmethod
    def first(field: str, *, name: str | None = None) -> Aggregate:
        """The value of the earliest event (event time)."""
        return _make("first", field, name=name)

    @staticmethod
    def last(field: str, *, name: str | None = None) -> Aggregate:
        """The value of the latest event (event time)."""
        return _make("last", field, name=name)

    @staticmethod
    def vwap(price: str = "price", qty: str = "qty", *, name: str | None = None) -> Aggregate:
        """Σ(price·qty) / Σqty."""
        return _make("vwap", price, qty, name=name)

    @staticmethod
    def ohlc(price: str = "price", *, name: str | None = None) -> Aggregate:
        """Open, high, low, close."""
        return _make("ohlc", price, name=name)

    @staticmethod
    def ohlcv(price: str = "price", qty: str = "qty", *, name: str | None = None) -> Aggregate:
        """Open, high, low, close and volume (Σqty)."""
        return _make("ohlcv", price, qty, name=name)

    @staticmethod
    def stddev(field: str, *, name: str | None = None) -> Aggregate:
        """Sample standard deviation (n - 1 in the denominator)."""
        return _make("stddev", field, name=name)

    @staticmethod
    def pct_change(field: str, *, name: str | None = None) -> Aggregate:
        """(last - first) / first · 100."""
        return _make("pct_change", field, name=name)

    @staticmethod
    def rate(field: str | None = None, *, name: str | None = None) -> Aggregate:
        """Events (or Σ field) per second of the window's length."""
        return _make("rate", field, name=name)


def _make(func: str, *args: str | None, name: str | None) -> Aggregate:
    given = tuple(a for a in args if a is not None)
    defaults = _FUNCS[func][2]
    if given == defaults:
        given = ()  # the defaults: default field names
    return Aggregate(func, given, name)


_ITEM = re.compile(r"\s*(?:([A-Za-z_]\w*)\s*=(?!=)\s*)?([A-Za-z_]\w*)\s*(?:\((.*)\))?\s*", re.S)


def parse_aggregates(text: str) -> list[Aggregate]:
    """``'vwap, ohlc(price), n = count, sum(qty)'`` -> aggregates.

    Raises:
        PipelineError: an item is not ``[NAME =] FUNC[(ARGS)]`` or names an unknown function
            or takes the wrong number of arguments.
    """
    out: list[Aggregate] = []
    for item in split_top(text):
        if not item:
            raise error(text, "empty aggregate in agg (write e.g. agg vwap, ohlc, count)")
        match = _ITEM.fullmatch(item)
        if match is None:
            raise error(
                item,
                f"cannot read aggregate {str(item)!r}"
                " (write FUNC, FUNC(ARGS) or NAME = FUNC(ARGS), e.g. total = sum(qty))",
            )
        name = sub(item, *match.span(1)) if match.group(1) else None
        func = sub(item, *match.span(2))
        args: tuple[str, ...] = ()
        if match.group(3) is not None:
            inner = sub(item, *match.span(3))
            args = tuple(split_top(inner)) if inner.strip() else ()
            if any(not a for a in args):
                raise error(item, f"empty argument in {str(item)!r}")
        if str(func) not in _FUNCS:
            raise error(func, f"unknown aggregate {str(func)!r}{nearest(func, _FUNCS)}")
        located = item if isinstance(item, Located) else Located.at(item, 0, len(item))
        out.append(Aggregate(str(func), args, None if name is None else name, located))
    return out
