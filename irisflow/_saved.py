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
"""

from __future__ import annotations

import datetime as _dt
import difflib
import functools
import os
import re
import tempfile
import threading
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeAlias, TypeVar

import attrs
import cattrs
import psycopg
import psycopg.errors
import trio

from ._errors import DatabaseError, FilterError, IrisflowError, UsageError
from ._events import KINDS, Event, Gap
from ._filter import compile_filter
from ._migrate import connect, raise_database_error, redact_dsn
from ._venue import get_venue

__all__ = [
    "CHANNEL",
    "DatabaseFilterStore",
    "FileFilterStore",
    "FilterStore",
    "SaveResult",
    "SavedFilter",
    "SavedFilterStep",
    "default_filters_path",
    "load_saved_step",
    "make_converter",
    "saved_filter",
    "store_for",
    "watch_saved",
]

CHANNEL = "irisflow_saved_filters"
"""The PostgreSQL NOTIFY channel; the payload is the filter's name, or ``*`` for all."""

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
_T = TypeVar("_T")


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


_Filters: TypeAlias = list[SavedFilter]


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


def _unknown(name: str, known: Iterable[str], where: str) -> UsageError:
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

    async def list(self) -> _Filters:
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


# --------------------------------------------------------------------------- database

_COLUMNS = "name, expr, venues, symbols, updated_at"


def _from_row(row: Sequence[Any]) -> SavedFilter:
    venues = tuple(str(v) for v in row[2] or () if v is not None)
    symbols = tuple(str(s) for s in row[3] or () if s is not None)
    updated = row[4].astimezone(_dt.UTC) if isinstance(row[4], _dt.datetime) else None
    return SavedFilter(str(row[0]), str(row[1]), venues, symbols, updated)


def _select(conn: psycopg.Connection[Any], names: Iterable[str]) -> dict[str, SavedFilter]:
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM irisflow.saved_filters WHERE name = ANY(%s)".encode(),
        (list(names),),
    ).fetchall()
    return {str(r[0]): _from_row(r) for r in rows}


def _all_names(conn: psycopg.Connection[Any]) -> list[str]:
    return [str(r[0]) for r in conn.execute("SELECT name FROM irisflow.saved_filters")]


