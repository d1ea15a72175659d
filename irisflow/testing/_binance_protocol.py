"""The sans-IO core of the fake Binance Spot server: stream names, URLs, control messages.

Nothing here does I/O or knows about Trio: :class:`~irisflow.testing.FakeBinance` feeds it
request paths, message texts and clock readings, and sends what it returns. The rules follow
``venues.md`` section 1 (Binance Spot websocket market streams). Where Binance documents no
wire text (a bad stream name, too many streams), the replies below are this fake's own choice,
in the style of the documented ones.

:class:`~irisflow.testing._wsfake.FrameScanner`, which finds the websocket frames in what a
client sends, now lives with the base class every fake venue shares; it is re-exported here
for existing imports.
"""

from __future__ import annotations

import collections
import re
from typing import Any, Final
from urllib.parse import unquote, urlsplit

import attrs
import orjson

from ._wsfake import FrameScanner as FrameScanner

__all__ = [
    "KLINE_INTERVALS",
    "METHODS",
    "Accepted",
    "ControlOutcome",
    "FrameScanner",
    "RateLimiter",
    "Rejected",
    "Subscriptions",
    "handle_control",
    "is_valid_stream",
    "parse_target",
]

KLINE_INTERVALS: Final = (
    *("1s", "1m", "3m", "5m", "15m", "30m"),
    *("1h", "2h", "4h", "6h", "8h", "12h"),
    *("1d", "3d", "1w", "1M"),
)
"""The kline intervals Binance Spot accepts in ``<symbol>@kline_<interval>``."""

METHODS: Final = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")
"""The control methods, in the order Binance lists them in its unknown-method error."""

TIME_UNITS: Final = frozenset({"MILLISECOND", "millisecond", "MICROSECOND", "microsecond"})
"""Accepted values of the ``timeUnit`` URL parameter."""

_INTERVALS = "|".join(KLINE_INTERVALS)
_STREAM = re.compile(
    rf"""
    [a-z0-9]+@(?:
        trade | aggTrade | miniTicker | ticker | bookTicker | avgPrice
        | referencePrice | blockTrade
        | ticker_(?:1h|4h|1d)
        | kline_(?:{_INTERVALS})(?:@\+08:00)?
        | depth(?:5|10|20)?(?:@100ms)?
    )
    | !miniTicker@arr
    | !ticker_(?:1h|4h|1d)@arr
    """,
    re.VERBOSE,
)
_ID_STRING = re.compile(r"[A-Za-z0-9]{1,36}")
_INT64 = range(-(2**63), 2**63)

_BAD_ID = (
    "Invalid request: request ID must be a 64-bit signed integer, an alphanumeric string of"
    " at most 36 characters, or null"
)
_UNKNOWN_METHOD = "Invalid request: unknown variant `{}`, expected one of " + ", ".join(
    f"`{m}`" for m in METHODS
)


def is_valid_stream(name: str) -> bool:
    """Whether ``name`` is a Binance Spot market stream name.

    The symbol must be lower case; everything after the ``@`` is case-sensitive. Accepted:
    ``trade``, ``aggTrade``, ``kline_<interval>`` (optionally ``@+08:00``), ``miniTicker``,
    ``ticker``, ``ticker_<1h|4h|1d>``, ``bookTicker``, ``avgPrice``, ``referencePrice``,
    ``blockTrade``, ``depth<5|10|20>`` and ``depth``, each depth optionally ``@100ms``, and the
    all-market ``!miniTicker@arr`` and ``!ticker_<1h|4h|1d>@arr``. ``!ticker@arr`` was retired
    in 2026 and is refused.
    """
    return _STREAM.fullmatch(name) is not None


# URL forms.


@attrs.frozen
class Accepted:
    """A handshake the fake accepts: the connection's starting state."""

    combined: bool
    """Whether events are wrapped as ``{"stream":..,"data":..}`` (true on ``/stream``)."""
    streams: tuple[str, ...]
    """Streams named in the URL, subscribed from the start."""
    time_unit: str
    """The ``timeUnit`` parameter (``"MILLISECOND"`` when absent); recorded, not applied."""


