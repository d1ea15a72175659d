"""On-chain (EVM) event kinds, and the ABI decoding both chain venues share.

Kinds: ``block``, ``log``, ``token_transfer``, ``swap``, ``transaction``, ``internal_tx``,
``approval``, ``nft_transfer``, plus two that change earlier events: ``retraction`` (a chain
reorganisation removed it) and ``confirmation`` (a venue with confirmation depth, Moralis, now
reports it as final). Both name their target by its *natural key*: the target kind and
``tx_hash`` + ``log_index`` (``log_index`` is None for a transaction and holds the
``internal_index`` of an internal transaction; a block is named by ``block_hash``).

Conventions:

- Addresses and hashes are lower-case ``0x`` hex (EVM hex is case-insensitive; checksummed
  mixed case is dropped).
- ``symbol`` is ``'ETH'`` for blocks and (internal) transactions (the network's native coin; EVM
  networks all count it in wei, 10**18 per coin, and Alchemy frames do not say which network
  they come from), the token symbol for a transfer or approval of a known token, else the
  contract address (logs, unknown tokens, NFTs without a symbol) or the pool address (swaps).
- Raw on-chain amounts are exact Python ints (uint256/int256 as the ABI has them); scaled amounts
  are exact Decimals, never rounded: ``scale(2500000000, 6) == Decimal('2500')``.
- ``ts`` is the block time when the venue sends it (Alchemy ``newHeads``, every Moralis body);
  Alchemy logs and transactions carry no time, so their ``ts`` is the receive time.
- ``confirmed`` is None where the venue has no notion of confirmation depth (Alchemy).
"""

from __future__ import annotations

import re
from collections.abc import Container, Mapping
from decimal import Decimal
from typing import Any, ClassVar

import attrs
from Crypto.Hash import keccak

from ._events import Event, described, event_kind

__all__ = [
    "APPROVAL_TOPIC",
    "KNOWN_TOKENS",
    "TRANSFER_TOPIC",
    "UNISWAP_V2_SWAP_TOPIC",
    "UNISWAP_V2_SYNC_TOPIC",
    "UNISWAP_V3_SWAP_TOPIC",
    "Block",
    "ChainDataError",
    "Confirmation",
    "InternalTransaction",
    "Log",
    "NftTransfer",
    "Retraction",
    "Swap",
    "TokenApproval",
    "TokenInfo",
    "TokenTransfer",
    "Transaction",
    "decode_log",
    "keccak256",
    "natural_key",
    "scale",
]

NATIVE = "ETH"
"""``symbol`` of blocks and transactions."""


def keccak256(data: bytes) -> bytes:
    """Keccak-256 as Ethereum uses it (padding 0x01; not NIST SHA3-256, which pads 0x06)."""
    digest: bytes = keccak.new(digest_bits=256, data=data).digest()
    return digest


# topic0 of the events irisflow decodes (venues.md §3.5; tests recompute them).
TRANSFER_TOPIC = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
"""``Transfer(address,address,uint256)``: ERC-20 (3 topics) and ERC-721 (4 topics)."""
APPROVAL_TOPIC = "0x8c5be1e5ebec7d5bd14f71427d1e84f3dd0314c0f7b2291e5b200ac8c7c3b925"
"""``Approval(address,address,uint256)``."""
UNISWAP_V2_SWAP_TOPIC = "0xd78ad95fa46c994b6551d0da85fc275fe613ce37657fb8d5e3d130840159d822"
"""Uniswap V2 ``Swap(address,uint256,uint256,uint256,uint256,address)``."""
UNISWAP_V2_SYNC_TOPIC = "0x1c411e9a96e071241c2f21f7726b17ae89e3cab4c78be50e062b03a9fffbbad1"
"""Uniswap V2 ``Sync(uint112,uint112)``."""
UNISWAP_V3_SWAP_TOPIC = "0xc42079f94a6350d7e6235f29174924f928cc2ac818eb64fed8004e115fbcca67"
"""Uniswap V3 ``Swap(address,address,int256,int256,uint160,uint128,int24)``."""


