"""Following saved filters live: :func:`watch_saved` keeps a running step in line with its store.

The database store is followed over a LISTEN connection (and re-read every few seconds, for
rows edited without a NOTIFY); the file store is polled. A change that no longer compiles is
reported and the filter in force is kept; a filter removed from the store stops filtering.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import psycopg
import trio

from ._errors import DatabaseError, IrisflowError, UsageError
from ._saved_db import CHANNEL, DatabaseFilterStore, select_filters
from ._saved_file import FileFilterStore
from ._saved_filter import FilterStore, SavedFilter

if TYPE_CHECKING:
    from ._saved import SavedFilterStep

__all__ = ["watch_saved"]

_T = TypeVar("_T")


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
    found = select_filters(conn, wanted)
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
            read = functools.partial(select_filters, names=names)
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
