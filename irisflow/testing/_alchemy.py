"""A fake Alchemy websocket server (JSON-RPC 2.0 subscriptions) on 127.0.0.1, for tests.

It speaks ``venues.md`` §3: ``/v2/<key>`` paths, ``eth_subscribe`` for ``newHeads``, ``logs``
(address and topic filters), ``newPendingTransactions``, ``alchemy_minedTransactions`` and
``alchemy_pendingTransactions`` (with their filters, validated), ``eth_unsubscribe``,
``net_version`` (what the SDK's heartbeat asks), batches of up to 20 requests, and
notifications that carry no ``id``. It delivers each published log or transaction only to the
subscriptions whose filters match, as Alchemy does (logs by address and every topic position,
with the node's rules: see ``_log_matches``)::

    fake = FakeAlchemy()
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.serve)
        ...  # plan with endpoint=fake.url and ALCHEMY_API_KEY=fake.api_key
        await fake.wait_subscribed("logs")
        await fake.publish_log(transfer_log(USDC, a, b, 2_500_000_000, ...))
        await fake.drop_all()

Payload builders and the venue notes' examples are in ``_alchemy_frames.py``.

Choices where Alchemy documents nothing:

- A wrong key gets HTTP 401 at the handshake; another path gets 404.
- Going over ``max_connections`` accepts the websocket, then closes it with 1008 and
  "WebSocket connection limit reached for this app" (the newer docs' wording).
- A bad filter gets JSON-RPC error -32602; an unknown method -32601; bad JSON -32700 (id
  null); a batch over ``max_batch`` -32600; more than ``max_subscriptions`` on one
  connection -32000.
- While stalled nothing goes out: replies and notifications are dropped (counted).
"""

from __future__ import annotations

import collections
import re
import secrets
from typing import Any, cast

import attrs
import orjson
import trio

from ._alchemy_frames import notification
from ._wsfake import FakeConnection, FakeVenueServer

__all__ = ["FakeAlchemy", "SubscriptionInfo"]

# -- the server -----------------------------------------------------------------------------

_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_HASH = re.compile(r"0x[0-9a-fA-F]{64}")
_TYPES = (
    "newHeads",
    "logs",
    "newPendingTransactions",
    "alchemy_minedTransactions",
    "alchemy_pendingTransactions",
)
_LIMIT_CLOSE = "WebSocket connection limit reached for this app"


class _BadParams(Exception):
    """A subscription filter the fake refuses (-32602)."""


@attrs.frozen
class SubscriptionInfo:
    """One live subscription on the fake."""

    id: str
    """Subscription id, ``0x`` + 32 hex digits."""
    type: str
    """``newHeads``, ``logs``, ``alchemy_minedTransactions``, ..."""
    params: dict[str, Any]
    """The filter object (empty when none was given)."""


def _subs(conn: FakeConnection) -> dict[str, SubscriptionInfo]:
    """The live subscriptions of one connection, by id."""
    return cast(dict[str, SubscriptionInfo], conn.state["alchemy"])


