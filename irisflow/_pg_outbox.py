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

One connection, used from worker threads (``trio.to_thread.run_sync``) one call at a time. A
lost connection is opened again and the call retried with backoff; an ``add`` whose reply was
lost is recognised by the run id it wrote, so it is neither lost nor reported twice. One process
at a time may use an outbox name: it holds a PostgreSQL advisory lock on it.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import cattrs
import orjson
import psycopg
import trio

from ._alert import Alert
from ._errors import DatabaseError, UsageError
from ._events import to_datetime
from ._migrate import connect, raise_database_error, redact_dsn
from ._outbox import OutboxItem, make_converter

__all__ = ["PostgresOutbox", "open_postgres_outbox"]

_LOGGER = logging.getLogger("irisflow.telegram")
_CONVERTER = make_converter()
_MAX_BACKOFF = 10.0
_T = TypeVar("_T")

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


class PostgresOutbox:
    """An :class:`~irisflow.Outbox` over the ``irisflow.alerts`` table.

    Get one from :func:`open_postgres_outbox`.

    Args:
        dsn: The database.
        name: The outbox's name: a process holds it while open, and :meth:`pending` lists
            only its own rows.
        max_attempts: Attempts per call when the connection is lost.
        backoff: First wait between attempts, seconds (doubles each time, up to 10 s).
        remember: How many added keys to remember, to recognise a retried ``add``.
    """

    def __init__(
        self,
        dsn: str,
        *,
        name: str = "default",
        max_attempts: int = 5,
        backoff: float = 0.5,
        remember: int = 100_000,
    ) -> None:
        if max_attempts < 1 or backoff < 0 or not name:
            raise UsageError(
                "PostgresOutbox needs a name, max_attempts >= 1 and backoff >= 0 "
                f"(got {name!r}, {max_attempts}, {backoff})"
            )
        self.name = name
        """The outbox name."""
        self._dsn = dsn
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._remember = remember
        self._run = str(uuid.uuid4())
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = trio.Lock()
        self._seq = 0
        self._reported: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._closed = False

    def __repr__(self) -> str:
        return f"<PostgresOutbox {self.name!r} on {redact_dsn(self._dsn)}>"

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
        """Alerts recorded but neither sent nor failed, oldest first."""
        rows = await self._call(lambda conn: conn.execute(_PENDING, (self.name,)).fetchall())
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
            await self._update(_FAILED, ("not an outbox record", ident))
        return items

    async def mark_sent(self, key: str, chat_id: str, message_id: int) -> None:
        """Tick off (key, chat) as delivered as ``message_id``; sets ``sent_at``."""
        await self._update(_SENT, (message_id, row_id(key, chat_id)))

    async def mark_failed(self, key: str, chat_id: str, reason: str) -> None:
        """Tick off (key, chat) as given up on, saying why."""
        await self._update(_FAILED, (reason, row_id(key, chat_id)))

    # Beyond the protocol ------------------------------------------------------------------

    async def store(self, alerts: Sequence[Alert]) -> int:
        """Store alerts that are not delivered anywhere (state ``stored``); returns how many
        were new."""
        return len(await self._insert([(alert, "", "stored") for alert in alerts]))

    async def aclose(self) -> None:
        """Close the connection (and so release the outbox name)."""
        self._closed = True
        async with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                await trio.to_thread.run_sync(conn.close)

    # Internals ----------------------------------------------------------------------------

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
        rows = await self._call(lambda conn: conn.execute(_ADD, params).fetchall())
        new = {ident for (ident,) in rows if ident not in self._reported}
        for ident in new:
            self._reported[ident] = None
        while len(self._reported) > self._remember:
            self._reported.popitem(last=False)
        return new

    async def _update(self, query: bytes, params: tuple[Any, ...]) -> None:
        await self._call(lambda conn: conn.execute(query, params))

    async def _call(self, work: Callable[[psycopg.Connection[Any]], _T]) -> _T:
        """Run ``work`` on the connection in a worker thread; reconnect and retry if it is
        lost."""
        if self._closed:
            raise UsageError("the alerts outbox is closed")
        async with self._lock:
            attempt = 0
            while True:
                attempt += 1
                try:
                    return await trio.to_thread.run_sync(self._in_thread, work)
                except (psycopg.OperationalError, psycopg.InterfaceError, DatabaseError) as exc:
                    self._discard()
                    if attempt >= self._max_attempts:
                        if isinstance(exc, DatabaseError):
                            raise
                        raise_database_error("the alerts outbox lost PostgreSQL", self._dsn, exc)
                    wait = min(_MAX_BACKOFF, self._backoff * 2 ** (attempt - 1))
                    _LOGGER.warning(
                        "alerts outbox: PostgreSQL failed (%s); retrying in %.1f s",
                        type(exc).__name__,
                        wait,
                    )
                    await trio.sleep(wait)
                except psycopg.Error as exc:
                    raise_database_error("the alerts outbox failed", self._dsn, exc)

    def _in_thread(self, work: Callable[[psycopg.Connection[Any]], _T]) -> _T:
        if self._conn is None or self._conn.closed:
            self._conn = self._open()
        return work(self._conn)

    def _open(self) -> psycopg.Connection[Any]:
        conn = connect(
            self._dsn,
            application_name="irisflow-alerts",
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
    max_attempts: int = 5,
    backoff: float = 0.5,
) -> AsyncIterator[PostgresOutbox]:
    """Open the alerts outbox in the database at ``dsn``.

    Connects (and takes the outbox name) before it yields; closes on the way out.

    Raises:
        UsageError: the DSN is malformed, the database is not migrated, or another process
            holds the outbox name.
        DatabaseError: PostgreSQL is unreachable.
    """
    outbox = PostgresOutbox(dsn, name=name, max_attempts=max_attempts, backoff=backoff)
    try:
        await outbox._call(lambda conn: None)
        yield outbox
    finally:
        with trio.move_on_after(5, shield=True):
            await outbox.aclose()