@attrs.frozen
class TokenInfo:
    """What irisflow knows about an ERC-20 token."""

    symbol: str
    """Ticker, upper case, e.g. ``'USDC'``."""
    decimals: int
    """Digits after the point: a raw amount of 1 is 10**-decimals tokens."""


KNOWN_TOKENS: Mapping[str, TokenInfo] = {
    "0xc02aaa39b223fe8d0a0e5c4f27ead9083c756cc2": TokenInfo("WETH", 18),
    "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48": TokenInfo("USDC", 6),
    "0xdac17f958d2ee523a2206206994597c13d831ec7": TokenInfo("USDT", 6),
    "0x6b175474e89094c44da98b954eedeac495271d0f": TokenInfo("DAI", 18),
    "0x2260fac5e5542a773aa44fbcfedf7c193bc2c599": TokenInfo("WBTC", 8),
    "0x514910771af9ca656af840dff83e8264ecf986ca": TokenInfo("LINK", 18),
    "0x1f9840a85d5af5bf1d1762f925bdaddc4201f984": TokenInfo("UNI", 18),
    "0x7fc66500c84a76ad7e9c93437bfc5ac33e2ddae9": TokenInfo("AAVE", 18),
    "0x9f8f72aa9304c8b593d555f12ef6589cc3a579a2": TokenInfo("MKR", 18),
}
"""Well-known Ethereum mainnet tokens by contract address (lower case)."""


def scale(raw: int, decimals: int) -> Decimal:
    """``raw / 10**decimals`` exactly, without trailing zeros (no context rounding)."""
    if decimals <= 0:
        return Decimal(raw * 10**-decimals)
    sign = "-" if raw < 0 else ""
    whole, frac = divmod(abs(raw), 10**decimals)
    text = f"{frac:0{decimals}d}".rstrip("0")
    return Decimal(f"{sign}{whole}.{text}" if text else f"{sign}{whole}")


# -- event kinds ----------------------------------------------------------------------------


# uint256/int256 values can pass 64 bits: JSON lines write those fields as text.
_doc = described


def _opt(text: str) -> Any:
    return described(text, default=None)


def _big(text: str) -> Any:
    return described(text, bigint=True)


def _opt_big(text: str) -> Any:
    return described(text, default=None, bigint=True)


def _confirmed() -> Any:
    return _opt("true once final (Moralis confirmed); None where the venue cannot say")


@event_kind
@attrs.frozen
class Block(Event):
    """A block header (Alchemy ``newHeads``; the ``block`` of a Moralis body).

    ``ts`` is the block time. After a reorg the same height can come again: the later header
    wins.
    """

    kind: ClassVar[str] = "block"

    number: int = _doc("block height")
    hash: str | None = _opt("block hash (None when the venue omits it)")
    parent_hash: str | None = _opt("hash of the parent block (Alchemy only)")
    gas_used: int | None = _opt("gas used by the block's transactions")
    gas_limit: int | None = _opt("gas limit of the block")
    base_fee: int | None = _opt_big("EIP-1559 base fee, wei per gas")
    miner: str | None = _opt("fee recipient address")
    confirmed: bool | None = _confirmed()


@event_kind
@attrs.frozen
class Log(Event):
    """A contract event log, raw. ``symbol`` is the emitting contract's address."""

    kind: ClassVar[str] = "log"

    address: str = _doc("emitting contract address")
    topics: tuple[str, ...] = _doc("0 to 4 indexed 32-byte words; topics[0] names the event")
    data: str = _doc("ABI-encoded non-indexed arguments, 0x hex")
    tx_hash: str = _doc("hash of the transaction that emitted it")
    log_index: int = _doc("position of the log within its block")
    block_number: int | None = _opt("block height")
    block_hash: str | None = _opt("block hash")
    tx_index: int | None = _opt("position of the transaction within its block")
    confirmed: bool | None = _confirmed()


