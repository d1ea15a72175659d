"""Moralis Streams: webhooks in (plan, signature check, decoder).

Wire facts: ``shared/venues.md`` §4 and ``docs/venues/moralis.md``. Moralis has no websocket:
it POSTs one JSON body per block event to a URL registered with the stream. ``irisflow watch
--venue moralis --listen HOST:PORT`` runs the HTTP receiver of ``_webhook.py`` in the run's
nursery. Each request must carry ``x-signature`` = Keccak-256(raw body + secret); a bad or
missing one gets 401 and is counted, and nothing enters the pipeline. An accepted body goes
down the feed as one :class:`~irisflow._feed.Frames` item, so recordings and replays hold
exactly the bodies that were accepted.

Confirmation: Moralis sends every block event twice, ``confirmed:false`` then
``confirmed:true``, in either order, and retries deliveries. The decoder keeps, per natural key
(see :func:`irisflow._chain.natural_key`), whether the event went out and whether it was
confirmed. The first copy goes out as the event; a confirmed copy of an event that went out
unconfirmed goes out as a :class:`~irisflow._chain.Confirmation`; every other copy is dropped.
Memory is bounded: the decoder remembers the last ``memory`` keys (100 000 by default, some
30 MB), so a copy arriving after that many newer keys counts as new again.

Body arrays decoded: ``txs``, ``txsInternal`` (internal transactions, numbered per transaction
in array order, see :class:`~irisflow._chain.InternalTransaction`), ``logs``,
``erc20Transfers``, ``erc20Approvals`` and ``nftTransfers``. ``nftApprovals`` is accepted and
ignored: venues.md does not document its entries.
"""

from __future__ import annotations

import collections
import hmac
import json
import os
import re
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import orjson
import trio

from .._chain import (
    KNOWN_TOKENS,
    NATIVE,
    Block,
    ChainDataError,
    Confirmation,
    InternalTransaction,
    Log,
    NaturalKey,
    NftTransfer,
    RawLog,
    Swap,
    TokenApproval,
    TokenInfo,
    TokenTransfer,
    Transaction,
    address,
    dec_int,
    decode_log,
    get,
    hash32,
    hex_data,
    keccak256,
    natural_key,
    opt_address,
    opt_dec_int,
    scale,
)
from .._errors import DecodeError, UsageError
from .._events import Event
from .._feed import FeedItem, FeedStats, RawFrame
from .._venue import ChannelInfo, FeedOptions, Plan, VenueParams, register_venue
from ._common import make_decode_error
from ._webhook import (
    DEFAULT_MAX_BODY,
    REQUEST_TIMEOUT,
    WebhookReceiver,
    WebhookStats,
    parse_listen,
)

__all__ = [
    "MORALIS",
    "MoralisDecoder",
    "MoralisVenue",
    "streams_secret",
    "verify_signature",
    "webhook_signature",
]

VENUE = "moralis"
SECRET_ENV = "MORALIS_STREAMS_SECRET"
DEFAULT_MEMORY = 100_000
_BODY_ARRAYS = ("txs", "logs", "erc20Transfers", "txsInternal", "erc20Approvals", "nftTransfers")


def streams_secret() -> str:
    """The Streams secret from ``MORALIS_STREAMS_SECRET``.

    Raises:
        UsageError: it is not set.
    """
    secret = os.environ.get(SECRET_ENV, "")
    if not secret.strip():
        raise UsageError(
            f"moralis needs the Streams secret to check webhook signatures: set {SECRET_ENV}"
            " (the secretKey of GET https://api.moralis-streams.com/settings)"
        )
    return secret


def webhook_signature(body: bytes, secret: str) -> str:
    """The ``x-signature`` Moralis sends: ``0x`` + Keccak-256 of body + secret, lower hex."""
    return "0x" + keccak256(body + secret.encode()).hex()


_HEX64 = re.compile(r"[0-9a-f]{64}")


