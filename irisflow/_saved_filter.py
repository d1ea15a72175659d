"""A saved filter: its name, expression and scope, the checks it passes when saved, and the
interface (:class:`FilterStore`) of the stores that keep them (``_saved_db.py``,
``_saved_file.py``). ``_saved.py`` has the overview.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import re
from collections.abc import Iterable
from typing import Protocol, TypeAlias

import attrs

from ._errors import UsageError
from ._filter import compile_filter
from ._venue import get_venue

__all__ = ["FilterStore", "Filters", "SaveResult", "SavedFilter", "saved_filter", "unknown_filter"]

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")


@attrs.frozen
class SavedFilter:
    """A named filter expression with the venues and symbols it applies to."""

    name: str
    """Unique name, e.g. ``'big-btc'``."""
    expr: str
    """The filter expression, as in ``--filter``."""
    venues: tuple[str, ...] = ()
    """Venue names it applies to; empty: every venue."""
    symbols: tuple[str, ...] = ()
    """Symbols it applies to (matched ignoring case); empty: every symbol."""
    updated_at: _dt.datetime | None = None
    """When it was last saved (UTC); ``None`` before it is saved."""

    def scope(self) -> str:
        """Where it applies, for messages: ``'binance; BTCUSDT'`` or ``'everything'``."""
        if not self.venues and not self.symbols:
            return "everything"
        venues = ", ".join(self.venues) or "all venues"
        return f"{venues}; {', '.join(self.symbols) or 'all symbols'}"

    def same_rule(self, other: SavedFilter) -> bool:
        """Whether ``other`` filters exactly like this one (``updated_at`` aside)."""
        return (self.expr, self.venues, self.symbols) == (other.expr, other.venues, other.symbols)


Filters: TypeAlias = list[SavedFilter]
"""A list of saved filters (the stores' ``list`` method hides the builtin in their bodies)."""


@attrs.frozen
class SaveResult:
    """What :meth:`FilterStore.add` did."""

    saved: SavedFilter
    """The filter as stored."""
    replaced: SavedFilter | None
    """The filter of that name it replaced, or ``None`` when the name was new."""


def saved_filter(
    name: str, expr: str, venues: Iterable[str] = (), symbols: Iterable[str] = ()
) -> SavedFilter:
    """Check and normalise a filter to be saved.

    Venue names are looked up (and stored as the venue's own name); symbols may be given as
    comma-separated lists; blanks and repeats are dropped.

    Raises:
        UsageError: a bad name or an unknown venue (the message suggests the closest).
        FilterError: the expression does not compile against the event kinds.
    """
    name = name.strip()
    if not _NAME.match(name):
        raise UsageError(
            f"bad saved filter name {name!r}: use letters, digits, '_', '-' and '.' "
            "(at most 64 characters, not starting with '-' or '.'), e.g. 'big-btc'"
        )
    for text in (expr, *venues, *symbols):
        if not _encodable(text):
            raise UsageError(f"saved filter {name!r}: {text!r} is not valid text")
    compile_filter(expr)
    venue_names = tuple(dict.fromkeys(get_venue(v).name for v in _split(venues)))
    seen: dict[str, str] = {}
    for symbol in _split(symbols):
        seen.setdefault(symbol.upper(), symbol)
    return SavedFilter(name, expr.strip(), venue_names, tuple(seen.values()))


def _split(items: Iterable[str]) -> list[str]:
    return [part.strip() for item in items for part in item.split(",") if part.strip()]


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def unknown_filter(name: str, known: Iterable[str], where: str) -> UsageError:
    names = sorted(known)
    close = difflib.get_close_matches(name, names, n=1)
    if close:
        hint = f" (did you mean {close[0]!r}?); `irisflow filters list` shows them all"
    elif names:
        hint = f"; saved filters: {', '.join(names)}"
    else:
        hint = "; there are none yet: add one with `irisflow filters add NAME EXPR`"
    return UsageError(f"no saved filter named {name!r} in {where}{hint}")


class FilterStore(Protocol):
    """Where saved filters live. Every method checkpoints."""

    @property
    def where(self) -> str:
        """The store for messages: the redacted database or the file path."""
        ...

    async def add(self, saved: SavedFilter) -> SaveResult:
        """Check (see :func:`saved_filter`) and save ``saved``, replacing that name if taken."""
        ...

    async def list(self) -> Filters:
        """Every saved filter, by name."""
        ...

    async def get(self, name: str) -> SavedFilter:
        """The filter called ``name``; :class:`UsageError` (with a suggestion) if none."""
        ...

    async def remove(self, name: str) -> SavedFilter:
        """Delete the filter called ``name`` and return it; :class:`UsageError` if none."""
        ...

    async def find(self, names: Iterable[str]) -> dict[str, SavedFilter]:
        """The filters of those names that exist (as stored: not checked again)."""
        ...
