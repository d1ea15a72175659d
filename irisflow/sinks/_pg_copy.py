"""A PostgreSQL table of the sink, and how a chunk of its rows goes in: COPY, stage, merge.

:class:`Table` knows one table's columns, their COPY types and its natural key; it writes a
chunk with a binary ``COPY`` straight in, or (after a duplicate, and always to upsert) through
a temporary staging table and ``INSERT ... ON CONFLICT``. :func:`make_table` builds one from a
column spec. The per-kind tables are in ``_pg_tables.py`` (market data, and the map of every
kind), ``_pg_results.py`` (pipeline results) and ``_pg_chain.py`` (chain events and marks).

Times go to PostgreSQL as binary ``timestamptz``: an int8 of microseconds since 2000-01-01
UTC, which each row function computes from irisflow's ns since 1970 (no ``datetime`` per
value: ~10% faster, see benchmarks/db_sink.py). Sub-microsecond digits are dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs
import psycopg
import psycopg.errors

__all__ = ["PG_EPOCH_NS", "TS", "Table", "make_table", "pg_time"]

PG_EPOCH_NS = 946_684_800_000_000_000
TS = "int8"
"""The COPY type for a ``timestamptz`` column fed by :func:`pg_time`."""


def pg_time(ns: int) -> int:
    """An irisflow time (ns since 1970) as PostgreSQL's binary timestamptz (us since 2000)."""
    return (ns - PG_EPOCH_NS) // 1000


@attrs.define
class Table:
    """How one event kind (or several) maps onto one table."""

    kind: str
    """What its rows are, for messages: ``trade``, ``window result``..."""
    name: str
    columns: tuple[str, ...]
    """Column names, in the order the row function returns values."""
    types: tuple[str, ...]
    """COPY types of the values (``TS`` for time columns)."""
    row: Callable[..., tuple[Any, ...]]
    """The row of an event; chain tables take the sink's ``chain`` as a keyword too."""
    upsert_key: tuple[str, ...] = ()
    """For upserting kinds, the conflict target; empty: insert unless already stored."""
    upsert_set: str = ""
    """The ``SET`` of an upsert; empty: every column outside the key from the new row."""
    upsert_where: str = ""
    order: str = ""
    """Which row of a key wins within one chunk (``ORDER BY`` after the key)."""
    chain: bool = False
    """The row function takes ``chain=``."""
    use_staging: bool = False
    """Mutable hint: take the staging path until a chunk goes through with no duplicate."""

    def store(self, conn: psycopg.Connection[Any], events: Sequence[Any]) -> int:
        """Write ``events``; return how many rows were new (or changed a stored row).

        ``COPY`` straight in while no row is already stored; after a duplicate (and always to
        upsert) ``COPY`` to the staging table, then merge. psycopg's errors go through.
        """
        if not self.upsert_key and not self.use_staging:
            try:
                with conn.transaction():
                    self._copy(conn, self.copy_sql, events)
                return len(events)
            except psycopg.errors.UniqueViolation:
                self.use_staging = True
        self._copy(conn, self.stage_copy_sql, events)
        new = max(conn.execute(self.merge_sql).rowcount, 0)
        # Empty the stage now: a later chunk in this transaction must not see these rows.
        conn.execute(f"DELETE FROM {self.stage}".encode())
        if new == len(events):
            self.use_staging = False
        return new

    def _copy(self, conn: psycopg.Connection[Any], statement: bytes, events: Sequence[Any]) -> None:
        row = self.row
        with conn.cursor() as cur, cur.copy(statement) as copy:
            copy.set_types(list(self.types))
            for event in events:
                copy.write_row(row(event))

    @property
    def copy_sql(self) -> bytes:
        cols = ", ".join(self.columns)
        return f"COPY irisflow.{self.name} ({cols}) FROM STDIN (FORMAT BINARY)".encode()

    @property
    def stage(self) -> str:
        return f"irisflow_stage_{self.name}"

    @property
    def stage_sql(self) -> bytes:
        return (
            f"CREATE TEMP TABLE IF NOT EXISTS {self.stage} "
            f"(LIKE irisflow.{self.name}) ON COMMIT DELETE ROWS"
        ).encode()

    @property
    def stage_copy_sql(self) -> bytes:
        return f"COPY {self.stage} ({', '.join(self.columns)}) FROM STDIN (FORMAT BINARY)".encode()

    @property
    def merge_sql(self) -> bytes:
        cols = ", ".join(self.columns)
        if not self.upsert_key:
            return (
                f"INSERT INTO irisflow.{self.name} ({cols}) SELECT {cols} FROM {self.stage} "
                "ON CONFLICT DO NOTHING"
            ).encode()
        key = ", ".join(self.upsert_key)
        sets = self.upsert_set or ", ".join(
            f"{c} = excluded.{c}" for c in self.columns if c not in self.upsert_key
        )
        return (
            f"INSERT INTO irisflow.{self.name} ({cols}) "
            f"SELECT DISTINCT ON ({key}) {cols} FROM {self.stage} ORDER BY {key}, {self.order} "
            f"ON CONFLICT ({key}) DO UPDATE SET {sets} WHERE {self.upsert_where}"
        ).encode()


_TYPES = {"ts": TS, "num": "numeric", "nums": "numeric[]"}


def make_table(kind: str, name: str, row: Any, spec: str, **options: Any) -> Table:
    """A :class:`Table`; ``spec`` lists its columns, ``name:type`` (``text`` if no type; ``ts``
    is a timestamptz fed by :func:`pg_time`, ``num``/``nums`` numeric and numeric[])."""
    pairs = [(item + ":text").split(":")[:2] for item in spec.split()]
    columns = tuple(c for c, _ in pairs)
    return Table(kind, name, columns, tuple(_TYPES.get(t, t) for _, t in pairs), row, **options)