def verify_signature(body: bytes, header: str | bytes | None, secret: str) -> bool:
    """Whether ``header`` is the signature of ``body`` (constant-time compare).

    Checks the raw bytes first, then (as Moralis's JavaScript reference re-serialises the
    parsed body) the compact JSON of the parsed body in its original key order. ``0x`` is
    optional, case is ignored.
    """
    if header is None:
        return False
    text = header.decode("latin-1") if isinstance(header, bytes) else header
    given = text.strip().lower().removeprefix("0x")
    if not _HEX64.fullmatch(given):
        return False
    key = secret.encode()
    if hmac.compare_digest(given, keccak256(body + key).hex()):
        return True
    try:
        compact = json.dumps(json.loads(body), separators=(",", ":"), ensure_ascii=False).encode()
    except (ValueError, RecursionError):
        return False
    return compact != body and hmac.compare_digest(given, keccak256(compact + key).hex())


# -- decoding -------------------------------------------------------------------------------


def _list(body: dict[str, Any], key: str) -> list[Any]:
    value = body.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ChainDataError(f"expected a list @ $.{key}")
    return value


def _uint(obj: Any, key: str, path: str) -> int:
    """A required non-negative decimal-string integer (a uint256 amount or id)."""
    value = dec_int(get(obj, key, path), f"{path}.{key}")
    if value < 0:
        raise ChainDataError(f"expected a non-negative integer, got {value} @ {path}.{key}")
    return value


def _text(obj: Any, key: str) -> str | None:
    """An optional display string: anything but a non-blank string is None."""
    value = obj.get(key) if isinstance(obj, dict) else None
    return value.strip() if isinstance(value, str) and value.strip() else None


_STANDARDS = {"ERC721": "erc721", "ERC1155": "erc1155"}


