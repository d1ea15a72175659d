"""Polygon.io / Massive websockets: plan, decoder and subscriber.

Wire facts: ``shared/venues.md`` §2. One connection per market (Massive allows one per asset
class by default) to ``<host>/<market>``; the session is: the server's ``connected`` status,
``{"action":"auth"}`` with the API key, ``auth_success``, then one ``subscribe`` with every
topic as a comma-separated string, each acknowledged by ``subscribed to: <topic>``. Every
server frame is a JSON array whose elements may mix event types and status messages.

Numbers are JSON numbers; see :mod:`irisflow.venues._wire` for how they become exact Decimals.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import orjson
import trio

from .._build import build_book, build_candle, build_quote, build_trade
from .._errors import DecodeError, UsageError, VenueError
from .._events import Book, Candle, Event, Level, Quote, Trade
from .._feed import FeedItem, FeedStats, RawFrame
from .._transport import WebSocket
from .._venue import ChannelInfo, FeedOptions, Plan, VenueParams, register_venue
from ._common import (
    Reconnect,
    VenueConnection,
    ack_deadline_error,
    join_url,
    make_decode_error,
    run_connections,
)
from ._wire import Secret, dec, loads_exact

__all__ = ["POLYGON", "PolygonDecoder", "PolygonVenue"]

VENUE = "polygon"
DEFAULT_ENDPOINT = "wss://socket.massive.com"
DELAYED_ENDPOINT = "wss://delayed.massive.com"
KEY_VARIABLES = ("POLYGON_API_KEY", "MASSIVE_API_KEY")
MAX_CONNECTION_RETRIES = 3
"""``max_connections`` on a *reconnect* is retried this many times in a row (the server may
not have noticed yet that the old connection is gone); at the first connection it is fatal."""

_MS = 1_000_000
_SKIPPED_KINDS_KEPT = 64

Route = Callable[[Any, int], Event]


# -- decoding -------------------------------------------------------------------------------
#
# One loads per frame (see _wire.loads_exact), then per element one dict lookup of ``ev`` and
# one route call. Anything unexpected raises and the slow path (_diagnose) names the place.


def _ms(value: Any) -> int:
    if value.__class__ is not int:
        raise TypeError("expected an integer time in ms")
    return value * _MS


def _trade_id(value: Any) -> int | None:
    """Polygon ids are strings (crypto ids are sometimes numbers): digits become the int,
    anything else (absent, or not all digits) becomes None."""
    if value.__class__ is int:
        return value
    if value.__class__ is str and value.isascii() and value.isdigit() and len(value) < 19:
        return int(value)
    return None


def _crypto_side(conditions: Any) -> str:
    # venues.md §2.4: XT condition 1 = sellside, 2 = buyside; [] or 0 = not stated.
    if conditions.__class__ is list:
        if 2 in conditions:
            return "buy"
        if 1 in conditions:
            return "sell"
    elif conditions == 2:
        return "buy"
    elif conditions == 1:
        return "sell"
    return "unknown"


def _levels(raw: Any, *, descending: bool) -> tuple[Level, ...]:
    levels = [(dec(p), dec(q)) for p, q in raw]
    levels.sort(key=lambda level: level[0], reverse=descending)
    return tuple(levels)


def _crypto_trade(d: Any, recv_ts: int) -> Event:
    return build_trade(
        VENUE,
        d["pair"],
        _ms(d["t"]),
        recv_ts,
        dec(d["p"]),
        dec(d["s"]),
        _crypto_side(d.get("c")),
        _trade_id(d.get("i")),
    )


def _stock_trade(d: Any, recv_ts: int) -> Event:
    # SIP trades do not say which side was the aggressor.
    return build_trade(
        VENUE,
        d["sym"],
        _ms(d["t"]),
        recv_ts,
        dec(d["p"]),
        dec(d["s"]),
        "unknown",
        _trade_id(d.get("i")),
    )


def _quote(key: str) -> Route:
    def route(d: Any, recv_ts: int) -> Event:
        return build_quote(
            VENUE,
            d[key],
            _ms(d["t"]),
            recv_ts,
            dec(d["bp"]),
            dec(d["bs"]),
            dec(d["ap"]),
            dec(d["as"]),
        )

    return route


def _forex_quote(d: Any, recv_ts: int) -> Event:
    # C carries prices only; its pair is in ``p`` (not ``pair``). Sizes are not sent.
    return build_quote(VENUE, d["p"], _ms(d["t"]), recv_ts, dec(d["b"]), None, dec(d["a"]), None)


def _aggregate(key: str, interval: str, length_ms: int) -> Route:
    def route(d: Any, recv_ts: int) -> Event:
        start = _ms(d["s"])
        end = _ms(d["e"]) if "e" in d else start + length_ms * _MS  # CA examples omit e
        return build_candle(
            VENUE,
            d[key],
            end,
            recv_ts,
            interval,
            start,
            end,
            dec(d["o"]),
            dec(d["h"]),
            dec(d["l"]),
            dec(d["c"]),
            dec(d["v"]),
        )

    return route


def _crypto_book(d: Any, recv_ts: int) -> Event:
    # XL2: treated as a replacement of the pair's top levels (venues.md §2.6 is unsure).
    return build_book(
        VENUE,
        d["pair"],
        _ms(d["t"]),
        recv_ts,
        None,
        _levels(d["b"], descending=True),
        _levels(d["a"], descending=False),
    )


_SKIP: Route | None = None


def _UNKNOWN(d: Any, recv_ts: int) -> Event:  # a marker for ``ev`` values without a route
    raise AssertionError("never called")


_ROUTES: dict[str, Route | None] = {
    "status": _SKIP,
    "XT": _crypto_trade,
    "XQ": _quote("pair"),
    "XA": _aggregate("pair", "1m", 60_000),
    "XAS": _aggregate("pair", "1s", 1_000),
    "XL2": _crypto_book,
    "T": _stock_trade,
    "Q": _quote("sym"),
    "A": _aggregate("sym", "1s", 1_000),
    "AM": _aggregate("sym", "1m", 60_000),
    "C": _forex_quote,
    "CA": _aggregate("pair", "1m", 60_000),
    "CAS": _aggregate("pair", "1s", 1_000),
}

_STR, _NUM, _INT, _LEVELS = "a string", "a number", "an integer", "a list of [price, size]"
_AGG = (("o", _NUM), ("h", _NUM), ("l", _NUM), ("c", _NUM), ("v", _NUM), ("s", _INT))
_FIELDS: dict[str, tuple[tuple[str, str], ...]] = {
    "XT": (("pair", _STR), ("p", _NUM), ("s", _NUM), ("t", _INT)),
    "XQ": (("pair", _STR), ("bp", _NUM), ("bs", _NUM), ("ap", _NUM), ("as", _NUM), ("t", _INT)),
    "XA": (("pair", _STR), *_AGG, ("e", _INT)),
    "XAS": (("pair", _STR), *_AGG, ("e", _INT)),
    "XL2": (("pair", _STR), ("b", _LEVELS), ("a", _LEVELS), ("t", _INT)),
    "T": (("sym", _STR), ("p", _NUM), ("s", _NUM), ("t", _INT)),
    "Q": (("sym", _STR), ("bp", _NUM), ("bs", _NUM), ("ap", _NUM), ("as", _NUM), ("t", _INT)),
    "A": (("sym", _STR), *_AGG, ("e", _INT)),
    "AM": (("sym", _STR), *_AGG, ("e", _INT)),
    "C": (("p", _STR), ("a", _NUM), ("b", _NUM), ("t", _INT)),
    "CA": (("pair", _STR), *_AGG),
    "CAS": (("pair", _STR), *_AGG),
}


def _is(kind: str, value: Any) -> bool:
    if kind == _STR:
        return isinstance(value, str)
    if kind == _INT:
        return value.__class__ is int
    if kind == _NUM:
        return value.__class__ in (int, float, Decimal)
    return isinstance(value, list) and all(
        isinstance(level, list)
        and len(level) == 2
        and all(x.__class__ in (int, float, Decimal) for x in level)
        for level in value
    )


def _diagnose(frame: RawFrame, exc: BaseException) -> DecodeError:
    """Explain why ``frame`` did not decode, as a path into the frame."""
    try:
        items = loads_exact(frame)
    except Exception as err:  # ValueError, or RecursionError from a deeply nested frame
        return make_decode_error(VENUE, f"invalid JSON ({err})", frame, cause=err)
    if not isinstance(items, list):
        return make_decode_error(VENUE, "expected an array of events @ $", frame, cause=exc)
    for index, item in enumerate(items):
        root = f"$[{index}]"
        if not isinstance(item, dict):
            return make_decode_error(VENUE, f"expected an object @ {root}", frame, cause=exc)
        if "ev" not in item:
            return make_decode_error(VENUE, f"missing field @ {root}.ev", frame, cause=exc)
        ev = item["ev"]
        if not isinstance(ev, str):
            return make_decode_error(VENUE, f"expected a string @ {root}.ev", frame, cause=exc)
        for name, kind in _FIELDS.get(ev, ()):
            if name not in item:
                return make_decode_error(VENUE, f"missing field @ {root}.{name}", frame, cause=exc)
            if not _is(kind, item[name]):
                return make_decode_error(
                    VENUE, f"expected {kind}, got {item[name]!r} @ {root}.{name}", frame, cause=exc
                )
        try:
            route = _ROUTES.get(ev)
            if route is not None:
                route(item, 0)
        except Exception as err:
            return make_decode_error(
                VENUE, f"bad value in {ev} event @ {root} ({err})", frame, cause=err
            )
    return make_decode_error(VENUE, f"cannot decode ({exc})", frame, cause=exc)


class PolygonDecoder:
    """Decodes Polygon/Massive frames (JSON arrays of events) of any market into events.

    Status messages decode to nothing. Event types irisflow does not map (``FMV``, ``LULD``,
    ``V``, ...) are skipped without a problem report and counted in :attr:`skipped`, so a
    business feed's extra events do not flood the run summary.
    """

    def __init__(self) -> None:
        self.skipped: dict[str, int] = {}
        """Elements skipped per unknown ``ev`` (at most 64 names; the rest count as '?')."""

    def decode_batch(
        self,
        frames: Sequence[RawFrame],
        recv_ts: int,
        out: list[Event],
        errors: list[tuple[int, DecodeError]],
    ) -> None:
        """Append events of ``frames`` to ``out``, one ``(index, error)`` per bad frame."""
        routes = _ROUTES
        append = out.append
        for index, frame in enumerate(frames):
            mark = len(out)
            try:
                items = loads_exact(frame)
                if items.__class__ is not list:
                    raise TypeError("not an array")
                for d in items:
                    ev = d["ev"]
                    route = routes.get(ev, _UNKNOWN)
                    if route is not None:
                        if route is _UNKNOWN:
                            self._skip(ev)
                        else:
                            append(route(d, recv_ts))
            except Exception as exc:  # any surprise, the slow path explains it
                del out[mark:]
                errors.append((index, _diagnose(frame, exc)))

    def _skip(self, ev: Any) -> None:
        name = ev if isinstance(ev, str) else "?"
        if name not in self.skipped and len(self.skipped) >= _SKIPPED_KINDS_KEPT:
            name = "?"
        self.skipped[name] = self.skipped.get(name, 0) + 1


# -- planning -------------------------------------------------------------------------------

MARKETS = ("crypto", "stocks", "options", "forex")
_PREFIXES: dict[str, dict[str, str]] = {
    # irisflow channel name -> the venue's event prefix, per market
    "crypto": {
        "trades": "XT",
        "quotes": "XQ",
        "aggs": "XA",
        "aggs_second": "XAS",
        "book": "XL2",
    },
    "stocks": {"trades": "T", "quotes": "Q", "aggs": "AM", "aggs_second": "A"},
    "options": {"trades": "T", "quotes": "Q", "aggs": "AM", "aggs_second": "A"},
    "forex": {"quotes": "C", "aggs": "CA", "aggs_second": "CAS"},
}
_KINDS: dict[str, type[Event]] = {
    "XT": Trade,
    "XQ": Quote,
    "XA": Candle,
    "XAS": Candle,
    "XL2": Book,
    "T": Trade,
    "Q": Quote,
    "A": Candle,
    "AM": Candle,
    "C": Quote,
    "CA": Candle,
    "CAS": Candle,
}
_DELAYED_OK = frozenset({"T", "A", "AM"})  # venues.md §2.1: everything else is real-time only
_SYMBOL_RULES: dict[str, tuple[re.Pattern[str], str]] = {
    "crypto": (re.compile(r"^(?:\*|[A-Z0-9]{1,15}-[A-Z0-9]{1,15})$"), "BTC-USD"),
    "stocks": (re.compile(r"^(?:\*|[A-Z][A-Z0-9.]{0,11})$"), "AAPL"),
    "options": (re.compile(r"^(?:\*|O:[A-Z0-9.]{1,6}\d{6}[CP]\d{8})$"), "O:AMC210827C00037000"),
    "forex": (re.compile(r"^(?:\*|[A-Z]{3}/[A-Z]{3})$"), "EUR/USD"),
}

CHANNELS = (
    ChannelInfo("trades", ("trade",), "trades: crypto XT, stocks/options T (not forex)"),
    ChannelInfo("quotes", ("quote",), "best bid/ask: crypto XQ, stocks/options Q, forex C"),
    ChannelInfo("aggs", ("candle",), "per-minute bars: crypto XA, stocks/options AM, forex CA"),
    ChannelInfo(
        "aggs_second", ("candle",), "per-second bars: crypto XAS, stocks/options A, forex CAS"
    ),
    ChannelInfo("book", ("book",), "crypto only: XL2 top-of-book levels per exchange"),
    ChannelInfo(
        "<prefix>",
        ("trade", "quote", "candle", "book"),
        "the venue's own: crypto XT XQ XA XAS XL2; stocks/options T Q AM A; forex C CA CAS",
    ),
)


def api_key() -> str:
    """The API key from ``POLYGON_API_KEY`` or ``MASSIVE_API_KEY``.

    Raises:
        UsageError: neither variable is set (or both are empty).
    """
    for name in KEY_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    raise UsageError(
        "polygon needs an API key: set POLYGON_API_KEY (or MASSIVE_API_KEY) in the environment"
    )


def _market(params: VenueParams) -> str:
    market = (params.market or "crypto").strip().lower()
    if market not in MARKETS:
        raise UsageError(f"unknown polygon market {params.market!r}; markets: {', '.join(MARKETS)}")
    return market


def _symbol(raw: str, market: str) -> str:
    text = raw.strip().upper()
    if market == "crypto":
        text = text.replace("/", "-")
    elif market == "forex":
        text = text.replace("-", "/")
        if len(text) == 6 and text.isalpha():
            text = f"{text[:3]}/{text[3:]}"
    elif market == "options" and text != "*" and not text.startswith("O:"):
        text = "O:" + text
    pattern, example = _SYMBOL_RULES[market]
    if not pattern.match(text):
        raise UsageError(f"bad polygon {market} symbol {raw!r}: use e.g. {example} (or * for all)")
    return text


_ALIASES = {"trade": "trades", "quote": "quotes", "agg": "aggs", "candles": "aggs"}


def _prefix(raw: str, market: str) -> str:
    text = raw.strip()
    names = _PREFIXES[market]
    lower = _ALIASES.get(text.lower(), text.lower())
    if lower in names:
        return names[lower]
    upper = text.upper()
    if upper in names.values():
        return upper
    valid = ", ".join([*names, *names.values()])
    if lower in ("trades", "quotes", "aggs", "aggs_second", "book") or upper in _KINDS:
        raise UsageError(f"polygon channel {raw!r} is not offered on {market}; valid: {valid}")
    raise UsageError(f"unknown polygon channel {raw!r} for {market}; valid: {valid}")


# -- subscribing ----------------------------------------------------------------------------


class PolygonVenue:
    """Polygon.io / Massive real-time and delayed websockets."""

    name = VENUE
    title = "Polygon.io / Massive"
    default_endpoint = DEFAULT_ENDPOINT
    credentials: tuple[str, ...] = ("POLYGON_API_KEY (or MASSIVE_API_KEY)",)
    default_channels = ("trades",)

    def channel_info(self) -> Sequence[ChannelInfo]:
        """The channels Polygon offers (which ones depend on ``--market``)."""
        return CHANNELS

    def plan(
        self,
        symbols: Sequence[str],
        channels: Sequence[str],
        endpoint: str | None = None,
        params: VenueParams = VenueParams(),  # noqa: B008  (frozen, so sharing is safe)
    ) -> Plan:
        """Validate market, symbols, channels and the API key; topics are ``<EV>.<symbol>``.

        The plan's endpoint is the full URL with the market path, e.g.
        ``wss://socket.massive.com/crypto``.

        Raises:
            UsageError: a bad market, symbol or channel, a channel the delayed feed does not
                carry, nothing to subscribe, or no API key in the environment.
        """
        market = _market(params)
        prefixes: list[str] = []
        for raw in channels:
            prefix = _prefix(raw, market)
            if prefix not in prefixes:
                prefixes.append(prefix)
        if not prefixes:
            raise UsageError("no channels given: pass --channels, e.g. --channels trades")
        syms: list[str] = []
        for raw in symbols:
            sym = _symbol(raw, market)
            if sym not in syms:
                syms.append(sym)
        if not syms:
            example = _SYMBOL_RULES[market][1]
            raise UsageError(f"no symbols given: pass --symbols, e.g. --symbols {example}")
        if params.delayed:
            live_only = [p for p in prefixes if p not in _DELAYED_OK]
            if live_only:
                raise UsageError(
                    f"the delayed feed does not carry {', '.join(live_only)} on {market}: only"
                    " stocks and options trades and aggregates (T, A, AM) are delayed; drop"
                    " --delayed for real time"
                )
        api_key()  # a missing key is reported before anything connects
        base = endpoint or (DELAYED_ENDPOINT if params.delayed else DEFAULT_ENDPOINT)
        return Plan(
            venue=VENUE,
            endpoint=join_url(base, f"/{market}"),
            symbols=tuple(syms),
            channels=tuple(prefixes),
            streams=tuple(f"{p}.{s}" for p in prefixes for s in syms),
            kinds=frozenset(_KINDS[p] for p in prefixes),
        )

    def decoder(self) -> PolygonDecoder:
        """A fresh decoder."""
        return PolygonDecoder()

    async def subscribe(
        self,
        plan: Plan,
        send: trio.MemorySendChannel[FeedItem],
        options: FeedOptions,
        stats: list[FeedStats],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run the plan's one connection until cancelled; closes ``send`` at the end."""
        key = Secret(api_key())

        def make(
            streams: Sequence[str], channel: trio.MemorySendChannel[FeedItem], counters: FeedStats
        ) -> _Connection:
            return _Connection(plan.endpoint, streams, channel, options, counters, key)

        # Polygon allows one connection per key and market: the whole plan goes on it.
        await run_connections(
            VENUE,
            plan.streams,
            max(1, len(plan.streams)),
            make,
            send,
            stats,
            task_status=task_status,
        )


