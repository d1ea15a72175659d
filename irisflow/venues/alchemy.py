"""Alchemy: Ethereum JSON-RPC subscriptions over a websocket (plan and subscriber).

Wire facts: ``shared/venues.md`` §3 and ``docs/venues/alchemy.md``. One connection to
``wss://<network>.g.alchemy.com/v2/<key>`` carries every ``eth_subscribe`` of a plan; a
reconnect subscribes again (the ids change) and puts a gap into the feed. The decoder, and how
it routes notifications by subscription id, is in ``_alchemy_decode.py``.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Sequence
from typing import Any

import orjson
import trio

from .._chain import KNOWN_TOKENS, Block, Log, Retraction, Transaction
from .._errors import ConnectionClosed, IrisflowError, UsageError, VenueError
from .._events import Event
from .._feed import FeedItem, FeedStats, RawFrame
from .._transport import WebSocket
from .._venue import ChannelInfo, FeedOptions, Plan, VenueParams, register_venue
from ._alchemy_decode import (
    HEARTBEAT_CODE,
    ID_BASE,
    ID_SPAN,
    ID_STRIDE,
    TYPE_CODES,
    AlchemyDecoder,
)
from ._alchemy_topics import (
    log_filter,
    log_kinds,
    merge_filters,
    normalise_logs_channel,
    topics_param,
)
from ._common import Reconnect, VenueConnection, ack_deadline_error, run_connections

__all__ = ["ALCHEMY", "ID_BASE", "AlchemyDecoder", "AlchemyVenue", "api_key"]

VENUE = "alchemy"
KEY_ENV = "ALCHEMY_API_KEY"
DEFAULT_NETWORK = "eth-mainnet"
NETWORKS = (
    "eth-mainnet",
    "eth-sepolia",
    "polygon-mainnet",
    "arb-mainnet",
    "opt-mainnet",
    "base-mainnet",
    "bnb-mainnet",
)
"""The network slugs venues.md §3.1 documents (``--endpoint`` reaches any other)."""
PENDING_NETWORKS = ("eth-mainnet", "eth-sepolia", "polygon-mainnet")
"""Where the 2025 docs say ``alchemy_pendingTransactions`` works (used in an error hint)."""

HEARTBEAT_INTERVAL = 30.0
"""Seconds between ``net_version`` requests, as Alchemy's SDK (at most half the stale timeout)."""
HEARTBEAT_TIMEOUT = 10.0
"""Seconds a ``net_version`` reply may take before the connection counts as dead (SDK: 10)."""
MAX_SUBSCRIPTIONS_PER_CONNECTION = 1000
MAX_IN_FLIGHT = 10
"""Requests awaiting an answer at once: the free tier's limit per connection."""
MINED_FILTERS_PER_SUBSCRIPTION = 100
"""``addresses`` entries per ``alchemy_minedTransactions`` (the SDK's limit; the docs say 1000)."""
PENDING_MAX_ADDRESSES = 1000
RETRYABLE_CODES = frozenset({429, -32005})
"""JSON-RPC error codes that mean "slow down": 429 is Alchemy's documented throughput error
over websockets (sent without an id); -32005 is the usual node "limit exceeded". Both
reconnect with backoff and subscribe again instead of stopping the run."""


def api_key() -> str:
    """The API key from ``ALCHEMY_API_KEY``.

    Raises:
        UsageError: it is not set, or is not a plain key (the value is never shown).
    """
    key = os.environ.get(KEY_ENV, "").strip()
    if not key:
        raise UsageError(
            f"alchemy needs an API key: set {KEY_ENV} to the key of your app"
            " (dashboard.alchemy.com, 'API key')"
        )
    if not re.fullmatch(r"[A-Za-z0-9_-]{4,128}", key):
        raise UsageError(
            f"{KEY_ENV} does not look like an Alchemy API key (letters, digits, '-' and '_'"
            " only); set it to the key alone, not the whole URL"
        )
    return key


# -- planning -------------------------------------------------------------------------------

