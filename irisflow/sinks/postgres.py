"""The PostgreSQL sink: event batches in, one idempotent row per event out.

One writer task owns one synchronous psycopg connection and runs every database call in a
worker thread (``trio.to_thread.run_sync``): psycopg's async API is asyncio-only. A reader
task takes batches from the channel into per-kind buffers; the writer flushes them when a
buffer holds ``batch_rows`` rows or its oldest row is ``flush_interval`` seconds old.

Every kind irisflow produces has a table and a natural key, so a file replayed twice is stored
once: market data, window and other pipeline results, chain events (``_pg_tables.py`` has the
mapping, and what a rewrite of a stored key does). Not alerts: ``irisflow.alerts`` is the
outbox of :class:`~irisflow.AlertSink` (one row per alert and chat), so the sink skips them.

How rows are written (measured, see ``benchmarks/db_sink.py``): a binary ``COPY`` straight into
the target table, in a savepoint: about 0.9x the speed of a hand-written ``COPY`` of ready-made
rows in the same wire format. When a row is already stored (a replayed file, a reconnect's
overlap) the unique index refuses the ``COPY``; that chunk, and the following ones until one
goes through without a duplicate, take the slower path: ``COPY`` into a temporary staging
table, then ``INSERT ... SELECT ... ON CONFLICT``. Kinds whose stored rows can change (candles,
pipeline results, chain events) always take that path and upsert. Times keep microseconds.

Reorgs and confirmations: a ``retraction`` marks the row it names ``removed`` (kept, so what
was seen stays visible), a ``confirmation`` marks it ``confirmed``, in stream order: the buffer
is cut into *epochs* at each run of such marks, and a chunk writes an epoch's rows, then its
marks only if it holds every row before them. So a retraction finds its row even in the same
batch, and an event that comes again after its retraction (its block is canonical again) is
unmarked.

Failure policy:

* The database is unreachable or drops the connection: the sink keeps reading, retries with
  capped exponential backoff, and keeps every row. When ``max_buffered_rows`` rows are waiting
  it stops reading from the channel, so the producers block (backpressure): nothing is lost
  while the process lives. :meth:`PostgresSink.statistics` shows the state.
* A DSN the server refuses for good at the first connection (wrong password or user, no such
  database, an invalid option such as ``port=99999``) makes :meth:`PostgresSink.run` raise a
  :class:`UsageError` before it reports started: retrying cannot help. Once connected, every
  failure is retried (a server being restored may refuse logins for a while).
* A row the database can never accept (a NUL byte in a text, a number out of range) is found
  by bisecting its chunk, dropped and counted as *rejected*; the rest is written. Bisecting
  costs a savepoint per attempt, so it is capped: after ``reject_limit`` rows of one kind
  rejected in a row (no row of that kind accepted in between), the table plainly does not fit
  those events (e.g. a schema older than this irisflow): the sink stops writing that kind,
  drops its events from then on (counted as skipped), names it in
  :attr:`PostgresSinkStatistics.disabled_kinds` and says why in ``last_error``. The other kinds
  go on; a restart (after ``irisflow migrate``) writes the kind again.
* An event kind with no table (and an alert) is skipped and counted.
* When the channel closes, what is buffered is flushed within ``shutdown_timeout`` seconds;
  rows still unwritten then make :meth:`PostgresSink.run` raise a :class:`DatabaseError`
  that says how many rows of which kind were lost. If ``run`` is cancelled instead, it flushes
  the same way, then lets the cancellation through; :meth:`PostgresSink.statistics` still
  shows ``rows_buffered``.
"""

from __future__ import annotations

import collections
import math
import random
import threading
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeVar

import attrs
import psycopg
import trio

