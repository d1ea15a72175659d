"""A fake Polygon.io / Massive websocket server: a real server on 127.0.0.1 for tests.

It speaks the session of ``venues.md`` §2.2: a ``connected`` status on open, ``auth`` with a
key it knows (``auth_success``) or not (``auth_failed``), ``auth_timeout`` for a client that
never authenticates, ``max_connections`` (then close 1008) past the per-market limit, and
``subscribe``/``unsubscribe`` with the comma-separated ``params`` string (spaces after commas
accepted, wildcards like ``XT.*`` honoured), each topic acknowledged with ``subscribed to:``.
Every frame it sends is a JSON array::

    fake = FakePolygon()
    async with trio.open_nursery() as nursery:
        url = await nursery.start(fake.serve)     # clients connect to url + "/crypto"
        await fake.wait_subscribed("XT.BTC-USD")
        await fake.publish([crypto_trade("BTC-USD", 94251.37, 0.5, time_ms=..)])
        await fake.drop_all()
"""

from __future__ import annotations

from typing import Any

import attrs
import orjson
import trio

from ._wsfake import FakeConnection, FakeVenueServer

__all__ = [
    "EXAMPLE_CRYPTO_FRAME",
    "EXAMPLE_FOREX_FRAME",
    "EXAMPLE_STOCKS_FRAME",
    "FakePolygon",
    "crypto_trade",
    "polygon_status",
]

MARKETS = ("stocks", "options", "forex", "crypto", "indices", "futures")

# venues.md §2.5, verbatim.
EXAMPLE_CRYPTO_FRAME = (
    b'[{"ev":"XT","pair":"BTC-USD","p":94251.37,"t":1767225600412,"s":0.01842,"c":[2],'
    b'"i":"582211934","x":1,"r":1767225600431},{"ev":"XQ","pair":"BTC-USD","bp":94250.12,'
    b'"bs":0.35,"ap":94251.4,"as":1.204,"t":1767225600415,"x":1,"r":1767225600433}]'
)
EXAMPLE_STOCKS_FRAME = (
    b'[{"ev":"AM","sym":"AAPL","v":18342,"av":3120455,"op":241.1,"vw":242.8871,"o":242.85,'
    b'"c":242.93,"h":242.97,"l":242.8,"a":242.1904,"z":97,"s":1767278520000,"e":1767278580000},'
    b'{"ev":"T","sym":"AAPL","x":4,"i":"71675","z":3,"p":242.935,"s":100,"c":[12,37],'
    b'"t":1767278580012,"q":1845522}]'
)
EXAMPLE_FOREX_FRAME = (
    b'[{"ev":"C","p":"EUR/USD","x":48,"a":1.08652,"b":1.08649,"t":1767225600123},'
    b'{"ev":"CA","pair":"EUR/USD","o":1.0864,"c":1.08651,"h":1.08655,"l":1.08638,"v":412,'
    b'"s":1767225540000,"e":1767225600000}]'
)


def polygon_status(status: str, message: str) -> dict[str, str]:
    """A status message, e.g. ``polygon_status("success", "subscribed to: XT.BTC-USD")``."""
    return {"ev": "status", "status": status, "message": message}


def crypto_trade(
    pair: str,
    price: float,
    size: float,
    *,
    time_ms: int,
    conditions: list[int] | None = None,
    trade_id: str | None = None,
    exchange: int = 1,
) -> dict[str, Any]:
    """An ``XT`` event shaped like Massive's (``c`` [2] = buy side, [1] = sell side)."""
    event: dict[str, Any] = {
        "ev": "XT",
        "pair": pair,
        "p": price,
        "t": time_ms,
        "s": size,
        "c": conditions if conditions is not None else [],
        "x": exchange,
        "r": time_ms + 19,
    }
    if trade_id is not None:
        event["i"] = trade_id
    return event


def _symbol_of(event: dict[str, Any]) -> str:
    for key in ("pair", "sym"):
        if isinstance(event.get(key), str):
            return str(event[key])
    if event.get("ev") in ("C",) and isinstance(event.get("p"), str):
        return str(event["p"])
    return ""