@event_kind
@attrs.frozen
class TokenTransfer(Event):
    """An ERC-20 ``Transfer``. ``symbol`` is the token symbol when known, else its address.

    ``amount`` is None when the token's decimals are unknown: then only ``raw_amount`` says
    how much moved. Mints come from, and burns go to, the zero address.
    """

    kind: ClassVar[str] = "token_transfer"

    token: str = _doc("token contract address")
    from_address: str = _doc("sender address")
    to_address: str = _doc("recipient address")
    raw_amount: int = _big("amount in the token's smallest unit (uint256)")
    tx_hash: str = _doc("hash of the transaction")
    log_index: int = _doc("position of the Transfer log within its block")
    decimals: int | None = _opt("token decimals, when known")
    amount: Decimal | None = _opt("amount in tokens (raw / 10**decimals), exact; None if unknown")
    block_number: int | None = _opt("block height")
    block_hash: str | None = _opt("block hash")
    possible_spam: bool | None = _opt("Moralis flags the token as possible spam")
    confirmed: bool | None = _confirmed()


@event_kind
@attrs.frozen
class Swap(Event):
    """A Uniswap V2 or V3 pool ``Swap``. ``symbol`` is the pool address.

    ``amount0``/``amount1`` are signed raw amounts from the pool's side, as V3's ABI has them:
    positive means the pool received the token, negative that it paid it out. For V2 they are
    ``amountIn - amountOut``, and the four unsigned V2 amounts are kept as well.
    """

    kind: ClassVar[str] = "swap"

    pool: str = _doc("pool (pair) contract address")
    protocol: str = _doc("'uniswap_v2' or 'uniswap_v3'")
    sender: str = _doc("address that called the pool (indexed sender)")
    recipient: str = _doc("address that received the output (V2 'to', V3 'recipient')")
    amount0: int = _big("token0 raw amount the pool received (negative: paid out)")
    amount1: int = _big("token1 raw amount the pool received (negative: paid out)")
    tx_hash: str = _doc("hash of the transaction")
    log_index: int = _doc("position of the Swap log within its block")
    amount0_in: int | None = _opt_big("V2 amount0In (uint256)")
    amount1_in: int | None = _opt_big("V2 amount1In (uint256)")
    amount0_out: int | None = _opt_big("V2 amount0Out (uint256)")
    amount1_out: int | None = _opt_big("V2 amount1Out (uint256)")
    sqrt_price_x96: int | None = _opt_big("V3 sqrt(price of token0 in token1) * 2**96 after it")
    liquidity: int | None = _opt_big("V3 in-range liquidity after the swap (uint128)")
    tick: int | None = _opt("V3 tick after the swap (int24)")
    block_number: int | None = _opt("block height")
    block_hash: str | None = _opt("block hash")
    confirmed: bool | None = _confirmed()


@event_kind
@attrs.frozen
class Transaction(Event):
    """A native transaction, pending or mined. ``symbol`` is ``'ETH'``.

    ``to_address`` is None for a contract creation.
    """

    kind: ClassVar[str] = "transaction"

    tx_hash: str = _doc("transaction hash")
    from_address: str = _doc("sender address")
    to_address: str | None = _doc("recipient address; None for a contract creation")
    value_wei: int = _big("native value moved, wei")
    value_eth: Decimal = _doc("native value moved, ETH (wei / 10**18, exact)")
    gas: int = _doc("gas limit of the transaction")
    nonce: int = _doc("sender nonce")
    input: str = _doc("call data, 0x hex")
    pending: bool = _doc("true while in the mempool, false once mined")
    gas_price: int | None = _opt_big("gas price, wei per gas")
    max_fee_per_gas: int | None = _opt_big("EIP-1559 fee cap, wei per gas")
    max_priority_fee_per_gas: int | None = _opt_big("EIP-1559 tip cap, wei per gas")
    tx_type: int | None = _opt("transaction type (0 legacy, 2 EIP-1559, ...)")
    block_number: int | None = _opt("block height; None while pending")
    block_hash: str | None = _opt("block hash; None while pending")
    tx_index: int | None = _opt("position within the block; None while pending")
    contract_address: str | None = _opt("address of the contract it created (Moralis receipt)")
    status: int | None = _opt("receipt status: 1 success, 0 failure (Moralis)")
    confirmed: bool | None = _confirmed()