@attrs.frozen
class Rejected:
    """A handshake the fake refuses, with the HTTP status and body it answers."""

    status: int
    """HTTP status code."""
    body: str
    """Plain-text body saying why."""


def _query(query: str) -> dict[str, str]:
    # Not urllib.parse.parse_qs: that turns '+' into a space, which would break
    # 'btcusdt@kline_1m@+08:00' sent unencoded.
    params: dict[str, str] = {}
    for part in query.split("&"):
        if part:
            key, _, value = part.partition("=")
            params[unquote(key)] = unquote(value)
    return params


def parse_target(target: str, *, max_streams: int = 1024) -> Accepted | Rejected:
    """Decide what a handshake for ``target`` (path and query) gets.

    ``/ws`` and ``/ws/<stream>`` start raw (``combined`` false); ``/stream`` and
    ``/stream?streams=<s1>/<s2>`` start combined. An unknown path gets 404; a bad stream name,
    too many streams or a bad ``timeUnit`` gets 400 (the fake's choice: Binance documents no
    status for these).
    """
    parts = urlsplit(target)
    path = parts.path
    params = _query(parts.query)
    streams: list[str]
    if path in ("/ws", "/ws/"):
        combined, streams = False, []
    elif path.startswith("/ws/"):
        combined, streams = False, [unquote(path[len("/ws/") :])]
    elif path in ("/stream", "/stream/"):
        combined = True
        streams = [s for s in params.get("streams", "").split("/") if s]
    else:
        return Rejected(404, f"unknown path {path!r}: use /ws, /ws/<stream> or /stream?streams=..")
    for stream in streams:
        if not is_valid_stream(stream):
            return Rejected(400, f"invalid stream name {stream!r}")
    unique = tuple(dict.fromkeys(streams))
    if len(unique) > max_streams:
        return Rejected(400, f"too many streams: {len(unique)} (at most {max_streams})")
    time_unit = params.get("timeUnit", "MILLISECOND")
    if time_unit not in TIME_UNITS:
        return Rejected(400, f"invalid timeUnit {time_unit!r}: use MILLISECOND or MICROSECOND")
    return Accepted(combined=combined, streams=unique, time_unit=time_unit)


# Control messages.


@attrs.define
class Subscriptions:
    """What one connection is subscribed to, and how its events are framed."""

    combined: bool
    """Whether events are wrapped as ``{"stream":..,"data":..}``."""
    streams: dict[str, None] = attrs.field(factory=dict)
    """Subscribed streams in subscription order (a dict used as an ordered set)."""
    max_streams: int = 1024
    """Most streams this connection may hold."""


@attrs.frozen
class ControlOutcome:
    """What handling one client message produced."""

    reply: dict[str, Any]
    """The reply to send: ``{"result":..,"id":..}`` or ``{"code":..,"msg":..[,"id":..]}``."""
    parsed: bool
    """Whether the message was valid JSON (then ``request`` holds it)."""
    request: Any = None
    """The message as parsed JSON."""
    changed: bool = False
    """Whether the subscriptions or the ``combined`` property changed."""