class MoralisDecoder:
    """Decodes Moralis Streams webhook bodies into chain events, each key once.

    Args:
        tokens: Token table; it wins over the symbol and decimals a body gives for a token.
        memory: How many natural keys to remember for confirmation and retry de-duplication.
    """

    def __init__(
        self, tokens: Mapping[str, TokenInfo] = KNOWN_TOKENS, memory: int = DEFAULT_MEMORY
    ) -> None:
        self._tokens = tokens
        self._memory = memory
        self._seen: collections.OrderedDict[Hashable, bool] = collections.OrderedDict()

    def decode_batch(
        self,
        frames: Sequence[RawFrame],
        recv_ts: int,
        out: list[Event],
        errors: list[tuple[int, DecodeError]],
    ) -> None:
        """Append events of ``frames`` (webhook bodies) to ``out``; one error per bad body.

        A bad body changes nothing: it is parsed completely before any state is touched.
        """
        for index, frame in enumerate(frames):
            try:
                confirmed, events = self._parse(frame, recv_ts)
            except ChainDataError as exc:
                errors.append((index, make_decode_error(VENUE, str(exc), frame, cause=exc)))
                continue
            except Exception as exc:  # a shape the checks did not foresee
                what = f"unexpected content ({type(exc).__name__}: {exc}) @ $"
                errors.append((index, make_decode_error(VENUE, what, frame, cause=exc)))
                continue
            self._apply(confirmed, events, out)

    def _apply(self, confirmed: bool, events: list[Event], out: list[Event]) -> None:
        seen = self._seen
        confirmations: set[NaturalKey] = set()
        for event in events:
            key = natural_key(event)
            assert key is not None
            # The token ids of one ERC-1155 batch share the batch log's natural key: each is
            # its own event, and one confirmation names them all.
            own: Hashable = (*key, event.token_id) if isinstance(event, NftTransfer) else key
            state = seen.get(own)
            if state is None:
                out.append(event)
                seen[own] = confirmed
                if len(seen) > self._memory:
                    seen.popitem(last=False)
            elif confirmed and not state:
                if key not in confirmations:
                    out.append(_confirmation(event, key))
                    confirmations.add(key)
                seen[own] = True
                seen.move_to_end(own)
            # else: a retry, or the unconfirmed copy of a confirmed event: nothing new

    def _parse(self, frame: RawFrame, recv_ts: int) -> tuple[bool, list[Event]]:
        try:
            body = orjson.loads(frame)
        except orjson.JSONDecodeError as err:
            raise ChainDataError(f"invalid JSON ({err})") from err
        if not isinstance(body, dict):
            raise ChainDataError("expected a webhook object @ $")
        confirmed = get(body, "confirmed", "$")
        if not isinstance(confirmed, bool):
            raise ChainDataError(f"expected a bool, got {confirmed!r} @ $.confirmed")
        block = get(body, "block", "$")
        number_text = get(block, "number", "$.block")
        if number_text == "":  # the test webhook Moralis sends when a stream is saved
            if any(_list(body, key) for key in _BODY_ARRAYS):
                raise ChainDataError("items but no block number @ $.block.number")
            return confirmed, []
        number = dec_int(number_text, "$.block.number")
        block_hash = hash32(get(block, "hash", "$.block"), "$.block.hash")
        ts = dec_int(get(block, "timestamp", "$.block"), "$.block.timestamp") * 1_000_000_000
        common: dict[str, Any] = {
            "venue": VENUE,
            "ts": ts,
            "recv_ts": recv_ts,
            "block_number": number,
            "confirmed": confirmed,
        }
        events: list[Event] = [
            Block(
                venue=VENUE,
                symbol=NATIVE,
                ts=ts,
                recv_ts=recv_ts,
                number=number,
                hash=block_hash,
                confirmed=confirmed,
            ),
        ]
        mined = {**common, "block_hash": block_hash}
        for i, tx in enumerate(_list(body, "txs")):
            events.append(self._tx(tx, f"$.txs[{i}]", block_hash, common))
        per_tx: dict[str, int] = {}
        for i, entry in enumerate(_list(body, "txsInternal")):
            events.append(self._internal(entry, f"$.txsInternal[{i}]", per_tx, mined))
        decoded: list[Event] = [
            self._transfer(t, f"$.erc20Transfers[{i}]", mined)
            for i, t in enumerate(_list(body, "erc20Transfers"))
        ]
        decoded += [
            self._approval(a, f"$.erc20Approvals[{i}]", mined)
            for i, a in enumerate(_list(body, "erc20Approvals"))
        ]
        decoded += [
            self._nft(n, f"$.nftTransfers[{i}]", mined)
            for i, n in enumerate(_list(body, "nftTransfers"))
        ]
        # Moralis decodes these itself, with token metadata: its logs[] twins stay plain logs.
        covered = {key for e in decoded if (key := natural_key(e)) is not None}
        for i, log in enumerate(_list(body, "logs")):
            raw = _raw_log(log, f"$.logs[{i}]", number, block_hash)
            events.extend(
                decode_log(
                    raw,
                    ts,
                    recv_ts,
                    VENUE,
                    tokens=self._tokens,
                    confirmed=confirmed,
                    skip=covered,
                )
            )
        events.extend(decoded)
        return confirmed, events

    @staticmethod
    def _tx(tx: Any, path: str, block_hash: str, common: dict[str, Any]) -> Transaction:
        value = dec_int(get(tx, "value", path), f"{path}.value")
        data = tx.get("input") or "0x"
        return Transaction(
            symbol=NATIVE,
            tx_hash=hash32(get(tx, "hash", path), f"{path}.hash"),
            from_address=address(get(tx, "fromAddress", path), f"{path}.fromAddress"),
            to_address=opt_address(tx, "toAddress", path),  # null: a contract creation
            value_wei=value,
            value_eth=scale(value, 18),
            gas=dec_int(get(tx, "gas", path), f"{path}.gas"),
            nonce=dec_int(get(tx, "nonce", path), f"{path}.nonce"),
            input=hex_data(data, f"{path}.input"),
            pending=False,
            gas_price=opt_dec_int(tx, "gasPrice", path),
            tx_type=opt_dec_int(tx, "type", path),
            block_hash=block_hash,
            tx_index=opt_dec_int(tx, "transactionIndex", path),
            contract_address=opt_address(tx, "receiptContractAddress", path),
            status=opt_dec_int(tx, "receiptStatus", path),
            **common,
        )

    @staticmethod
    def _internal(
        t: Any, path: str, per_tx: dict[str, int], common: dict[str, Any]
    ) -> InternalTransaction:
        tx_hash = hash32(get(t, "transactionHash", path), f"{path}.transactionHash")
        index = per_tx[tx_hash] = per_tx.get(tx_hash, -1) + 1
        value = _uint(t, "value", path)
        return InternalTransaction(
            symbol=NATIVE,
            tx_hash=tx_hash,
            internal_index=index,
            from_address=address(get(t, "from", path), f"{path}.from"),
            to_address=opt_address(t, "to", path),
            value_wei=value,
            value_eth=scale(value, 18),
            gas=opt_dec_int(t, "gas", path),
            **common,
        )

    def _token(self, t: Any, path: str, token: str) -> tuple[str, int | None]:
        """Symbol and decimals of ``token``: the table's, else what the entry says."""
        info = self._tokens.get(token)
        if info is not None:
            return info.symbol, info.decimals
        given = _text(t, "tokenSymbol")
        decimals = opt_dec_int(t, "tokenDecimals", path)
        if decimals is not None and not 0 <= decimals <= 255:
            raise ChainDataError(f"decimals out of range, got {decimals} @ {path}")
        return (given.upper() if given else token), decimals

    def _erc20(self, e: Any, path: str, common: dict[str, Any]) -> dict[str, Any]:
        """The fields ERC-20 transfers and approvals share (they differ in their parties)."""
        token = address(get(e, "contract", path), f"{path}.contract")
        raw = _uint(e, "value", path)
        symbol, decimals = self._token(e, path, token)
        spam = e.get("possibleSpam")
        return {
            **common,
            "symbol": symbol,
            "token": token,
            "raw_amount": raw,
            "tx_hash": hash32(get(e, "transactionHash", path), f"{path}.transactionHash"),
            "log_index": dec_int(get(e, "logIndex", path), f"{path}.logIndex"),
            "decimals": decimals,
            "amount": None if decimals is None else scale(raw, decimals),
            "possible_spam": spam if isinstance(spam, bool) else None,
        }

    def _transfer(self, t: Any, path: str, common: dict[str, Any]) -> TokenTransfer:
        return TokenTransfer(
            from_address=address(get(t, "from", path), f"{path}.from"),
            to_address=address(get(t, "to", path), f"{path}.to"),
            **self._erc20(t, path, common),
        )

    def _approval(self, a: Any, path: str, common: dict[str, Any]) -> TokenApproval:
        return TokenApproval(
            owner=address(get(a, "owner", path), f"{path}.owner"),
            spender=address(get(a, "spender", path), f"{path}.spender"),
            **self._erc20(a, path, common),
        )

    @staticmethod
    def _nft(n: Any, path: str, common: dict[str, Any]) -> NftTransfer:
        contract = address(get(n, "contract", path), f"{path}.contract")
        given = get(n, "tokenContractType", path)
        standard = _STANDARDS.get(given.upper()) if isinstance(given, str) else None
        if standard is None:
            raise ChainDataError(
                f"expected 'ERC721' or 'ERC1155', got {given!r} @ {path}.tokenContractType"
            )
        if standard == "erc721" and n.get("amount") in (None, ""):
            amount = 1
        else:
            amount = _uint(n, "amount", path)
        symbol = _text(n, "tokenSymbol")
        return NftTransfer(
            symbol=symbol.upper() if symbol else contract,
            contract=contract,
            standard=standard,
            from_address=address(get(n, "from", path), f"{path}.from"),
            to_address=address(get(n, "to", path), f"{path}.to"),
            token_id=_uint(n, "tokenId", path),
            amount=amount,
            tx_hash=hash32(get(n, "transactionHash", path), f"{path}.transactionHash"),
            log_index=dec_int(get(n, "logIndex", path), f"{path}.logIndex"),
            operator=opt_address(n, "operator", path),
            token_name=_text(n, "tokenName"),
            token_symbol=symbol,
            **common,
        )