from .._database import connect, pg_message, redact_dsn, scrub
from .._errors import DatabaseError, IrisflowError, UsageError
from .._events import Event
from ._pg_chain import MARK_KINDS, MARKS, Marks, apply_marks
from ._pg_copy import Table
from ._pg_tables import sink_tables

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
    """Of ``rows_written``, rows already stored (or superseded: see ``_pg_tables.py``)."""
    rows_buffered: int
    """Rows (and marks) waiting in memory to be written."""
    rows_rejected: int
    """Rows the database refused as invalid; dropped (see ``last_error``)."""
    events_skipped: int
    """Events of a kind that has no table, alerts (``AlertSink`` stores those), and events of a
    kind in ``disabled_kinds``; dropped."""
    retries: int
    """Failed connection or write attempts since the sink was made."""
    last_error: str | None
    """The latest error, password redacted; ``None`` if there was none."""
    backpressure: bool
    """True while the buffer is full and the sink has stopped reading its channel."""
    marks: int = 0
    """Retractions and confirmations applied (they mark stored rows, they add none)."""
    marks_unmatched: int = 0
    """Of ``marks``, those that named no stored row (its event was filtered out, rejected...)."""
    disabled_kinds: tuple[str, ...] = ()
    """Kinds the sink stopped writing after ``reject_limit`` of their rows were rejected in a
    row, e.g. ``('book_update',)`` (see ``last_error``)."""


# --------------------------------------------------------------------------- worker thread


@attrs.define
class _Outcome:
    """What one flush did, filled in by the worker thread (applied only if it committed)."""

    streaks: dict[str, int]
    """Per target: rows rejected in a row so far (a copy of the sink's, updated)."""
    written: int = 0
    duplicate: int = 0
    rejected: int = 0
    reject_error: str | None = None
    marks: int = 0
    unmatched: int = 0
    skipped: int = 0
    """Rows of disabled kinds dropped."""
    disabled: dict[str, str] = attrs.field(factory=dict)
    """Targets disabled by this flush: name -> kind."""


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


Target = Table | Marks
"""Where a buffered event goes: a table, or the marks (retractions and confirmations)."""
_Step = tuple["_Epoch", Target, list[Event]]
"""One part of a chunk: events of one epoch for one target, in arrival order."""


@attrs.define
class _Epoch:
    """Events between two runs of marks: rows per table (independent of each other, so
    written table by table), then the marks, which depend on every row before them."""

    rows: dict[str, list[Event]]
    marks: list[Event] = attrs.field(factory=list)

    def empty(self) -> bool:
        return not self.marks and not any(self.rows.values())


