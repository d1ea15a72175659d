"""The PostgreSQL sink: event batches in, one idempotent row per event out.

One writer task owns one synchronous psycopg connection and runs every database call in a
worker thread (``trio.to_thread.run_sync``): psycopg's async API is asyncio-only. A reader
task takes batches from the channel into per-kind buffers; the writer flushes them when a
buffer holds ``batch_rows`` rows or its oldest row is ``flush_interval`` seconds old.

How rows are written (measured, see ``benchmarks/db_sink.py``): a binary ``COPY`` straight
into the target table, in a savepoint. Live data almost never collides with stored rows, and
this runs at 0.8-0.9x the speed of a hand-written ``COPY`` of ready-made rows. When a row is
already stored (a replayed file, or the overlap after a reconnect whose last commit did get
through) the unique index refuses the ``COPY``; that chunk, and the following ones until one
goes through without a duplicate, take the slower path: ``COPY`` into a temporary staging
table, then ``INSERT ... SELECT ... ON CONFLICT DO NOTHING``. Candles always take the staging
path and upsert: the last update of an open bar wins, a closed bar is final. Either way a row
is never stored twice. Times are stored to the microsecond (PostgreSQL's precision).

Failure policy:

* The database is unreachable or drops the connection: the sink keeps reading, retries with
  capped exponential backoff, and keeps every row. When ``max_buffered_rows`` rows are waiting
  it stops reading from the channel, so the producers block (backpressure): nothing is lost
  while the process lives. :meth:`PostgresSink.statistics` shows the state.
* A row the database can never accept (a NUL byte in a text, a number out of range) is found
  by bisecting its chunk, dropped and counted as *rejected*; the rest is written.
* An event kind with no table is skipped and counted.
* When the channel closes, what is buffered is flushed within ``shutdown_timeout`` seconds;
  rows still unwritten then make :meth:`PostgresSink.run` raise a :class:`DatabaseError`
  that says how many rows of which kind were lost. If ``run`` is cancelled instead, it flushes
  the same way, then lets the cancellation through; :meth:`PostgresSink.statistics` still
  shows ``rows_buffered``.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeVar

import attrs
import psycopg
import psycopg.errors
import trio

from .._errors import DatabaseError, IrisflowError, UsageError
from .._events import Book, BookUpdate, Candle, Event, Gap, Quote, Ticker, Trade
from .._migrate import connect, pg_message, redact_dsn, scrub

__all__ = ["PostgresSink", "PostgresSinkStatistics"]

State = Literal["ok", "retrying", "down"]
_T = TypeVar("_T")

# Rows that can never be stored: the server's data/constraint errors, and what psycopg's
# dumpers raise client-side for a value of the wrong type or size.
_DATA_ERRORS = (psycopg.DataError, psycopg.IntegrityError, TypeError, ValueError, ArithmeticError)


@attrs.frozen
class PostgresSinkStatistics:
    """A snapshot of a :class:`PostgresSink`."""

    state: State
    """``ok``: the last write (or connection) succeeded. ``retrying``: it failed and the sink
    is retrying. ``down``: ``down_after`` attempts in a row have failed."""
    rows_written: int
    """Rows committed, counting those the database already had (see ``rows_duplicate``)."""
    rows_duplicate: int
    """Of ``rows_written``, rows already stored (or, for candles, superseded) before."""
    rows_buffered: int
    """Rows waiting in memory to be written."""
    rows_rejected: int
    """Rows the database refused as invalid; dropped (see ``last_error``)."""
    events_skipped: int
    """Events of a kind that has no table; dropped."""
    retries: int
    """Failed connection or write attempts since the sink was made."""
    last_error: str | None
    """The latest error, password redacted; ``None`` if there was none."""
    backpressure: bool
    """True while the buffer is full and the sink has stopped reading its channel."""


# --------------------------------------------------------------------------- tables

# Times go to PostgreSQL as binary ``timestamptz``, whose wire format is an int8 of
# microseconds since 2000-01-01 UTC. So each row function turns irisflow's ns since 1970 into
# that number and COPY sends it with psycopg's C int8 dumper: no ``datetime`` per value (this
# made the sink ~10% faster than building datetimes, see benchmarks/db_sink.py).
# Sub-microsecond digits are dropped: PostgreSQL keeps microseconds.
_PG_EPOCH_NS = 946_684_800_000_000_000
TS = "int8"
"""The COPY type for a ``timestamptz`` column fed by :func:`pg_time`."""


def pg_time(ns: int) -> int:
    """An irisflow time (ns since 1970) as PostgreSQL's binary timestamptz (us since 2000)."""
    return (ns - _PG_EPOCH_NS) // 1000


