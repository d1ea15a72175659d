"""A fake Kraken Spot WebSocket v2 server: a real server on 127.0.0.1 for tests.

It speaks ``venues.md`` §6.2: a ``status`` message on connect, ``subscribe`` /
``unsubscribe`` / ``ping`` methods with one ack per symbol (``success:false`` with an ``error``
for what it refuses), ``heartbeat`` once a second while subscribed, snapshots on subscription
(the last trades when ``snapshot`` is true, the ticker, the book at the asked depth), and book
messages carrying Kraken's CRC32 checksum of the top ten levels. Prices and quantities go out
as JSON numbers written from their text, trailing zeros included, as Kraken sends them::

    fake = FakeKraken()
    fake.set_book("BTC/USD", bids=[("94250.0", "1.50000000")], asks=[("94250.1", "0.25000000")])
    async with trio.open_nursery() as nursery:
        url = await nursery.start(fake.serve)      # clients connect to url + "/v2"
        await fake.wait_subscribed("book", "BTC/USD")
        await fake.publish_book("BTC/USD", bids=[("94250.0", "0")], bad_checksum=True)
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import attrs
import orjson
import trio

from ..venues.kraken import book_checksum
from ._wsfake import FakeConnection, FakeVenueServer

__all__ = ["EXAMPLE_TRADE_UPDATE", "FakeKraken", "Num", "dumps", "kraken_trade"]

# venues.md §6.2, verbatim.
EXAMPLE_TRADE_UPDATE = (
    b'{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"sell",'
    b'"price":94248.9,"qty":0.0125,"ord_type":"market","trade_id":81234567,'
    b'"timestamp":"2026-01-01T00:00:01.204519Z"}]}'
)

_CHANNELS = frozenset({"trade", "ticker", "ohlc", "book"})
_DEPTHS = (10, 25, 100, 500, 1000)
_INTERVALS = (1, 5, 15, 30, 60, 240, 1440, 10080, 21600)
_SYMBOL = re.compile(r"^[A-Z0-9.]{1,16}/[A-Z0-9.]{1,16}$")
_NUMBER = re.compile(r"^-?\d+(\.\d+)?([eE][-+]?\d+)?$")


@attrs.frozen
class Num:
    """A JSON number written exactly as ``text`` (e.g. ``Num("0.00100000")``)."""

    text: str = attrs.field()

    @text.validator
    def _check(self, attribute: Any, value: str) -> None:
        if not _NUMBER.match(value):
            raise ValueError(f"not a JSON number: {value!r}")


def dumps(value: Any) -> str:
    """JSON text of ``value``, writing :class:`Num` values as their text (orjson otherwise)."""
    if isinstance(value, Num):
        return value.text
    if isinstance(value, dict):
        return (
            "{"
            + ",".join(orjson.dumps(str(k)).decode() + ":" + dumps(v) for k, v in value.items())
            + "}"
        )
    if isinstance(value, list | tuple):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    return orjson.dumps(value).decode()


def kraken_trade(
    symbol: str,
    trade_id: int,
    price: str,
    qty: str,
    side: str = "buy",
    timestamp: str = "2026-01-01T00:00:01.204519Z",
) -> dict[str, Any]:
    """One element of a ``trade`` message; ``side`` is the taker's."""
    return {
        "symbol": symbol,
        "side": side,
        "price": Num(price),
        "qty": Num(qty),
        "ord_type": "market",
        "trade_id": trade_id,
        "timestamp": timestamp,
    }


Levels = dict[Decimal, tuple[str, str]]


def _top(levels: Levels, n: int, *, bids: bool) -> Levels:
    keys = heapq.nlargest(n, levels) if bids else heapq.nsmallest(n, levels)
    return {k: levels[k] for k in keys}


def _wire_levels(view: Levels, *, bids: bool) -> list[dict[str, Num]]:
    keys = sorted(view, reverse=bids)
    return [{"price": Num(view[k][0]), "qty": Num(view[k][1])} for k in keys]


