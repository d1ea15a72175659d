"""The alert outbox in PostgreSQL: the ``irisflow.alerts`` table as an :class:`Outbox`.

One row per alert and chat. ``id`` is ``"<alert key>|<chat>"`` (a chat id never holds a
``|``), so the primary key makes :meth:`PostgresOutbox.add` idempotent across retries,
restarts and processes. The ordinary columns (rule, severity, venue, symbol, text, fired_at,
sent_at) describe the alert for anyone querying the table; ``payload`` keeps what the outbox
needs::

    {"outbox": "default", "chat": "42", "key": "<alert key>", "state": "pending",
     "seq": 1767225600123456, "run": "<uuid>", "alert": {...the Alert...},
     "message_id": 17, "reason": "..."}

``state`` is ``pending`` until the sink ticks the row off as ``sent`` (``sent_at`` is then
set too) or ``failed`` (with a ``reason``). Alerts stored without a Telegram delivery (only a
database configured) get one row with an empty chat and state ``stored``.

One connection, used from worker threads (``trio.to_thread.run_sync``) one call at a time. One
process at a time may use an outbox name: it holds a PostgreSQL advisory lock on it.

Failure policy (like :class:`~irisflow.sinks.postgres.PostgresSink`):

* A DSN the server refuses for good at the first connection (wrong password or user, no such
  database, an invalid option), an unmigrated database or an outbox name in use: opening raises
  :class:`~irisflow.UsageError` at once.
* PostgreSQL unreachable (at the start or later): nothing is lost while the process lives.
  Writes (alerts to record, delivered and failed marks) wait in memory, in order, and a writer
  task retries them with capped exponential backoff (``backoff`` doubling up to
  ``backoff_max``); meanwhile ``add`` answers from what this process has seen, so alerts keep
  flowing to Telegram. An alert that an *earlier* run recorded may then be sent once more (the
  database, which would have said so, was away); the writer logs how many when it catches up.
  When ``max_buffered`` writes wait, calls block (backpressure). :meth:`pending` reads the
  database, or, while it is away, returns what waits in memory (alerts an earlier run left
  pending stay in the table for the next start). :meth:`PostgresOutbox.statistics` shows the
  state.
* A write PostgreSQL refuses as invalid (e.g. a NUL byte in a text): raised as
  :class:`~irisflow.DatabaseError` when written at once; when it waited in memory, it is dropped,
  logged and counted (``rejected``) so it cannot block the writes behind it.
* Closing (leaving :func:`open_postgres_outbox`) writes what waits within ``shutdown_timeout``
  seconds; what is still not recorded then is reported by a :class:`~irisflow.DatabaseError`
  that counts it (after a clean exit; after an error or a cancellation it is only logged, and
  the error goes on). An ``add`` whose reply was lost with the connection is recognised by the
  run id it wrote, so it is neither lost nor reported twice.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Literal, TypeVar

import attrs
import cattrs
import orjson
import psycopg
import trio

from ._alert import Alert
from ._database import connect, pg_message, raise_database_error, redact_dsn, scrub
from ._errors import DatabaseError, IrisflowError, UsageError
from ._events import to_datetime
from ._groups import raise_lone
from ._outbox import OutboxItem, make_converter

__all__ = ["PostgresOutbox", "PostgresOutboxStatistics", "open_postgres_outbox"]

_LOGGER = logging.getLogger("irisflow.telegram")
_CONVERTER = make_converter()
_T = TypeVar("_T")

State = Literal["ok", "retrying", "down"]
WriteKind = Literal["alert", "sent", "failed"]

# The connection (or the server) went away: retried. Opening again can also fail with our
# own errors: the server still holds our old session's name lock, a restore dropped the table.
_LOST = (psycopg.OperationalError, psycopg.InterfaceError, IrisflowError)
# A write PostgreSQL (or psycopg, client-side) can never accept.
_INVALID = (psycopg.DataError, psycopg.IntegrityError, TypeError, ValueError)

_ADD = b"""
WITH rows AS (
    SELECT * FROM unnest(
        %(ids)s::text[], %(rules)s::text[], %(severities)s::text[], %(venues)s::text[],
        %(symbols)s::text[], %(texts)s::text[], %(payloads)s::text[], %(fired)s::timestamptz[]
    ) AS r(id, rule, severity, venue, symbol, text, payload, fired_at)
), added AS (
    INSERT INTO irisflow.alerts (id, rule, severity, venue, symbol, text, payload, fired_at)
    SELECT id, rule, severity, venue, symbol, text, payload::jsonb, fired_at FROM rows
    ON CONFLICT (id) DO NOTHING
    RETURNING id
)
SELECT id FROM added
UNION ALL
-- Rows an earlier attempt of this run wrote, whose reply was lost with the connection.
SELECT id FROM irisflow.alerts
WHERE id = ANY(%(ids)s::text[]) AND payload->>'run' = %(run)s AND payload->>'state' = %(state)s
"""
_PENDING = b"""
SELECT id, payload->'alert', payload->>'chat' FROM irisflow.alerts
WHERE sent_at IS NULL AND payload->>'state' = 'pending' AND payload->>'outbox' = %s
ORDER BY (payload->>'seq')::bigint, id
"""
_SENT = b"""
UPDATE irisflow.alerts
SET sent_at = now(), payload = payload || jsonb_build_object('state', 'sent', 'message_id', %s)
WHERE id = %s AND payload->>'state' = 'pending'
"""
_FAILED = b"""
UPDATE irisflow.alerts
SET payload = payload || jsonb_build_object('state', 'failed', 'reason', %s::text)
WHERE id = %s AND payload->>'state' = 'pending'
"""


def row_id(key: str, chat_id: str) -> str:
    """The ``irisflow.alerts.id`` of ``key`` delivered to ``chat_id``."""
    return f"{key}|{chat_id}"


def _lock_key(name: str) -> int:
    digest = hashlib.sha256(f"irisflow alerts outbox {name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@attrs.frozen
class PostgresOutboxStatistics:
    """A snapshot of a :class:`PostgresOutbox`."""

    state: State
    """``ok``: the last call reached PostgreSQL. ``retrying``: it failed and writes wait in
    memory. ``down``: ``down_after`` attempts in a row have failed."""
    buffered: int
    """Writes waiting in memory for PostgreSQL: alerts to record, delivered/failed marks."""
    retries: int
    """Failed attempts to reach PostgreSQL since the outbox was opened."""
    rejected: int
    """Waiting writes PostgreSQL refused as invalid; dropped (see ``last_error``)."""
    recorded_late: int
    """Writes that waited in memory and were recorded once PostgreSQL was back."""
    last_error: str | None
    """The latest error, password redacted; ``None`` if there was none."""
    backpressure: bool
    """True while ``max_buffered`` writes wait and calls block."""


@attrs.define(eq=False)
class _Write:
    """A write to ``irisflow.alerts``: done at once, or waiting in memory until it can be."""

    what: WriteKind
    query: bytes
    params: Any
    ids: tuple[str, ...]
    """The rows it writes (for marks, the one row it ticks off)."""
    items: tuple[OutboxItem, ...] = ()
    """For alerts recorded as pending: what :meth:`PostgresOutbox.pending` lists meanwhile."""

    def run(self, conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
        cur = conn.execute(self.query, self.params)
        return cur.fetchall() if cur.description else []


class PostgresOutbox:
    """An :class:`~irisflow.Outbox` over the ``irisflow.alerts`` table.

    Get one from :func:`open_postgres_outbox` (which runs its writer task); the module docs
    say what happens when PostgreSQL goes away.

    Args:
        dsn: The database.
        name: The outbox's name: a process holds it while open, and :meth:`pending` lists
            only its own rows.
        backoff: First wait between attempts to reach PostgreSQL, seconds...
        backoff_max: ...doubling up to this.
        max_buffered: Writes held in memory while PostgreSQL is away before calls block.
        shutdown_timeout: Seconds allowed, when closing, to write what waits.
        down_after: Failed attempts in a row after which the state is ``down``.
        remember: How many added keys to remember, to recognise a retried ``add``.
    """

    def __init__(
        self,
        dsn: str,
        *,
        name: str = "default",
        backoff: float = 0.5,
        backoff_max: float = 10.0,
        max_buffered: int = 100_000,
        shutdown_timeout: float = 10.0,
        down_after: int = 3,
        remember: int = 100_000,
    ) -> None:
        if not name or backoff < 0 or backoff_max < backoff or max_buffered < 1:
            raise UsageError(
                "PostgresOutbox needs a name, 0 <= backoff <= backoff_max and max_buffered >= 1 "
                f"(got {name!r}, {backoff}, {backoff_max}, {max_buffered})"
            )
        self.name = name
        """The outbox name."""
        self._dsn = dsn
        self._backoff = backoff
        self._backoff_max = backoff_max
        self._max_buffered = max_buffered
        self._shutdown_timeout = shutdown_timeout
        self._down_after = down_after
        self._remember = remember
        self._run = str(uuid.uuid4())
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = trio.Lock()
        self._seq = 0
        self._reported: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._closed = False
        self._queue: collections.deque[_Write] = collections.deque()
        self._wake = trio.lowlevel.ParkingLot()
        self._room = trio.lowlevel.ParkingLot()
        self._state: State = "ok"
        self._failures = 0
        self._retries = 0
        self._rejected = 0
        self._late = 0
        self._last_error: str | None = None
        self._backpressure = False

    def __repr__(self) -> str:
        return f"<PostgresOutbox {self.name!r} on {redact_dsn(self._dsn)} state={self._state}>"

    def statistics(self) -> PostgresOutboxStatistics:
        """A snapshot of the outbox's state and counters."""
        return PostgresOutboxStatistics(
            state=self._state,
            buffered=len(self._queue),
            retries=self._retries,
            rejected=self._rejected,
            recorded_late=self._late,
            last_error=self._last_error,
            backpressure=self._backpressure,
        )

    # The Outbox protocol ------------------------------------------------------------------

    async def add(self, alert: Alert, chat_id: str) -> bool:
        """Record ``alert`` for ``chat_id``; ``False`` if (key, chat) is already known."""
        (added,) = await self.add_many([(alert, chat_id)])
        return added

    async def add_many(self, entries: Sequence[tuple[Alert, str]]) -> list[bool]:
        """Record several (alert, chat) pairs in one statement (one commit)."""
        new = await self._insert([(alert, chat, "pending") for alert, chat in entries])
        out: list[bool] = []
        for alert, chat in entries:
            ident = row_id(alert.key, chat)
            fresh = ident in new
            new.discard(ident)  # a pair twice in one call is new once
            out.append(fresh)
        return out

    async def pending(self) -> list[OutboxItem]:
        """Alerts recorded but neither sent nor failed, oldest first.

        While PostgreSQL is away: the alerts of this process that wait in memory.
        """
        self._check_open()
        rows: list[Any] | None = None
        async with self._lock:
            if await self._flush():
                try:
                    rows = await trio.to_thread.run_sync(
                        self._in_thread,
                        lambda conn: conn.execute(_PENDING, (self.name,)).fetchall(),
                    )
                except _LOST as exc:
                    self._lost(exc)
                except psycopg.Error as exc:
                    raise_database_error("the alerts outbox failed", self._dsn, exc)
        if rows is None:
            _LOGGER.warning(
                "alerts outbox: PostgreSQL is unreachable (%s); alerts earlier runs left "
                "pending stay in irisflow.alerts for the next start",
                self._last_error,
            )
            return self._waiting_items()
        items: list[OutboxItem] = []
        broken: list[str] = []
        for ident, data, chat in rows:
            try:
                items.append(OutboxItem(_CONVERTER.structure(data, Alert), str(chat)))
            except (cattrs.BaseValidationError, ValueError, TypeError) as exc:
                # Policy: a row that is not an outbox record (edited by hand?) is given up
                # on, so it neither blocks the outbox nor comes back on every start.
                _LOGGER.warning(
                    "alerts row %r is not an outbox record, marked failed: %s", ident, exc
                )
                broken.append(ident)
        for ident in broken:
            await self._mark("failed", _FAILED, ("not an outbox record", ident), ident)
        return items

    async def mark_sent(self, key: str, chat_id: str, message_id: int) -> None:
        """Tick off (key, chat) as delivered as ``message_id``; sets ``sent_at``."""
        ident = row_id(key, chat_id)
        await self._mark("sent", _SENT, (message_id, ident), ident)

    async def mark_failed(self, key: str, chat_id: str, reason: str) -> None:
        """Tick off (key, chat) as given up on, saying why."""
        ident = row_id(key, chat_id)
        await self._mark("failed", _FAILED, (reason, ident), ident)

    # Beyond the protocol ------------------------------------------------------------------

    async def store(self, alerts: Sequence[Alert]) -> int:
        """Store alerts that are not delivered anywhere (state ``stored``); returns how many
        were new."""
        return len(await self._insert([(alert, "", "stored") for alert in alerts]))

    async def aclose(self) -> None:
        """Close the connection (and so release the outbox name) without writing what waits:
        :func:`open_postgres_outbox` writes it first."""
        self._closed = True
        async with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                await trio.to_thread.run_sync(conn.close)

    # Internals: the writes ------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise UsageError("the alerts outbox is closed")

    async def _insert(self, entries: Sequence[tuple[Alert, str, str]]) -> set[str]:
        """Insert rows; the ids that are new to this outbox (not reported new before)."""
        if not entries:
            await trio.lowlevel.checkpoint()
            return set()
        columns: dict[str, list[Any]] = {
            k: [] for k in ("ids", "rules", "severities", "venues", "symbols", "texts", "fired")
        }
        payloads: list[str] = []
        self._seq = max(self._seq, time.time_ns() // 1000)
        for alert, chat, state in entries:
            self._seq += 1
            columns["ids"].append(row_id(alert.key, chat))
            columns["rules"].append(alert.rule)
            columns["severities"].append(alert.severity)
            columns["venues"].append(alert.venue)
            columns["symbols"].append(alert.symbol)
            columns["texts"].append(alert.text)
            columns["fired"].append(to_datetime(alert.recv_ts))
            payload = {
                "outbox": self.name,
                "chat": chat,
                "key": alert.key,
                "state": state,
                "seq": self._seq,
                "run": self._run,
                "alert": _CONVERTER.unstructure(alert),
            }
            payloads.append(orjson.dumps(payload).decode())
        params = {**columns, "payloads": payloads, "run": self._run, "state": entries[0][2]}
        pending = entries[0][2] == "pending"
        write = _Write(
            "alert",
            _ADD,
            params,
            tuple(columns["ids"]),
            tuple(OutboxItem(alert, chat) for alert, chat, _ in entries) if pending else (),
        )
        rows = await self._write(write)
        # Written at once: the database says which rows are new. Waiting in memory: new unless
        # this process has seen them (an earlier run's rows cannot be known meanwhile).
        found = write.ids if rows is None else [ident for (ident,) in rows]
        new = {ident for ident in found if ident not in self._reported}
        for ident in new:
            self._reported[ident] = None
        while len(self._reported) > self._remember:
            self._reported.popitem(last=False)
        return new

    async def _mark(self, what: WriteKind, query: bytes, params: Any, ident: str) -> None:
        await self._write(_Write(what, query, params, (ident,)))

    async def _write(self, write: _Write) -> list[tuple[Any, ...]] | None:
        """Write now if PostgreSQL is there and nothing waits (then return the rows it
        returned); else add it to the writes waiting in memory (then return ``None``)."""
        self._check_open()
        while len(self._queue) >= self._max_buffered:
            self._backpressure = True
            await self._room.park()
        self._backpressure = False
        async with self._lock:
            if not self._queue and self._state == "ok":
                try:
                    return await trio.to_thread.run_sync(self._in_thread, write.run)
                except _LOST as exc:
                    self._lost(exc)
                except psycopg.Error as exc:
                    raise_database_error("the alerts outbox failed", self._dsn, exc)
                except _INVALID as exc:
                    raise DatabaseError(f"the alerts outbox failed: {exc}") from exc
            self._queue.append(write)
            self._wake.unpark_all()
            return None

    def _waiting_items(self) -> list[OutboxItem]:
        """The alerts waiting in memory that are still pending (no mark waits for them)."""
        marked = {w.ids[0] for w in self._queue if w.what != "alert"}
        return [
            item
            for w in self._queue
            for item in w.items
            if row_id(item.key, item.chat_id) not in marked
        ]

    async def _flush(self) -> bool:
        """Write what waits, in order (the caller holds the lock); False if PostgreSQL failed.

        Connects first if needed, so an empty queue still tells whether PostgreSQL is there.
        """
        if self._state == "ok" and not self._queue and self._conn is not None:
            await trio.lowlevel.checkpoint()
            return True
        writes = list(self._queue)
        done: list[tuple[_Write, list[tuple[Any, ...]] | BaseException]] = []

        def work(conn: psycopg.Connection[Any]) -> None:
            for write in writes:
                try:
                    done.append((write, write.run(conn)))
                except (*_INVALID, psycopg.DataError) as exc:
                    done.append((write, exc))

        error: BaseException | None = None
        try:
            await trio.to_thread.run_sync(self._in_thread, work)
        except (*_LOST, psycopg.Error) as exc:
            # What ran before the failure is recorded (each write commits on its own).
            error = exc
        self._recorded(done)
        if error is not None:
            self._lost(error)
            return False
        if self._state != "ok":
            _LOGGER.warning("alerts outbox: PostgreSQL is back")
        self._failures = 0
        self._state = "ok"
        return True

    def _recorded(self, done: list[tuple[_Write, list[tuple[Any, ...]] | BaseException]]) -> None:
        """Drop the writes that ran from the queue; count and report what they found."""
        again = 0
        for write, result in done:
            popped = self._queue.popleft()
            assert popped is write
            if isinstance(result, BaseException):
                self._rejected += 1
                detail = scrub(pg_message(result), self._dsn)
                self._last_error = f"dropped a {write.what} write PostgreSQL refused: {detail}"
                _LOGGER.warning("alerts outbox: %s (%s)", self._last_error, write.ids[:3])
                continue
            self._late += 1
            if write.what == "alert" and write.items:
                again += len(set(write.ids) - {ident for (ident,) in result})
        if done:
            self._room.unpark_all()
        if again:
            _LOGGER.warning(
                "alerts outbox: %d alert(s) recorded after PostgreSQL came back were already "
                "recorded by an earlier run; they may have been sent twice",
                again,
            )

    def _lost(self, exc: BaseException) -> None:
        """PostgreSQL failed: drop the connection, count, and let the writer retry."""
        self._discard()
        self._failures += 1
        self._retries += 1
        self._state = "down" if self._failures >= self._down_after else "retrying"
        text = str(exc) if isinstance(exc, IrisflowError) else scrub(pg_message(exc), self._dsn)
        self._last_error = f"PostgreSQL failed: {text}"
        if self._failures == 1:
            _LOGGER.warning(
                "alerts outbox: %s; alerts wait in memory until it is back", self._last_error
            )
        self._wake.unpark_all()

    def _delay(self) -> float:
        delay = min(self._backoff_max, self._backoff * 2.0 ** max(self._failures - 1, 0))
        return delay * random.uniform(0.5, 1.0)  # spread out the retries of many processes

    async def _write_loop(self) -> None:
        """The writer task: retry what waits (and reconnect) with capped backoff."""
        while True:
            while not self._queue and self._state == "ok":
                await self._wake.park()
            async with self._lock:
                ok = await self._flush()
            if not ok:
                await trio.sleep(self._delay())

    async def _drain(self) -> None:
        """Write what waits, retrying with backoff (the caller bounds the time)."""
        while self._queue:
            async with self._lock:
                ok = await self._flush()
            if not ok:
                await trio.sleep(self._delay())

    def _unrecorded(self) -> str:
        counts = collections.Counter(w.what for w in self._queue)
        alerts = sum(len(w.ids) for w in self._queue if w.what == "alert")
        return (
            f"the alerts outbox stopped with {len(self._queue)} write(s) not recorded in "
            f"PostgreSQL after trying for {self._shutdown_timeout:g}s (alerts to record: "
            f"{alerts}, delivered marks: {counts['sent']}, failed marks: {counts['failed']}); "
            f"last error: {self._last_error}. Alerts delivered but not marked may be sent again "
            "by the next run"
        )

    # Internals: the connection --------------------------------------------------------------

    async def _start(self) -> None:
        """The first connection: permanent refusals raise, a missing server is retried."""
        async with self._lock:
            try:
                await trio.to_thread.run_sync(self._in_thread, lambda conn: None)
            except UsageError:
                raise
            except _LOST as exc:
                self._lost(exc)

    def _in_thread(self, work: Callable[[psycopg.Connection[Any]], _T]) -> _T:
        if self._conn is None or self._conn.closed:
            self._conn = self._open()
        return work(self._conn)

    def _open(self) -> psycopg.Connection[Any]:
        conn = connect(
            self._dsn,
            application_name="irisflow-alerts",
            connect_timeout=5,
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=5,
            keepalives_count=3,
            tcp_user_timeout=30_000,
        )
        try:
            row = conn.execute("SELECT to_regclass('irisflow.alerts')").fetchone()
            if row is None or row[0] is None:
                raise UsageError(
                    f"database {redact_dsn(self._dsn)} has no irisflow.alerts table: run "
                    "`irisflow migrate` first"
                )
            row = conn.execute(
                "SELECT pg_try_advisory_lock(%s)", (_lock_key(self.name),)
            ).fetchone()
            if row is None or not row[0]:
                raise UsageError(
                    f"the alerts outbox {self.name!r} in {redact_dsn(self._dsn)} is in use by "
                    "another irisflow process; give each running irisflow its own outbox name"
                )
        except BaseException:
            conn.close()
            raise
        return conn

    def _discard(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()


@asynccontextmanager
async def open_postgres_outbox(
    dsn: str,
    *,
    name: str = "default",
    backoff: float = 0.5,
    backoff_max: float = 10.0,
    max_buffered: int = 100_000,
    shutdown_timeout: float = 10.0,
) -> AsyncIterator[PostgresOutbox]:
    """Open the alerts outbox in the database at ``dsn``, with its writer task.

    Connects (and takes the outbox name) before it yields; if PostgreSQL cannot be reached
    then, it yields anyway and keeps trying (see the module docs). On the way out it writes
    what waits, within ``shutdown_timeout`` seconds, and closes.

    Raises:
        UsageError: the DSN is malformed or refused for good (wrong password, an invalid
            option...), the database is not migrated, or another process holds the outbox
            name.
        DatabaseError: on a clean exit, writes were still not recorded after
            ``shutdown_timeout`` seconds; the message counts them.
    """
    outbox = PostgresOutbox(
        dsn,
        name=name,
        backoff=backoff,
        backoff_max=backoff_max,
        max_buffered=max_buffered,
        shutdown_timeout=shutdown_timeout,
    )
    await outbox._start()
    try:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(outbox._write_loop)
                try:
                    yield outbox
                finally:
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            raise_lone(group)
    except BaseException:
        await _close(outbox)
        if outbox._queue:
            _LOGGER.warning("%s", outbox._unrecorded())
        raise
    await _close(outbox)
    if outbox._queue:
        raise DatabaseError(outbox._unrecorded())


async def _close(outbox: PostgresOutbox) -> None:
    """Write what waits (bounded), then close; shielded, as cleanup is."""
    with trio.move_on_after(outbox._shutdown_timeout, shield=True):
        await outbox._drain()
    with trio.move_on_after(5, shield=True):
        await outbox.aclose()
    outbox._closed = True