def _raw_log(log: Any, path: str, number: int, block_hash: str) -> RawLog:
    topics: list[str] = []
    for i in range(4):
        topic = log.get(f"topic{i}") if isinstance(log, dict) else None
        if topic is None:
            break
        topics.append(hash32(topic, f"{path}.topic{i}"))
    return RawLog(
        address=address(get(log, "address", path), f"{path}.address"),
        topics=tuple(topics),
        data=hex_data(get(log, "data", path), f"{path}.data"),
        tx_hash=hash32(get(log, "transactionHash", path), f"{path}.transactionHash"),
        log_index=dec_int(get(log, "logIndex", path), f"{path}.logIndex"),
        block_number=number,
        block_hash=block_hash,
    )


def _confirmation(event: Event, key: NaturalKey) -> Confirmation:
    """The confirmation of ``event``, naming it by its natural ``key``."""
    e: Any = event
    block = event.__class__ is Block
    return Confirmation(
        venue=event.venue,
        symbol=event.symbol,
        ts=event.ts,
        recv_ts=event.recv_ts,
        target=event.kind,
        tx_hash=None if block else e.tx_hash,
        log_index=key[2],  # None, a log index, or an internal transaction's internal_index
        block_number=e.number if block else e.block_number,
        block_hash=e.hash if block else e.block_hash,
    )