def _checksum_of(bids: Levels, asks: Levels) -> int:
    b = [bids[k] for k in heapq.nlargest(10, bids)]
    a = [asks[k] for k in heapq.nsmallest(10, asks)]
    return book_checksum(b, a)


@attrs.define(eq=False)
class FakeKraken(FakeVenueServer):
    """A fake Kraken Spot WebSocket v2 server for tests.

    Choices where Kraken documents nothing precise:

    - Unknown symbols (when ``symbols`` is set) get ``"Currency pair not supported <sym>"``;
      a bad depth or interval gets a ``success:false`` ack naming the value.
    - The trade snapshot holds the last ``snapshot_size`` trades, oldest first; published
      trades join it.
    - Book updates are computed per connection from its depth: levels entering its view are
      sent, levels deleted from the book are sent with qty 0, levels pushed out of the view
      are not sent (clients truncate), as the checksum guide describes.

    Attributes:
        symbols: The known symbols; None accepts any ``BASE/QUOTE``.
        heartbeat_interval: Seconds between heartbeats while subscribed (Kraken: about 1).
        timestamp: The ``timestamp`` of book and ohlc messages, and of acks.
        snapshot_size: Trades kept per symbol for the trade snapshot (Kraken: 50).
        recent_trades: Symbol -> trades of the next snapshot (tests may add to it).
        tickers: Symbol -> the ticker element sent as the snapshot.
    """

    name = "FakeKraken"

    symbols: frozenset[str] | None = None
    heartbeat_interval: float = 1.0
    timestamp: str = "2026-01-01T00:00:01.500000Z"
    snapshot_size: int = 50
    recent_trades: dict[str, list[dict[str, Any]]] = attrs.field(factory=dict)
    tickers: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    _books: dict[str, tuple[Levels, Levels]] = attrs.field(factory=dict, init=False)

    def check_path(self, path: str) -> str | None:
        """Accept ``/v2`` only."""
        return None if path.split("?", 1)[0].rstrip("/") == "/v2" else f"no such path {path!r}"

    async def _send(self, conn: FakeConnection, message: Any, *, force: bool = False) -> bool:
        return await self.send(conn, dumps(message), force=force)

    async def on_open(self, conn: FakeConnection) -> None:
        """Send the ``status`` message."""
        conn.state.update(subs={}, books={})
        status = {
            "api_version": "v2",
            "connection_id": 12893419540412719317,
            "system": "online",
            "version": "2.0.10",
        }
        await self._send(conn, {"channel": "status", "type": "update", "data": [status]})

    async def background(self, conn: FakeConnection) -> None:
        """Send ``heartbeat`` every ``heartbeat_interval`` while subscribed to anything."""
        while True:
            await trio.sleep(self.heartbeat_interval)
            if conn.state.get("subs"):
                await self._send(conn, {"channel": "heartbeat"})

    async def on_invalid(self, conn: FakeConnection, text: str) -> None:
        """Non-JSON gets an error reply."""
        await self._send(conn, {"error": "Malformed request", "success": False, **self._times()})

    def _times(self) -> dict[str, str]:
        return {"time_in": self.timestamp, "time_out": self.timestamp}

    async def on_message(self, conn: FakeConnection, message: Any) -> None:
        """Handle ``subscribe``, ``unsubscribe`` and ``ping``."""
        if not isinstance(message, dict):
            await self._send(
                conn, {"error": "Malformed request", "success": False, **self._times()}
            )
            return
        method, req_id = message.get("method"), message.get("req_id")
        tail: dict[str, Any] = {
            **self._times(),
            **({"req_id": req_id} if req_id is not None else {}),
        }
        if method == "ping":
            await self._send(conn, {"method": "pong", **tail})
            return
        if method not in ("subscribe", "unsubscribe"):
            await self._send(
                conn, {"error": f"Method {method!r} not found", "success": False, **tail}
            )
            return
        params = message.get("params")
        channel = params.get("channel") if isinstance(params, dict) else None
        symbols = params.get("symbol") if isinstance(params, dict) else None
        if channel not in _CHANNELS or not isinstance(symbols, list) or not symbols:
            error = (
                f"Channel {channel!r} not supported"
                if channel not in _CHANNELS
                else "Must specify symbol"
            )
            await self._send(conn, {"error": error, "method": method, "success": False, **tail})
            return
        assert isinstance(params, dict)
        option = self._option(channel, params)
        if isinstance(option, str):
            await self._send(conn, {"error": option, "method": method, "success": False, **tail})
            return
        for symbol in symbols:
            await self._one(conn, method, channel, symbol, params, option, tail)

    @staticmethod
    def _option(channel: str, params: dict[str, Any]) -> int | str | None:
        if channel == "book":
            depth = params.get("depth", 10)
            return depth if depth in _DEPTHS else f"Invalid depth {depth!r}"
        if channel == "ohlc":
            interval = params.get("interval", 1)
            return interval if interval in _INTERVALS else f"Invalid interval {interval!r}"
        return None

    async def _one(
        self,
        conn: FakeConnection,
        method: str,
        channel: str,
        symbol: Any,
        params: dict[str, Any],
        option: int | None,
        tail: dict[str, Any],
    ) -> None:
        known = isinstance(symbol, str) and _SYMBOL.match(symbol) is not None
        if not known or (self.symbols is not None and symbol not in self.symbols):
            await self._send(
                conn,
                {
                    "error": f"Currency pair not supported {symbol}",
                    "method": method,
                    "success": False,
                    "symbol": symbol,
                    **tail,
                },
            )
            return
        subs: dict[tuple[str, str], Any] = conn.state["subs"]
        snapshot = params.get("snapshot", channel != "trade")
        result: dict[str, Any] = {"channel": channel, "snapshot": snapshot, "symbol": symbol}
        if channel == "book":
            result["depth"] = option
        elif channel == "ohlc":
            result["interval"] = option
        if method == "unsubscribe":
            subs.pop((channel, symbol), None)
        else:
            subs[(channel, symbol)] = option
        self.notify()
        await self._send(conn, {"method": method, "result": result, "success": True, **tail})
        if method == "subscribe" and snapshot:
            await self._snapshot(conn, channel, symbol, option)

    async def _snapshot(
        self, conn: FakeConnection, channel: str, symbol: str, option: int | None
    ) -> None:
        if channel == "trade":
            data = list(self.recent_trades.get(symbol, []))
            await self._send(conn, {"channel": "trade", "type": "snapshot", "data": data})
        elif channel == "ticker" and symbol in self.tickers:
            await self._send(
                conn, {"channel": "ticker", "type": "snapshot", "data": [self.tickers[symbol]]}
            )
        elif channel == "book":
            bids, asks = self._books.get(symbol, ({}, {}))
            depth = option or 10
            view = (_top(bids, depth, bids=True), _top(asks, depth, bids=False))
            conn.state["books"][symbol] = view
            element = {
                "symbol": symbol,
                "bids": _wire_levels(view[0], bids=True),
                "asks": _wire_levels(view[1], bids=False),
                "checksum": _checksum_of(*view),
            }
            await self._send(conn, {"channel": "book", "type": "snapshot", "data": [element]})

    # Publishing.

    def _subscribers(self, channel: str, symbol: str) -> list[FakeConnection]:
        return [c for c in self.connections if (channel, symbol) in c.state.get("subs", {})]

    async def publish_trades(self, trades: list[dict[str, Any]]) -> int:
        """Send trades (see :func:`kraken_trade`) as one update per symbol, and remember them for
        later snapshots; how many messages went out."""
        by_symbol: dict[str, list[dict[str, Any]]] = {}
        for t in trades:
            by_symbol.setdefault(t["symbol"], []).append(t)
        sent = 0
        for symbol, group in by_symbol.items():
            self.add_recent_trades(group)
            for conn in self._subscribers("trade", symbol):
                sent += await self._send(
                    conn, {"channel": "trade", "type": "update", "data": group}
                )
        await trio.lowlevel.checkpoint()
        return sent

    def add_recent_trades(self, trades: list[dict[str, Any]]) -> None:
        """Add trades to the next snapshots only (as if they happened while nobody listened)."""
        for t in trades:
            recent = self.recent_trades.setdefault(t["symbol"], [])
            recent.append(t)
            del recent[: -self.snapshot_size]

    async def publish_ticker(self, element: dict[str, Any]) -> int:
        """Send one ticker update (and keep it as the symbol's next snapshot)."""
        symbol = element["symbol"]
        self.tickers[symbol] = element
        sent = 0
        for conn in self._subscribers("ticker", symbol):
            sent += await self._send(
                conn, {"channel": "ticker", "type": "update", "data": [element]}
            )
        await trio.lowlevel.checkpoint()
        return sent

    async def publish_ohlc(self, element: dict[str, Any]) -> int:
        """Send one ohlc update to connections subscribed to its symbol and interval."""
        sent = 0
        for conn in self._subscribers("ohlc", element["symbol"]):
            if conn.state["subs"][("ohlc", element["symbol"])] == element.get("interval"):
                message = {
                    "channel": "ohlc",
                    "type": "update",
                    "timestamp": self.timestamp,
                    "data": [element],
                }
                sent += await self._send(conn, message)
        await trio.lowlevel.checkpoint()
        return sent

    def set_book(
        self, symbol: str, bids: list[tuple[str, str]], asks: list[tuple[str, str]]
    ) -> None:
        """Replace the book that snapshots show (levels as ``(price, qty)`` text)."""
        self._books[symbol] = (
            {Decimal(p): (p, q) for p, q in bids},
            {Decimal(p): (p, q) for p, q in asks},
        )

    async def publish_book(
        self,
        symbol: str,
        bids: Sequence[tuple[str, str]] = (),
        asks: Sequence[tuple[str, str]] = (),
        *,
        bad_checksum: bool = False,
    ) -> int:
        """Apply level changes (qty ``"0"`` deletes) and send each subscriber its update.

        Args:
            symbol: The book's symbol.
            bids: ``(price, qty)`` texts.
            asks: ``(price, qty)`` texts.
            bad_checksum: Send a wrong checksum (as if an update had been lost).

        Returns:
            How many connections got an update.
        """
        book_bids, book_asks = self._books.setdefault(symbol, ({}, {}))
        for side, changes in ((book_bids, bids), (book_asks, asks)):
            for price, qty in changes:
                if Decimal(qty) == 0:
                    side.pop(Decimal(price), None)
                else:
                    side[Decimal(price)] = (price, qty)
        sent = 0
        for conn in self._subscribers("book", symbol):
            depth = conn.state["subs"][("book", symbol)] or 10
            old = conn.state["books"].get(symbol, ({}, {}))
            new = (_top(book_bids, depth, bids=True), _top(book_asks, depth, bids=False))
            conn.state["books"][symbol] = new
            wire: list[list[dict[str, Num]]] = []
            for before, after, full in ((old[0], new[0], book_bids), (old[1], new[1], book_asks)):
                diff = [
                    {"price": Num(v[0]), "qty": Num(v[1])}
                    for k, v in after.items()
                    if before.get(k) != v
                ]
                diff += [
                    {"price": Num(v[0]), "qty": Num("0")}
                    for k, v in before.items()
                    if k not in full
                ]
                wire.append(diff)
            checksum = _checksum_of(*new) ^ (1 if bad_checksum else 0)
            element = {
                "symbol": symbol,
                "bids": wire[0],
                "asks": wire[1],
                "checksum": checksum,
                "timestamp": self.timestamp,
            }
            sent += await self._send(conn, {"channel": "book", "type": "update", "data": [element]})
        await trio.lowlevel.checkpoint()
        return sent

    # Observing.

    async def wait_subscribed(self, channel: str, symbol: str, connections: int = 1) -> None:
        """Wait until ``connections`` open connections are subscribed to ``channel`` for
        ``symbol``."""
        await self.wait_until(lambda: len(self._subscribers(channel, symbol)) >= connections)