@attrs.define
class _Buffer:
    """Events waiting to be written, in epochs, each in arrival order."""

    names: tuple[str, ...]
    epochs: collections.deque[_Epoch] = attrs.field(init=False, factory=collections.deque)
    rows: int = 0
    """Events waiting (rows and marks)."""
    oldest: float = math.inf
    """Trio time at which the oldest waiting row arrived (``inf`` when empty)."""

    def new_epoch(self) -> _Epoch:
        epoch = _Epoch({name: [] for name in self.names})
        self.epochs.append(epoch)
        return epoch

    def __attrs_post_init__(self) -> None:
        self.new_epoch()

    def take(self, tables: dict[str, Table], limit: int) -> list[_Step]:
        """Up to ``limit`` rows from the oldest epochs on; an epoch's marks only with all of
        its rows (they come after them in the stream)."""
        out: list[_Step] = []
        for epoch in self.epochs:
            whole = True
            for name, events in epoch.rows.items():
                if not events:
                    continue
                if limit <= 0:
                    whole = False
                    break
                part = events[:limit]
                out.append((epoch, tables[name], part))
                limit -= len(part)
                whole = len(part) == len(events)
            if not whole:
                break
            if epoch.marks:
                out.append((epoch, MARKS, epoch.marks[:]))
                limit -= len(epoch.marks)
            if limit <= 0:
                break
        return out

    def drop(self, taken: list[_Step], now: float) -> None:
        for epoch, target, events in taken:
            waiting = epoch.marks if target is MARKS else epoch.rows[target.name]
            del waiting[: len(events)]
            self.rows -= len(events)
        while len(self.epochs) > 1 and self.epochs[0].empty():
            self.epochs.popleft()
        self.oldest = now if self.rows else math.inf

    def per_kind(self, tables: dict[str, Table]) -> dict[str, int]:
        """How many events of each kind wait (by table kind; marks by event kind)."""
        counts: collections.Counter[str] = collections.Counter()
        for epoch in self.epochs:
            for name, events in epoch.rows.items():
                counts[tables[name].kind] += len(events)
            counts.update(mark.kind for mark in epoch.marks)
        return {kind: n for kind, n in counts.items() if n}


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
        reject_limit: Rows of one kind rejected in a row after which the sink stops writing
            that kind (see the module docs). Each rejected row costs a few savepoints: 1000
            take about 1.3 s on a local server, where bisecting 20k bad rows took ~27 s.
        chain: The network of chain events, written to the ``chain`` column of the chain
            tables (events do not carry it: Alchemy frames do not say). Default ``''``: not
            said, one network per database.
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
        reject_limit: int = 1000,
        chain: str = "",
    ) -> None:
        if batch_rows < 1 or max_buffered_rows < batch_rows:
            raise UsageError(
                f"PostgresSink needs 1 <= batch_rows <= max_buffered_rows "
                f"(got batch_rows={batch_rows}, max_buffered_rows={max_buffered_rows})"
            )
        if reject_limit < 1:
            raise UsageError(f"PostgresSink needs reject_limit >= 1 (got {reject_limit})")
        self._dsn = dsn
        self._batch_rows = batch_rows
        self._flush_interval = flush_interval
        self._max_buffered = max_buffered_rows
        self._shutdown_timeout = shutdown_timeout
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._down_after = down_after
        self._connect_timeout = connect_timeout
        self._reject_limit = reject_limit
        self._chain = chain
        tables = sink_tables(chain)
        self._tables: dict[type[Any], Target] = tables | dict.fromkeys(MARK_KINDS, MARKS)
        self._by_name = {t.name: t for t in tables.values()}
        self._lookup: dict[type[Any], Target | None] = dict(self._tables)
        self._buffer = _Buffer(tuple(self._by_name))
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
        self._marks = 0
        self._unmatched = 0
        self._retries = 0
        self._last_error: str | None = None
        self._backpressure = False
        self._streaks: dict[str, int] = {}
        self._disabled: dict[str, str] = {}
        """Targets the sink stopped writing: name -> kind."""

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
            marks=self._marks,
            marks_unmatched=self._unmatched,
            disabled_kinds=tuple(self._disabled.values()),
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
            UsageError: the database is reachable but has no (or an outdated) irisflow
                schema, or the server refused the DSN for good (wrong password or user, no
                such database, an invalid option); checked at start, before reporting started.
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
            f"{kind}: {n}" for kind, n in self._buffer.per_kind(self._by_name).items()
        )
        return (
            f"PostgreSQL sink stopped with {self._buffer.rows} rows not written ({per_kind}) "
            f"after trying for {self._shutdown_timeout:g}s; last error: {self._last_error}"
        )

    # -- reading ----------------------------------------------------------------------

    async def _read_loop(self, batches: trio.abc.ReceiveChannel[Sequence[Event]]) -> None:
        lookup = self._lookup
        buffer = self._buffer
        async with batches:  # when the sink stops, senders see BrokenResourceError
            async for batch in batches:
                added = self._add(batch, lookup, buffer)
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
        self, batch: Sequence[Event], lookup: dict[type[Any], Target | None], buffer: _Buffer
    ) -> int:
        """File the events of ``batch`` under their tables; return how many were kept."""
        added = 0
        epoch = buffer.epochs[-1]
        rows = epoch.rows
        marked = bool(epoch.marks)
        for event in batch:
            try:
                table = lookup[type(event)]
            except KeyError:
                table = lookup[type(event)] = self._table_for(type(event))
            if table is None:
                self._skipped += 1
                continue
            if table is MARKS:
                epoch.marks.append(event)
                marked = True
            else:
                if marked:  # a row after marks: it must be written after them
                    epoch = buffer.new_epoch()
                    rows = epoch.rows
                    marked = False
                rows[table.name].append(event)
            added += 1
        return added

    def _table_for(self, cls: type[Any]) -> Target | None:
        """The table for a class not seen before: that of a kind it subclasses, if any."""
        for kind, table in self._tables.items():
            if isinstance(cls, type) and issubclass(cls, kind):
                return None if table.name in self._disabled else table
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
        self._skipped += outcome.skipped
        self._marks += outcome.marks
        self._unmatched += outcome.unmatched
        self._streaks = outcome.streaks
        if outcome.disabled:
            self._disabled.update(outcome.disabled)
            # New events of those kinds are dropped as they arrive, not buffered.
            for cls, target in self._lookup.items():
                if target is not None and target.name in self._disabled:
                    self._lookup[cls] = None
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
            # window_results.removed comes with the newest migration the sink needs (0013).
            row = conn.execute(
                "SELECT to_regclass('irisflow.trades'), (SELECT 1 FROM pg_attribute"
                " WHERE attrelid = to_regclass('irisflow.window_results')"
                " AND attname = 'removed' AND NOT attisdropped)"
            ).fetchone()
            if row is None or row[0] is None:
                raise UsageError(
                    f"database {redact_dsn(self._dsn)} has no irisflow schema: "
                    "run `irisflow migrate` first"
                )
            if row[1] is None:
                raise UsageError(
                    f"the irisflow schema in {redact_dsn(self._dsn)} is older than this "
                    "irisflow (it lacks migrations up to 0013_withdrawn_results): "
                    "run `irisflow migrate`"
                )
            with conn.transaction():
                for table in self._by_name.values():
                    conn.execute(table.stage_sql)
        except psycopg.Error as exc:
            self._raise(exc)

    def _raise(self, exc: psycopg.Error) -> None:
        message = f"PostgreSQL write failed: {scrub(pg_message(exc), self._dsn)}"
        raise DatabaseError(message) from None

    # -- in the worker thread -------------------------------------------------------------

    def _write_chunk(self, conn: psycopg.Connection[Any], taken: list[_Step]) -> _Outcome:
        outcome = _Outcome(dict(self._streaks))
        try:
            with conn.transaction():
                for _, target, events in taken:
                    self._write_isolating(conn, target, events, outcome)
        except psycopg.Error as exc:
            self._raise(exc)
        return outcome

    def _write_isolating(
        self, conn: psycopg.Connection[Any], target: Target, events: list[Event], out: _Outcome
    ) -> None:
        """Write ``events``; if some are invalid, bisect to drop exactly those (until
        ``reject_limit`` rows of the target were rejected in a row: then drop all of them)."""
        name = target.name
        if name in self._disabled or name in out.disabled:
            out.skipped += len(events)
            return
        try:
            with conn.transaction():
                if isinstance(target, Marks):
                    matched = apply_marks(conn, events, self._chain)
                else:
                    new = target.store(conn, events)
        except _DATA_ERRORS as exc:
            if len(events) == 1:
                out.rejected += 1
                detail = scrub(pg_message(exc), self._dsn)
                what = events[0].kind if isinstance(target, Marks) else target.kind
                out.reject_error = f"rejected a {what} row: {detail} ({events[0]!r})"
                streak = out.streaks[name] = out.streaks.get(name, 0) + 1
                if streak >= self._reject_limit:
                    kind, table = (
                        ("mark", "the chain tables")
                        if isinstance(target, Marks)
                        else (target.kind, f"irisflow.{name}")
                    )
                    out.disabled[name] = kind
                    out.reject_error = (
                        f"stopped writing {kind} rows: the last {streak} were all rejected, so "
                        f"{table} does not fit them; they are dropped until irisflow restarts "
                        "(check `irisflow migrate --status`, then restart). Last rejection: "
                        f"{detail} ({events[0]!r})"
                    )
                return
            mid = len(events) // 2
            self._write_isolating(conn, target, events[:mid], out)
            self._write_isolating(conn, target, events[mid:], out)
            return
        out.streaks.pop(name, None)
        if isinstance(target, Marks):
            out.marks += len(events)
            out.unmatched += len(events) - matched
        else:
            out.written += len(events)
            out.duplicate += len(events) - new
