"""Alchemy payloads for tests: the venue notes' examples verbatim, and builders.

The ``EXAMPLE_*`` constants hold the constructed examples of ``venues.md`` §3.5 exactly. The
builders (:func:`new_head`, :func:`transfer_log`, :func:`approval_log`,
:func:`erc721_transfer_log`, :func:`v3_swap_log`, :func:`transaction`, ...)
make objects shaped like Alchemy's, with hex quantities and ABI-encoded log data.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from .._errors import UsageError

__all__ = [
    "EXAMPLE_LOGS_SUBSCRIBE_REQUEST",
    "EXAMPLE_LOGS_SUBSCRIBE_RESPONSE",
    "EXAMPLE_MINED_TX_NOTIFICATION",
    "EXAMPLE_USDC_TRANSFER_NOTIFICATION",
    "EXAMPLE_V2_SWAP_DATA",
    "EXAMPLE_V3_SWAP_LOG",
    "address_topic",
    "approval_log",
    "encode_int",
    "encode_uint",
    "erc721_transfer_log",
    "log_entry",
    "new_head",
    "notification",
    "transaction",
    "transfer_log",
    "v2_swap_log",
    "v3_swap_log",
]

# -- the constructed examples of venues.md §3.5, verbatim -------------------------------------

EXAMPLE_LOGS_SUBSCRIBE_REQUEST = '{"jsonrpc":"2.0","id":11,"method":"eth_subscribe","params":["logs",{"address":"0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48","topics":["0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"]}]}'  # noqa: E501
EXAMPLE_LOGS_SUBSCRIBE_RESPONSE = (
    '{"jsonrpc":"2.0","id":11,"result":"0x5e1c0b7f3a9d4e2b8c6a1f0d9e8b7a65"}'
)
EXAMPLE_USDC_TRANSFER_NOTIFICATION = '{"jsonrpc":"2.0","method":"eth_subscription","params":{"subscription":"0x5e1c0b7f3a9d4e2b8c6a1f0d9e8b7a65","result":{"address":"0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48","topics":["0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef","0x00000000000000000000000028c6c06298d514db089934071355e5743bf21d60","0x0000000000000000000000005041ed759dd4afc3a72b8192c143f72f4724081a"],"data":"0x000000000000000000000000000000000000000000000000000000009502f900","blockNumber":"0x1588a3c","blockHash":"0x7c9a1e0f5b2d4c6e8a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f","transactionHash":"0x3f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0","transactionIndex":"0x2a","logIndex":"0x9c","removed":false}}}'  # noqa: E501
EXAMPLE_V3_SWAP_LOG = '{"address":"0x88e6a0c2ddd26feeb64f039a2c41296fcb3f5640","topics":["0xc42079f94a6350d7e6235f29174924f928cc2ac818eb64fed8004e115fbcca67","0x0000000000000000000000003fc91a3afd70395cd496c647d5a6cc9d4b2b7fad","0x0000000000000000000000003fc91a3afd70395cd496c647d5a6cc9d4b2b7fad"],"data":"0xffffffffffffffffffffffffffffffffffffffffffffffffffffffff4d2fa2000000000000000000000000000000000000000000000000000de0b6b3a764000000000000000000000000000000000000000047516b2849e2ed4c41c036d6c2ea000000000000000000000000000000000000000000000000d02ab486cedc0000000000000000000000000000000000000000000000000000000000000002fea0","blockNumber":"0x1588a3d","transactionHash":"0x9a8b7c6d5e4f30211203f4e5d6c7b8a99a8b7c6d5e4f30211203f4e5d6c7b8a9","transactionIndex":"0x5","logIndex":"0x1f","blockHash":"0x0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f1","removed":false}'  # noqa: E501
EXAMPLE_V2_SWAP_DATA = '{"data":"0x000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000006f05b59d3b200000000000000000000000000000000000000000000000000000000000058cf98800000000000000000000000000000000000000000000000000000000000000000"}'  # noqa: E501
EXAMPLE_MINED_TX_NOTIFICATION = '{"jsonrpc":"2.0","method":"eth_subscription","params":{"subscription":"0xa1b2c3d4e5f60718293a4b5c6d7e8f90","result":{"removed":false,"transaction":{"blockHash":"0x7c9a1e0f5b2d4c6e8a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f","blockNumber":"0x1588a3c","hash":"0x3f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0","from":"0x28c6c06298d514db089934071355e5743bf21d60","to":"0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48","gas":"0x186a0","gasPrice":"0x3b9aca00","maxFeePerGas":"0x6fc23ac00","maxPriorityFeePerGas":"0x3b9aca00","input":"0xa9059cbb0000000000000000000000005041ed759dd4afc3a72b8192c143f72f4724081a000000000000000000000000000000000000000000000000000000009502f900","nonce":"0x5d2","transactionIndex":"0x2a","value":"0x0","type":"0x2","chainId":"0x1","v":"0x1","r":"0x6d1a3c0b2e8f4a5d9c7b1e0f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d","s":"0x1f2e3d4c5b6a79880796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"}}}}'  # noqa: E501

# -- payload builders -----------------------------------------------------------------------

_TRANSFER = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
_APPROVAL = "0x8c5be1e5ebec7d5bd14f71427d1e84f3dd0314c0f7b2291e5b200ac8c7c3b925"
_V2_SWAP = "0xd78ad95fa46c994b6551d0da85fc275fe613ce37657fb8d5e3d130840159d822"
_V3_SWAP = "0xc42079f94a6350d7e6235f29174924f928cc2ac818eb64fed8004e115fbcca67"
_ZERO_HASH = "0x" + "0" * 64


def encode_uint(value: int) -> str:
    """One 32-byte ABI word (64 hex digits, no ``0x``) holding an unsigned integer."""
    if not 0 <= value < 2**256:
        raise UsageError(f"encode_uint needs 0 <= value < 2**256 (got {value})")
    return f"{value:064x}"


def encode_int(value: int) -> str:
    """One 32-byte ABI word holding a signed integer (two's complement)."""
    if not -(2**255) <= value < 2**255:
        raise UsageError(f"encode_int needs -2**255 <= value < 2**255 (got {value})")
    return f"{value % 2**256:064x}"


def address_topic(addr: str) -> str:
    """An address as an indexed topic: ``0x`` + 24 zeros + the 40 hex digits."""
    return "0x" + "0" * 24 + addr.lower().removeprefix("0x")


def _q(value: int) -> str:
    return hex(value)


def _tx_hash(n: int) -> str:
    return "0x" + f"{n:064x}"


def new_head(
    number: int,
    *,
    timestamp: int,
    hash: str | None = None,
    parent_hash: str | None = None,
    base_fee: int | None = 7_000_000_000,
    gas_used: int = 15_000_000,
    gas_limit: int = 30_000_000,
    miner: str = "0x95222290dd7278aa3ddd389cc1e1d165cc4bafe5",
) -> dict[str, Any]:
    """A ``newHeads`` header; ``timestamp`` in seconds. Hashes default to ones from ``number``."""
    head: dict[str, Any] = {
        "number": _q(number),
        "hash": hash or "0x" + f"{number:064x}",
        "parentHash": parent_hash or "0x" + f"{number - 1:064x}",
        "nonce": "0x0000000000000000",
        "sha3Uncles": "0x1dcc4de8dec75d7aab85b567b6ccd41ad312451b948a7413f0a142fd40d49347",
        "logsBloom": "0x" + "0" * 512,
        "transactionsRoot": _ZERO_HASH,
        "stateRoot": _ZERO_HASH,
        "receiptsRoot": _ZERO_HASH,
        "miner": miner,
        "difficulty": "0x0",
        "extraData": "0x",
        "gasLimit": _q(gas_limit),
        "gasUsed": _q(gas_used),
        "timestamp": _q(timestamp),
        "mixHash": _ZERO_HASH,
    }
    if base_fee is not None:
        head["baseFeePerGas"] = _q(base_fee)
    return head


def log_entry(
    address: str,
    topics: Iterable[str],
    data: str,
    *,
    block_number: int = 22_580_796,
    tx_hash: str | None = None,
    log_index: int = 0,
    tx_index: int = 0,
    block_hash: str | None = None,
    removed: bool = False,
) -> dict[str, Any]:
    """A log object as ``logs`` notifications carry it."""
    return {
        "address": address.lower(),
        "topics": list(topics),
        "data": data,
        "blockNumber": _q(block_number),
        "blockHash": block_hash or "0x" + f"{block_number:064x}",
        "transactionHash": tx_hash or _tx_hash(block_number * 1000 + log_index),
        "transactionIndex": _q(tx_index),
        "logIndex": _q(log_index),
        "removed": removed,
    }


def transfer_log(token: str, sender: str, recipient: str, value: int, **kw: Any) -> dict[str, Any]:
    """An ERC-20 ``Transfer`` log of ``value`` raw units (keywords as :func:`log_entry`)."""
    topics = [_TRANSFER, address_topic(sender), address_topic(recipient)]
    return log_entry(token, topics, "0x" + encode_uint(value), **kw)


def approval_log(token: str, owner: str, spender: str, value: int, **kw: Any) -> dict[str, Any]:
    """An ERC-20 ``Approval`` log of ``value`` raw units (keywords as :func:`log_entry`)."""
    topics = [_APPROVAL, address_topic(owner), address_topic(spender)]
    return log_entry(token, topics, "0x" + encode_uint(value), **kw)


def erc721_transfer_log(
    contract: str, sender: str, recipient: str, token_id: int, **kw: Any
) -> dict[str, Any]:
    """An ERC-721 ``Transfer`` log: 4 topics (``tokenId`` indexed), empty data."""
    topics = [
        _TRANSFER,
        address_topic(sender),
        address_topic(recipient),
        "0x" + encode_uint(token_id),
    ]
    return log_entry(contract, topics, "0x", **kw)


def v2_swap_log(
    pool: str,
    sender: str,
    to: str,
    amounts: tuple[int, int, int, int],
    **kw: Any,
) -> dict[str, Any]:
    """A Uniswap V2 ``Swap`` log; ``amounts`` = (amount0In, amount1In, amount0Out, amount1Out)."""
    data = "0x" + "".join(encode_uint(a) for a in amounts)
    return log_entry(pool, [_V2_SWAP, address_topic(sender), address_topic(to)], data, **kw)


def v3_swap_log(
    pool: str,
    sender: str,
    recipient: str,
    amount0: int,
    amount1: int,
    sqrt_price_x96: int,
    liquidity: int,
    tick: int,
    **kw: Any,
) -> dict[str, Any]:
    """A Uniswap V3 ``Swap`` log with signed amounts (keywords as :func:`log_entry`)."""
    data = "0x" + "".join(
        [
            encode_int(amount0),
            encode_int(amount1),
            encode_uint(sqrt_price_x96),
            encode_uint(liquidity),
            encode_int(tick),
        ]
    )
    topics = [_V3_SWAP, address_topic(sender), address_topic(recipient)]
    return log_entry(pool, topics, data, **kw)


def transaction(
    hash: str,
    sender: str,
    to: str | None,
    value_wei: int,
    *,
    nonce: int = 0,
    gas: int = 21_000,
    gas_price: int = 30_000_000_000,
    input: str = "0x",
    block_number: int | None = None,
    block_hash: str | None = None,
    tx_index: int | None = None,
    tx_type: int = 2,
) -> dict[str, Any]:
    """A transaction object; ``to=None`` is a contract creation, no block means pending."""
    tx: dict[str, Any] = {
        "blockHash": block_hash
        if block_hash is not None or block_number is None
        else "0x" + f"{block_number:064x}",
        "blockNumber": None if block_number is None else _q(block_number),
        "hash": hash,
        "from": sender.lower(),
        "to": None if to is None else to.lower(),
        "gas": _q(gas),
        "gasPrice": _q(gas_price),
        "input": input,
        "nonce": _q(nonce),
        "transactionIndex": None if tx_index is None else _q(tx_index),
        "value": _q(value_wei),
        "type": _q(tx_type),
        "chainId": "0x1",
        "v": "0x1",
        "r": "0x" + "1" * 64,
        "s": "0x" + "2" * 64,
    }
    if tx_type == 2:
        tx["maxFeePerGas"] = _q(gas_price * 2)
        tx["maxPriorityFeePerGas"] = _q(1_000_000_000)
    return tx


def notification(subscription: str, result: object) -> str:
    """An ``eth_subscription`` notification as compact JSON text."""
    return orjson.dumps(
        {
            "jsonrpc": "2.0",
            "method": "eth_subscription",
            "params": {"subscription": subscription, "result": result},
        }
    ).decode()