class DatabaseFilterStore:
    """Saved filters in ``irisflow.saved_filters`` (the database must be migrated).

    Every change runs in one transaction with its ``NOTIFY`` (see :data:`CHANNEL`), so a
    listener hears of it exactly when it is committed.
    """

    def __init__(self, dsn: str, *, connect_timeout: int = 5) -> None:
        self.dsn = dsn
        self.connect_timeout = connect_timeout

    def __repr__(self) -> str:
        return f"<DatabaseFilterStore {redact_dsn(self.dsn)}>"

    @property
    def where(self) -> str:
        """``database <redacted DSN>``."""
        return f"database {redact_dsn(self.dsn)}"

    def _connect(self, application_name: str = "irisflow-filters") -> psycopg.Connection[Any]:
        """Open an autocommit connection (blocking; raises UsageError/DatabaseError)."""
        return connect(
            self.dsn, application_name=application_name, connect_timeout=self.connect_timeout
        )

    def _call(self, what: str, fn: Callable[[psycopg.Connection[Any]], _T]) -> _T:
        """Run ``fn`` on a connection (blocking), translating psycopg errors."""
        with self._connect() as conn:
            return self._translate(what, fn, conn)

    def _translate(
        self, what: str, fn: Callable[[psycopg.Connection[Any]], _T], conn: psycopg.Connection[Any]
    ) -> _T:
        """``fn(conn)``, with a missing table as a UsageError and other failures DatabaseError."""
        try:
            return fn(conn)
        except psycopg.errors.UndefinedTable:
            raise UsageError(
                f"database {redact_dsn(self.dsn)} has no irisflow.saved_filters table: "
                "run `irisflow migrate` first"
            ) from None
        except psycopg.Error as exc:
            raise_database_error(what, self.dsn, exc)

    async def _run(self, what: str, fn: Callable[[psycopg.Connection[Any]], _T]) -> _T:
        return await trio.to_thread.run_sync(self._call, what, fn)

    async def add(self, saved: SavedFilter) -> SaveResult:
        """Check and save ``saved`` (upsert), announcing it in the same transaction."""
        saved = saved_filter(saved.name, saved.expr, saved.venues, saved.symbols)

        def work(conn: psycopg.Connection[Any]) -> SaveResult:
            with conn.transaction():
                old = conn.execute(
                    f"SELECT {_COLUMNS} FROM irisflow.saved_filters WHERE name = %s "
                    "FOR UPDATE".encode(),
                    (saved.name,),
                ).fetchone()
                row = conn.execute(
                    b"INSERT INTO irisflow.saved_filters AS f (name, expr, venues, symbols,"
                    b" updated_at) VALUES (%s, %s, %s::text[], %s::text[], now())"
                    b" ON CONFLICT (name) DO UPDATE SET expr = excluded.expr,"
                    b" venues = excluded.venues, symbols = excluded.symbols,"
                    b" updated_at = excluded.updated_at RETURNING " + _COLUMNS.encode(),
                    (saved.name, saved.expr, list(saved.venues), list(saved.symbols)),
                ).fetchone()
                conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, saved.name))
            assert row is not None
            return SaveResult(_from_row(row), _from_row(old) if old is not None else None)

        return await self._run("could not save the filter", work)

    async def list(self) -> _Filters:
        """Every saved filter, by name."""

        def work(conn: psycopg.Connection[Any]) -> _Filters:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM irisflow.saved_filters ORDER BY name".encode()
            ).fetchall()
            return [_from_row(r) for r in rows]

        return await self._run("could not list the saved filters", work)

    async def get(self, name: str) -> SavedFilter:
        """The filter called ``name``."""

        def work(conn: psycopg.Connection[Any]) -> SavedFilter | list[str]:
            return _select(conn, [name]).get(name) or _all_names(conn)

        found = await self._run("could not read the saved filters", work)
        if isinstance(found, list):
            raise _unknown(name, found, self.where)
        return found

    async def remove(self, name: str) -> SavedFilter:
        """Delete the filter called ``name``, announcing it in the same transaction."""

        def work(conn: psycopg.Connection[Any]) -> SavedFilter | list[str]:
            with conn.transaction():
                row = conn.execute(
                    f"DELETE FROM irisflow.saved_filters WHERE name = %s "
                    f"RETURNING {_COLUMNS}".encode(),
                    (name,),
                ).fetchone()
                if row is None:
                    return _all_names(conn)
                conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, name))
            return _from_row(row)

        found = await self._run("could not remove the filter", work)
        if isinstance(found, list):
            raise _unknown(name, found, self.where)
        return found

    async def find(self, names: Iterable[str]) -> dict[str, SavedFilter]:
        """The filters of those names that exist."""
        wanted = list(names)
        return await self._run("could not read the saved filters", lambda c: _select(c, wanted))


# --------------------------------------------------------------------------- file

_HEADER = """\
# irisflow saved filters. `irisflow filters add/rm` rewrite this file; edits by hand are fine
# and a running `irisflow watch --saved NAME` picks them up.
"""


@attrs.frozen
class _Entry:
    expr: str
    venues: tuple[str, ...] = ()
    symbols: tuple[str, ...] = ()
    updated_at: _dt.datetime | None = None


@attrs.frozen
class _File:
    filters: dict[str, _Entry] = attrs.field(factory=dict)


def _strict_str(value: object, _: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__} {value!r}")
    return value


def _strict_datetime(value: object, _: object) -> _dt.datetime:
    if not isinstance(value, _dt.datetime):
        raise TypeError(f"expected a date-time, got {type(value).__name__} {value!r}")
    return value


