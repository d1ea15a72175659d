"""Recordings: every frame irisflow heard, in order, so a run can be replayed exactly.

A recording is JSON lines, one object per received frame::

    {"venue":"binance","recv_ts":1767225600123456789,"frame":"{\\"stream\\":...}"}

``frame`` is the frame's exact text; frames that arrived in one socket read share ``recv_ts``
(ns since the epoch). A disconnect is recorded as
``{"venue":..,"recv_ts":..,"gap":{"streams":[..],"start":..,"end":..,"cause":".."}}``.
Replay also reads files of bare venue frames, one per line, when told the venue.

Several recordings (say one per venue, recorded separately) replay together through
:func:`read_recordings`: merged by ``recv_ts`` as one run that heard them all would have read
them, ties in the order the files were given, then in line order.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import heapq
import itertools
import operator
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import attrs
import orjson
import trio

from ._errors import RecordingError
from ._events import Gap
from ._feed import FeedItem, Frames, RawFrame, now_ns

__all__ = [
    "CorruptLine",
    "FileFrames",
    "Recorder",
    "check_readable",
    "read_recording",
    "read_recordings",
]

MAX_BATCH = 1024
"""Most frames replay hands the pipeline at once."""


@attrs.frozen
class CorruptLine:
    """A line of a recording that could not be read."""

    line: int
    """1-based line number."""
    reason: str
    """What is wrong with it."""
    file: str = ""
    """Its file, when several are read together (:func:`read_recordings`); else ``''``."""


@attrs.frozen
class FileFrames(Frames):
    """Frames read from one of several files replayed together: they name their file."""

    file: str = ""
    """The file, as given, e.g. ``'b.jsonl'``; problems are reported as ``'b.jsonl line 7'``."""


def _encode_item(item: FeedItem) -> bytes:
    if isinstance(item, Gap):
        gap = {
            "streams": list(item.streams),
            "start": item.start,
            "end": item.end,
            "cause": item.cause,
        }
        return orjson.dumps({"venue": item.venue, "recv_ts": item.recv_ts, "gap": gap}) + b"\n"
    head = b'{"venue":' + orjson.dumps(item.venue) + b',"recv_ts":' + str(item.recv_ts).encode()
    lines = []
    for frame in item.frames:
        try:
            body = b',"frame":' + orjson.dumps(frame.decode("utf-8"))
        except UnicodeDecodeError:  # a binary frame: keep it exact, as base64
            body = b',"frame_b64":"' + base64.b64encode(frame) + b'"'
        lines.append(head + body + b"}\n")
    return b"".join(lines)


class Recorder:
    """Writes feed items to a recording file as they arrive.

    Args:
        path: Where to write; an existing file is replaced.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.frames = 0

    async def run(
        self,
        items: trio.MemoryReceiveChannel[FeedItem],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Write every item until the channel closes; flush whenever the channel runs dry."""
        try:
            fh = self.path.open("wb")
        except OSError as exc:
            raise RecordingError(
                f"cannot write recording {str(self.path)!r}: {exc.strerror}"
            ) from exc
        task_status.started()
        with fh:
            async with items:
                async for item in items:
                    self._write(fh, item)
                    # Drain what is already queued, then flush once: one flush per burst.
                    while True:
                        try:
                            more = items.receive_nowait()
                        except (trio.WouldBlock, trio.EndOfChannel):
                            break
                        self._write(fh, more)
                    fh.flush()

    def _write(self, fh: IO[bytes], item: FeedItem) -> None:
        if isinstance(item, Frames):
            self.frames += len(item.frames)
        fh.write(_encode_item(item))


def _parse_recording_line(obj: Any) -> FeedItem | None:
    """A recording line's item, or None when ``obj`` is not a recording line."""
    if not isinstance(obj, dict):
        return None
    venue, recv_ts = obj.get("venue"), obj.get("recv_ts")
    if not isinstance(venue, str) or not isinstance(recv_ts, int):
        return None
    if isinstance(obj.get("frame"), str):
        return Frames(venue, recv_ts, [obj["frame"].encode("utf-8")])
    if isinstance(obj.get("frame_b64"), str):
        return Frames(venue, recv_ts, [base64.b64decode(obj["frame_b64"])])
    gap = obj.get("gap")
    if isinstance(gap, dict):
        try:
            return Gap(
                venue,
                "*",
                int(gap["end"]),
                recv_ts,
                tuple(str(s) for s in gap["streams"]),
                int(gap["start"]),
                int(gap["end"]),
                str(gap["cause"]),
            )
        except (KeyError, TypeError, ValueError):
            return None
    return None


def check_readable(path: Path) -> None:
    """Check that ``path`` can be opened for reading, without reading it.

    Raises:
        RecordingError: it cannot (missing, a directory, no permission); the message names it.
    """
    _open(path).close()


def read_recording(path: Path, *, venue: str | None = None) -> Iterator[FeedItem | CorruptLine]:
    """Read a recording, or a file of bare venue frames when ``venue`` is given.

    Yields batches of frames (consecutive lines of one socket read), gap events, and a
    :class:`CorruptLine` for every line that cannot be read. Blank lines are skipped.

    Raises:
        RecordingError: the file cannot be opened, or it holds bare frames and no ``venue``.
    """
    with _open(path) as fh:
        started = _start(fh, path, venue, "")
        if started is not None:
            yield from started[1]


def read_recordings(
    paths: Sequence[Path], *, venue: str | None = None
) -> Iterator[FeedItem | CorruptLine]:
    """Read several recordings as one: merged by receive time, lazily.

    Items come in ``recv_ts`` order, as one run that heard every file's venues would have
    read them; ties keep the order of ``paths``, then line order, and each file keeps its own
    order throughout (a corrupt line comes right after the line before it). Frames come as
    :class:`FileFrames` and corrupt lines with their ``file`` set. Files are read a batch at a
    time, whatever their size. One path reads exactly as :func:`read_recording` (no merge, no
    file names).

    Files of bare frames (with ``venue``) carry no receive time (they are stamped as read), so
    several are read one after another, in the order given; mixing them with recordings is
    an error. Empty files are skipped.

    Raises:
        RecordingError: at the first ``next()``, before any item: a file cannot be opened,
            holds bare frames and no ``venue`` is given, or bare files are mixed with
            recordings.
    """
    if len(paths) == 1:
        yield from read_recording(paths[0], venue=venue)
        return
    with contextlib.ExitStack() as stack:
        # Every file is opened and its format detected before the first item: a missing or
        # foreign second file stops the replay before anything of the first is used.
        bare: list[tuple[Path, Iterator[FeedItem | CorruptLine]]] = []
        recorded: list[tuple[Path, Iterator[FeedItem | CorruptLine]]] = []
        for path in paths:
            fh = stack.enter_context(_open(path))
            started = _start(fh, path, venue, str(path))
            if started is not None:
                (bare if started[0] else recorded).append((path, started[1]))
        if bare and recorded:
            raise RecordingError(
                f"cannot replay bare frames ({_names(bare)}) together with recordings"
                f" ({_names(recorded)}): bare frames carry no receive time to merge by;"
                " replay them on their own"
            )
        if bare:
            for _path, items in bare:
                yield from items
            return
        keyed = [_keyed(items) for _path, items in recorded]
        for _recv_ts, item in heapq.merge(*keyed, key=operator.itemgetter(0)):
            yield item


def _names(files: list[tuple[Path, Iterator[FeedItem | CorruptLine]]]) -> str:
    return ", ".join(repr(str(path)) for path, _items in files)


def _keyed(items: Iterator[FeedItem | CorruptLine]) -> Iterator[tuple[int, FeedItem | CorruptLine]]:
    """``(recv_ts, item)``; a corrupt line takes the time of the line before it (its place)."""
    recv_ts = 0
    for item in items:
        if not isinstance(item, CorruptLine):
            recv_ts = item.recv_ts
        yield recv_ts, item


def _open(path: Path) -> IO[bytes]:
    try:
        return path.open("rb")
    except OSError as exc:
        raise RecordingError(f"cannot read {str(path)!r}: {exc.strerror}") from exc


def _start(
    fh: IO[bytes], path: Path, venue: str | None, file: str
) -> tuple[bool, Iterator[FeedItem | CorruptLine]] | None:
    """Read up to the first non-blank line: (bare frames?, the file's items), or None if empty.

    ``file`` names the file in the items (``''``: plain :class:`Frames`, as for one file).
    """
    number = 0
    for first in fh:
        number += 1
        if first.strip():
            break
    else:
        return None
    lines = itertools.chain([first], fh)
    make: Callable[..., Frames] = functools.partial(FileFrames, file=file) if file else Frames
    if _detect_bare(first.rstrip(b"\r\n"), path, venue):
        assert venue is not None
        return True, _read_bare(lines, venue, number, file, make)
    return False, _read_recorded(lines, number, file, make)


def _read_bare(
    lines: Iterator[bytes], venue: str, number: int, file: str, make: Callable[..., Frames]
) -> Iterator[FeedItem | CorruptLine]:
    """Bare frames: up to MAX_BATCH lines at a time, stamped with the time they were read.

    ``number`` is the line number of the first line.
    """
    while chunk := list(itertools.islice(lines, MAX_BATCH)):
        frames = [raw.rstrip(b"\r\n") for raw in chunk]
        if all(frames):
            yield make(venue, now_ns(), frames, first_line=number)
        else:  # blank lines: batches of the runs between them, so line numbers stay right
            start = 0
            for index, frame in enumerate([*frames, b""]):
                if not frame:
                    if index > start:
                        yield make(venue, now_ns(), frames[start:index], first_line=number + start)
                    start = index + 1
        number += len(chunk)


def _read_recorded(
    lines: Iterator[bytes], start: int, file: str, make: Callable[..., Frames]
) -> Iterator[FeedItem | CorruptLine]:
    """Recording lines: frames of one socket read (same venue and recv_ts) become one batch.

    ``start`` is the line number of the first line.
    """
    loads = orjson.loads
    frames: list[RawFrame] = []
    venue = ""
    recv_ts = first = 0
    for number, raw in enumerate(lines, start=start):
        try:
            obj = loads(raw)
        except orjson.JSONDecodeError as exc:
            if not raw.strip():
                continue
            item: FeedItem | CorruptLine = CorruptLine(number, f"invalid JSON ({exc})", file)
        else:
            # The fast path: a frame line (checked field by field, no helper calls).
            if obj.__class__ is dict:
                frame, v, r = obj.get("frame"), obj.get("venue"), obj.get("recv_ts")
                if frame.__class__ is str and v.__class__ is str and r.__class__ is int:
                    if frames and (
                        v != venue
                        or r != recv_ts
                        or len(frames) >= MAX_BATCH
                        or number != first + len(frames)
                    ):
                        yield make(venue, recv_ts, frames, first_line=first)
                        frames = []
                    if not frames:
                        venue, recv_ts, first = v, r, number
                    frames.append(frame.encode("utf-8"))
                    continue
            parsed = _parse_recording_line(obj)
            if parsed is None:
                item = CorruptLine(
                    number, "not a recording line (venue, recv_ts and frame or gap)", file
                )
            elif isinstance(parsed, Frames):  # a binary frame, kept as base64
                item = make(parsed.venue, parsed.recv_ts, parsed.frames, first_line=number)
            else:
                item = parsed
        if frames:
            yield make(venue, recv_ts, frames, first_line=first)
            frames = []
        yield item
    if frames:
        yield make(venue, recv_ts, frames, first_line=first)


def _detect_bare(line: bytes, path: Path, venue: str | None) -> bool:
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        obj = None
    if _parse_recording_line(obj) is not None:
        return False
    if venue is None:
        raise RecordingError(
            f"{str(path)!r} is not an irisflow recording; if it holds bare venue frames "
            "(one per line), pass --venue, e.g. --venue binance"
        )
    return True
