"""A fake Coinbase Advanced Trade market-data server: a real server on 127.0.0.1 for tests.

It speaks ``venues.md`` §6.1: ``{"type":"subscribe","channel":..,"product_ids":[..]}`` (one
channel per message), a ``subscriptions`` confirmation listing everything the connection is
subscribed to, snapshots on subscription (``market_trades`` recent trades, the ``level2`` book
as ``l2_data``, the last ``ticker`` and ``candles``), ``heartbeats`` once a second, and one
``sequence_num`` counter per connection across channels::

    fake = FakeCoinbase()
    async with trio.open_nursery() as nursery:
        url = await nursery.start(fake.serve)
        await fake.wait_subscribed("market_trades", "BTC-USD")
        await fake.publish_trades([market_trade("BTC-USD", 1, "94250.01", "0.5", "BUY")])
        fake.skip_sequence()          # the next message looks like one was lost
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import attrs
import orjson
import trio

from ._wsfake import FakeConnection, FakeVenueServer

__all__ = ["EXAMPLE_MARKET_TRADES", "FakeCoinbase", "market_trade"]

# venues.md §6.1, verbatim.
EXAMPLE_MARKET_TRADES = (
    b'{"channel":"market_trades","client_id":"","timestamp":"2026-01-01T00:00:00.812345Z",'
    b'"sequence_num":418,"events":[{"type":"update","trades":[{"trade_id":"902314557",'
    b'"product_id":"BTC-USD","price":"94251.37","size":"0.00184","side":"BUY",'
    b'"time":"2026-01-01T00:00:00.801122Z"}]}]}'
)

CHANNELS = (
    "heartbeats",
    "status",
    "ticker",
    "ticker_batch",
    "level2",
    "market_trades",
    "candles",
    "user",
    "futures_balance_summary",
)
_NEEDS_PRODUCTS = frozenset({"ticker", "ticker_batch", "level2", "market_trades", "candles"})
_NEEDS_JWT = frozenset({"user", "futures_balance_summary"})
_PRODUCT = re.compile(r"^[A-Z0-9]{1,15}-[A-Z0-9]{1,15}$")
_DATA_CHANNEL = {"level2": "l2_data"}


def market_trade(
    product: str,
    trade_id: int,
    price: str,
    size: str,
    side: str,
    time: str = "2026-01-01T00:00:00.801122Z",
) -> dict[str, str]:
    """One element of a ``market_trades`` event; ``side`` is the *maker's* (BUY or SELL)."""
    return {
        "trade_id": str(trade_id),
        "product_id": product,
        "price": price,
        "size": size,
        "side": side,
        "time": time,
    }


