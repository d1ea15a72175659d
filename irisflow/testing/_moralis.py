"""A fake Moralis Streams sender: it POSTs signed webhook bodies to irisflow's receiver.

Moralis has no websocket (``venues.md`` §4): it is an HTTP *client* that calls us, so the fake
is one too. It signs bodies the way Moralis does (Keccak-256 of body + secret) and can also
send what Moralis never should: wrong secrets, NIST SHA3-256 signatures (the classic
confusion), no signature, oversized bodies::

    sender = MoralisSender("http://127.0.0.1:8080/", EXAMPLE_SECRET)
    assert await sender.post_test_webhook() == 200
    body = webhook_body(confirmed=False, block_number=22580796, timestamp=1767225599,
                        txs=[moralis_tx(...)])
    assert await sender.post_pair(body, confirmed_first=True) == (200, 200)

The ``EXAMPLE_*`` constants are ``venues.md`` §4.4's test vector and §4.3's example verbatim.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

import attrs
import httpx
import orjson

from .._chain import keccak256
from .._errors import ConnectError

__all__ = [
    "EXAMPLE_SECRET",
    "EXAMPLE_TEST_SIGNATURE",
    "EXAMPLE_TEST_WEBHOOK",
    "EXAMPLE_UNCONFIRMED_ERC20",
    "MoralisSender",
    "encode_body",
    "keccak_signature",
    "moralis_erc20_approval",
    "moralis_erc20_transfer",
    "moralis_internal_tx",
    "moralis_log",
    "moralis_nft_transfer",
    "moralis_tx",
    "nist_signature",
    "webhook_body",
]

EXAMPLE_SECRET = "irisflow-test-secret"
EXAMPLE_TEST_WEBHOOK = b'{"abi":[],"block":{"hash":"","number":"","timestamp":""},"txs":[],"txsInternal":[],"logs":[],"chainId":"","tag":"","streamId":"","confirmed":true,"retries":0,"erc20Approvals":[],"erc20Transfers":[],"nftApprovals":{"ERC721":[],"ERC1155":[]},"nftTransfers":[]}'  # noqa: E501
"""The empty-shaped body Moralis POSTs when a stream is saved (258 bytes)."""
EXAMPLE_TEST_SIGNATURE = "0x5249847ddd786d822c3c2c79cf25ded8b13ad49dddaf937b10ddf486fb27a05f"
"""``x-signature`` of :data:`EXAMPLE_TEST_WEBHOOK` with :data:`EXAMPLE_SECRET`."""
EXAMPLE_UNCONFIRMED_ERC20 = b'{"confirmed":false,"chainId":"0x1","abi":[],"streamId":"3b9f2c1e-7a4d-4e8b-9c0f-5d6e7f8a9b0c","tag":"usdc-watch","retries":0,"block":{"number":"22580796","hash":"0x7c9a1e0f5b2d4c6e8a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f","timestamp":"1767225599"},"logs":[{"logIndex":"156","transactionHash":"0x3f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0","address":"0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48","data":"0x000000000000000000000000000000000000000000000000000000009502f900","topic0":"0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef","topic1":"0x00000000000000000000000028c6c06298d514db089934071355e5743bf21d60","topic2":"0x0000000000000000000000005041ed759dd4afc3a72b8192c143f72f4724081a","topic3":null}],"txs":[],"txsInternal":[],"erc20Transfers":[{"transactionHash":"0x3f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0","logIndex":"156","contract":"0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48","from":"0x28c6c06298d514db089934071355e5743bf21d60","to":"0x5041ed759dd4afc3a72b8192c143f72f4724081a","value":"2500000000","tokenName":"USD Coin","tokenSymbol":"USDC","tokenDecimals":"6","valueWithDecimals":"2500"}],"erc20Approvals":[],"nftApprovals":{"ERC721":[],"ERC1155":[]},"nftTransfers":[]}'  # noqa: E501
"""``venues.md`` §4.3's unconfirmed USDC transfer body."""


def keccak_signature(body: bytes, secret: str) -> str:
    """The ``x-signature`` Moralis sends: ``0x`` + Keccak-256(body + secret)."""
    return "0x" + keccak256(body + secret.encode()).hex()


def nist_signature(body: bytes, secret: str) -> str:
    """The same with NIST SHA3-256 (``hashlib.sha3_256``): the wrong function, for tests."""
    return "0x" + hashlib.sha3_256(body + secret.encode()).hexdigest()


def encode_body(body: Mapping[str, Any]) -> bytes:
    """A body as compact JSON, keys in the given order (as Moralis sends it)."""
    return orjson.dumps(body)