@event_kind
@attrs.frozen
class InternalTransaction(Event):
    """Native coin moved by a contract call inside a transaction (Moralis ``txsInternal``).

    ``symbol`` is ``'ETH'``. Moralis gives no index of its own, so ``internal_index`` counts the
    entries of the same transaction in the body's ``txsInternal`` array: the unconfirmed and the
    confirmed copy of a body list them alike, so ``(tx_hash, internal_index)`` names the same
    one in both.
    """

    kind: ClassVar[str] = "internal_tx"

    tx_hash: str = _doc("hash of the transaction it happened in")
    internal_index: int = _doc("position among that transaction's internal transactions, from 0")
    from_address: str = _doc("sender (the calling contract) address")
    to_address: str | None = _doc("recipient address; None when the venue gives none")
    value_wei: int = _big("native value moved, wei")
    value_eth: Decimal = _doc("native value moved, ETH (wei / 10**18, exact)")
    gas: int | None = _opt("gas given to the call")
    block_number: int | None = _opt("block height")
    block_hash: str | None = _opt("block hash")
    confirmed: bool | None = _confirmed()


@event_kind
@attrs.frozen
class TokenApproval(Event):
    """An ERC-20 ``Approval``: ``owner`` lets ``spender`` move up to the amount of its tokens.

    ``symbol`` is the token symbol when known, else its address; ``amount`` is None when the
    token's decimals are unknown. An "unlimited" approval is ``raw_amount == 2**256 - 1``.
    """

    kind: ClassVar[str] = "approval"

    token: str = _doc("token contract address")
    owner: str = _doc("address whose tokens may be spent")
    spender: str = _doc("address allowed to spend them")
    raw_amount: int = _big("allowance in the token's smallest unit (uint256)")
    tx_hash: str = _doc("hash of the transaction")
    log_index: int = _doc("position of the Approval log within its block")
    decimals: int | None = _opt("token decimals, when known")
    amount: Decimal | None = _opt("allowance in tokens (raw / 10**decimals), exact; None: unknown")
    block_number: int | None = _opt("block height")
    block_hash: str | None = _opt("block hash")
    possible_spam: bool | None = _opt("Moralis flags the token as possible spam")
    confirmed: bool | None = _confirmed()


@event_kind
@attrs.frozen
class NftTransfer(Event):
    """An ERC-721 or ERC-1155 token moving (an NFT, or some of an ERC-1155 id).

    ``symbol`` is ``token_symbol`` in upper case if the venue gives one, else the contract
    address. An ERC-1155 batch gives one event per token id, all with the batch log's
    ``log_index`` (they share its natural key: one retraction or confirmation names them all).
    """

    kind: ClassVar[str] = "nft_transfer"

    contract: str = _doc("token (collection) contract address")
    standard: str = _doc("'erc721' or 'erc1155'")
    from_address: str = _doc("sender address (the zero address for a mint)")
    to_address: str = _doc("recipient address (the zero address for a burn)")
    token_id: int = _big("token id (uint256)")
    amount: int = _big("how many of the token moved: 1 for ERC-721")
    tx_hash: str = _doc("hash of the transaction")
    log_index: int = _doc("position of the transfer log within its block")
    operator: str | None = _opt("address that made an ERC-1155 transfer; None for ERC-721")
    token_name: str | None = _opt("collection name, when the venue gives one")
    token_symbol: str | None = _opt("collection symbol, when the venue gives one")
    block_number: int | None = _opt("block height")
    block_hash: str | None = _opt("block hash")
    confirmed: bool | None = _confirmed()


