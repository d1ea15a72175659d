"""Saved filters: named filter expressions kept in a store, that a running ``watch`` follows.

A :class:`SavedFilter` is a filter expression with a name and a scope (venues and symbols;
empty means all). It lives in one of two stores with the same async interface
(:class:`FilterStore`): the ``irisflow.saved_filters`` table (:class:`DatabaseFilterStore`,
used whenever a database is configured) or a TOML file in the user's config directory
(:class:`FileFilterStore`). :func:`store_for` picks one.

Filters are checked when saved: the expression must compile against every event kind and
every venue must exist. Saving an existing name replaces it (and says so).

:class:`SavedFilterStep` applies saved filters in a pipeline. The rule: **an event must pass
every saved filter whose scope covers it**; a filter whose scope does not cover an event has
no say about it, and gaps always pass. Within its scope a filter behaves like ``--filter``:
an event of a kind the expression cannot be evaluated on does not pass.

:func:`watch_saved` keeps the step in line with the store while a run goes on. The database
store announces every change with ``NOTIFY irisflow_saved_filters, '<name>'`` in the same
transaction (a payload of ``*`` means "re-read them all"); the watcher LISTENs on its own
connection, and also re-reads its filters every few seconds, so a row edited by hand without a
NOTIFY is picked up too. The file store is polled (its size, inode and mtime) twice a second.
A change that no longer compiles is reported and the filter in force is kept; a filter
removed from the store stops filtering.

The pieces: ``_saved_filter.py`` (:class:`SavedFilter`, its checks, :class:`FilterStore`),
``_saved_db.py`` and ``_saved_file.py`` (the two stores), ``_saved_watch.py``
(:func:`watch_saved`); this module has :func:`store_for`, the step and
:func:`load_saved_step`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeAlias

import attrs

from ._errors import FilterError, UsageError
from ._events import KINDS, Event, Gap
from ._filter import compile_filter
from ._saved_db import CHANNEL, DatabaseFilterStore
from ._saved_file import FileFilterStore, _parse_toml, _toml_text, default_filters_path
from ._saved_filter import Filters, FilterStore, SavedFilter, saved_filter
from ._saved_watch import watch_saved
from ._venue import get_venue

__all__ = [
    "CHANNEL",
    "DatabaseFilterStore",
    "FileFilterStore",
    "FilterStore",
    "SavedFilter",
    "SavedFilterStep",
    "_parse_toml",
    "_toml_text",
    "default_filters_path",
    "load_saved_step",
    "saved_filter",
    "store_for",
    "watch_saved",
]


def store_for(dsn: str | None, *, config_dir: Path | None = None) -> FilterStore:
    """The database store when a DSN is configured (already resolved), else the file store."""
    if dsn:
        return DatabaseFilterStore(dsn)
    return FileFilterStore(default_filters_path(config_dir))


# --------------------------------------------------------------------------- the step

_Predicate: TypeAlias = Callable[[Event], bool]
_Table: TypeAlias = dict[type[Event], _Predicate]
_MAX_ROUTES = 100_000


def _always(event: Event) -> bool:
    return True


def _never(event: Event) -> bool:
    return False


@attrs.frozen
class _Compiled:
    saved: SavedFilter
    venues: frozenset[str]
    symbols: frozenset[str]
    table: _Table

    def covers(self, venue: str, symbol: str) -> bool:
        return (not self.venues or venue.lower() in self.venues) and (
            not self.symbols or symbol.upper() in self.symbols
        )


def _compile(saved: SavedFilter, kinds: frozenset[type[Event]] | None) -> _Compiled:
    try:
        for venue in saved.venues:
            get_venue(venue)
        flt = compile_filter(saved.expr, kinds)
    except FilterError as exc:
        raise FilterError(f"saved filter {saved.name!r}: {exc}") from exc
    except UsageError as exc:
        raise UsageError(f"saved filter {saved.name!r}: {exc}") from exc
    table: _Table = {cls: flt.predicate_for(cls) or _never for cls in KINDS.values()}
    table[Gap] = _always
    return _Compiled(
        saved,
        frozenset(v.lower() for v in saved.venues),
        frozenset(s.upper() for s in saved.symbols),
        table,
    )


@attrs.define
class SavedFilterStep:
    """A pipeline step applying saved filters (see the module docs for the rule).

    Build it with :meth:`from_saved` or :func:`load_saved_step`; :func:`watch_saved` then calls
    :meth:`replace` and :meth:`remove` between batches as the store changes.

    Args:
        names: The saved filters this step follows (``--saved NAME``), in order.
        kinds: The event kinds of the stream: expressions are checked against them, so one
            that can never pass in this stream is refused. ``None``: every kind.
    """

    names: tuple[str, ...]
    kinds: frozenset[type[Event]] | None = None
    _active: dict[str, _Compiled] = attrs.field(factory=dict, init=False)
    _routes: dict[tuple[str, str], tuple[_Table, ...]] = attrs.field(factory=dict, init=False)

    @classmethod
    def from_saved(
        cls, saved: Iterable[SavedFilter], *, kinds: Iterable[type[Event]] | None = None
    ) -> SavedFilterStep:
        """A step following and applying ``saved``.

        Raises:
            FilterError: an expression does not compile for ``kinds``.
            UsageError: a venue is unknown.
        """
        filters = list(saved)
        step = cls(
            tuple(dict.fromkeys(f.name for f in filters)),
            frozenset(kinds) if kinds is not None else None,
        )
        for f in filters:
            step.replace(f)
        return step

    def current(self, name: str) -> SavedFilter | None:
        """The filter in force under ``name``, or ``None``."""
        compiled = self._active.get(name)
        return compiled.saved if compiled is not None else None

    def active(self) -> Filters:
        """The filters in force, in the order of :attr:`names`."""
        return [self._active[n].saved for n in self.names if n in self._active]

    def replace(self, saved: SavedFilter) -> None:
        """Put ``saved`` in force from the next batch on; on error nothing changes.

        Raises:
            FilterError: the expression does not compile for this stream's kinds.
            UsageError: a venue is unknown.
            ValueError: this step does not follow that name.
        """
        if saved.name not in self.names:
            raise ValueError(f"this step follows {self.names!r}, not {saved.name!r}")
        compiled = _compile(saved, self.kinds)
        self._active[saved.name] = compiled
        self._routes.clear()

    def remove(self, name: str) -> bool:
        """Stop applying ``name`` from the next batch on; False if it was not in force."""
        if self._active.pop(name, None) is None:
            return False
        self._routes.clear()
        return True

    def _route(self, venue: str, symbol: str) -> tuple[_Table, ...]:
        if len(self._routes) >= _MAX_ROUTES:  # e.g. many chain addresses: stay bounded
            self._routes.clear()
        tables = tuple(
            self._active[n].table
            for n in self.names
            if n in self._active and self._active[n].covers(venue, symbol)
        )
        self._routes[venue, symbol] = tables
        return tables

    def process(self, events: list[Event]) -> list[Event]:
        """The events that pass every saved filter covering them (gaps always pass)."""
        if not self._active:
            return events
        routes = self._routes
        out: list[Event] = []
        for event in events:
            tables = routes.get((event.venue, event.symbol))
            if tables is None:
                tables = self._route(event.venue, event.symbol)
            cls = event.__class__
            for table in tables:
                predicate = table.get(cls)
                if predicate is None:  # a class registered after the filter was compiled
                    predicate = _always if issubclass(cls, Gap) else _never
                if not predicate(event):
                    break
            else:
                out.append(event)
        return out

    def advance(self, now: int) -> list[Event]:
        """Filters keep no time-driven state."""
        return []


async def load_saved_step(
    store: FilterStore, names: Iterable[str], *, kinds: Iterable[type[Event]] | None = None
) -> SavedFilterStep:
    """A step for ``watch --saved NAME ...``: reads and checks the named filters.

    Raises:
        UsageError: a name is not in the store (the message suggests the closest), or a
            venue is unknown.
        FilterError: an expression does not compile for ``kinds``.
    """
    wanted = list(dict.fromkeys(names))
    found = await store.find(wanted)
    saved = [found[n] if n in found else await store.get(n) for n in wanted]
    return SavedFilterStep.from_saved(saved, kinds=kinds)