def moralis_tx(
    hash: str,
    from_address: str,
    to_address: str | None,
    value_wei: int,
    *,
    gas: int = 21_000,
    gas_price: int = 30_000_000_000,
    nonce: int = 0,
    input: str = "0x",
    tx_index: int = 0,
    contract_address: str | None = None,
    status: str = "1",
) -> dict[str, Any]:
    """A ``txs[]`` entry: decimal strings, ``toAddress`` null for a contract creation."""
    return {
        "hash": hash,
        "gas": str(gas),
        "gasPrice": str(gas_price),
        "nonce": str(nonce),
        "input": input,
        "transactionIndex": str(tx_index),
        "fromAddress": from_address,
        "toAddress": to_address,
        "value": str(value_wei),
        "type": "2",
        "v": "1",
        "r": "12345678901234567890",
        "s": "98765432109876543210",
        "receiptCumulativeGasUsed": str(gas),
        "receiptGasUsed": str(gas),
        "receiptContractAddress": contract_address,
        "receiptRoot": None,
        "receiptStatus": status,
    }


def moralis_log(
    address: str, topics: Iterable[str], data: str, *, tx_hash: str, log_index: int
) -> dict[str, Any]:
    """A ``logs[]`` entry: topics as ``topic0``..``topic3`` (null when absent)."""
    listed = list(topics)
    entry: dict[str, Any] = {
        "logIndex": str(log_index),
        "transactionHash": tx_hash,
        "address": address,
        "data": data,
    }
    for i in range(4):
        entry[f"topic{i}"] = listed[i] if i < len(listed) else None
    return entry


def moralis_erc20_transfer(
    contract: str,
    from_address: str,
    to_address: str,
    value: int,
    *,
    tx_hash: str,
    log_index: int,
    symbol: str = "",
    decimals: int | None = None,
    name: str = "",
    possible_spam: bool | None = None,
) -> dict[str, Any]:
    """An ``erc20Transfers[]`` entry; ``decimals=None`` sends an empty ``tokenDecimals``."""
    entry: dict[str, Any] = {
        "transactionHash": tx_hash,
        "logIndex": str(log_index),
        "contract": contract,
        "from": from_address,
        "to": to_address,
        "value": str(value),
        "tokenName": name,
        "tokenSymbol": symbol,
        "tokenDecimals": "" if decimals is None else str(decimals),
        "valueWithDecimals": "",
    }
    if possible_spam is not None:
        entry["possibleSpam"] = possible_spam
    return entry


def moralis_internal_tx(
    tx_hash: str,
    from_address: str,
    to_address: str | None,
    value_wei: int,
    *,
    gas: int | None = 2300,
) -> dict[str, Any]:
    """A ``txsInternal[]`` entry (``from``, ``to``, ``value``, ``gas``, ``transactionHash``)."""
    return {
        "from": from_address,
        "to": to_address,
        "value": str(value_wei),
        "gas": None if gas is None else str(gas),
        "transactionHash": tx_hash,
    }


def moralis_erc20_approval(
    contract: str,
    owner: str,
    spender: str,
    value: int,
    *,
    tx_hash: str,
    log_index: int,
    symbol: str = "",
    decimals: int | None = None,
    name: str = "",
    possible_spam: bool | None = None,
) -> dict[str, Any]:
    """An ``erc20Approvals[]`` entry: an ``erc20Transfers`` one with ``owner`` and ``spender``."""
    entry = moralis_erc20_transfer(
        contract,
        owner,
        spender,
        value,
        tx_hash=tx_hash,
        log_index=log_index,
        symbol=symbol,
        decimals=decimals,
        name=name,
        possible_spam=possible_spam,
    )
    entry["owner"] = entry.pop("from")
    entry["spender"] = entry.pop("to")
    return entry


def moralis_nft_transfer(
    contract: str,
    from_address: str,
    to_address: str,
    token_id: int,
    *,
    tx_hash: str,
    log_index: int,
    standard: str = "ERC721",
    amount: int = 1,
    operator: str | None = None,
    name: str = "",
    symbol: str = "",
) -> dict[str, Any]:
    """An ``nftTransfers[]`` entry; ``standard`` is ``ERC721`` or ``ERC1155``."""
    return {
        "operator": operator,
        "from": from_address,
        "to": to_address,
        "tokenId": str(token_id),
        "amount": str(amount),
        "transactionHash": tx_hash,
        "logIndex": str(log_index),
        "contract": contract,
        "tokenName": name,
        "tokenSymbol": symbol,
        "tokenContractType": standard,
    }