@event_kind
@attrs.frozen
class Retraction(Event):
    """An earlier event is void: a reorg removed its log or transaction from the chain.

    Sinks and steps that keep state should drop the event whose ``(target, tx_hash,
    log_index)`` match. ``symbol`` is the symbol the retracted event had.
    """

    kind: ClassVar[str] = "retraction"

    target: str = _doc("kind of the retracted event, e.g. 'token_transfer'")
    tx_hash: str = _doc("transaction hash of the retracted event")
    log_index: int | None = _opt("log index of the retracted event; None for a transaction")
    block_number: int | None = _opt("block height the event had been in")
    block_hash: str | None = _opt("hash of the block the event had been in")


@event_kind
@attrs.frozen
class Confirmation(Event):
    """An earlier unconfirmed event is now confirmed (Moralis); it is not sent again.

    Names its target like :class:`Retraction`; a block is named by ``block_hash`` alone.
    """

    kind: ClassVar[str] = "confirmation"

    target: str = _doc("kind of the confirmed event, e.g. 'transaction'")
    tx_hash: str | None = _opt("transaction hash of the event; None for a block")
    log_index: int | None = _opt(
        "log index of the event (internal_index for an internal_tx); None for a transaction"
        " or block"
    )
    block_number: int | None = _opt("block height it was confirmed in")
    block_hash: str | None = _opt("hash of the block it was confirmed in")


NaturalKey = tuple[str, str, int | None]
"""``(kind, tx hash or block hash, log index)``: what retractions and confirmations name."""


_BY_LOG = frozenset({Log, TokenTransfer, Swap, TokenApproval, NftTransfer})
"""Kinds named by the log they come from."""


def natural_key(event: Event) -> NaturalKey | None:
    """The key an event is retracted or confirmed by; for those two, the key they name."""
    cls = event.__class__
    if cls in _BY_LOG:
        e: Any = event
        return (cls.kind, e.tx_hash, e.log_index)
    if cls is InternalTransaction:
        assert isinstance(event, InternalTransaction)
        return ("internal_tx", event.tx_hash, event.internal_index)
    if cls is Transaction:
        assert isinstance(event, Transaction)
        return ("transaction", event.tx_hash, None)
    if cls is Block:
        assert isinstance(event, Block)
        return ("block", event.hash or str(event.number), None)
    if cls is Retraction or cls is Confirmation:
        r: Any = event
        if r.target == "block":
            return ("block", r.block_hash or str(r.block_number), None)
        return (r.target, r.tx_hash, r.log_index)
    return None


# -- decoding helpers -----------------------------------------------------------------------


class ChainDataError(ValueError):
    """A field that is missing or malformed; the text ends in a path, e.g. ``@ $.topics``."""


_HEX = re.compile(r"0x[0-9a-fA-F]*")
_QUANTITY = re.compile(r"0x[0-9a-fA-F]+")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_HASH = re.compile(r"0x[0-9a-fA-F]{64}")
_DECIMAL = re.compile(r"-?[0-9]+")


def get(obj: Any, key: str, path: str) -> Any:
    """``obj[key]``, or a ChainDataError naming ``path.key``."""
    if not isinstance(obj, dict):
        raise ChainDataError(f"expected an object @ {path}")
    try:
        return obj[key]
    except KeyError:
        raise ChainDataError(f"missing field @ {path}.{key}") from None


def _bad(what: str, value: Any, where: str) -> ChainDataError:
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return ChainDataError(f"expected {what}, got {shown} @ {where}")


def hex_int(value: Any, where: str) -> int:
    """A JSON-RPC QUANTITY (``'0x1a'``) as an int."""
    if not isinstance(value, str) or not _QUANTITY.fullmatch(value):
        raise _bad("a hex quantity", value, where)
    return int(value, 16)