def _levels(levels: Sequence[tuple[Any, Any]]) -> tuple[list[Any], list[Any]]:
    return [p for p, _ in levels], [q for _, q in levels]


def _trade_row(e: Trade, k: int = _PG_EPOCH_NS) -> tuple[Any, ...]:
    return (
        e.venue, e.symbol, (e.ts - k) // 1000, (e.recv_ts - k) // 1000,
        e.price, e.qty, e.side, e.trade_id,
    )  # fmt: skip


def _quote_row(e: Quote, k: int = _PG_EPOCH_NS) -> tuple[Any, ...]:
    return (
        e.venue, e.symbol, (e.ts - k) // 1000, (e.recv_ts - k) // 1000,
        e.bid_price, e.bid_qty, e.ask_price, e.ask_qty, e.update_id,
    )  # fmt: skip


def _candle_row(e: Candle) -> tuple[Any, ...]:
    return (
        e.venue, e.symbol, pg_time(e.ts), pg_time(e.recv_ts),
        e.interval, pg_time(e.start), pg_time(e.end),
        e.open, e.high, e.low, e.close, e.volume, e.quote_volume, e.trades, e.closed,
    )  # fmt: skip


def _ticker_row(e: Ticker) -> tuple[Any, ...]:
    return (
        e.venue, e.symbol, pg_time(e.ts), pg_time(e.recv_ts),
        e.window, e.last, e.open, e.high, e.low, e.volume, e.quote_volume,
        e.change, e.change_pct, e.vwap, e.bid_price, e.bid_qty, e.ask_price, e.ask_qty, e.trades,
    )  # fmt: skip


def _book_row(e: Book) -> tuple[Any, ...]:
    bp, bq = _levels(e.bids)
    ap, aq = _levels(e.asks)
    return (e.venue, e.symbol, pg_time(e.ts), pg_time(e.recv_ts), e.update_id, bp, bq, ap, aq)


def _book_update_row(e: BookUpdate) -> tuple[Any, ...]:
    bp, bq = _levels(e.bids)
    ap, aq = _levels(e.asks)
    return (
        e.venue, e.symbol, pg_time(e.ts), pg_time(e.recv_ts),
        e.first_update_id, e.last_update_id, bp, bq, ap, aq,
    )  # fmt: skip


def _gap_row(e: Gap) -> tuple[Any, ...]:
    return (
        e.venue, e.symbol, pg_time(e.ts), pg_time(e.recv_ts),
        pg_time(e.start), pg_time(e.end), list(e.streams), e.cause,
    )  # fmt: skip


@attrs.define
class _Table:
    """How one event kind maps onto one table."""

    kind: str
    name: str
    columns: tuple[str, ...]
    """Column names, in the order the row function returns values."""
    types: tuple[str, ...]
    """COPY types of the values (``TS`` for time columns)."""
    row: Callable[[Any], tuple[Any, ...]]
    upsert_key: tuple[str, ...] = ()
    """For upserting kinds, the conflict target; empty: insert unless already stored."""
    upsert_where: str = ""
    order: str = ""
    use_staging: bool = False
    """Mutable hint: take the staging path until a chunk goes through with no duplicate."""

    def __attrs_post_init__(self) -> None:
        if len(self.columns) != len(self.types):
            raise ValueError(
                f"table {self.name}: {len(self.columns)} columns, {len(self.types)} types"
            )

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
        sets = ", ".join(f"{c} = excluded.{c}" for c in self.columns if c not in self.upsert_key)
        return (
            f"INSERT INTO irisflow.{self.name} ({cols}) "
            f"SELECT DISTINCT ON ({key}) {cols} FROM {self.stage} ORDER BY {key}, {self.order} "
            f"ON CONFLICT ({key}) DO UPDATE SET {sets} WHERE {self.upsert_where}"
        ).encode()


_HEAD = ("venue", "symbol", "ts", "recv_ts")
_HEAD_T = ("text", "text", TS, TS)
_NUM = "numeric"
_NUMS = "numeric[]"

