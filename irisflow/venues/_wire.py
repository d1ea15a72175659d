"""Wire-format helpers shared by the JSON venues: exact numbers, RFC 3339 times, trade-id memory.

**Exact numbers.** Polygon and Kraken send prices as JSON *numbers*. orjson parses them into
floats, and ``Decimal(repr(f))`` gives back exactly the digits of the JSON text whenever that
text has at most 15 significant digits (a double holds any 15-digit decimal exactly; ``repr``
is the shortest string that round-trips, so it cannot pick a different one). Longer numbers may
not survive a float, so :func:`loads_exact` first looks for a run of 16 or more digits (dots
included) in the raw bytes, a 0.4 µs scan, and only then parses the frame with the standard
library's ``json`` and ``parse_float=Decimal`` (about six times slower than orjson). Trailing
zeros are the one thing the fast path does not keep (``0.50`` becomes ``Decimal('0.5')``, the
same value); Kraken's book checksum needs them, so that check parses book frames as text.
"""

from __future__ import annotations

import calendar
import collections
import json
import re
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from .._feed import RawFrame

__all__ = [
    "RecentIds",
    "Secret",
    "dec",
    "dec_str",
    "loads_exact",
    "rfc3339_ns",
]

_NS = 1_000_000_000
_DIGIT_RUN = b"0" * 16
_DIGITS_TO_ZERO = bytes(48 if (48 <= i <= 57 or i == 46) else 32 for i in range(256))


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def loads_exact(frame: RawFrame) -> Any:
    """Parse a JSON frame; floats that a double could not hold exactly come back as Decimal.

    Raises:
        ValueError: the frame is not JSON (``orjson.JSONDecodeError`` or ``json``'s).
    """
    if _DIGIT_RUN not in frame.translate(_DIGITS_TO_ZERO):
        return orjson.loads(frame)
    return json.loads(frame, parse_float=Decimal, parse_constant=_no_constants)


def dec(value: Any) -> Decimal:
    """A JSON number (int, float or exact Decimal) as an exact Decimal.

    Raises:
        TypeError: ``value`` is not a number (booleans are not numbers here).
    """
    cls = value.__class__
    if cls is float:
        return Decimal(repr(value))
    if cls is int:
        return Decimal(value)
    if cls is Decimal:
        return value  # type: ignore[no-any-return]
    raise TypeError(f"expected a number, got {value!r}")


def dec_str(value: Any) -> Decimal:
    """A decimal *string* (Coinbase sends every number as text) as a finite Decimal.

    Raises:
        TypeError: ``value`` is not a string.
        ValueError: the string is not a finite decimal number.
    """
    if value.__class__ is not str:
        raise TypeError(f"expected a decimal string, got {value!r}")
    try:
        number = Decimal(value)
    except InvalidOperation:
        number = Decimal("NaN")
    if not number.is_finite() or "_" in value:
        raise ValueError(f"not a decimal number: {value!r}")
    return number


_RFC3339 = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9})\d*)?(Z|z|[+-]\d\d:\d\d)\Z",
    re.ASCII,
)
_DAY_CACHE: dict[str, int] = {}


def _day_seconds(text: str, year: int, month: int, day: int) -> int:
    seconds = _DAY_CACHE.get(text)
    if seconds is None:
        if not 1 <= month <= 12 or not 1 <= day <= calendar.monthrange(year, month)[1]:
            raise ValueError(f"no such date: {text!r}")
        seconds = calendar.timegm((year, month, day, 0, 0, 0))
        if len(_DAY_CACHE) > 1024:
            _DAY_CACHE.clear()
        _DAY_CACHE[text] = seconds
    return seconds


def rfc3339_ns(value: Any) -> int:
    """``'2026-01-01T00:00:00.812345Z'`` as ns since the epoch (up to 9 fraction digits kept).

    Raises:
        TypeError: ``value`` is not a string.
        ValueError: it is not an RFC 3339 time.
    """
    if value.__class__ is not str:
        raise TypeError(f"expected an RFC 3339 time string, got {value!r}")
    match = _RFC3339.match(value)
    if match is None:
        raise ValueError(f"not an RFC 3339 time: {value!r}")
    year, month, day, hour, minute, second, frac, zone = match.groups()
    if int(hour) > 23 or int(minute) > 59 or int(second) > 60:
        raise ValueError(f"no such time of day: {value!r}")
    seconds = _day_seconds(value[:10], int(year), int(month), int(day))
    seconds += int(hour) * 3600 + int(minute) * 60 + int(second)
    if zone not in ("Z", "z"):
        offset = int(zone[1:3]) * 3600 + int(zone[4:6]) * 60
        seconds -= offset if zone[0] == "+" else -offset
    nanos = int(frac.ljust(9, "0")) if frac else 0
    return seconds * _NS + nanos


class RecentIds:
    """The last ``size`` trade ids seen per symbol: a bounded memory for de-duplication.

    Venues re-send their most recent trades as a snapshot after every (re)subscription; those
    trades are real, but the ones already emitted before a reconnect must not be emitted
    twice. Memory is bounded: ``size`` ids per symbol and ``max_symbols`` symbols (the least
    recently used symbol is forgotten first).
    """

    def __init__(self, size: int = 4096, max_symbols: int = 4096) -> None:
        self.size = size
        self.max_symbols = max_symbols
        self._by_symbol: collections.OrderedDict[str, tuple[set[int], collections.deque[int]]] = (
            collections.OrderedDict()
        )

    def fresh(self, symbol: str, ids: Sequence[int | None]) -> list[bool]:
        """Remember ``ids`` of ``symbol``; for each, whether it was new (duplicates inside
        ``ids`` count once; a trade without an id is always new)."""
        entry = self._by_symbol.get(symbol)
        if entry is None:
            entry = (set(), collections.deque())
            self._by_symbol[symbol] = entry
            if len(self._by_symbol) > self.max_symbols:
                self._by_symbol.popitem(last=False)
        else:
            self._by_symbol.move_to_end(symbol)
        seen, order = entry
        result: list[bool] = []
        for trade_id in ids:
            if trade_id is None:
                result.append(True)
                continue
            if trade_id in seen:
                result.append(False)
                continue
            result.append(True)
            seen.add(trade_id)
            order.append(trade_id)
            if len(order) > self.size:
                seen.discard(order.popleft())
        return result


class Secret:
    """A credential that never shows itself: ``repr`` and ``str`` are redacted."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself, for the one place that sends it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__