def _addresses(value: Any, what: str) -> set[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(
        isinstance(a, str) and _ADDRESS.fullmatch(a) for a in items
    ):
        raise _BadParams(f"invalid {what}: expected an address or a list of addresses")
    return {a.lower() for a in items}


def _check_filter(kind: str, rest: list[Any]) -> dict[str, Any]:
    if len(rest) > 1:
        raise _BadParams("too many params")
    flt = rest[0] if rest else {}
    if not isinstance(flt, dict):
        raise _BadParams("filter must be an object")
    if kind in ("newHeads", "newPendingTransactions"):
        if flt:
            raise _BadParams(f"{kind} takes no filter")
        return {}
    allowed = {
        "logs": {"address", "topics"},
        "alchemy_minedTransactions": {"addresses", "includeRemoved", "hashesOnly"},
        "alchemy_pendingTransactions": {"fromAddress", "toAddress", "hashesOnly"},
    }[kind]
    unknown = set(flt) - allowed
    if unknown:
        raise _BadParams(f"unknown filter key {sorted(unknown)[0]!r}")
    for key in ("includeRemoved", "hashesOnly"):
        if key in flt and not isinstance(flt[key], bool):
            raise _BadParams(f"{key} must be a boolean")
    if kind == "logs":
        if "address" in flt:
            _addresses(flt["address"], "address")
        topics = flt.get("topics", [])
        if not isinstance(topics, list) or len(topics) > 4:
            raise _BadParams("topics must be a list of at most 4 positions")
        for position in topics:
            options = position if isinstance(position, list) else [position]
            for topic in options:
                if topic is not None and not (isinstance(topic, str) and _HASH.fullmatch(topic)):
                    raise _BadParams(f"invalid topic {topic!r}")
    elif kind == "alchemy_minedTransactions":
        entries = flt.get("addresses", [])
        if not isinstance(entries, list) or len(entries) > 1000:
            raise _BadParams("addresses must be a list of at most 1000 filters")
        for entry in entries:
            if (
                not isinstance(entry, dict)
                or not entry
                or set(entry) - {"to", "from"}
                or not all(isinstance(v, str) and _ADDRESS.fullmatch(v) for v in entry.values())
            ):
                raise _BadParams(f"invalid address filter {entry!r}: use {{'to'|'from': '0x..'}}")
    else:
        unique: set[str] = set()
        for key in ("fromAddress", "toAddress"):
            if key in flt:
                unique |= _addresses(flt[key], key)
        if len(unique) > 1000:
            raise _BadParams("at most 1000 unique addresses")
    return flt


def _log_matches(flt: dict[str, Any], log: dict[str, Any]) -> bool:
    """Whether a node (geth's ``filterLogs``) would deliver ``log`` under ``flt``.

    Every topic position is matched, 0 to 3: ``null``, ``[]`` or an array holding ``null`` is
    any value, a string one value, an array alternatives. A log with fewer topics than the
    filter has positions is skipped, even when the extra positions are wildcards.
    """
    if "address" in flt and log.get("address", "").lower() not in _addresses(
        flt["address"], "address"
    ):
        return False
    topics = [t.lower() for t in log.get("topics", [])]
    wanted = flt.get("topics", [])
    if len(wanted) > len(topics):
        return False
    for topic, position in zip(topics, wanted, strict=False):
        options = position if isinstance(position, list) else [position]
        if not options or None in options:
            continue
        if topic not in [o.lower() for o in options]:
            return False
    return True


def _mined_matches(flt: dict[str, Any], tx: dict[str, Any]) -> bool:
    entries = flt.get("addresses", [])
    if not entries:
        return True
    to, sender = (tx.get("to") or "").lower(), (tx.get("from") or "").lower()
    return any(
        ("to" not in e or e["to"].lower() == to)
        and ("from" not in e or e["from"].lower() == sender)
        for e in entries
    )


def _pending_matches(flt: dict[str, Any], tx: dict[str, Any]) -> bool:
    if "fromAddress" not in flt and "toAddress" not in flt:
        return True
    to, sender = (tx.get("to") or "").lower(), (tx.get("from") or "").lower()
    froms = _addresses(flt["fromAddress"], "") if "fromAddress" in flt else set()
    tos = _addresses(flt["toAddress"], "") if "toAddress" in flt else set()
    return sender in froms or to in tos  # the two filters are OR-ed


def _error(rid: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "error": {"code": code, "message": message}}


@attrs.define(eq=False)
class FakeAlchemy(FakeVenueServer):
    """A fake Alchemy websocket endpoint for tests.

    Start it with ``await nursery.start(fake.serve)``; clients use ``fake.url`` as the
    endpoint (``ws://127.0.0.1:PORT/v2``) and connect to ``fake.url + "/" + fake.api_key``.
    It is a :class:`~irisflow.testing._wsfake.FakeVenueServer`, which owns the socket, the
    connections and the faults (:meth:`drop_all`, :meth:`close_all`, :meth:`stall`,
    :meth:`reject_connections`, :meth:`send_raw`).

    Attributes:
        api_key: The key the path must end in.
        network_version: What ``net_version`` answers.
        answer_net_version: False to leave ``net_version`` unanswered (a dead upstream).
        max_connections: Open connections allowed; more are closed with 1008.
        max_subscriptions: Subscriptions allowed per connection.
        max_batch: Requests allowed in one batch.
        close_timeout: Seconds to wait for a client's close frame before cutting TCP.
        requests: Every parsed request object, in arrival order (batches flattened).
        connections_total: Connections accepted so far (not those closed for the limit).
        net_version_requests: ``net_version`` requests received.
        limit_closes: Connections closed with 1008 for going over ``max_connections``.
        dropped_frames: Frames not sent because the server was stalled.
    """

    name = "FakeAlchemy"
    url_path = "/v2"

    api_key: str = "test-key-0123"
    network_version: str = "1"
    answer_net_version: bool = True
    max_connections: int = 100
    max_subscriptions: int = 1000
    max_batch: int = 20
    # Declared again (the base has it too) so that it comes after this fake's own parameters.
    close_timeout: float = 5.0
    net_version_requests: int = attrs.field(default=0, init=False)
    limit_closes: int = attrs.field(default=0, init=False)
    _faults: collections.deque[tuple[int, str, bool]] = attrs.field(
        factory=collections.deque, init=False
    )

    # The protocol, as FakeVenueServer hooks.

    def check_path(self, path: str) -> tuple[int, str] | None:
        """Refuse paths other than ``/v2/<key>`` (404) and a wrong key (401)."""
        path = path.partition("?")[0]
        if not path.startswith("/v2/"):
            return 404, "Not found: use /v2/<api key>"
        if path != f"/v2/{self.api_key}":
            return 401, "Must be authenticated!"
        return None

    def check_accepted(self, path: str) -> tuple[int, str] | None:
        """Close a connection over ``max_connections`` with 1008."""
        if self.connection_count < self.max_connections:
            return None
        self.limit_closes += 1
        self.notify()
        return 1008, _LIMIT_CLOSE

    def init_connection(self, conn: FakeConnection) -> None:
        """Start with no subscriptions."""
        conn.state["alchemy"] = {}

    async def on_receive(self, conn: FakeConnection, message: str | bytes) -> None:
        """Answer one JSON-RPC request or batch."""
        reply = self._handle_message(conn, message)
        if reply is None:
            await trio.lowlevel.checkpoint()
        else:
            await self.send(conn, orjson.dumps(reply).decode())

    # JSON-RPC.

    def _handle_message(self, conn: FakeConnection, message: str | bytes) -> Any:
        try:
            obj = orjson.loads(message)
        except orjson.JSONDecodeError:
            return _error(None, -32700, "Parse error")
        if isinstance(obj, list):
            if not obj:
                return _error(None, -32600, "Invalid Request: empty batch")
            if len(obj) > self.max_batch:
                return _error(None, -32600, f"batch size too large (max {self.max_batch})")
            replies = [self._answer(conn, item) for item in obj]
            return [r for r in replies if r is not None]
        return self._answer(conn, obj)

    def _answer(self, conn: FakeConnection, req: Any) -> Any:
        if not isinstance(req, dict):
            return _error(None, -32600, "Invalid Request")
        self.requests.append(req)
        rid = req.get("id")
        method, params = req.get("method"), req.get("params", [])
        if req.get("jsonrpc") != "2.0" or not isinstance(method, str):
            return _error(rid, -32600, "Invalid Request")
        if not isinstance(params, list):
            return _error(rid, -32602, "invalid params: expected an array")
        if method == "net_version":
            self.net_version_requests += 1
            if not self.answer_net_version:
                return None
            return {"jsonrpc": "2.0", "id": rid, "result": self.network_version}
        if method == "eth_chainId":
            return {"jsonrpc": "2.0", "id": rid, "result": hex(int(self.network_version))}
        if method == "eth_unsubscribe":
            if len(params) != 1 or not isinstance(params[0], str):
                return _error(rid, -32602, "invalid params: expected [subscription id]")
            found = _subs(conn).pop(params[0], None) is not None
            self.notify()
            return {"jsonrpc": "2.0", "id": rid, "result": found}
        if method == "eth_subscribe":
            return self._subscribe(conn, rid, params)
        return _error(rid, -32601, f"Method not found: {method}")

    def _subscribe(self, conn: FakeConnection, rid: Any, params: list[Any]) -> Any:
        if self._faults:
            code, message, with_id = self._faults.popleft()
            reply = _error(rid, code, message)
            if not with_id:
                del reply["id"]
            return reply
        if not params or params[0] not in _TYPES:
            shown = params[0] if params else None
            return _error(rid, -32602, f"invalid params: unknown subscription type {shown!r}")
        try:
            flt = _check_filter(params[0], params[1:])
        except _BadParams as exc:
            return _error(rid, -32602, f"invalid params: {exc}")
        if len(_subs(conn)) >= self.max_subscriptions:
            return _error(rid, -32000, f"too many subscriptions (max {self.max_subscriptions})")
        sub = SubscriptionInfo("0x" + secrets.token_hex(16), params[0], flt)
        _subs(conn)[sub.id] = sub
        self.notify()
        return {"jsonrpc": "2.0", "id": rid, "result": sub.id}

    # Publishing.

    async def _publish(self, kind: str, make: Any) -> int:
        """Send ``make(sub)`` (None: skip) to each matching subscription; how many got it."""
        sent = 0
        for conn in self.connections:
            for sub in list(_subs(conn).values()):
                if sub.type != kind:
                    continue
                result = make(sub)
                if result is not None:
                    sent += await self.send(conn, notification(sub.id, result))
        await trio.lowlevel.checkpoint()
        return sent

    async def publish_head(self, header: dict[str, Any]) -> int:
        """Send a block header to every ``newHeads`` subscription."""
        return await self._publish("newHeads", lambda sub: header)

    async def publish_log(self, log: dict[str, Any]) -> int:
        """Send a log to every ``logs`` subscription whose address and topics match."""
        return await self._publish(
            "logs", lambda sub: log if _log_matches(sub.params, log) else None
        )

    async def publish_mined(self, tx: dict[str, Any], *, removed: bool = False) -> int:
        """Send a mined (or, with ``removed``, reorged-out) transaction to matching subscribers.

        Removals only go to subscriptions made with ``includeRemoved``.
        """

        def make(sub: SubscriptionInfo) -> Any:
            if not _mined_matches(sub.params, tx):
                return None
            if removed and not sub.params.get("includeRemoved", False):
                return None
            body = {"hash": tx["hash"]} if sub.params.get("hashesOnly") else tx
            return {"removed": removed, "transaction": body}

        return await self._publish("alchemy_minedTransactions", make)

    async def publish_pending(self, tx: dict[str, Any]) -> int:
        """Send a pending transaction to matching ``alchemy_pendingTransactions`` subscribers."""

        def make(sub: SubscriptionInfo) -> Any:
            if not _pending_matches(sub.params, tx):
                return None
            return tx["hash"] if sub.params.get("hashesOnly") else tx

        sent = await self._publish("alchemy_pendingTransactions", make)
        return sent + await self._publish("newPendingTransactions", lambda sub: tx["hash"])

    # Faults.

    def fail_next_subscribe(self, code: int, message: str, *, with_id: bool = True) -> None:
        """Answer the next ``eth_subscribe`` with a JSON-RPC error (queued, in order).

        ``with_id=False`` leaves the id out, as Alchemy's documented 429 reply does.
        """
        self._faults.append((code, message, with_id))

    def rate_limit_next_subscribe(self) -> None:
        """Answer the next ``eth_subscribe`` with Alchemy's throughput error (429, no id)."""
        self.fail_next_subscribe(
            429,
            "Your app has exceeded its compute units per second capacity.",
            with_id=False,
        )

    # Observing.

    def subscriptions(self, kind: str | None = None) -> list[SubscriptionInfo]:
        """Live subscriptions of every open connection (of type ``kind``, if given)."""
        return [
            sub
            for conn in self.connections
            for sub in _subs(conn).values()
            if kind is None or sub.type == kind
        ]

    async def wait_subscribed(self, kind: str, count: int = 1) -> list[SubscriptionInfo]:
        """Wait until at least ``count`` live subscriptions of type ``kind`` exist."""
        await self.wait_until(lambda: len(self.subscriptions(kind)) >= count)
        return self.subscriptions(kind)

    async def wait_limit_closes(self, total: int) -> None:
        """Wait until ``limit_closes`` reaches ``total``."""
        await self.wait_until(lambda: self.limit_closes >= total)

    async def wait_connections(self, total: int) -> None:
        """Wait until ``connections_total`` reaches ``total`` (not: that many are open)."""
        await self.wait_until(lambda: self.connections_total >= total)
