"""The irisflow error tree.

Every error irisflow raises on purpose derives from :class:`IrisflowError`. The tree keeps
*misuse* (something the user typed or configured is wrong: fix it and run again) apart from
*world* errors (something outside irisflow failed: a venue, the network, a database)::

    IrisflowError
    ├── UsageError                 misuse: bad option, unknown venue/channel, bad config
    │   ├── FilterError            a filter expression that does not parse or type-check
    │   ├── PipelineError          a --pipe text or pipeline step that cannot work
    │   └── RecordingError         an unreadable or corrupt recording file
    ├── DecodeError                a venue frame that does not decode (path in the message)
    └── WorldError                 the outside world failed
        ├── ConnectError           could not open a connection (DNS, refused, TLS, handshake)
        ├── ConnectionClosed       an open connection went away
        ├── VenueError             the venue answered with an error (bad subscription, auth)
        │   ├── TelegramTargetError    a chat refused (400/403): that target is disabled
        │   ├── TelegramMessageError   a message refused (400): resent as plain text
        │   └── TelegramAuthError      the bot token was rejected (401/404)
        └── DatabaseError          PostgreSQL is unreachable or refused a statement

Messages say what happened, show the value, and say what to do. Foreign exceptions (wsproto,
websockets, psycopg, cattrs, httpx) are translated at the boundary and kept as ``__cause__``.
"""

from __future__ import annotations

__all__ = [
    "ConnectError",
    "ConnectionClosed",
    "DatabaseError",
    "DecodeError",
    "FilterError",
    "IrisflowError",
    "PipelineError",
    "RecordingError",
    "UsageError",
    "VenueError",
    "WorldError",
]


class IrisflowError(Exception):
    """Base class of every error irisflow raises on purpose."""


class UsageError(IrisflowError):
    """The user asked for something that cannot work; fixing the input fixes it."""


class FilterError(UsageError):
    """A filter expression failed to parse or to type-check against the event kinds.

    The message holds the expression with a caret under the offending spot.
    """


class PipelineError(UsageError):
    """A pipeline (``--pipe`` text, a named pipeline, or the Python builder) cannot work.

    The message says what is wrong; for ``--pipe`` text, the next lines show the text with a
    caret under the offending step or word.
    """


class RecordingError(UsageError):
    """A recording file cannot be read, or (with ``--strict``) holds a corrupt line."""


class DecodeError(IrisflowError):
    """A frame from a venue does not decode into an event.

    The message names the place in the frame as a path, e.g. ``missing field @ $.data.p``.
    """


class WorldError(IrisflowError):
    """Something outside irisflow failed: a venue, the network or a database."""


class ConnectError(WorldError):
    """A connection could not be opened (DNS, refused, TLS or websocket handshake)."""


class ConnectionClosed(WorldError):
    """An open websocket connection was closed or broke.

    Attributes:
        code: The websocket close code, or ``None`` when the TCP stream simply broke.
        reason: The close reason the peer sent (may be empty).
    """

    def __init__(self, message: str, *, code: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason


class VenueError(WorldError):
    """The venue refused a request (an unknown stream, a bad API key, a limit)."""


class DatabaseError(WorldError):
    """The database is unreachable or rejected a statement."""
