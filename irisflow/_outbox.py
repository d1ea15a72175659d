"""The durable alert outbox: an alert is written down before it is sent, and ticked off after.

A sink calls :meth:`Outbox.add` for each (alert, chat) before it tries to deliver, and
:meth:`Outbox.mark_sent` or :meth:`Outbox.mark_failed` afterwards. After a crash or a restart,
:meth:`Outbox.pending` lists what was never ticked off, so nothing is lost; and ``add`` answers
``False`` for an (alert key, chat) it already knows, so a retried alert is not sent twice.

:class:`FileOutbox` keeps the outbox in an append-only JSON lines file: one ``{"op": "add"}``
record per alert and chat (fsynced before ``add`` returns), one ``{"op": "sent"}`` or
``{"op": "failed"}`` record when done. The file is replayed when opened and rewritten
(compacted) when most of it is done records. A database-backed outbox only has to implement the
:class:`Outbox` protocol.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Protocol

import attrs
import cattrs
import orjson
import trio

from ._alert import Alert
from ._errors import UsageError

__all__ = ["FileOutbox", "Outbox", "OutboxItem", "make_converter"]


@attrs.frozen
class OutboxItem:
    """An alert waiting for delivery to one chat."""

    alert: Alert
    """The alert."""
    chat_id: str
    """The chat it is for."""

    @property
    def key(self) -> str:
        """The alert's idempotency key."""
        return self.alert.key


class Outbox(Protocol):
    """Where a sink records alerts before sending them (a file, a database table).

    Implementations must make ``add`` durable before it returns, remember done (key, chat)
    pairs for a while so that ``add`` can refuse a repeat, and keep ``pending`` in ``add`` order.
    """

    async def add(self, alert: Alert, chat_id: str) -> bool:
        """Record ``alert`` for ``chat_id``; ``False`` if (key, chat) is already known."""
        ...

    async def add_many(self, entries: Sequence[tuple[Alert, str]]) -> list[bool]:
        """:meth:`add` for several (alert, chat) pairs at once (one durable write)."""
        ...

    async def pending(self) -> list[OutboxItem]:
        """Alerts recorded but neither sent nor failed, oldest first."""
        ...

    async def mark_sent(self, key: str, chat_id: str, message_id: int) -> None:
        """Tick off (key, chat) as delivered as ``message_id``."""
        ...

    async def mark_failed(self, key: str, chat_id: str, reason: str) -> None:
        """Tick off (key, chat) as given up on, saying why."""
        ...


def make_converter() -> cattrs.Converter:
    """The converter for outbox records."""
    return cattrs.Converter()


_CONVERTER = make_converter()

_Pair = tuple[str, str]