def _strict_strings(value: object, _: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise TypeError(f"expected a list of strings, got {type(value).__name__} {value!r}")
    return tuple(_strict_str(item, str) for item in value)


def make_converter() -> cattrs.Converter:
    """The converter for ``filters.toml``: unknown keys and wrong types are errors."""
    converter = cattrs.Converter(forbid_extra_keys=True)
    converter.register_structure_hook(str, _strict_str)
    converter.register_structure_hook_func(lambda t: t == tuple[str, ...], _strict_strings)
    converter.register_structure_hook(_dt.datetime, _strict_datetime)
    return converter


_CONVERTER = make_converter()


def default_filters_path(
    config_dir: Path | None = None, *, environ: Mapping[str, str] | None = None
) -> Path:
    """Where the file store keeps saved filters: ``<config_dir>/filters.toml``.

    The default ``config_dir`` is ``$XDG_CONFIG_HOME/irisflow``, else ``~/.config/irisflow``
    (the directory of ``irisflow.toml``).
    """
    if config_dir is None:
        env = os.environ if environ is None else environ
        base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
        config_dir = Path(base) / "irisflow"
    return Path(config_dir) / "filters.toml"


def _toml_str(text: str) -> str:
    """``text`` as a TOML basic string."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch in _TOML_ESCAPES:
            out.append(_TOML_ESCAPES[ch])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


_TOML_ESCAPES = {"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _toml_text(filters: Mapping[str, SavedFilter]) -> str:
    lines = [_HEADER.rstrip("\n")]
    for name in sorted(filters):
        f = filters[name]
        lines += ["", f"[filters.{_toml_str(name)}]", f"expr = {_toml_str(f.expr)}"]
        if f.venues:
            lines.append(f"venues = [{', '.join(_toml_str(v) for v in f.venues)}]")
        if f.symbols:
            lines.append(f"symbols = [{', '.join(_toml_str(s) for s in f.symbols)}]")
        if f.updated_at is not None:
            lines.append(f"updated_at = {f.updated_at.astimezone(_dt.UTC).isoformat()}")
    return "\n".join(lines) + "\n"


def _parse_toml(text: str, path: Path) -> dict[str, SavedFilter]:
    try:
        data = tomllib.loads(text)
        parsed = _CONVERTER.structure(data, _File)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"saved filters file {str(path)!r} is not valid TOML: {exc}") from exc
    except Exception as exc:  # cattrs raises exception groups; say where, in one line
        if isinstance(exc, cattrs.BaseValidationError | cattrs.ForbiddenExtraKeysError):
            details = "; ".join(cattrs.transform_error(exc, path="$"))
        else:
            details = str(exc)
        raise UsageError(f"saved filters file {str(path)!r}: {details}") from exc
    return {
        name: SavedFilter(name, e.expr, e.venues, e.symbols, e.updated_at)
        for name, e in parsed.filters.items()
    }


_Signature: TypeAlias = tuple[int, int, int] | None


class FileFilterStore:
    """Saved filters in a TOML file (see :func:`default_filters_path`).

    The file is a few hundred bytes in the user's config directory, so it is read and written
    on the spot rather than in a worker thread. Writes go to a temporary file in the same
    directory, flushed to disk, then renamed over the old one: a reader sees the old file or
    the new one, never half of one. (Two ``filters add`` running at the very same moment can
    still lose one of the two changes; the database store has no such limit.)
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"<FileFilterStore {self.path}>"

    @property
    def where(self) -> str:
        """The file's path."""
        return str(self.path)

    def _signature(self) -> _Signature:
        """``(inode, mtime_ns, size)`` of the file, ``None`` when it does not exist."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise UsageError(f"cannot read {str(self.path)!r}: {exc.strerror}") from exc
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _read(self) -> dict[str, SavedFilter]:
        """Every filter in the file (none if it does not exist); blocking but brief."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise UsageError(f"cannot read {str(self.path)!r}: {exc.strerror}") from exc
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UsageError(f"saved filters file {str(self.path)!r} is not UTF-8") from exc
        return _parse_toml(text, self.path)

    def _write(self, filters: Mapping[str, SavedFilter]) -> None:
        """Replace the file atomically with ``filters``; blocking but brief."""
        data = _toml_text(filters).encode("utf-8")
        folder = self.path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(dir=folder, prefix=f".{self.path.name}.", suffix=".tmp")
        except OSError as exc:
            raise UsageError(f"cannot write {str(self.path)!r}: {exc.strerror}") from exc
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, self.path)
        except OSError as exc:
            Path(temp).unlink(missing_ok=True)
            raise UsageError(f"cannot write {str(self.path)!r}: {exc.strerror}") from exc

    async def add(self, saved: SavedFilter) -> SaveResult:
        """Check and save ``saved``, replacing that name if taken."""
        await trio.lowlevel.checkpoint()
        saved = saved_filter(saved.name, saved.expr, saved.venues, saved.symbols)
        saved = attrs.evolve(saved, updated_at=_dt.datetime.now(_dt.UTC))
        filters = self._read()
        old = filters.get(saved.name)
        filters[saved.name] = saved
        self._write(filters)
        return SaveResult(saved, old)

    async def list(self) -> _Filters:
        """Every saved filter, by name."""
        await trio.lowlevel.checkpoint()
        filters = self._read()
        return [filters[name] for name in sorted(filters)]

    async def get(self, name: str) -> SavedFilter:
        """The filter called ``name``."""
        await trio.lowlevel.checkpoint()
        filters = self._read()
        if name not in filters:
            raise _unknown(name, filters, self.where)
        return filters[name]

    async def remove(self, name: str) -> SavedFilter:
        """Delete the filter called ``name`` and return it."""
        await trio.lowlevel.checkpoint()
        filters = self._read()
        if name not in filters:
            raise _unknown(name, filters, self.where)
        removed = filters.pop(name)
        self._write(filters)
        return removed

    async def find(self, names: Iterable[str]) -> dict[str, SavedFilter]:
        """The filters of those names that exist."""
        await trio.lowlevel.checkpoint()
        filters = self._read()
        return {n: filters[n] for n in names if n in filters}


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

    def active(self) -> _Filters:
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


