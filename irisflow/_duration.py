"""Durations as people type them: ``500ms``, ``30s``, ``5m``, ``1h30m``, ``1.5d``.

One reading for every place irisflow takes a duration (pipeline steps, alert rules), so the
same text means the same time everywhere. Callers raise their own error; this module says
what the text meant, or what it probably meant.
"""

from __future__ import annotations

import re
from decimal import Decimal

__all__ = ["UNITS", "duration_hint", "duration_ns", "format_duration"]

UNITS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
    "d": 86_400_000_000_000,
}
"""Nanoseconds per unit (``m`` is minutes)."""

_UNIT = "(?:ns|us|µs|ms|s|m|h|d)"
_WHOLE = re.compile(rf"(?:[0-9]+(?:\.[0-9]+)?{_UNIT})+")
_PART = re.compile(rf"([0-9]+(?:\.[0-9]+)?)({_UNIT})")
_WORDS = {
    **dict.fromkeys(("msec", "msecs", "millisecond", "milliseconds"), "ms"),
    **dict.fromkeys(("sec", "secs", "second", "seconds"), "s"),
    **dict.fromkeys(("min", "mins", "minute", "minutes"), "m"),
    **dict.fromkeys(("hr", "hrs", "hour", "hours"), "h"),
    **dict.fromkeys(("day", "days"), "d"),
}


def duration_ns(text: str) -> int | None:
    """The duration in whole nanoseconds, or None when ``text`` is not a positive duration.

    Parts add up (``1h30m``); spaces are ignored; units are case-insensitive.
    """
    compact = text.strip().lower().replace(" ", "")
    if not _WHOLE.fullmatch(compact):
        return None
    total = sum(Decimal(number) * UNITS[unit] for number, unit in _PART.findall(compact))
    return int(total) if total >= 1 else None


def duration_hint(text: str) -> str:
    """`` (did you mean '5m'?)`` for ``'5 min'`` or ``'5'``; empty when there is no guess."""
    loose = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)\s*([a-zµ]*)", text.strip().lower())
    if loose is None:
        return ""
    number, unit = loose.groups()
    unit = _WORDS.get(unit, unit if unit in UNITS else "s" if not unit else "")
    if unit and Decimal(number) > 0:
        return f" (did you mean '{number}{unit}'?)"
    return ""


def format_duration(ns: int) -> str:
    """``60_000_000_000`` -> ``'1m'``: the largest unit that divides ``ns`` exactly."""
    for unit in ("d", "h", "m", "s", "ms", "us"):
        size = UNITS[unit]
        if ns % size == 0:
            return f"{ns // size}{unit}"
    return f"{ns}ns"