@attrs.define(eq=False)
class FakePolygon(FakeVenueServer):
    """A fake Polygon.io / Massive websocket server for tests.

    Clients connect to ``url + "/<market>"`` (``crypto``, ``stocks``, ``forex``, ...).

    Choices where the venue documents nothing (venues.md §2.6):

    - ``auth_failed`` and ``auth_timeout`` are followed by a close with code 1008;
      ``max_connections`` too, as the third-party logs show. The limit is checked when a
      connection authenticates (the key says whose account it is).
    - A topic listed in ``refuse`` gets ``{"status":"error","message":<text>}`` instead of
      its ack; a ``subscribe`` before ``auth_success`` gets ``status:"error"``,
      ``"not authenticated"``.
    - Acks go one per frame, or all in one frame with ``acks_in_one_frame``.

    Attributes:
        api_keys: The keys that authenticate.
        max_connections: Authenticated connections allowed per market at once.
        auth_timeout: Seconds a client has to send ``auth``.
        acks_in_one_frame: Send the acks of one ``subscribe`` in a single frame.
        refuse: Topic -> error message, for subscriptions the fake refuses.
        answer_auth: When False, ``auth`` messages are ignored (so ``auth_timeout`` fires).
    """

    name = "FakePolygon"

    api_keys: frozenset[str] = frozenset({"TEST_KEY_123"})
    max_connections: int = 1
    auth_timeout: float = 10.0
    acks_in_one_frame: bool = False
    refuse: dict[str, str] = attrs.field(factory=dict)
    answer_auth: bool = True

    def check_path(self, path: str) -> str | None:
        """Accept ``/<market>`` only."""
        market = path.split("?", 1)[0].strip("/")
        if market in MARKETS or market.startswith("futures/"):
            return None
        return f"unknown market path {path!r}"

    async def _frame(self, conn: FakeConnection, events: list[Any], *, force: bool = False) -> bool:
        return await self.send(conn, orjson.dumps(events).decode(), force=force)

    async def on_open(self, conn: FakeConnection) -> None:
        """Greet with ``connected``."""
        conn.state.update(market=conn.path.strip("/"), authed=False, topics={})
        await self._frame(conn, [polygon_status("connected", "Connected Successfully")])

    async def background(self, conn: FakeConnection) -> None:
        """Time out a client that does not authenticate."""
        await trio.sleep(self.auth_timeout)
        if not conn.state.get("authed") and not conn.closing:
            await self._frame(
                conn,
                [polygon_status("auth_timeout", "No authentication request received.")],
                force=True,
            )
            await self.close(conn, 1008, "auth timeout")

    async def on_message(self, conn: FakeConnection, message: Any) -> None:
        """Handle ``auth``, ``subscribe`` and ``unsubscribe``."""
        action = message.get("action") if isinstance(message, dict) else None
        params = message.get("params") if isinstance(message, dict) else None
        if action == "auth":
            if self.answer_auth:
                await self._auth(conn, params)
        elif action in ("subscribe", "unsubscribe") and isinstance(params, str):
            if not conn.state["authed"]:
                await self._frame(conn, [polygon_status("error", "not authenticated")])
                return
            topics = [t.strip() for t in params.split(",") if t.strip()]
            if action == "subscribe":
                await self._subscribe(conn, topics)
            else:
                for topic in topics:
                    conn.state["topics"].pop(topic, None)
                self.notify()
                await self._frame(
                    conn, [polygon_status("success", f"unsubscribed to: {t}") for t in topics]
                )
        else:
            await self._frame(conn, [polygon_status("error", f"unknown action {action!r}")])

    async def _auth(self, conn: FakeConnection, key: Any) -> None:
        if key not in self.api_keys:
            await self._frame(conn, [polygon_status("auth_failed", "authentication failed")])
            await self.close(conn, 1008, "authentication failed")
            return
        market = conn.state["market"]
        others = sum(
            1
            for c in self.connections
            if c is not conn and c.state.get("authed") and c.state.get("market") == market
        )
        if others >= self.max_connections:
            await self._frame(
                conn,
                [
                    polygon_status(
                        "max_connections",
                        "Maximum number of websocket connections exceeded. You have reached"
                        " the connection limit for your account.",
                    )
                ],
            )
            await self.close(conn, 1008, "max connections")
            return
        conn.state["authed"] = True
        self.notify()
        await self._frame(conn, [polygon_status("auth_success", "authenticated")])

    async def _subscribe(self, conn: FakeConnection, topics: list[str]) -> None:
        replies: list[Any] = []
        for topic in topics:
            if topic in self.refuse:
                replies.append(polygon_status("error", self.refuse[topic]))
                continue
            conn.state["topics"][topic] = None
            replies.append(polygon_status("success", f"subscribed to: {topic}"))
        self.notify()
        if self.acks_in_one_frame:
            await self._frame(conn, replies)
        else:
            for reply in replies:
                await self._frame(conn, [reply])

    # Publishing.

    @staticmethod
    def _wants(topics: dict[str, None], event: dict[str, Any]) -> bool:
        ev = event.get("ev")
        return f"{ev}.{_symbol_of(event)}" in topics or f"{ev}.*" in topics

    async def publish(self, events: list[dict[str, Any]]) -> int:
        """Send ``events`` to every authenticated connection, each getting (in one frame)
        those its topics (or wildcards) match; how many connections got a frame."""
        sent = 0
        for conn in self.connections:
            if not conn.state.get("authed"):
                continue
            mine = [e for e in events if self._wants(conn.state["topics"], e)]
            if mine:
                sent += await self._frame(conn, mine)
        await trio.lowlevel.checkpoint()
        return sent

    async def send_status(self, status_text: str, message: str) -> int:
        """Send one status message to every connection (even while stalled)."""
        sent = 0
        for conn in self.connections:
            sent += await self._frame(conn, [polygon_status(status_text, message)], force=True)
        await trio.lowlevel.checkpoint()
        return sent

    # Observing.

    def subscriptions(self) -> set[str]:
        """Every topic some open connection is subscribed to."""
        return {t for conn in self.connections for t in conn.state.get("topics", {})}

    async def wait_subscribed(self, topic: str, connections: int = 1) -> None:
        """Wait until ``connections`` open connections are subscribed to ``topic``."""
        await self.wait_until(
            lambda: sum(topic in c.state.get("topics", {}) for c in self.connections) >= connections
        )