TABLES: dict[type[Event], _Table] = {
    Trade: _Table(
        "trade",
        "trades",
        (*_HEAD, "price", "qty", "side", "trade_id"),
        (*_HEAD_T, _NUM, _NUM, "text", "int8"),
        _trade_row,
    ),
    Quote: _Table(
        "quote",
        "quotes",
        (*_HEAD, "bid_price", "bid_qty", "ask_price", "ask_qty", "update_id"),
        (*_HEAD_T, _NUM, _NUM, _NUM, _NUM, "int8"),
        _quote_row,
    ),
    Candle: _Table(
        "candle",
        "candles",
        (
            *_HEAD,
            "interval",
            "start_ts",
            "end_ts",
            "open",
            "high",
            "low",
            "close",
            "volume",
            "quote_volume",
            "trades",
            "closed",
        ),
        (*_HEAD_T, "text", TS, TS, _NUM, _NUM, _NUM, _NUM, _NUM, _NUM, "int8", "bool"),
        _candle_row,
        upsert_key=("venue", "symbol", "interval", "start_ts"),
        # Within a chunk: a closed bar beats an open one, then the latest update wins.
        order="closed DESC, ts DESC, recv_ts DESC",
        # Against the table: a closed bar is final; an open one yields to anything newer.
        upsert_where="NOT irisflow.candles.closed"
        " AND (excluded.closed OR excluded.ts >= irisflow.candles.ts)",
    ),
    Ticker: _Table(
        "ticker",
        "tickers",
        (
            *_HEAD,
            "window_len",
            "last",
            "open",
            "high",
            "low",
            "volume",
            "quote_volume",
            "change",
            "change_pct",
            "vwap",
            "bid_price",
            "bid_qty",
            "ask_price",
            "ask_qty",
            "trades",
        ),
        (*_HEAD_T, "text", *[_NUM] * 13, "int8"),
        _ticker_row,
    ),
    Book: _Table(
        "book",
        "books",
        (*_HEAD, "update_id", "bid_prices", "bid_qtys", "ask_prices", "ask_qtys"),
        (*_HEAD_T, "int8", _NUMS, _NUMS, _NUMS, _NUMS),
        _book_row,
    ),
    BookUpdate: _Table(
        "book_update",
        "book_updates",
        (
            *_HEAD,
            "first_update_id",
            "last_update_id",
            "bid_prices",
            "bid_qtys",
            "ask_prices",
            "ask_qtys",
        ),
        (*_HEAD_T, "int8", "int8", _NUMS, _NUMS, _NUMS, _NUMS),
        _book_update_row,
    ),
    Gap: _Table(
        "gap",
        "gaps",
        (*_HEAD, "start_ts", "end_ts", "streams", "cause"),
        (*_HEAD_T, TS, TS, "text[]", "text"),
        _gap_row,
    ),
}
"""Which table each event class goes to (the sink works on its own copies)."""


# --------------------------------------------------------------------------- worker thread


@attrs.define
class _Outcome:
    """What one flush did, filled in by the worker thread."""

    written: int = 0
    duplicate: int = 0
    rejected: int = 0
    reject_error: str | None = None


class _Connection:
    """One psycopg connection used from worker threads, one call at a time.

    If the Trio side is cancelled while a call runs, the thread is abandoned (so shutdown
    deadlines hold) and the connection is closed as soon as that thread is done with it.
    """

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self._lock = threading.Lock()
        self._busy = False
        self.discarded = False

    async def call(self, fn: Callable[[psycopg.Connection[Any]], _T]) -> _T:
        def work() -> _T:
            with self._lock:
                if self.discarded:  # cancelled before this thread got going
                    raise DatabaseError("connection discarded")
                self._busy = True
            try:
                return fn(self.conn)
            finally:
                with self._lock:
                    self._busy = False
                    if self._discarded_meanwhile():
                        self.conn.close()

        try:
            return await trio.to_thread.run_sync(work, abandon_on_cancel=True)
        except BaseException:
            self.discard()
            raise

    def _discarded_meanwhile(self) -> bool:
        return self.discarded  # (a call, not an attribute: mypy would narrow the attribute)

    def discard(self) -> None:
        """Close now, or (if a thread still uses the connection) when that thread is done."""
        with self._lock:
            self.discarded = True
            if not self._busy:
                self.conn.close()


# --------------------------------------------------------------------------- the sink