_ADDRESS_RE = re.compile(r"0x[0-9a-fA-F]{40}")
_SYMBOL_BY_TOKEN = {info.symbol: addr for addr, info in KNOWN_TOKENS.items()}
_CHANNEL_NAMES = [
    "newHeads",
    "logs",
    "logs:transfer",
    "logs:approval",
    "logs:swap",
    "minedTransactions",
    "pendingTransactions",
]

CHANNELS = (
    ChannelInfo("newHeads", ("block",), "every new block header (re-sent for a reorg)"),
    ChannelInfo(
        "logs[:<topic0>[/<topic1>/<topic2>/<topic3>]]",
        ("log", "token_transfer", "approval", "nft_transfer", "swap", "retraction"),
        "logs of the --symbols contracts, by topic (topic0 transfer, approval, swap or 0x...;"
        " topics 1-3 0x words or addresses, * any); ERC-20 Transfer and Approval, ERC-721"
        " Transfer and Uniswap Swap also decoded",
    ),
    ChannelInfo(
        "minedTransactions",
        ("transaction", "retraction"),
        "mined transactions to or from the --symbols addresses (all without --symbols)",
    ),
    ChannelInfo(
        "pendingTransactions",
        ("transaction",),
        "mempool transactions to or from the --symbols addresses (all without --symbols)",
    ),
)