@attrs.define(eq=False)
class FakeCoinbase(FakeVenueServer):
    """A fake Coinbase Advanced Trade market-data server for tests.

    Choices where Coinbase documents nothing precise:

    - A refused subscription gets ``{"type":"error","message":"Failed to subscribe",
      "reason":..}`` (the Exchange feed's shape) and nothing is subscribed.
    - ``heartbeats`` is confirmed as ``"heartbeats": []`` in ``subscriptions``.
    - The ``market_trades`` snapshot holds the last ``snapshot_size`` trades of the product,
      oldest first; published trades join it, so a client that resubscribes sees them again.

    Attributes:
        products: The known products; None accepts any ``BASE-QUOTE``.
        heartbeat_interval: Seconds between heartbeats (Coinbase: 1).
        timestamp: The envelope ``timestamp`` of every message.
        snapshot_size: Trades kept per product for the ``market_trades`` snapshot.
        recent_trades: Product -> trades of the next snapshot (tests may add to it).
        books: Product -> ``{"bid": {price: qty}, "offer": {price: qty}}`` (text values).
        tickers: Product -> the ticker sent as the ``ticker`` snapshot.
    """

    name = "FakeCoinbase"

    products: frozenset[str] | None = None
    heartbeat_interval: float = 1.0
    timestamp: str = "2026-01-01T00:00:00.812345Z"
    snapshot_size: int = 50
    recent_trades: dict[str, list[dict[str, str]]] = attrs.field(factory=dict)
    books: dict[str, dict[str, dict[str, str]]] = attrs.field(factory=dict)
    tickers: dict[str, dict[str, str]] = attrs.field(factory=dict)

    # Protocol.

    async def on_open(self, conn: FakeConnection) -> None:
        """Start the connection's sequence and subscriptions (Coinbase sends no greeting)."""
        conn.state.update(seq=0, subs={})
        await trio.lowlevel.checkpoint()

    async def _envelope(
        self, conn: FakeConnection, channel: str, events: list[Any], *, force: bool = False
    ) -> bool:
        seq = conn.state["seq"]
        conn.state["seq"] = seq + 1
        message = {
            "channel": channel,
            "client_id": "",
            "timestamp": self.timestamp,
            "sequence_num": seq,
            "events": events,
        }
        return await self.send(conn, orjson.dumps(message).decode(), force=force)

    async def _error(
        self, conn: FakeConnection, reason: str, message: str = "Failed to subscribe"
    ) -> None:
        await self.send(
            conn, orjson.dumps({"type": "error", "message": message, "reason": reason}).decode()
        )

    async def on_invalid(self, conn: FakeConnection, text: str) -> None:
        """Non-JSON gets an error message."""
        await self._error(conn, "malformed JSON", "Failed to parse message")

    async def on_message(self, conn: FakeConnection, message: Any) -> None:
        """Handle ``subscribe`` and ``unsubscribe``."""
        if not isinstance(message, dict) or message.get("type") not in ("subscribe", "unsubscribe"):
            await self._error(
                conn, "type must be subscribe or unsubscribe", "Failed to parse message"
            )
            return
        channel = message.get("channel")
        products = message.get("product_ids", [])
        if channel not in CHANNELS:
            await self._error(conn, f"{channel!r} is not a valid channel")
            return
        if channel in _NEEDS_JWT and "jwt" not in message:
            await self._error(conn, f"{channel} requires authentication", "authentication failure")
            return
        if not isinstance(products, list) or (channel in _NEEDS_PRODUCTS and not products):
            await self._error(conn, f"you need to specify at least one product ID for {channel}")
            return
        for product in products:
            known = self.products is None and isinstance(product, str) and _PRODUCT.match(product)
            if not known and (self.products is None or product not in self.products):
                await self._error(conn, f"{product} is not a valid product")
                return
        subs: dict[str, set[str]] = conn.state["subs"]
        if message["type"] == "unsubscribe":
            subs.get(channel, set()).difference_update(products)
        else:
            subs.setdefault(channel, set()).update(products)
        self.notify()
        listing = {c: sorted(p) for c, p in subs.items() if p or c == "heartbeats"}
        await self._envelope(conn, "subscriptions", [{"subscriptions": listing}])
        if message["type"] == "subscribe":
            for product in products:
                await self._snapshot(conn, channel, product)

    async def _snapshot(self, conn: FakeConnection, channel: str, product: str) -> None:
        if channel == "market_trades":
            trades = list(reversed(self.recent_trades.get(product, [])))  # newest first
            await self._envelope(conn, channel, [{"type": "snapshot", "trades": trades}])
        elif channel == "level2":
            book = self.books.get(product, {"bid": {}, "offer": {}})
            updates = [
                {"side": side, "event_time": self.timestamp, "price_level": p, "new_quantity": q}
                for side, descending in (("bid", True), ("offer", False))
                for p, q in sorted(
                    book.get(side, {}).items(), key=lambda pq: Decimal(pq[0]), reverse=descending
                )
            ]
            event = {"type": "snapshot", "product_id": product, "updates": updates}
            await self._envelope(conn, "l2_data", [event])
        elif channel == "ticker" and product in self.tickers:
            await self._envelope(
                conn, channel, [{"type": "snapshot", "tickers": [self.tickers[product]]}]
            )

    async def background(self, conn: FakeConnection) -> None:
        """Send ``heartbeats`` every ``heartbeat_interval`` once subscribed to them."""
        counter = 0
        while True:
            await trio.sleep(self.heartbeat_interval)
            if "heartbeats" in conn.state.get("subs", {}):
                counter += 1
                event = {"current_time": self.timestamp, "heartbeat_counter": counter}
                await self._envelope(conn, "heartbeats", [event])

    # Publishing.

    async def _publish(self, channel: str, product: str, events: list[Any]) -> int:
        sent = 0
        wire = _DATA_CHANNEL.get(channel, channel)
        for conn in self.connections:
            if product in conn.state.get("subs", {}).get(channel, ()):
                sent += await self._envelope(conn, wire, events)
        await trio.lowlevel.checkpoint()
        return sent

    async def publish_trades(self, trades: list[dict[str, str]]) -> int:
        """Send trades (see :func:`market_trade`) as one ``market_trades`` update per product,
        and remember them for later snapshots; how many messages went out."""
        by_product: dict[str, list[dict[str, str]]] = {}
        for trade in trades:
            by_product.setdefault(trade["product_id"], []).append(trade)
        sent = 0
        for product, group in by_product.items():
            self.add_recent_trades(group)
            sent += await self._publish(
                "market_trades", product, [{"type": "update", "trades": group}]
            )
        return sent

    def add_recent_trades(self, trades: list[dict[str, str]]) -> None:
        """Add trades to the next snapshots only (as if they happened while nobody listened)."""
        for trade in trades:
            recent = self.recent_trades.setdefault(trade["product_id"], [])
            recent.append(trade)
            del recent[: -self.snapshot_size]

    async def publish_book(self, product: str, updates: list[tuple[str, str, str]]) -> int:
        """Apply ``(side, price, new_quantity)`` changes to the book and send them as an
        ``l2_data`` update; a quantity of ``"0"`` removes the level."""
        book = self.books.setdefault(product, {"bid": {}, "offer": {}})
        for side, price, qty in updates:
            if Decimal(qty) == 0:
                book.setdefault(side, {}).pop(price, None)
            else:
                book.setdefault(side, {})[price] = qty
        wire = [
            {"side": s, "event_time": self.timestamp, "price_level": p, "new_quantity": q}
            for s, p, q in updates
        ]
        return await self._publish(
            "level2", product, [{"type": "update", "product_id": product, "updates": wire}]
        )

    async def publish_ticker(self, ticker: dict[str, str]) -> int:
        """Send one ``ticker`` update (and keep it as the product's next snapshot)."""
        self.tickers[ticker["product_id"]] = ticker
        return await self._publish(
            "ticker", ticker["product_id"], [{"type": "update", "tickers": [ticker]}]
        )

    async def publish_candles(self, product: str, candles: list[dict[str, str]]) -> int:
        """Send one ``candles`` update."""
        return await self._publish("candles", product, [{"type": "update", "candles": candles}])

    # Faults.

    def skip_sequence(self, n: int = 1) -> None:
        """Skip ``n`` sequence numbers on every open connection: each client sees a hole in
        ``sequence_num`` at its next message, as if ``n`` messages were lost."""
        for conn in self.connections:
            conn.state["seq"] += n

    async def send_error(self, message: str, reason: str = "") -> int:
        """Send ``{"type":"error",...}`` to every connection."""
        text = orjson.dumps({"type": "error", "message": message, "reason": reason}).decode()
        return await self.send_raw(text)

    # Observing.

    async def wait_subscribed(self, channel: str, product: str = "", connections: int = 1) -> None:
        """Wait until ``connections`` open connections are subscribed to ``channel`` (for
        ``product``, when given)."""

        def enough() -> bool:
            count = 0
            for conn in self.connections:
                subs = conn.state.get("subs", {})
                if channel in subs and (not product or product in subs[channel]):
                    count += 1
            return count >= connections

        await self.wait_until(enough)