class _Connection(VenueConnection):
    """One authenticated websocket session with one Polygon/Massive market cluster."""

    venue = VENUE
    ping_when_quiet = True  # Polygon sends no heartbeats; a quiet market is not a dead socket

    def __init__(
        self,
        url: str,
        streams: Sequence[str],
        send: trio.MemorySendChannel[FeedItem],
        options: FeedOptions,
        stats: FeedStats,
        key: Secret,
    ) -> None:
        super().__init__(url, streams, send, options, stats)
        self._key = key
        self._connected = False
        self._authed = False
        self._ever_authed = False
        self._refusals = 0  # max_connections in a row on reconnects
        self._pending: dict[str, str] = {}  # upper-cased topic -> topic as sent

    def __repr__(self) -> str:
        return f"<polygon connection to {self.url} ({len(self.streams)} topics)>"

    async def handshake(self, ws: WebSocket) -> None:
        """Wait for ``connected``, authenticate, subscribe, and wait for every ack."""
        self._connected = self._authed = False
        self._pending = {topic.upper(): topic for topic in self.streams}
        timeout = self.options.ack_timeout
        with trio.move_on_after(timeout) as scope:
            await self.read_until(ws, lambda: self._connected)
        if scope.cancelled_caught:
            raise Reconnect(f"polygon sent no 'connected' status within {timeout:g}s")
        await ws.send(orjson.dumps({"action": "auth", "params": self._key.reveal()}).decode())
        with trio.move_on_after(timeout) as scope:
            await self.read_until(ws, lambda: self._authed)
        if scope.cancelled_caught:
            raise Reconnect(f"polygon did not answer the authentication within {timeout:g}s")
        await ws.send(
            orjson.dumps({"action": "subscribe", "params": ",".join(self.streams)}).decode()
        )
        with trio.move_on_after(timeout) as scope:
            await self.read_until(ws, lambda: not self._pending)
        if scope.cancelled_caught:
            raise Reconnect(ack_deadline_error(VENUE, timeout, {0: list(self._pending.values())}))

    def is_control(self, frame: RawFrame) -> bool:
        """Only frames holding a status message matter here."""
        return b'"status"' in frame

    def control_frames(self, frames: Sequence[RawFrame]) -> list[RawFrame]:
        """:meth:`is_control` over one read, inlined (it runs on every frame)."""
        return [f for f in frames if b'"status"' in f]

    def on_control(self, frame: RawFrame) -> str | None:
        """Follow the session's statuses; refusals raise :class:`VenueError`."""
        try:
            items = orjson.loads(frame)
        except orjson.JSONDecodeError:
            return None  # the decoder reports it
        if not isinstance(items, list):
            return None
        for item in items:
            if isinstance(item, dict) and item.get("ev") == "status":
                self._on_status(str(item.get("status", "")), str(item.get("message", "")))
        return None

    def _on_status(self, status: str, message: str) -> None:
        lowered = message.lower()
        if status == "connected":
            self._connected = True
        elif status == "auth_success" or (status == "success" and lowered == "authenticated"):
            self._authed = self._ever_authed = True
            self._refusals = 0
        elif status == "success":
            if lowered.startswith("subscribed to:"):
                topic = message.split(":", 1)[1].strip().upper()
                self._pending.pop(topic, None)
        elif status == "auth_failed" or (
            status == "error" and not self._authed and "auth" in lowered
        ):
            raise VenueError(
                f"polygon rejected the API key ({status}: {message}); check POLYGON_API_KEY"
                " or MASSIVE_API_KEY, and that your plan includes this market"
                f" ({self.url.rsplit('/', 1)[-1]})"
            )
        elif status == "auth_timeout":
            raise VenueError(
                f"polygon closed the session before authentication ({status}: {message});"
                " check the network latency to the venue"
            )
        elif status == "max_connections":
            if self._ever_authed and self._refusals < MAX_CONNECTION_RETRIES:
                self._refusals += 1
                raise Reconnect(f"polygon refused a new connection for now ({status})")
            raise VenueError(
                f"polygon refused the connection: {message or status} ({status}); by default"
                " one connection per market is allowed for a key: stop the other client using"
                " it, or ask Massive for more connections"
            )
        elif status in ("error", "not_authorized", "unauthorized") or lowered.startswith(
            "not authorized"
        ):
            raise VenueError(
                f"polygon refused the subscription: {message or status} ({status}); check the"
                " topics and that your plan includes them"
            )


POLYGON = PolygonVenue()
register_venue(VENUE, lambda: POLYGON)