def _network(raw: str | None) -> str:
    network = (raw or DEFAULT_NETWORK).strip().lower()
    if network in NETWORKS:
        return network
    close = difflib.get_close_matches(network, NETWORKS, n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise UsageError(
        f"unknown alchemy network {raw!r}{hint}; networks: {', '.join(NETWORKS)}"
        " (for another one, pass --endpoint wss://<network>.g.alchemy.com/v2)"
    )


def _endpoint(endpoint: str | None, network: str) -> str:
    if endpoint is None:
        return f"wss://{network}.g.alchemy.com/v2"
    url = endpoint.strip().rstrip("/")
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("ws", "wss") or not rest:
        raise UsageError(
            f"bad alchemy --endpoint {endpoint!r}: use wss://<network>.g.alchemy.com/v2"
        )
    path = rest.partition("/")[2]
    if not path:
        return url + "/v2"
    if path.startswith("v2/"):
        # Keep keys out of plans, messages and shell history: the key comes from the env.
        raise UsageError(
            f"the alchemy --endpoint must not contain the API key: pass the URL up to /v2"
            f" and put the key in {KEY_ENV}"
        )
    return url


def _addresses(symbols: Sequence[str], network: str) -> list[str]:
    found: list[str] = []
    for raw in symbols:
        text = raw.strip()
        if _ADDRESS_RE.fullmatch(text):
            value = text.lower()
        elif text.upper() in _SYMBOL_BY_TOKEN:
            if network != "eth-mainnet":
                raise UsageError(
                    f"token symbol {text!r} is known only on eth-mainnet: pass its contract"
                    f" address on {network} instead"
                )
            value = _SYMBOL_BY_TOKEN[text.upper()]
        else:
            close = difflib.get_close_matches(text.upper(), list(_SYMBOL_BY_TOKEN), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UsageError(
                f"bad alchemy symbol {raw!r}{hint}: --symbols takes 0x addresses (40 hex"
                f" digits) or known token symbols: {', '.join(sorted(_SYMBOL_BY_TOKEN))}"
            )
        if value not in found:
            found.append(value)
    return found


def _normalise_channel(raw: str) -> str:
    """The channel as irisflow spells it, e.g. ``'logs:transfer'``; raises UsageError."""
    text = raw.strip()
    base, colon, selector = text.partition(":")
    lower = base.lower()
    if lower == "logs" and colon:
        return normalise_logs_channel(raw, selector)
    if not colon:
        for name in ("newHeads", "logs", "minedTransactions", "pendingTransactions"):
            if lower in (name.lower(), f"alchemy_{name.lower()}"):
                return name
    close = difflib.get_close_matches(text, _CHANNEL_NAMES, n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise UsageError(
        f"unknown alchemy channel {raw!r}{hint}; channels: newHeads,"
        " logs[:<topic0>[/<topic1>/<topic2>/<topic3>]] (topic0 transfer, approval, swap or"
        " 0x<64 hex digits>), minedTransactions, pendingTransactions"
    )


def _stream(params: list[Any]) -> str:
    return orjson.dumps(params).decode()


def _subscriptions(channels: Sequence[str], addresses: list[str]) -> list[str]:
    """The ``eth_subscribe`` params of each subscription, as compact JSON (the plan's streams)."""
    streams: list[str] = []
    if "newHeads" in channels:
        streams.append(_stream(["newHeads"]))
    filters = merge_filters([log_filter(c) for c in channels if c.startswith("logs")])
    for flt in filters:
        topics = topics_param(flt)
        if not addresses and not topics:
            raise UsageError(
                "alchemy channel 'logs' without --symbols would carry every log on the chain:"
                " pass contract addresses with --symbols, or narrow it by topic, e.g."
                " logs:transfer, logs:swap or logs:transfer/*/0x<recipient address>"
            )
        log_params: dict[str, Any] = {}
        if addresses:
            log_params["address"] = addresses
        if topics:
            log_params["topics"] = topics
        streams.append(_stream(["logs", log_params]))
    if "minedTransactions" in channels:
        entries = [entry for a in addresses for entry in ({"to": a}, {"from": a})]
        if not entries:
            streams.append(
                _stream(
                    ["alchemy_minedTransactions", {"includeRemoved": True, "hashesOnly": False}]
                )
            )
        for i in range(0, len(entries), MINED_FILTERS_PER_SUBSCRIPTION):
            chunk = entries[i : i + MINED_FILTERS_PER_SUBSCRIPTION]
            streams.append(
                _stream(
                    [
                        "alchemy_minedTransactions",
                        {"addresses": chunk, "includeRemoved": True, "hashesOnly": False},
                    ]
                )
            )
    if "pendingTransactions" in channels:
        if len(addresses) > PENDING_MAX_ADDRESSES:
            raise UsageError(
                f"alchemy pendingTransactions takes at most {PENDING_MAX_ADDRESSES} addresses"
                f" (got {len(addresses)})"
            )
        pending: dict[str, Any] = {"hashesOnly": False}
        if addresses:
            pending = {"fromAddress": addresses, "toAddress": addresses, "hashesOnly": False}
        streams.append(_stream(["alchemy_pendingTransactions", pending]))
    return streams


def _kinds(channels: Sequence[str]) -> frozenset[type[Event]]:
    kinds: set[type[Event]] = set()
    for channel in channels:
        if channel == "newHeads":
            kinds.add(Block)
        elif channel.startswith("logs"):
            kinds.update((Log, Retraction, *log_kinds(log_filter(channel))))
        elif channel == "minedTransactions":
            kinds.update((Transaction, Retraction))
        else:
            kinds.add(Transaction)
    return frozenset(kinds)


def _describe(stream: str) -> str:
    """A subscription as shown in messages: its type and a short filter."""
    params = orjson.loads(stream)
    if len(params) < 2:
        return str(params[0])
    shown = orjson.dumps(params[1]).decode()
    if len(shown) > 100:
        shown = shown[:97] + "..."
    return f"{params[0]} {shown}"


# -- subscribing ----------------------------------------------------------------------------


class AlchemyVenue:
    """Alchemy's Ethereum (and other EVM) websocket subscriptions."""

    name = VENUE
    title = "Alchemy (EVM JSON-RPC subscriptions)"
    default_endpoint = f"wss://{DEFAULT_NETWORK}.g.alchemy.com/v2"
    credentials: tuple[str, ...] = (KEY_ENV,)
    default_channels = ("newHeads",)

    def channel_info(self) -> Sequence[ChannelInfo]:
        """The channels Alchemy offers."""
        return CHANNELS

    def plan(
        self,
        symbols: Sequence[str],
        channels: Sequence[str],
        endpoint: str | None = None,
        params: VenueParams = VenueParams(),  # noqa: B008  (frozen, so sharing is safe)
    ) -> Plan:
        """Validate the request; ``--symbols`` are addresses or known token symbols.

        Raises:
            UsageError: no API key, a bad network, endpoint, symbol or channel, or a
                subscription that would carry the whole chain's logs.
        """
        network = _network(params.network)
        api_key()  # fail before connecting
        base = _endpoint(endpoint, network)
        chans: list[str] = []
        for raw in channels:
            channel = _normalise_channel(raw)
            if channel not in chans:
                chans.append(channel)
        if not chans:
            raise UsageError(
                "no channels given: pass --channels, e.g. --channels newHeads or"
                " --channels logs:transfer --symbols USDC"
            )
        uses_symbols = any(c != "newHeads" for c in chans)
        addresses = _addresses(symbols, network) if uses_symbols else []
        streams = _subscriptions(chans, addresses)
        return Plan(
            venue=VENUE,
            endpoint=base,
            symbols=tuple(addresses),
            channels=tuple(chans),
            streams=tuple(streams),
            kinds=_kinds(chans),
        )

    def decoder(self) -> AlchemyDecoder:
        """A fresh decoder."""
        return AlchemyDecoder()

    async def subscribe(
        self,
        plan: Plan,
        send: trio.MemorySendChannel[FeedItem],
        options: FeedOptions,
        stats: list[FeedStats],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run one connection per 1000 subscriptions until cancelled; closes ``send``."""
        key = api_key()

        def make(
            streams: Sequence[str], channel: trio.MemorySendChannel[FeedItem], counters: FeedStats
        ) -> AlchemyConnection:
            return AlchemyConnection(plan.endpoint, key, streams, channel, options, counters)

        await run_connections(
            VENUE,
            plan.streams,
            MAX_SUBSCRIPTIONS_PER_CONNECTION,
            make,
            send,
            stats,
            task_status=task_status,
        )


class AlchemyConnection(VenueConnection):
    """One websocket connection to Alchemy carrying some subscriptions.

    Attributes:
        subscriptions: Subscription id -> stream (``eth_subscribe`` params as JSON) of the
            current connection; replaced on every reconnect.
    """

    venue = VENUE

    def __init__(
        self,
        endpoint: str,
        key: str,
        streams: Sequence[str],
        send: trio.MemorySendChannel[FeedItem],
        options: FeedOptions,
        stats: FeedStats,
    ) -> None:
        super().__init__(
            f"{endpoint}/{key}",
            streams,
            send,
            options,
            stats,
            display_url=f"{endpoint}/<{KEY_ENV}>",
        )
        self.subscriptions: dict[str, str] = {}
        self._seq = 0
        self._pending: dict[int, str] = {}
        self._heartbeat_id: int | None = None
        self._heartbeat_answered = trio.Event()

    def _next_id(self, code: int) -> int:
        self._seq = (self._seq + 1) % (ID_SPAN // ID_STRIDE)
        return ID_BASE + self._seq * ID_STRIDE + code

    async def handshake(self, ws: WebSocket) -> None:
        """Subscribe (at most 10 requests in flight) and wait until every one is answered."""
        self._pending.clear()
        self.subscriptions.clear()
        self._heartbeat_id = None
        with trio.move_on_after(self.options.ack_timeout) as scope:
            for stream in self.streams:
                await self.read_until(ws, lambda: len(self._pending) < MAX_IN_FLIGHT)
                params = orjson.loads(stream)
                request_id = self._next_id(TYPE_CODES[params[0]])
                self._pending[request_id] = stream
                request = {
                    "jsonrpc": "2.0",
                    "id": request_id,
                    "method": "eth_subscribe",
                    "params": params,
                }
                await ws.send(orjson.dumps(request).decode())
            await self.read_until(ws, lambda: not self._pending)
        if scope.cancelled_caught:
            pending = {rid: (_describe(s),) for rid, s in self._pending.items()}
            raise Reconnect(ack_deadline_error(VENUE, self.options.ack_timeout, pending))

    def is_control(self, frame: RawFrame) -> bool:
        """Notifications name their method up front; anything else may be a response."""
        return b'"eth_subscription"' not in frame[:64]

    def on_control(self, frame: RawFrame) -> str | None:
        """Match responses to requests; errors are fatal unless they say "slow down".

        Raises:
            VenueError: a subscription was refused.
            Reconnect: Alchemy asked us to slow down (429 and friends).
        """
        try:
            msg = orjson.loads(frame)
        except orjson.JSONDecodeError:
            return None  # the decoder reports it
        reason: str | None = None
        for item in msg if isinstance(msg, list) else [msg]:
            if isinstance(item, dict) and item.get("method") != "eth_subscription":
                reason = self._on_response(item) or reason
        return reason

    def _on_response(self, msg: dict[str, Any]) -> str | None:
        rid = msg.get("id")
        if rid is not None and rid == self._heartbeat_id:
            self._heartbeat_answered.set()  # an error reply proves liveness too
            return None
        stream = self._pending.pop(rid, None) if rid.__class__ is int else None
        error = msg.get("error")
        if isinstance(error, dict):
            code, message = error.get("code"), str(error.get("message", ""))
            if code in RETRYABLE_CODES:
                raise Reconnect(f"alchemy asked to slow down: {message} (code {code})")
            if stream is not None:
                raise VenueError(
                    f"alchemy refused the subscription {_describe(stream)}: {message}"
                    f" (code {code}){self._hint(stream, code)}"
                )
            return f"alchemy sent an error: {message} (code {code})"
        if stream is not None:
            result = msg.get("result")
            if not isinstance(result, str):
                raise VenueError(
                    f"alchemy answered the subscription {_describe(stream)} with {result!r}"
                    " instead of a subscription id"
                )
            self.subscriptions[result] = stream
        return None

    @staticmethod
    def _hint(stream: str, code: object) -> str:
        if '"alchemy_pendingTransactions"' in stream and code in (-32601, -32602):
            return (
                " (alchemy_pendingTransactions is documented only on"
                f" {', '.join(PENDING_NETWORKS)})"
            )
        if code == -32602:
            return " (check the --symbols addresses and the channel)"
        return ""

    async def _read(self, ws: WebSocket) -> None:
        # The heartbeat runs beside the read loop of VenueConnection. Errors of the read loop
        # are caught inside the nursery and raised after it, so the base loop sees the bare
        # exception rather than an exception group.
        failure: list[str] = []
        error: IrisflowError | Reconnect | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._heartbeat, ws, failure, nursery.cancel_scope)
            try:
                await super()._read(ws)
            except (IrisflowError, Reconnect) as exc:
                error = exc
            nursery.cancel_scope.cancel()
        if error is not None:
            raise error
        if failure:
            raise Reconnect(failure[0])

    async def _heartbeat(self, ws: WebSocket, failure: list[str], scope: trio.CancelScope) -> None:
        """Send ``net_version`` periodically; no answer in time ends the connection."""
        interval = min(HEARTBEAT_INTERVAL, self.options.stale_timeout / 2)
        while True:
            await trio.sleep(interval)
            self._heartbeat_answered = trio.Event()
            self._heartbeat_id = self._next_id(HEARTBEAT_CODE)
            request = {"jsonrpc": "2.0", "id": self._heartbeat_id, "method": "net_version"}
            try:
                await ws.send(orjson.dumps({**request, "params": []}).decode())
            except ConnectionClosed:
                return  # the read loop reports the closed connection
            with trio.move_on_after(HEARTBEAT_TIMEOUT):
                await self._heartbeat_answered.wait()
                continue
            failure.append(f"no answer to net_version within {HEARTBEAT_TIMEOUT:g}s")
            scope.cancel()
            return


ALCHEMY = AlchemyVenue()
register_venue(VENUE, lambda: ALCHEMY)