# --------------------------------------------------------------------------- watching


def _ignore(message: str) -> None:
    pass


@attrs.define
class _Applier:
    """Brings a step in line with what the store says about some names."""

    step: SavedFilterStep
    warn: Callable[[str], None]
    where: str
    _rejected: dict[str, SavedFilter] = attrs.field(factory=dict)

    def __call__(self, changes: Mapping[str, SavedFilter | None]) -> None:
        for name, new in changes.items():
            if name in self.step.names:
                self._one(name, new)

    def snapshot(self, found: Mapping[str, SavedFilter]) -> None:
        self({name: found.get(name) for name in self.step.names})

    def _one(self, name: str, new: SavedFilter | None) -> None:
        current = self.step.current(name)
        if new is None:
            self._rejected.pop(name, None)
            if self.step.remove(name):
                self.warn(
                    f"saved filter {name!r} was removed from {self.where}: it no longer filters"
                )
            return
        if current is not None and current.same_rule(new):
            self._rejected.pop(name, None)
            return
        rejected = self._rejected.get(name)
        if rejected is not None and rejected.same_rule(new):
            return  # reported already
        try:
            self.step.replace(new)
        except IrisflowError as exc:
            self._rejected[name] = new
            reason = str(exc).splitlines()[0].removeprefix(f"saved filter {name!r}: ")
            kept = f"still filtering with {current.expr!r}" if current else "it stays off"
            self.warn(
                f"saved filter {name!r} in {self.where} now reads {new.expr!r}, "
                f"which cannot be used ({reason}); {kept}"
            )
            return
        self._rejected.pop(name, None)
        verb = "changed" if current is not None else "is back"
        self.warn(f"saved filter {name!r} {verb}: {new.expr} (applies to {new.scope()})")