class FileOutbox:
    """An :class:`Outbox` in an append-only JSON lines file.

    Opening replays the file (a half-written last line, left by a crash, is cut off). One
    process at a time may use a file; a second one gets a :class:`~irisflow.UsageError`.
    Use it as a context manager, or call :meth:`close`.

    Args:
        path: The file; created (with its directory) if missing.
        remember: How many done (key, chat) pairs to remember for idempotency.
        fsync: Flush ``add`` records to the disk before returning (off only for tests).

    Raises:
        UsageError: the file or its directory cannot be created or opened (the message
            names the path), it is not an outbox file, or another process uses it.
    """

    def __init__(self, path: str | os.PathLike[str], *, remember: int = 10_000, fsync: bool = True):
        if remember < 0:
            raise UsageError(f"FileOutbox remember must be >= 0 (got {remember})")
        self.path = Path(path)
        """The outbox file."""
        self._remember = remember
        self._fsync = fsync
        self._pending: dict[_Pair, OutboxItem] = {}
        self._done: dict[_Pair, None] = {}
        self._lines = 0
        self._file: IO[bytes] | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            created = not self.path.exists()
            self._file = self._open_locked(self.path)
            if created and fsync:
                _fsync_dir(self.path.parent)
        except OSError as exc:
            self.close()
            raise self._unusable(exc) from exc
        try:
            self._replay()
            if self._lines > 2 * self._live() + 64:
                self._compact()
        except OSError as exc:
            self.close()
            raise self._unusable(exc) from exc
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"<FileOutbox {str(self.path)!r} pending={len(self._pending)}>"

    def __enter__(self) -> FileOutbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def _unusable(self, exc: OSError) -> UsageError:
        problem = exc.strerror or type(exc).__name__
        if exc.filename is not None and str(exc.filename) != str(self.path):
            problem += f": {str(exc.filename)!r}"
        if isinstance(exc, IsADirectoryError) and self.path.is_dir():
            advice = "move that directory aside or use another file"
        else:
            advice = f"make {str(self.path.parent)!r} a directory you can write to"
        return UsageError(
            f"cannot use {str(self.path)!r} as the alert outbox ({problem}); {advice} (the "
            "default outbox is $XDG_DATA_HOME/irisflow/outbox.jsonl: point XDG_DATA_HOME at a "
            "writable directory, or configure a database to keep the outbox there)"
        )

    # The Outbox protocol ------------------------------------------------------------------

    async def add(self, alert: Alert, chat_id: str) -> bool:
        """Record ``alert`` for ``chat_id``; ``False`` if (key, chat) is already known."""
        (added,) = await self.add_many([(alert, chat_id)])
        return added

    async def add_many(self, entries: Sequence[tuple[Alert, str]]) -> list[bool]:
        """Record several (alert, chat) pairs with a single fsync."""
        await trio.lowlevel.checkpoint()
        records: list[dict[str, Any]] = []
        added: list[bool] = []
        for alert, chat_id in entries:
            pair = (alert.key, chat_id)
            new = pair not in self._pending and pair not in self._done
            added.append(new)
            if new:
                self._pending[pair] = OutboxItem(alert, chat_id)
                records.append(
                    {"op": "add", "chat": chat_id, "alert": _CONVERTER.unstructure(alert)}
                )
        if records:
            self._write(records, sync=self._fsync)
        return added

    async def pending(self) -> list[OutboxItem]:
        """Alerts recorded but neither sent nor failed, oldest first."""
        await trio.lowlevel.checkpoint()
        return list(self._pending.values())

    async def mark_sent(self, key: str, chat_id: str, message_id: int) -> None:
        """Tick off (key, chat) as delivered as ``message_id``; unknown pairs are ignored."""
        await trio.lowlevel.checkpoint()
        self._finish(key, chat_id, {"op": "sent", "message_id": message_id})

    async def mark_failed(self, key: str, chat_id: str, reason: str) -> None:
        """Tick off (key, chat) as given up on; unknown pairs are ignored."""
        await trio.lowlevel.checkpoint()
        self._finish(key, chat_id, {"op": "failed", "reason": reason})

    # Internals ----------------------------------------------------------------------------

    def _finish(self, key: str, chat_id: str, record: dict[str, Any]) -> None:
        pair = (key, chat_id)
        if self._pending.pop(pair, None) is None:
            return
        self._remember_done(pair)
        # Not fsynced: losing this record to a power cut means one duplicate message, not a
        # lost alert.
        self._write([{**record, "key": key, "chat": chat_id}], sync=False)
        if self._lines > 2 * self._live() + 1024:
            self._compact()

    def _live(self) -> int:
        return len(self._pending) + len(self._done)

    def _remember_done(self, pair: _Pair) -> None:
        self._done[pair] = None
        while len(self._done) > self._remember:
            del self._done[next(iter(self._done))]

    def _write(self, records: list[dict[str, Any]], *, sync: bool) -> None:
        if self._file is None:
            raise UsageError(f"outbox {str(self.path)!r} is closed")
        self._file.write(b"".join(orjson.dumps(r) + b"\n" for r in records))
        self._file.flush()
        if sync:
            os.fsync(self._file.fileno())
        self._lines += len(records)

    def _replay(self) -> None:
        assert self._file is not None
        self._file.seek(0)
        data = self._file.read()
        good = 0
        for number, line in enumerate(data.splitlines(keepends=True), start=1):
            if not line.endswith(b"\n"):
                break  # a record cut short by a crash: drop it below
            self._apply(line, number)
            good += len(line)
            self._lines += 1
        if good < len(data):
            self._file.truncate(good)
        self._file.seek(0, os.SEEK_END)

    def _apply(self, line: bytes, number: int) -> None:
        try:
            record = orjson.loads(line)
            op = record["op"]
            chat = str(record["chat"])
            if op == "add":
                alert = _CONVERTER.structure(record["alert"], Alert)
                if (alert.key, chat) not in self._done:
                    self._pending[(alert.key, chat)] = OutboxItem(alert, chat)
            elif op in ("sent", "failed", "done"):
                pair = (str(record["key"]), chat)
                self._pending.pop(pair, None)
                self._remember_done(pair)
            else:
                raise ValueError(f"unknown op {op!r}")
        except (ValueError, TypeError, KeyError, cattrs.BaseValidationError) as exc:
            detail = (
                "; ".join(cattrs.transform_error(exc, path="$.alert"))
                if isinstance(exc, cattrs.BaseValidationError)
                else f"{type(exc).__name__}: {exc}"
            )
            raise UsageError(
                f"outbox file {str(self.path)!r} line {number} is not an outbox record "
                f"({detail}); move the file aside to start with an empty outbox"
            ) from exc

    def _compact(self) -> None:
        """Rewrite the file as the pending adds plus one short record per remembered pair."""
        assert self._file is not None
        temp = self.path.with_name(self.path.name + ".compact")
        records = [{"op": "done", "key": key, "chat": chat} for key, chat in self._done]
        records += [
            {"op": "add", "chat": item.chat_id, "alert": _CONVERTER.unstructure(item.alert)}
            for item in self._pending.values()
        ]
        with open(temp, "wb") as out:
            out.write(b"".join(orjson.dumps(r) + b"\n" for r in records))
            out.flush()
            os.fsync(out.fileno())
        new = self._open_locked(temp)
        os.replace(temp, self.path)
        _fsync_dir(self.path.parent)
        self._file.close()
        self._file = new
        self._file.seek(0, os.SEEK_END)
        self._lines = len(records)

    def _open_locked(self, path: Path) -> IO[bytes]:
        file = open(path, "a+b")  # noqa: SIM115 (kept open for the outbox's lifetime)
        if sys.platform != "win32":
            import fcntl

            try:
                fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                file.close()
                raise UsageError(
                    f"outbox file {str(path)!r} is in use by another process; give each "
                    "running irisflow its own outbox file"
                ) from exc
        return file


def _fsync_dir(directory: Path) -> None:
    if sys.platform == "win32":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
