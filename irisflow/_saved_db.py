"""Saved filters in PostgreSQL: the ``irisflow.saved_filters`` table, announced with NOTIFY.

Every change runs in one transaction with its ``NOTIFY`` on :data:`CHANNEL`, so a listener
(``_saved_watch.py``) hears of it exactly when it is committed.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import psycopg
import psycopg.errors
import trio

from ._database import connect, raise_database_error, redact_dsn
from ._errors import UsageError
from ._saved_filter import Filters, SavedFilter, SaveResult, saved_filter, unknown_filter

__all__ = ["CHANNEL", "DatabaseFilterStore", "select_filters"]

CHANNEL = "irisflow_saved_filters"
"""The PostgreSQL NOTIFY channel; the payload is the filter's name, or ``*`` for all."""

_T = TypeVar("_T")

_COLUMNS = "name, expr, venues, symbols, updated_at"


def _from_row(row: Sequence[Any]) -> SavedFilter:
    venues = tuple(str(v) for v in row[2] or () if v is not None)
    symbols = tuple(str(s) for s in row[3] or () if s is not None)
    updated = row[4].astimezone(_dt.UTC) if isinstance(row[4], _dt.datetime) else None
    return SavedFilter(str(row[0]), str(row[1]), venues, symbols, updated)


def select_filters(conn: psycopg.Connection[Any], names: Iterable[str]) -> dict[str, SavedFilter]:
    """The stored filters among ``names``, by name (blocking; psycopg's errors go through)."""
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

    async def list(self) -> Filters:
        """Every saved filter, by name."""

        def work(conn: psycopg.Connection[Any]) -> Filters:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM irisflow.saved_filters ORDER BY name".encode()
            ).fetchall()
            return [_from_row(r) for r in rows]

        return await self._run("could not list the saved filters", work)

    async def get(self, name: str) -> SavedFilter:
        """The filter called ``name``."""

        def work(conn: psycopg.Connection[Any]) -> SavedFilter | list[str]:
            return select_filters(conn, [name]).get(name) or _all_names(conn)

        found = await self._run("could not read the saved filters", work)
        if isinstance(found, list):
            raise unknown_filter(name, found, self.where)
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
            raise unknown_filter(name, found, self.where)
        return found

    async def find(self, names: Iterable[str]) -> dict[str, SavedFilter]:
        """The filters of those names that exist."""
        wanted = list(names)
        return await self._run(
            "could not read the saved filters", lambda c: select_filters(c, wanted)
        )