async def watch_saved(
    store: FilterStore,
    step: SavedFilterStep,
    *,
    warn: Callable[[str], None] = _ignore,
    poll_interval: float = 0.5,
    resync_interval: float = 5.0,
    retry_interval: float = 2.0,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Keep ``step`` in line with ``store`` until cancelled (a :class:`Runner` service).

    It first re-reads the step's filters (a change made since the step was built counts),
    then reports started. Changes are applied between batches; every change, removal and
    refused change is told to ``warn`` (one line each).

    Args:
        store: A :class:`DatabaseFilterStore` or a :class:`FileFilterStore`.
        step: The step to keep up to date.
        warn: Where the messages go.
        poll_interval: Seconds between two looks at the file (file store).
        resync_interval: Seconds between two full re-reads over the LISTEN connection, for
            rows changed without a NOTIFY (database store).
        retry_interval: Seconds between two attempts to reach the database after losing it.
    """
    apply = _Applier(step, warn, store.where)
    if isinstance(store, DatabaseFilterStore):
        await _listen(store, apply, resync_interval, retry_interval, warn, task_status)
    elif isinstance(store, FileFilterStore):
        await _poll(store, apply, poll_interval, warn, task_status)
    else:
        raise TypeError(f"watch_saved cannot follow {store!r}")


async def _poll(
    store: FileFilterStore,
    apply: _Applier,
    interval: float,
    warn: Callable[[str], None],
    task_status: trio.TaskStatus[None],
) -> None:
    seen: object = ()  # equals no signature: the first look reads the file
    reported: str | None = None
    started = False
    while True:
        try:
            signature = store._signature()
            # An edit within the same mtime tick keeps the signature: re-read recent files.
            recent = signature is not None and time.time_ns() - signature[1] < 2_000_000_000
            if signature != seen or recent:
                apply.snapshot(store._read())
                seen, reported = signature, None
        except UsageError as exc:
            if str(exc) != reported:
                warn(f"{exc}; keeping the saved filters in force")
                reported = str(exc)
        if not started:
            task_status.started()
            started = True
        await trio.sleep(interval)


class _Listener:
    """A LISTEN connection used from worker threads, one call at a time.

    A cancelled call abandons its thread (so cancellation is prompt); the connection is then
    closed by that thread as soon as its call is done (each call waits at most a fraction of
    a second for notifications).
    """

    def __init__(self, store: DatabaseFilterStore) -> None:
        self.store = store
        self.conn: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()
        self._busy = False
        self._closed = False

    async def call(self, what: str, fn: Callable[[psycopg.Connection[Any]], _T]) -> _T:
        def work() -> _T:
            with self._lock:
                if self._closed:  # abandoned before this thread got going
                    raise DatabaseError("the saved-filter listener was closed")
                self._busy = True
            try:
                if self.conn is None:
                    self.conn = self.store._connect("irisflow-saved-filters")
                    self.store._translate(what, _listen_sql, self.conn)
                return self.store._translate(what, fn, self.conn)
            finally:
                with self._lock:
                    self._busy = False
                    if self._is_closed():
                        self._close_conn()

        try:
            return await trio.to_thread.run_sync(work, abandon_on_cancel=True)
        except BaseException:
            self.close()
            raise

    def _is_closed(self) -> bool:
        return self._closed

    def _close_conn(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def close(self) -> None:
        """Close now, or (if a thread is using the connection) as soon as it is done."""
        with self._lock:
            self._closed = True
            if not self._busy:
                self._close_conn()


def _listen_sql(conn: psycopg.Connection[Any]) -> None:
    conn.execute(f"LISTEN {CHANNEL}".encode())


def _wait(
    conn: psycopg.Connection[Any], names: tuple[str, ...], timeout: float
) -> dict[str, SavedFilter | None] | None:
    """In a thread: wait up to ``timeout`` s for notifications, then read what changed."""
    payloads = {n.payload for n in conn.notifies(timeout=timeout, stop_after=1)}
    if not payloads:
        return None
    payloads.update(n.payload for n in conn.notifies(timeout=0))
    wanted = names if "*" in payloads else tuple(n for n in names if n in payloads)
    if not wanted:
        return None
    found = _select(conn, wanted)
    return {name: found.get(name) for name in wanted}


async def _listen(
    store: DatabaseFilterStore,
    apply: _Applier,
    resync_interval: float,
    retry_interval: float,
    warn: Callable[[str], None],
    task_status: trio.TaskStatus[None],
) -> None:
    names = apply.step.names
    started = False
    lost: str | None = None
    while True:
        listener = _Listener(store)
        try:
            # LISTEN first, then read: a change committed in between is heard, not missed.
            read = functools.partial(_select, names=names)
            apply.snapshot(await listener.call("could not read the saved filters", read))
            if lost is not None:
                warn(f"saved filters: {store.where} is back; following changes again")
                lost = None
            if not started:
                task_status.started()
                started = True
            next_resync = trio.current_time() + resync_interval
            while True:
                timeout = max(0.0, min(0.25, next_resync - trio.current_time()))
                wait = functools.partial(_wait, names=names, timeout=timeout)
                changes = await listener.call("lost the saved-filter listener", wait)
                if changes:
                    apply(changes)
                if trio.current_time() >= next_resync:
                    apply.snapshot(await listener.call("could not re-read saved filters", read))
                    next_resync = trio.current_time() + resync_interval
        except IrisflowError as exc:
            if lost is None:
                warn(f"saved filters: {exc}; keeping the filters in force and retrying")
            lost = str(exc)
        finally:
            listener.close()
        if not started:
            task_status.started()
            started = True
        await trio.sleep(retry_interval)