def opt_hex_int(obj: Any, key: str, path: str) -> int | None:
    """An optional QUANTITY field: missing or null is None."""
    value = obj.get(key) if isinstance(obj, dict) else None
    return None if value is None else hex_int(value, f"{path}.{key}")


def dec_int(value: Any, where: str) -> int:
    """A decimal-string integer (Moralis: ``'22580796'``); a JSON integer is accepted too."""
    if value.__class__ is int:
        return int(value)
    if not isinstance(value, str) or not _DECIMAL.fullmatch(value):
        raise _bad("a decimal integer string", value, where)
    return int(value)


def opt_dec_int(obj: Any, key: str, path: str) -> int | None:
    """An optional decimal-string integer: missing, null or empty is None."""
    value = obj.get(key) if isinstance(obj, dict) else None
    return None if value is None or value == "" else dec_int(value, f"{path}.{key}")


def address(value: Any, where: str) -> str:
    """A 20-byte address, lower case."""
    if not isinstance(value, str) or not _ADDRESS.fullmatch(value):
        raise _bad("a 20-byte 0x address", value, where)
    return value.lower()


def opt_address(obj: Any, key: str, path: str) -> str | None:
    """An optional address: missing, null or empty is None."""
    value = obj.get(key) if isinstance(obj, dict) else None
    return None if value is None or value == "" else address(value, f"{path}.{key}")


def hash32(value: Any, where: str) -> str:
    """A 32-byte hash, lower case."""
    if not isinstance(value, str) or not _HASH.fullmatch(value):
        raise _bad("a 32-byte 0x hash", value, where)
    return value.lower()


def opt_hash32(obj: Any, key: str, path: str) -> str | None:
    """An optional 32-byte hash: missing, null or empty is None."""
    value = obj.get(key) if isinstance(obj, dict) else None
    return None if value is None or value == "" else hash32(value, f"{path}.{key}")


def hex_data(value: Any, where: str) -> str:
    """Even-length 0x hex data, lower case."""
    if not isinstance(value, str) or not _HEX.fullmatch(value) or len(value) % 2:
        raise _bad("0x hex data", value, where)
    return value.lower()


def _words(data: str) -> list[int]:
    body = data[2:]
    return [int(body[i : i + 64], 16) for i in range(0, len(body), 64)]


def _signed(word: int) -> int:
    return word - (1 << 256) if word >> 255 else word


def _topic_address(topic: str) -> str:
    return "0x" + topic[-40:]


@attrs.frozen
class RawLog:
    """The fields of a log both venues send, already validated."""

    address: str
    topics: tuple[str, ...]
    data: str
    tx_hash: str
    log_index: int
    block_number: int | None = None
    block_hash: str | None = None
    tx_index: int | None = None


def decode_log(
    log: RawLog,
    ts: int,
    recv_ts: int,
    venue: str,
    *,
    tokens: Mapping[str, TokenInfo] = KNOWN_TOKENS,
    confirmed: bool | None = None,
    skip: Container[NaturalKey] = (),
) -> list[Event]:
    """The :class:`Log` event, followed by its decoded form when irisflow knows the event.

    Decoded (see :func:`derive`): an ERC-20 ``Transfer`` or ``Approval``, an ERC-721
    ``Transfer``, a Uniswap V2 or V3 ``Swap``. Any other log, or one whose shape does not match
    (topic count, data length), stays a plain log.

    Args:
        log: The validated log fields.
        ts: Event time, ns.
        recv_ts: Receive time, ns.
        venue: Venue name.
        tokens: Token table for symbols and decimals.
        confirmed: The ``confirmed`` flag to set.
        skip: Natural keys not to decode again (Moralis sends transfers and approvals
            pre-decoded, with more detail).
    """
    out: list[Event] = [
        Log(
            venue=venue,
            symbol=log.address,
            ts=ts,
            recv_ts=recv_ts,
            address=log.address,
            topics=log.topics,
            data=log.data,
            tx_hash=log.tx_hash,
            log_index=log.log_index,
            block_number=log.block_number,
            block_hash=log.block_hash,
            tx_index=log.tx_index,
            confirmed=confirmed,
        )
    ]
    derived = derive(log, ts, recv_ts, venue, tokens=tokens, confirmed=confirmed)
    if derived is not None and (derived.kind, log.tx_hash, log.log_index) not in skip:
        out.append(derived)
    return out