def webhook_body(
    *,
    confirmed: bool,
    block_number: int,
    timestamp: int,
    block_hash: str | None = None,
    txs: Iterable[dict[str, Any]] = (),
    logs: Iterable[dict[str, Any]] = (),
    erc20_transfers: Iterable[dict[str, Any]] = (),
    txs_internal: Iterable[dict[str, Any]] = (),
    erc20_approvals: Iterable[dict[str, Any]] = (),
    nft_transfers: Iterable[dict[str, Any]] = (),
    chain_id: str = "0x1",
    tag: str = "irisflow-test",
    retries: int = 0,
) -> dict[str, Any]:
    """A Streams webhook body for one block (``timestamp`` in seconds)."""
    return {
        "confirmed": confirmed,
        "chainId": chain_id,
        "abi": [],
        "streamId": "3b9f2c1e-7a4d-4e8b-9c0f-5d6e7f8a9b0c",
        "tag": tag,
        "retries": retries,
        "block": {
            "number": str(block_number),
            "hash": block_hash or "0x" + f"{block_number:064x}",
            "timestamp": str(timestamp),
        },
        "logs": list(logs),
        "txs": list(txs),
        "txsInternal": list(txs_internal),
        "erc20Transfers": list(erc20_transfers),
        "erc20Approvals": list(erc20_approvals),
        "nftApprovals": {"ERC721": [], "ERC1155": []},
        "nftTransfers": list(nft_transfers),
    }


_SIGN = object()


@attrs.define
class MoralisSender:
    """POSTs webhook bodies to a receiver, as Moralis would.

    Args:
        url: The receiver, e.g. ``http://127.0.0.1:8080/``.
        secret: The Streams secret to sign with.
        timeout: Seconds per request.
    """

    url: str
    secret: str = attrs.field(repr=False)
    timeout: float = 10.0

    async def post(
        self,
        body: bytes | Mapping[str, Any],
        *,
        signature: str | object | None = _SIGN,
        headers: Mapping[str, str] | None = None,
        chunked: bool = False,
    ) -> int:
        """POST ``body`` (a mapping is sent as compact JSON); returns the HTTP status.

        Args:
            body: The raw body, or a mapping to encode.
            signature: The ``x-signature`` to send; by default the correct one, None for
                no header at all.
            headers: Extra headers.
            chunked: Send the body with chunked transfer encoding (no Content-Length).

        Raises:
            ConnectError: the receiver could not be reached.
        """
        data = body if isinstance(body, bytes) else encode_body(body)
        sent = {"content-type": "application/json", **(headers or {})}
        if signature is _SIGN:
            sent["x-signature"] = keccak_signature(data, self.secret)
        elif isinstance(signature, str):
            sent["x-signature"] = signature
        content: bytes | AsyncIterator[bytes] = data
        if chunked:

            async def pieces() -> AsyncIterator[bytes]:
                for i in range(0, len(data), 4096):
                    yield data[i : i + 4096]

            content = pieces()
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                response = await client.post(self.url, content=content, headers=sent)
        except httpx.HTTPError as exc:
            raise ConnectError(f"cannot POST to {self.url}: {exc!r}") from exc
        return response.status_code

    async def post_bad_signature(self, body: bytes | Mapping[str, Any]) -> int:
        """POST ``body`` signed with the wrong secret."""
        data = body if isinstance(body, bytes) else encode_body(body)
        return await self.post(data, signature=keccak_signature(data, self.secret + "-wrong"))

    async def post_nist_signature(self, body: bytes | Mapping[str, Any]) -> int:
        """POST ``body`` signed with NIST SHA3-256 instead of Keccak-256."""
        data = body if isinstance(body, bytes) else encode_body(body)
        return await self.post(data, signature=nist_signature(data, self.secret))

    async def post_unsigned(self, body: bytes | Mapping[str, Any]) -> int:
        """POST ``body`` without an ``x-signature`` header."""
        return await self.post(body, signature=None)

    async def post_test_webhook(self) -> int:
        """POST the empty-shaped test webhook Moralis sends when a stream is saved."""
        return await self.post(EXAMPLE_TEST_WEBHOOK)

    async def post_oversize(self, size: int, *, chunked: bool = False) -> int:
        """POST a correctly signed body of ``size`` bytes (JSON padded with spaces)."""
        head = b'{"confirmed":true,"padding":"'
        data = head + b" " * max(0, size - len(head) - 2) + b'"}'
        return await self.post(data, chunked=chunked)

    async def post_pair(
        self, body: Mapping[str, Any], *, confirmed_first: bool = False
    ) -> tuple[int, int]:
        """POST the unconfirmed and the confirmed copy of ``body``, in the order asked.

        Returns:
            The statuses of the unconfirmed and the confirmed POST, in that order.
        """
        unconfirmed = {**body, "confirmed": False}
        confirmed = {**body, "confirmed": True}
        if confirmed_first:
            second = await self.post(confirmed)
            return await self.post(unconfirmed), second
        first = await self.post(unconfirmed)
        return first, await self.post(confirmed)