class _Fail(Exception):
    """An error reply, raised inside :func:`handle_control` and turned into a reply there."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


def _valid_id(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value in _INT64
    return isinstance(value, str) and _ID_STRING.fullmatch(value) is not None


def _stream_params(params: list[Any]) -> list[str]:
    streams: list[str] = []
    for item in params:
        if not isinstance(item, str):
            raise _Fail(2, f"Invalid request: stream name must be a string (got {item!r})")
        if not is_valid_stream(item):
            raise _Fail(2, f"Invalid request: invalid stream name `{item}`")
        streams.append(item)
    return streams


def _property_name(params: list[Any]) -> str:
    if not params or not isinstance(params[0], str):
        raise _Fail(2, "Invalid request: property name must be a string")
    if params[0] != "combined":
        raise _Fail(0, "Unknown property")
    return params[0]


def _apply(state: Subscriptions, method: str, params: list[Any]) -> tuple[Any, bool]:
    """Run one valid-looking request against ``state``; returns (result, changed)."""
    if method == "SUBSCRIBE":
        streams = _stream_params(params)
        after = dict(state.streams) | dict.fromkeys(streams)
        if len(after) > state.max_streams:
            raise _Fail(
                2,
                f"Invalid request: too many streams: at most {state.max_streams} per connection"
                f" (this request would make {len(after)})",
            )
        changed = len(after) != len(state.streams)
        state.streams = after
        return None, changed
    if method == "UNSUBSCRIBE":
        streams = _stream_params(params)
        before = len(state.streams)
        for stream in streams:
            state.streams.pop(stream, None)
        return None, len(state.streams) != before
    if method == "LIST_SUBSCRIPTIONS":
        if params:
            raise _Fail(2, "Invalid request: too many parameters")
        return list(state.streams), False
    if method == "GET_PROPERTY":
        if len(params) > 1:
            raise _Fail(2, "Invalid request: too many parameters")
        _property_name(params)
        return state.combined, False
    # SET_PROPERTY
    if len(params) > 2:
        raise _Fail(2, "Invalid request: too many parameters")
    _property_name(params)
    if len(params) < 2 or not isinstance(params[1], bool):
        raise _Fail(1, "Invalid value type: expected Boolean")
    changed = state.combined != params[1]
    state.combined = params[1]
    return None, changed


def handle_control(state: Subscriptions, message: str | bytes) -> ControlOutcome:
    """Handle one message a client sent, updating ``state``; returns the reply to send.

    Error codes follow Binance: 0 unknown property, 1 value not a boolean, 2 invalid request
    (missing or bad ``id``, missing or unknown ``method``, bad ``params``, too many
    parameters, and, the fake's choice, a bad stream name or too many streams), 3 invalid
    JSON. An error reply carries ``id`` only when the request had a valid one. A request is
    all or nothing: one bad stream name subscribes none of the others.
    """
    try:
        request = orjson.loads(message)
    except orjson.JSONDecodeError as exc:
        msg = f"Invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        return ControlOutcome({"code": 3, "msg": msg}, parsed=False)
    if not isinstance(request, dict):
        reply = {"code": 2, "msg": "Invalid request: expected a JSON object"}
        return ControlOutcome(reply, parsed=True, request=request)
    if "id" not in request or not _valid_id(request["id"]):
        return ControlOutcome({"code": 2, "msg": _BAD_ID}, parsed=True, request=request)
    request_id = request["id"]
    try:
        method = request.get("method")
        if method is None:
            raise _Fail(2, "Invalid request: missing field `method`")
        if method not in METHODS:
            raise _Fail(2, _UNKNOWN_METHOD.format(method))
        params = request.get("params")
        if params is None:
            if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
                raise _Fail(2, "Invalid request: missing field `params`")
            params = []
        if not isinstance(params, list):
            raise _Fail(2, "Invalid request: `params` must be an array")
        result, changed = _apply(state, method, params)
    except _Fail as fail:
        reply = {"code": fail.code, "msg": fail.msg, "id": request_id}
        return ControlOutcome(reply, parsed=True, request=request)
    return ControlOutcome(
        {"result": result, "id": request_id}, parsed=True, request=request, changed=changed
    )


# Limits.


@attrs.define
class RateLimiter:
    """Counts incoming messages in a sliding window of ``window`` seconds."""

    limit: int
    """Most messages allowed in any window."""
    window: float = 1.0
    """Window length in seconds."""
    _times: collections.deque[float] = attrs.field(factory=collections.deque, init=False)

    def hit(self, now: float) -> bool:
        """Count one message at time ``now`` (seconds); true if the window is now over."""
        times = self._times
        while times and times[0] <= now - self.window:
            times.popleft()
        times.append(now)
        return len(times) > self.limit