def derive(
    log: RawLog,
    ts: int,
    recv_ts: int,
    venue: str,
    *,
    tokens: Mapping[str, TokenInfo] = KNOWN_TOKENS,
    confirmed: bool | None = None,
) -> Event | None:
    """The event a log encodes, or None (see :func:`decode_log`).

    ``Transfer`` shares its topic0 between ERC-20 and ERC-721; the topic count tells them apart
    (venues.md §3.5): 3 topics and one data word is ERC-20 (a :class:`TokenTransfer`), 4 topics
    (``tokenId`` indexed) and no data is ERC-721 (an :class:`NftTransfer`). An ``Approval`` with
    3 topics and one data word is ERC-20's (a :class:`TokenApproval`); ERC-721's has 4 topics
    and stays a plain log. A Uniswap ``Swap`` has 3 topics and 4 (V2) or 5 (V3) data words.
    """
    topics = log.topics
    topic0 = topics[0] if topics else ""
    data_len = len(log.data) - 2
    common: dict[str, Any] = {
        "venue": venue,
        "ts": ts,
        "recv_ts": recv_ts,
        "tx_hash": log.tx_hash,
        "log_index": log.log_index,
        "block_number": log.block_number,
        "block_hash": log.block_hash,
        "confirmed": confirmed,
    }
    if len(topics) == 4:
        if topic0 == TRANSFER_TOPIC and data_len == 0:
            return NftTransfer(
                symbol=log.address,
                contract=log.address,
                standard="erc721",
                from_address=_topic_address(topics[1]),
                to_address=_topic_address(topics[2]),
                token_id=int(topics[3], 16),
                amount=1,
                **common,
            )
        return None
    if len(topics) != 3:
        return None
    if topic0 in (TRANSFER_TOPIC, APPROVAL_TOPIC) and data_len == 64:
        raw = int(log.data[2:], 16)
        info = tokens.get(log.address)
        token: dict[str, Any] = {
            "symbol": info.symbol if info is not None else log.address,
            "token": log.address,
            "raw_amount": raw,
            "decimals": info.decimals if info is not None else None,
            "amount": scale(raw, info.decimals) if info is not None else None,
        }
        first, second = _topic_address(topics[1]), _topic_address(topics[2])
        if topic0 == APPROVAL_TOPIC:
            return TokenApproval(owner=first, spender=second, **token, **common)
        return TokenTransfer(from_address=first, to_address=second, **token, **common)
    if topic0 == UNISWAP_V2_SWAP_TOPIC and data_len == 4 * 64:
        a0_in, a1_in, a0_out, a1_out = _words(log.data)
        return Swap(
            symbol=log.address,
            pool=log.address,
            protocol="uniswap_v2",
            sender=_topic_address(topics[1]),
            recipient=_topic_address(topics[2]),
            amount0=a0_in - a0_out,
            amount1=a1_in - a1_out,
            amount0_in=a0_in,
            amount1_in=a1_in,
            amount0_out=a0_out,
            amount1_out=a1_out,
            **common,
        )
    if topic0 == UNISWAP_V3_SWAP_TOPIC and data_len == 5 * 64:
        amount0, amount1, sqrt_price, liquidity, tick = _words(log.data)
        return Swap(
            symbol=log.address,
            pool=log.address,
            protocol="uniswap_v3",
            sender=_topic_address(topics[1]),
            recipient=_topic_address(topics[2]),
            amount0=_signed(amount0),
            amount1=_signed(amount1),
            sqrt_price_x96=sqrt_price,
            liquidity=liquidity,
            tick=_signed(tick),
            **common,
        )
    return None