# -- planning -------------------------------------------------------------------------------

CHANNELS = (
    ChannelInfo(
        "webhook",
        (
            "block",
            "transaction",
            "internal_tx",
            "log",
            "token_transfer",
            "approval",
            "nft_transfer",
            "swap",
            "confirmation",
        ),
        "whatever the stream set up at Moralis sends; no --channels, receive with --listen",
    ),
)


class MoralisVenue:
    """Moralis Streams webhooks, received over HTTP.

    Args:
        max_body: Largest webhook body accepted, in bytes.
        request_timeout: Seconds one request may take.
    """

    name = VENUE
    title = "Moralis Streams (webhooks)"
    default_endpoint = "http://127.0.0.1:8080"
    credentials: tuple[str, ...] = (SECRET_ENV,)

    def __init__(
        self, *, max_body: int = DEFAULT_MAX_BODY, request_timeout: float = REQUEST_TIMEOUT
    ) -> None:
        self.max_body = max_body
        self.request_timeout = request_timeout

    def channel_info(self) -> Sequence[ChannelInfo]:
        """Moralis has no channels: the stream set up at Moralis decides what comes."""
        return CHANNELS

    def plan(
        self,
        symbols: Sequence[str],
        channels: Sequence[str],
        endpoint: str | None = None,
        params: VenueParams = VenueParams(),  # noqa: B008  (frozen, so sharing is safe)
    ) -> Plan:
        """Validate ``--listen`` and the secret; the plan's endpoint is ``http://HOST:PORT``.

        ``symbols`` and ``channels`` are not used: what arrives is chosen when the stream is
        created at Moralis (addresses, ``includeNativeTxs``, topics). They are ignored rather
        than refused because the CLI always passes its defaults (``btcusdt``, ``trade``).

        Raises:
            UsageError: no or bad ``--listen``, no secret, or an endpoint given.
        """
        del symbols, channels  # see above
        if endpoint is not None:
            raise UsageError("moralis has no --endpoint: it receives webhooks on --listen")
        host, port = parse_listen(params.listen, venue=VENUE)
        streams_secret()  # fail before listening
        shown = f"[{host}]" if ":" in host else host
        return Plan(
            venue=VENUE,
            endpoint=f"http://{shown}:{port}",
            symbols=(),
            channels=(),
            streams=("webhook",),
            kinds=frozenset(
                {
                    Block,
                    Transaction,
                    InternalTransaction,
                    Log,
                    TokenTransfer,
                    TokenApproval,
                    NftTransfer,
                    Swap,
                    Confirmation,
                }
            ),
        )

    def decoder(self) -> MoralisDecoder:
        """A fresh decoder (with empty confirmation memory)."""
        return MoralisDecoder()

    async def subscribe(
        self,
        plan: Plan,
        send: trio.MemorySendChannel[FeedItem],
        options: FeedOptions,
        stats: list[FeedStats],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Receive webhooks on the plan's address until cancelled; closes ``send``.

        Raises:
            UsageError: no secret, or the address cannot be listened on.
        """
        host, port = parse_listen(plan.endpoint.removeprefix("http://"))
        feed_stats = WebhookStats(VENUE, connection=0, streams=1)
        stats.append(feed_stats)
        async with send:
            secret = streams_secret()

            def verify(body: bytes, headers: Mapping[bytes, bytes]) -> bool:
                return verify_signature(body, headers.get(b"x-signature"), secret)

            receiver = WebhookReceiver(
                VENUE,
                verify,
                send,
                feed_stats,
                overflow=options.overflow,
                max_body=self.max_body,
                request_timeout=self.request_timeout,
                refusal="bad or missing x-signature",
            )
            await receiver.serve(host, port, task_status=task_status)


MORALIS = MoralisVenue()
register_venue(VENUE, lambda: MORALIS)