@attrs.define
class _Buffer:
    """Events waiting to be written, per table, in arrival order."""

    by_table: dict[str, list[Event]] = attrs.field(factory=dict)
    rows: int = 0
    oldest: float = math.inf
    """Trio time at which the oldest waiting row arrived (``inf`` when empty)."""

    def take(self, tables: dict[str, _Table], limit: int) -> list[tuple[_Table, list[Event]]]:
        out: list[tuple[_Table, list[Event]]] = []
        for name, events in self.by_table.items():
            if limit <= 0:
                break
            if events:
                part = events[:limit]
                out.append((tables[name], part))
                limit -= len(part)
        return out

    def drop(self, taken: list[tuple[_Table, list[Event]]], now: float) -> None:
        for table, events in taken:
            del self.by_table[table.name][: len(events)]
            self.rows -= len(events)
        self.oldest = now if self.rows else math.inf


class PostgresSink:
    """Write event batches to the ``irisflow`` schema (see the module docs for the policy).

    Args:
        dsn: The database (libpq URL or key/value string). It must be migrated.
        batch_rows: Flush as soon as this many rows wait; also the most rows per transaction.
        flush_interval: Flush rows that have waited this long (seconds) even if fewer.
        max_buffered_rows: Stop reading the channel while this many rows wait (the buffer can
            exceed it by at most one batch).
        shutdown_timeout: Seconds allowed for the last flush when the sink stops.
        backoff_initial: First retry delay (seconds); doubled per failure...
        backoff_max: ...up to this.
        down_after: Consecutive failures after which the state is ``down`` (else ``retrying``).
        connect_timeout: libpq ``connect_timeout`` (seconds), unless the DSN sets it.
    """

    def __init__(
        self,
        dsn: str,
        *,
        batch_rows: int = 20_000,
        flush_interval: float = 0.5,
        max_buffered_rows: int = 200_000,
        shutdown_timeout: float = 10.0,
        backoff_initial: float = 0.1,
        backoff_max: float = 10.0,
        down_after: int = 3,
        connect_timeout: int = 5,
    ) -> None:
        if batch_rows < 1 or max_buffered_rows < batch_rows:
            raise UsageError(
                f"PostgresSink needs 1 <= batch_rows <= max_buffered_rows "
                f"(got batch_rows={batch_rows}, max_buffered_rows={max_buffered_rows})"
            )
        self._dsn = dsn
        self._batch_rows = batch_rows
        self._flush_interval = flush_interval
        self._max_buffered = max_buffered_rows
        self._shutdown_timeout = shutdown_timeout
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._down_after = down_after
        self._connect_timeout = connect_timeout
        self._tables = {cls: attrs.evolve(t) for cls, t in TABLES.items()}
        self._by_name = {t.name: t for t in self._tables.values()}
        self._lookup: dict[type[Any], _Table | None] = dict(self._tables)
        self._buffer = _Buffer(by_table={t.name: [] for t in self._tables.values()})
        self._conn: _Connection | None = None
        self._wake = trio.lowlevel.ParkingLot()
        self._room = trio.lowlevel.ParkingLot()
        self._closing = False
        self._running = False
        self._failures = 0
        self._state: State = "ok"
        self._written = 0
        self._duplicate = 0
        self._rejected = 0
        self._skipped = 0
        self._retries = 0
        self._last_error: str | None = None
        self._backpressure = False

    def __repr__(self) -> str:
        return f"<PostgresSink {redact_dsn(self._dsn)} state={self._state}>"

    def statistics(self) -> PostgresSinkStatistics:
        """A snapshot of the sink's counters and state."""
        return PostgresSinkStatistics(
            state=self._state,
            rows_written=self._written,
            rows_duplicate=self._duplicate,
            rows_buffered=self._buffer.rows,
            rows_rejected=self._rejected,
            events_skipped=self._skipped,
            retries=self._retries,
            last_error=self._last_error,
            backpressure=self._backpressure,
        )

    async def run(
        self,
        batches: trio.abc.ReceiveChannel[Sequence[Event]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Write every batch from ``batches`` until it closes, then flush and return.

        Start it with ``nursery.start``: it reports started after its first connection
        attempt. If the database is unreachable then, it starts anyway (state ``retrying``)
        and keeps the rows until the database is back.

        Raises:
            UsageError: the database is reachable but has no irisflow schema (checked at
                start, before reporting started).
            DatabaseError: after the channel closed, rows could still not be written within
                ``shutdown_timeout``; the message counts them per kind.
        """
        if self._running:
            raise RuntimeError("PostgresSink.run is already running")
        self._running = True
        self._closing = False
        try:
            try:
                await self._reconnect()
            except UsageError:
                raise
            except IrisflowError as exc:
                self._failed(exc)
            task_status.started()
            try:
                try:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._write_loop)
                        await self._read_loop(batches)
                        self._closing = True
                        self._wake.unpark_all()
                except BaseExceptionGroup as group:
                    # Only a bug gets here; show it as itself, not as a group of one.
                    if len(group.exceptions) == 1:
                        raise group.exceptions[0] from None
                    raise
            finally:
                self._closing = True
                with trio.move_on_after(self._shutdown_timeout, shield=True):
                    while self._buffer.rows:
                        await self._flush(interruptible=False)
                if self._conn is not None:
                    self._conn.discard()
                    self._conn = None
        finally:
            self._running = False
        if self._buffer.rows:
            raise DatabaseError(self._unwritten_summary())

    def _unwritten_summary(self) -> str:
        per_kind = ", ".join(
            f"{self._by_name[name].kind}: {len(events)}"
            for name, events in self._buffer.by_table.items()
            if events
        )
        return (
            f"PostgreSQL sink stopped with {self._buffer.rows} rows not written ({per_kind}) "
            f"after trying for {self._shutdown_timeout:g}s; last error: {self._last_error}"
        )

    # -- reading ----------------------------------------------------------------------

    async def _read_loop(self, batches: trio.abc.ReceiveChannel[Sequence[Event]]) -> None:
        lookup = self._lookup
        buffer = self._buffer
        by_table = buffer.by_table
        async with batches:  # when the sink stops, senders see BrokenResourceError
            async for batch in batches:
                added = self._add(batch, lookup, by_table)
                if added:
                    if not buffer.rows:
                        buffer.oldest = trio.current_time()
                    buffer.rows += added
                    # Wake the writer to start the flush timer, or to flush a full batch.
                    if buffer.rows == added or buffer.rows >= self._batch_rows:
                        self._wake.unpark_all()
                while buffer.rows >= self._max_buffered:
                    self._backpressure = True
                    await self._room.park()
                self._backpressure = False

    def _add(
        self,
        batch: Sequence[Event],
        lookup: dict[type[Any], _Table | None],
        by_table: dict[str, list[Event]],
    ) -> int:
        """File the events of ``batch`` under their tables; return how many were kept."""
        added = 0
        for event in batch:
            try:
                table = lookup[type(event)]
            except KeyError:
                table = lookup[type(event)] = self._table_for(type(event))
            if table is None:
                self._skipped += 1
                continue
            by_table[table.name].append(event)
            added += 1
        return added

    def _table_for(self, cls: type[Any]) -> _Table | None:
        """The table for a class not seen before: that of a kind it subclasses, if any."""
        for kind, table in self._tables.items():
            if isinstance(cls, type) and issubclass(cls, kind):
                return table
        return None

    # -- writing ----------------------------------------------------------------------

    async def _write_loop(self) -> None:
        buffer = self._buffer
        while not self._closing:
            if buffer.rows < self._batch_rows:
                deadline = buffer.oldest + self._flush_interval
                if trio.current_time() < deadline:
                    with trio.move_on_at(deadline):
                        await self._wake.park()
                    continue
            await self._flush(interruptible=True)

    async def _flush(self, *, interruptible: bool) -> None:
        """Write one chunk; on failure record it and wait out the backoff."""
        try:
            if self._conn is None or self._conn.discarded:
                await self._reconnect()
            assert self._conn is not None
            taken = self._buffer.take(self._by_name, self._batch_rows)
            outcome = await self._conn.call(lambda conn: self._write_chunk(conn, taken))
        except IrisflowError as exc:
            self._failed(exc)
            delay = min(self._backoff_max, self._backoff_initial * 2 ** (self._failures - 1))
            delay *= random.uniform(0.5, 1.0)  # spread out the retries of many processes
            if interruptible:
                with trio.move_on_after(delay):
                    await self._wake_on_close()
            else:
                await trio.sleep(delay)
            return
        self._buffer.drop(taken, trio.current_time())
        self._room.unpark_all()
        self._written += outcome.written
        self._duplicate += outcome.duplicate
        self._rejected += outcome.rejected
        if outcome.reject_error is not None:
            self._last_error = outcome.reject_error
        self._failures = 0
        self._state = "ok"

    async def _wake_on_close(self) -> None:
        while not self._closing:
            await self._wake.park()

    def _failed(self, exc: IrisflowError) -> None:
        if self._conn is not None:
            self._conn.discard()
            self._conn = None
        self._failures += 1
        self._retries += 1
        self._state = "down" if self._failures >= self._down_after else "retrying"
        self._last_error = str(exc)

    async def _reconnect(self) -> None:
        def open_() -> psycopg.Connection[Any]:
            conn = connect(
                self._dsn,
                application_name="irisflow-sink",
                connect_timeout=self._connect_timeout,
                # Bound how long a write can hang on a dead network, so threads end.
                keepalives=1,
                keepalives_idle=10,
                keepalives_interval=5,
                keepalives_count=3,
                tcp_user_timeout=30_000,
            )
            try:
                self._prepare(conn)
            except BaseException:
                conn.close()
                raise
            return conn

        result: list[psycopg.Connection[Any]] = []
        lock = threading.Lock()
        abandoned = False

        def work() -> None:
            conn = open_()
            with lock:
                if abandoned:
                    conn.close()
                else:
                    result.append(conn)

        try:
            await trio.to_thread.run_sync(work, abandon_on_cancel=True)
        except BaseException:
            with lock:
                abandoned = True
                for conn in result:
                    conn.close()
            raise
        self._conn = _Connection(result[0])

    def _prepare(self, conn: psycopg.Connection[Any]) -> None:
        """Check the schema and create the staging tables."""
        try:
            row = conn.execute("SELECT to_regclass('irisflow.trades')").fetchone()
            if row is None or row[0] is None:
                raise UsageError(
                    f"database {redact_dsn(self._dsn)} has no irisflow schema: "
                    "run `irisflow db migrate` first"
                )
            with conn.transaction():
                for table in self._tables.values():
                    conn.execute(table.stage_sql)
        except psycopg.Error as exc:
            self._raise(exc)

    def _raise(self, exc: psycopg.Error) -> None:
        message = f"PostgreSQL write failed: {scrub(pg_message(exc), self._dsn)}"
        raise DatabaseError(message) from None

    # -- in the worker thread -------------------------------------------------------------

    def _write_chunk(
        self, conn: psycopg.Connection[Any], taken: list[tuple[_Table, list[Event]]]
    ) -> _Outcome:
        outcome = _Outcome()
        try:
            with conn.transaction():
                for table, events in taken:
                    self._write_isolating(conn, table, events, outcome)
        except psycopg.Error as exc:
            self._raise(exc)
        return outcome

    def _write_isolating(
        self, conn: psycopg.Connection[Any], table: _Table, events: list[Event], out: _Outcome
    ) -> None:
        """Write ``events``; if some are invalid, bisect to drop exactly those."""
        try:
            with conn.transaction():
                new = self._store(conn, table, events)
        except _DATA_ERRORS as exc:
            if len(events) == 1:
                out.rejected += 1
                detail = scrub(pg_message(exc), self._dsn)
                out.reject_error = f"rejected a {table.kind} row: {detail} ({events[0]!r})"
                return
            mid = len(events) // 2
            self._write_isolating(conn, table, events[:mid], out)
            self._write_isolating(conn, table, events[mid:], out)
            return
        out.written += len(events)
        out.duplicate += len(events) - new

    def _store(self, conn: psycopg.Connection[Any], table: _Table, events: list[Event]) -> int:
        """Write ``events`` to ``table``; return how many rows were new (or updated)."""
        if not table.upsert_key and not table.use_staging:
            try:
                with conn.transaction():
                    self._copy(conn, table.copy_sql, table, events)
                return len(events)
            except psycopg.errors.UniqueViolation:
                table.use_staging = True
        self._copy(conn, table.stage_copy_sql, table, events)
        cur = conn.execute(table.merge_sql)
        new = max(cur.rowcount, 0)
        # Empty the stage now: a later chunk in this transaction must not see these rows.
        conn.execute(f"DELETE FROM {table.stage}".encode())
        if new == len(events):
            table.use_staging = False
        return new

    @staticmethod
    def _copy(
        conn: psycopg.Connection[Any], statement: bytes, table: _Table, events: list[Event]
    ) -> None:
        row = table.row
        with conn.cursor() as cur, cur.copy(statement) as copy:
            copy.set_types(list(table.types))
            for event in events:
                copy.write_row(row(event))
