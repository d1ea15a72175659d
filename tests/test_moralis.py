"""Moralis Streams: signatures, decoding with confirmation de-duplication, the receiver."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import httpx
import orjson
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from irisflow._chain import (
    APPROVAL_TOPIC,
    TRANSFER_TOPIC,
    Block,
    Confirmation,
    InternalTransaction,
    Log,
    NftTransfer,
    Swap,
    TokenApproval,
    TokenTransfer,
    Transaction,
)
from irisflow._errors import DecodeError, UsageError
from irisflow._events import Event
from irisflow._feed import FeedItem, Frames, Overflow
from irisflow._pipeline import Pipeline
from irisflow._run import Runner
from irisflow._venue import FeedOptions, Plan, VenueParams, get_venue
from irisflow.testing._alchemy_frames import EXAMPLE_V3_SWAP_LOG, address_topic, encode_uint
from irisflow.testing._moralis import (
    EXAMPLE_SECRET,
    EXAMPLE_TEST_SIGNATURE,
    EXAMPLE_TEST_WEBHOOK,
    EXAMPLE_UNCONFIRMED_ERC20,
    MoralisSender,
    encode_body,
    keccak_signature,
    moralis_erc20_approval,
    moralis_erc20_transfer,
    moralis_internal_tx,
    moralis_log,
    moralis_nft_transfer,
    moralis_tx,
    nist_signature,
    webhook_body,
)
from irisflow.testing._sinks import ListSink
from irisflow.venues._webhook import WebhookStats, parse_listen
from irisflow.venues.moralis import (  # registers the venue
    MORALIS,
    MoralisDecoder,
    MoralisVenue,
    verify_signature,
    webhook_signature,
)

USDC = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"
ALICE = "0x28c6c06298d514db089934071355e5743bf21d60"
BOB = "0x5041ed759dd4afc3a72b8192c143f72f4724081a"
USDC_TX = "0x3f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"
BLOCK_HASH = "0x7c9a1e0f5b2d4c6e8a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f"
T = 1_767_225_599
TS = T * 1_000_000_000
RECV = 1_767_225_600_000_000_001


def h(n: int) -> str:
    return f"0x{n:064x}"


@pytest.fixture(autouse=True)
def secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MORALIS_STREAMS_SECRET", EXAMPLE_SECRET)


# -- signatures -------------------------------------------------------------------------------


def test_the_venue_notes_test_vector() -> None:
    assert len(EXAMPLE_TEST_WEBHOOK) == 258
    assert webhook_signature(EXAMPLE_TEST_WEBHOOK, EXAMPLE_SECRET) == EXAMPLE_TEST_SIGNATURE
    assert verify_signature(EXAMPLE_TEST_WEBHOOK, EXAMPLE_TEST_SIGNATURE, EXAMPLE_SECRET)


def test_nist_sha3_is_not_the_moralis_signature() -> None:
    nist = nist_signature(EXAMPLE_TEST_WEBHOOK, EXAMPLE_SECRET)
    assert nist != EXAMPLE_TEST_SIGNATURE
    assert not verify_signature(EXAMPLE_TEST_WEBHOOK, nist, EXAMPLE_SECRET)


@pytest.mark.parametrize(
    "header",
    [
        EXAMPLE_TEST_SIGNATURE.removeprefix("0x"),  # old doc code: hex() without 0x
        EXAMPLE_TEST_SIGNATURE.upper().replace("0X", "0x"),
        f"  {EXAMPLE_TEST_SIGNATURE} ".encode(),
    ],
)
def test_signature_spellings_are_normalised(header: str | bytes) -> None:
    assert verify_signature(EXAMPLE_TEST_WEBHOOK, header, EXAMPLE_SECRET)


@pytest.mark.parametrize(
    "header", [None, "", "0x", "0x1234", "zz" * 32, EXAMPLE_TEST_SIGNATURE[:-1] + "0"]
)
def test_bad_signatures_fail(header: str | None) -> None:
    assert not verify_signature(EXAMPLE_TEST_WEBHOOK, header, EXAMPLE_SECRET)


def test_wrong_secret_fails() -> None:
    assert not verify_signature(EXAMPLE_TEST_WEBHOOK, EXAMPLE_TEST_SIGNATURE, "another-secret")


def test_reserialised_body_is_accepted_as_the_js_reference_does() -> None:
    # Signed over JSON.stringify(parsed body): compact, key order kept, non-ASCII as is.
    pretty = json.dumps({"b": 1, "a": "é", "confirmed": True}, indent=2).encode()
    compact = '{"b":1,"a":"é","confirmed":true}'.encode()
    assert verify_signature(pretty, keccak_signature(compact, EXAMPLE_SECRET), EXAMPLE_SECRET)
    assert not verify_signature(pretty, keccak_signature(compact, "x"), EXAMPLE_SECRET)


# -- decoding -------------------------------------------------------------------------------


def decode(
    *bodies: bytes | dict[str, Any], decoder: MoralisDecoder | None = None
) -> tuple[list[Event], list[tuple[int, DecodeError]]]:
    decoder = decoder or MoralisDecoder()
    out: list[Event] = []
    errors: list[tuple[int, DecodeError]] = []
    frames = [b if isinstance(b, bytes) else encode_body(b) for b in bodies]
    decoder.decode_batch(frames, RECV, out, errors)
    return out, errors


def test_unconfirmed_erc20_example() -> None:
    events, errors = decode(EXAMPLE_UNCONFIRMED_ERC20)
    assert errors == []
    block, log, transfer = events  # the Transfer log is not decoded a second time
    assert isinstance(block, Block)
    assert (block.number, block.hash, block.ts, block.confirmed) == (
        22_580_796,
        BLOCK_HASH,
        TS,
        False,
    )
    assert block.symbol == "ETH"
    assert isinstance(log, Log)
    assert (log.address, log.log_index, log.tx_hash, log.block_number) == (
        USDC,
        156,
        USDC_TX,
        22_580_796,
    )
    assert log.topics == (TRANSFER_TOPIC, address_topic(ALICE), address_topic(BOB))
    assert isinstance(transfer, TokenTransfer)
    assert transfer.symbol == "USDC"
    assert (transfer.from_address, transfer.to_address) == (ALICE, BOB)
    assert (transfer.raw_amount, transfer.decimals, transfer.amount) == (
        2_500_000_000,
        6,
        Decimal(2500),
    )
    assert (transfer.ts, transfer.recv_ts, transfer.confirmed) == (TS, RECV, False)
    assert transfer.block_hash == BLOCK_HASH


def test_the_test_webhook_has_no_events() -> None:
    assert decode(EXAMPLE_TEST_WEBHOOK) == ([], [])
    # Newer pages show nftApprovals as an array: accepted too.
    assert decode(EXAMPLE_TEST_WEBHOOK.replace(b'{"ERC721":[],"ERC1155":[]}', b"[]")) == ([], [])


def test_native_transactions_and_contract_creation() -> None:
    created = "0x" + "c0" * 20
    body = webhook_body(
        confirmed=True,
        block_number=100,
        timestamp=T,
        txs=[
            moralis_tx(h(1), ALICE, BOB, 1_500_000_000_000_000_000, nonce=7, tx_index=3),
            moralis_tx(h(2), ALICE, None, 0, gas=1_000_000, contract_address=created),
        ],
    )
    (_, payment, creation), errors = decode(body)
    assert errors == []
    assert isinstance(payment, Transaction)
    assert (payment.tx_hash, payment.from_address, payment.to_address) == (h(1), ALICE, BOB)
    assert (payment.value_wei, payment.value_eth) == (1_500_000_000_000_000_000, Decimal("1.5"))
    assert (payment.nonce, payment.tx_index, payment.gas, payment.gas_price) == (
        7,
        3,
        21_000,
        30_000_000_000,
    )
    assert (payment.status, payment.tx_type, payment.pending, payment.confirmed) == (
        1,
        2,
        False,
        True,
    )
    assert (payment.block_number, payment.ts) == (100, TS)
    assert isinstance(creation, Transaction)
    assert creation.to_address is None
    assert creation.contract_address == created


def test_transfer_logs_without_a_decoded_entry_are_decoded_here() -> None:
    log = moralis_log(
        USDC,
        [TRANSFER_TOPIC, address_topic(ALICE), address_topic(BOB)],
        "0x" + encode_uint(7_000_000),
        tx_hash=h(5),
        log_index=3,
    )
    events, _ = decode(webhook_body(confirmed=False, block_number=1, timestamp=T, logs=[log]))
    assert [e.kind for e in events] == ["block", "log", "token_transfer"]
    assert events[2].amount == Decimal(7)  # type: ignore[attr-defined]


def test_swaps_in_logs() -> None:
    v3 = orjson.loads(EXAMPLE_V3_SWAP_LOG)
    log = moralis_log(
        v3["address"], v3["topics"], v3["data"], tx_hash=v3["transactionHash"], log_index=31
    )
    events, _ = decode(webhook_body(confirmed=True, block_number=1, timestamp=T, logs=[log]))
    swap = events[2]
    assert isinstance(swap, Swap)
    assert (swap.amount0, swap.amount1, swap.tick) == (-3_000_000_000, 10**18, 196_256)
    assert swap.confirmed is True


def test_token_metadata_from_the_body_and_the_table() -> None:
    odd = "0x" + "77" * 20
    transfers = [
        moralis_erc20_transfer(
            odd, ALICE, BOB, 5 * 10**9, tx_hash=h(1), log_index=1, symbol="odd", decimals=9
        ),
        moralis_erc20_transfer(odd, ALICE, BOB, 5, tx_hash=h(2), log_index=2, possible_spam=True),
        # A body that gets USDC's decimals wrong: the table's 6 win.
        moralis_erc20_transfer(
            USDC, ALICE, BOB, 10**6, tx_hash=h(3), log_index=3, symbol="USDC", decimals=18
        ),
    ]
    events, _ = decode(
        webhook_body(confirmed=True, block_number=1, timestamp=T, erc20_transfers=transfers)
    )
    described, unknown, usdc = events[1:]
    assert isinstance(described, TokenTransfer)
    assert (described.symbol, described.decimals, described.amount) == ("ODD", 9, Decimal(5))
    assert isinstance(unknown, TokenTransfer)
    assert (unknown.symbol, unknown.decimals, unknown.amount, unknown.possible_spam) == (
        odd,
        None,
        None,
        True,
    )
    assert isinstance(usdc, TokenTransfer)
    assert (usdc.decimals, usdc.amount) == (6, Decimal(1))


# -- txsInternal, erc20Approvals, nftTransfers -------------------------------------------------

ROUTER = "0x" + "d0" * 20
PUNKS = "0x" + "b7" * 20
GAME = "0x" + "e1" * 20
ZERO = "0x" + "00" * 20


def test_internal_transactions_are_numbered_per_transaction() -> None:
    body = webhook_body(
        confirmed=False,
        block_number=500,
        timestamp=T,
        txs_internal=[
            moralis_internal_tx(h(1), ROUTER, ALICE, 1_250_000_000_000_000_000),
            moralis_internal_tx(h(2), ROUTER, BOB, 1, gas=None),
            moralis_internal_tx(h(1), ROUTER, None, 0),  # no recipient given
            moralis_internal_tx(h(1), ROUTER, BOB, 10**30 + 1),
        ],
    )
    (block, *internal), errors = decode(body)
    assert errors == []
    assert isinstance(block, Block)
    assert all(isinstance(e, InternalTransaction) for e in internal)
    got = [
        (e.tx_hash, e.internal_index, e.to_address, e.value_wei, e.gas)  # type: ignore[attr-defined]
        for e in internal
    ]
    assert got == [
        (h(1), 0, ALICE, 1_250_000_000_000_000_000, 2300),
        (h(2), 0, BOB, 1, None),
        (h(1), 1, None, 0, 2300),
        (h(1), 2, BOB, 10**30 + 1, 2300),
    ]
    first = internal[0]
    assert isinstance(first, InternalTransaction)
    assert first.value_eth == Decimal("1.25")
    assert internal[3].value_eth == Decimal("1000000000000.000000000000000001")  # type: ignore[attr-defined]
    assert (first.symbol, first.from_address, first.ts, first.recv_ts) == ("ETH", ROUTER, TS, RECV)
    assert (first.block_number, first.block_hash, first.confirmed) == (500, h(500), False)


def test_erc20_approvals() -> None:
    odd = "0x" + "77" * 20
    unlimited = 2**256 - 1
    body = webhook_body(
        confirmed=True,
        block_number=7,
        timestamp=T,
        erc20_approvals=[
            # The body gets USDC wrong: the table's symbol and decimals win.
            moralis_erc20_approval(
                USDC, ALICE, ROUTER, unlimited, tx_hash=h(1), log_index=3, symbol="usdc.e",
                decimals=18,
            ),
            moralis_erc20_approval(
                odd, BOB, ROUTER, 25 * 10**8, tx_hash=h(2), log_index=4, symbol=" odd ",
                decimals=8, possible_spam=True,
            ),
            moralis_erc20_approval(odd, BOB, ALICE, 0, tx_hash=h(2), log_index=5),
        ],
    )  # fmt: skip
    (_, usdc, described, revoked), errors = decode(body)
    assert errors == []
    assert isinstance(usdc, TokenApproval)
    assert (usdc.symbol, usdc.token, usdc.owner, usdc.spender) == ("USDC", USDC, ALICE, ROUTER)
    assert (usdc.raw_amount, usdc.decimals) == (unlimited, 6)
    # Exact, not rounded to the decimal context's 28 digits.
    assert usdc.amount == Decimal(
        "115792089237316195423570985008687907853269984665640564039457584007913129.639935"
    )
    assert (usdc.tx_hash, usdc.log_index, usdc.block_hash, usdc.confirmed) == (h(1), 3, h(7), True)
    assert usdc.possible_spam is None
    assert isinstance(described, TokenApproval)
    assert (described.symbol, described.decimals, described.amount) == ("ODD", 8, Decimal(25))
    assert described.possible_spam is True
    assert isinstance(revoked, TokenApproval)
    assert (revoked.symbol, revoked.raw_amount, revoked.decimals, revoked.amount) == (
        odd,
        0,
        None,
        None,
    )


def test_nft_transfers_erc721_and_an_erc1155_batch() -> None:
    minted = moralis_nft_transfer(
        PUNKS, ZERO, ALICE, 2**255 + 9, tx_hash=h(1), log_index=2, name="Punks", symbol="punk"
    )
    minted["amount"] = None  # ERC-721 entries may leave it out: one token
    body = webhook_body(
        confirmed=False,
        block_number=9,
        timestamp=T,
        nft_transfers=[
            minted,
            *(
                moralis_nft_transfer(
                    GAME, ALICE, BOB, token_id, tx_hash=h(3), log_index=8, standard="ERC1155",
                    amount=amount, operator=ROUTER,
                )
                for token_id, amount in ((10, 5), (11, 2**70))
            ),
        ],
    )  # fmt: skip
    (_, punk, sword, shield), errors = decode(body)
    assert errors == []
    assert isinstance(punk, NftTransfer)
    assert (punk.symbol, punk.contract, punk.standard) == ("PUNK", PUNKS, "erc721")
    assert (punk.from_address, punk.to_address, punk.token_id, punk.amount) == (
        ZERO,
        ALICE,
        2**255 + 9,
        1,
    )
    assert (punk.operator, punk.token_name, punk.token_symbol) == (None, "Punks", "punk")
    assert (punk.tx_hash, punk.log_index, punk.block_number, punk.confirmed) == (h(1), 2, 9, False)
    for nft, token_id, amount in ((sword, 10, 5), (shield, 11, 2**70)):
        assert isinstance(nft, NftTransfer)
        assert (nft.standard, nft.symbol, nft.operator) == ("erc1155", GAME, ROUTER)
        assert (nft.token_id, nft.amount, nft.tx_hash, nft.log_index) == (token_id, amount, h(3), 8)


def test_logs_that_a_decoded_array_carries_are_not_decoded_twice() -> None:
    approval_topics = [APPROVAL_TOPIC, address_topic(ALICE), address_topic(ROUTER)]
    erc721_topics = [TRANSFER_TOPIC, address_topic(ALICE), address_topic(BOB), h(42)]
    million = "0x" + encode_uint(10**6)
    body = webhook_body(
        confirmed=True,
        block_number=3,
        timestamp=T,
        logs=[
            moralis_log(USDC, approval_topics, million, tx_hash=h(1), log_index=1),
            moralis_log(PUNKS, erc721_topics, "0x", tx_hash=h(1), log_index=2),
            # Not in erc20Approvals (e.g. the stream filters by address): decoded here.
            moralis_log(USDC, approval_topics, "0x" + encode_uint(7), tx_hash=h(1), log_index=3),
        ],
        erc20_approvals=[
            moralis_erc20_approval(USDC, ALICE, ROUTER, 10**6, tx_hash=h(1), log_index=1),
        ],
        nft_transfers=[
            moralis_nft_transfer(PUNKS, ALICE, BOB, 42, tx_hash=h(1), log_index=2, symbol="P"),
        ],
    )  # fmt: skip
    events, errors = decode(body)
    assert errors == []
    assert [(e.kind, getattr(e, "log_index", None)) for e in events] == [
        ("block", None),
        ("log", 1),
        ("log", 2),
        ("log", 3),
        ("approval", 3),  # from logs[]
        ("approval", 1),  # from erc20Approvals
        ("nft_transfer", 2),  # from nftTransfers, with its symbol
    ]
    assert events[-1].symbol == "P"
    assert events[4].amount == Decimal("0.000007")  # type: ignore[attr-defined]


def newer_body(confirmed: bool) -> dict[str, Any]:
    """One of each newer array; the ERC-1155 batch moves two ids under one log index."""
    return webhook_body(
        confirmed=confirmed,
        block_number=2000,
        timestamp=T,
        txs_internal=[
            moralis_internal_tx(h(1), ROUTER, ALICE, 10**18),
            moralis_internal_tx(h(1), ROUTER, BOB, 2 * 10**18),
        ],
        erc20_approvals=[moralis_erc20_approval(USDC, ALICE, ROUTER, 5, tx_hash=h(1), log_index=0)],
        nft_transfers=[
            moralis_nft_transfer(PUNKS, ALICE, BOB, 1, tx_hash=h(2), log_index=1),
            *(
                moralis_nft_transfer(GAME, ALICE, BOB, i, tx_hash=h(2), log_index=2,
                                     standard="ERC1155", amount=3, operator=ALICE)
                for i in (7, 8)
            ),
        ],
    )  # fmt: skip


NEWER_KEYS = [
    ("block", None, None),
    ("internal_tx", h(1), 0),
    ("internal_tx", h(1), 1),
    ("approval", h(1), 0),
    ("nft_transfer", h(2), 1),
    ("nft_transfer", h(2), 2),
]


def keys(events: list[Event]) -> list[tuple[str, str | None, int | None]]:
    out = []
    for e in events:
        kind = e.target if isinstance(e, Confirmation) else e.kind
        index = getattr(e, "internal_index", getattr(e, "log_index", None))
        out.append((kind, getattr(e, "tx_hash", None), index))
    return out


@pytest.mark.parametrize("confirmed_first", [False, True])
def test_newer_arrays_are_emitted_once_then_confirmed_once(confirmed_first: bool) -> None:
    decoder = MoralisDecoder()
    first, _ = decode(newer_body(confirmed_first), decoder=decoder)
    retry, _ = decode(newer_body(confirmed_first), decoder=decoder)
    second, _ = decode(newer_body(not confirmed_first), decoder=decoder)
    late, _ = decode(newer_body(True), decoder=decoder)
    assert retry == []
    assert late == []
    # The batch: two events (token ids 7 and 8) under one key.
    assert keys(first) == NEWER_KEYS[:5] + [("nft_transfer", h(2), 2)] * 2
    assert [e.token_id for e in first if isinstance(e, NftTransfer)] == [1, 7, 8]
    assert all(getattr(e, "confirmed", None) is confirmed_first for e in first)
    if confirmed_first:
        assert second == []  # the unconfirmed copy of confirmed events
        return
    # One confirmation per key: the batch's two ids get one.
    assert all(isinstance(e, Confirmation) for e in second)
    assert keys(second) == NEWER_KEYS
    internal = second[2]
    assert isinstance(internal, Confirmation)
    assert (internal.target, internal.log_index, internal.block_number, internal.symbol) == (
        "internal_tx",
        1,
        2000,
        "ETH",
    )


def internal(**changes: Any) -> dict[str, Any]:
    return {**moralis_internal_tx(h(1), ROUTER, BOB, 1), **changes}


def approval(**changes: Any) -> dict[str, Any]:
    return {**moralis_erc20_approval(USDC, ALICE, BOB, 1, tx_hash=h(1), log_index=1), **changes}


def nft(**changes: Any) -> dict[str, Any]:
    return {**moralis_nft_transfer(PUNKS, ALICE, BOB, 1, tx_hash=h(1), log_index=1), **changes}


@pytest.mark.parametrize(
    ("where", "entry", "message"),
    [
        ("txsInternal", {"from": ROUTER}, "missing field @ $.txsInternal[0].transactionHash"),
        ("txsInternal", internal(**{"from": "0x12"}), "got '0x12' @ $.txsInternal[0].from"),
        (
            "txsInternal",
            internal(value="-5"),
            "non-negative integer, got -5 @ $.txsInternal[0].value",
        ),
        ("txsInternal", internal(gas="lots"), "got 'lots' @ $.txsInternal[0].gas"),
        ("txsInternal", "0xabc", "expected an object @ $.txsInternal[0]"),
        ("erc20Approvals", approval(owner=None), "got None @ $.erc20Approvals[0].owner"),
        ("erc20Approvals", approval(value="1e3"), "got '1e3' @ $.erc20Approvals[0].value"),
        (
            "erc20Transfers",
            {
                **moralis_erc20_transfer(USDC, ALICE, BOB, 1, tx_hash=h(1), log_index=1),
                "value": "-5",
            },
            "non-negative integer, got -5 @ $.erc20Transfers[0].value",
        ),
        ("erc20Approvals", approval(spender=ALICE.upper()), "@ $.erc20Approvals[0].spender"),
        (
            "erc20Approvals",
            approval(contract="0x" + "77" * 20, tokenDecimals="300"),
            "decimals out of range, got 300 @ $.erc20Approvals[0]",
        ),
        (
            "nftTransfers",
            nft(tokenContractType="ERC20"),
            "expected 'ERC721' or 'ERC1155', got 'ERC20' @ $.nftTransfers[0].tokenContractType",
        ),
        ("nftTransfers", nft(tokenId="-1"), "got -1 @ $.nftTransfers[0].tokenId"),
        ("nftTransfers", nft(tokenId=None), "got None @ $.nftTransfers[0].tokenId"),
        (
            "nftTransfers",
            nft(tokenContractType="ERC1155", amount=None),
            "got None @ $.nftTransfers[0].amount",  # only ERC-721 may leave it out
        ),
        ("nftTransfers", nft(operator="me"), "got 'me' @ $.nftTransfers[0].operator"),
        ("nftTransfers", nft(logIndex="x"), "got 'x' @ $.nftTransfers[0].logIndex"),
    ],
)
def test_malformed_newer_entries_say_where(where: str, entry: Any, message: str) -> None:
    decoder = MoralisDecoder()
    body = newer_body(False)
    body[where] = [entry]
    events, errors = decode(body, decoder=decoder)
    assert events == []
    ((_, error),) = errors
    assert message in str(error)
    assert str(error).startswith("moralis: ")
    # Nothing was remembered: the good body is all new afterwards.
    good, _ = decode(newer_body(False), decoder=decoder)
    assert len(good) == 7


@pytest.mark.parametrize("key", ["txsInternal", "erc20Approvals", "nftTransfers"])
def test_newer_arrays_must_be_lists(key: str) -> None:
    body = newer_body(True)
    body[key] = {"0": {}}
    _, errors = decode(body)
    assert f"expected a list @ $.{key}" in str(errors[0][1])


def test_nft_approvals_are_ignored() -> None:
    body = payment_body(True)
    body["nftApprovals"] = {"ERC721": [{"anything": "at all"}], "ERC1155": []}
    events, errors = decode(body)
    assert errors == []
    assert [e.kind for e in events] == ["block", "transaction"]


def payment_body(confirmed: bool, n: int = 1) -> dict[str, Any]:
    return webhook_body(
        confirmed=confirmed,
        block_number=1000 + n,
        timestamp=T + n,
        txs=[moralis_tx(h(n), ALICE, BOB, 10**18)],
    )


def test_unconfirmed_then_confirmed_emits_once_then_confirms() -> None:
    decoder = MoralisDecoder()
    first, _ = decode(payment_body(False), decoder=decoder)
    again, _ = decode(payment_body(False), decoder=decoder)  # a retry
    confirmed, _ = decode(payment_body(True), decoder=decoder)
    late, _ = decode(payment_body(True), decoder=decoder)  # a retry of the confirmation
    assert [(e.kind, e.confirmed) for e in first] == [("block", False), ("transaction", False)]  # type: ignore[attr-defined]
    assert again == []
    assert late == []
    block_done, tx_done = confirmed
    assert isinstance(block_done, Confirmation)
    assert (block_done.target, block_done.block_hash, block_done.tx_hash) == (
        "block",
        h(1001),
        None,
    )
    assert isinstance(tx_done, Confirmation)
    assert (tx_done.target, tx_done.tx_hash, tx_done.log_index, tx_done.block_number) == (
        "transaction",
        h(1),
        None,
        1001,
    )
    assert tx_done.symbol == "ETH"


def test_confirmed_first_emits_once_and_the_late_unconfirmed_copy_is_dropped() -> None:
    decoder = MoralisDecoder()
    first, _ = decode(payment_body(True), decoder=decoder)
    late, _ = decode(payment_body(False), decoder=decoder)
    assert [(e.kind, e.confirmed) for e in first] == [("block", True), ("transaction", True)]  # type: ignore[attr-defined]
    assert late == []


def test_memory_is_bounded() -> None:
    decoder = MoralisDecoder(memory=4)  # two bodies of (block, tx)
    for n in (1, 2, 3):
        decode(payment_body(False, n), decoder=decoder)
    forgotten, _ = decode(payment_body(True, 1), decoder=decoder)
    remembered, _ = decode(payment_body(True, 3), decoder=decoder)
    assert [e.kind for e in forgotten] == ["block", "transaction"]  # counted as new again
    assert [e.kind for e in remembered] == ["confirmation", "confirmation"]


def test_a_bad_body_changes_no_state() -> None:
    decoder = MoralisDecoder()
    bad = payment_body(False)
    bad["txs"].append({**moralis_tx(h(9), ALICE, BOB, 1), "hash": "nope"})
    events, errors = decode(bad, decoder=decoder)
    assert events == []
    assert "expected a 32-byte 0x hash, got 'nope' @ $.txs[1].hash" in str(errors[0][1])
    good, _ = decode(payment_body(False), decoder=decoder)
    assert len(good) == 2


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[]", "expected a webhook object @ $"),
        (b"{", "invalid JSON"),
        (b'{"confirmed":"yes","block":{}}', "expected a bool, got 'yes' @ $.confirmed"),
        (b'{"confirmed":true}', "missing field @ $.block"),
        (
            b'{"confirmed":true,"block":{"number":"x"}}',
            "expected a decimal integer string, got 'x' @ $.block.number",
        ),
        (
            b'{"confirmed":true,"block":{"number":"","hash":"","timestamp":""},"txs":[{}]}',
            "items but no block number",
        ),
        (
            encode_body(
                webhook_body(confirmed=True, block_number=1, timestamp=T, txs=[{"hash": h(1)}])
            ),
            "missing field @ $.txs[0].value",
        ),
        (
            b'{"confirmed":true,"block":{"number":"1","hash":"'
            + h(1).encode()
            + b'","timestamp":"1"},"logs":{}}',
            "expected a list @ $.logs",
        ),
    ],
)
def test_bad_bodies_say_where(body: bytes, message: str) -> None:
    events, errors = decode(body)
    assert events == []
    ((_, error),) = errors
    assert message in str(error)
    assert str(error).startswith("moralis: ")


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.text(max_size=8)
    | st.sampled_from(["", "1", "0x", h(1), "0x" + "a" * 40]),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=16,
)
KEYS = ["confirmed", "block", "txs", "logs", "erc20Transfers", "number", "hash", "timestamp"]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bodies_only_give_decode_errors(body: bytes) -> None:
    events, errors = decode(body)
    assert all(isinstance(e, DecodeError) for _, e in errors)
    assert not (events and errors)


NEWER_FIELDS = ["from", "to", "transactionHash", "owner", "spender", "tokenId", "amount",
                "tokenContractType", "operator", "tokenSymbol", "gas"]  # fmt: skip


@settings(max_examples=600, deadline=None)
@given(
    st.sampled_from(
        ["block", "txs", "logs", "erc20Transfers", "txsInternal", "erc20Approvals",
         "nftTransfers", None]
    ),
    st.dictionaries(
        st.sampled_from(
            [*KEYS, "value", "fromAddress", "logIndex", "contract", "topic0", "data",
             *NEWER_FIELDS]
        ),
        JSON,
        max_size=3,
    ),
)  # fmt: skip
def test_mutated_bodies_only_give_decode_errors(where: str | None, changes: dict[str, Any]) -> None:
    body = orjson.loads(EXAMPLE_UNCONFIRMED_ERC20)
    body["txs"] = [moralis_tx(h(1), ALICE, None, 5)]
    newer = newer_body(False)
    for key in ("txsInternal", "erc20Approvals", "nftTransfers"):
        body[key] = newer[key]
    if where is None:
        body.update(changes)
    elif where == "block":
        body["block"].update(changes)
    else:
        body[where][0].update(changes)
    events, errors = decode(body)
    assert all(isinstance(e, DecodeError) for _, e in errors)
    assert not (events and errors)


# -- planning ---------------------------------------------------------------------------------


def test_registered() -> None:
    assert get_venue("moralis") is MORALIS


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("localhost:65535", ("localhost", 65535)),
        ("[::1]:9000", ("::1", 9000)),
    ],
)
def test_listen_parses(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "8080",
        "127.0.0.1",
        "127.0.0.1:",
        ":8080",
        "host:http",
        "h:65536",
        "::1:80",
        "[127.0.0.1]:80",
        "a b:1",
        "[::1]80",
    ],
)
def test_bad_listen_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError, match=r"bad --listen .*HOST:PORT"):
        MORALIS.plan([], [], params=VenueParams(listen=text))


def test_plan() -> None:
    plan = MORALIS.plan([], [], params=VenueParams(listen="127.0.0.1:8080"))
    assert plan.endpoint == "http://127.0.0.1:8080"
    assert Confirmation in plan.kinds
    assert {InternalTransaction, TokenApproval, NftTransfer} <= plan.kinds
    assert EXAMPLE_SECRET not in repr(plan)
    with pytest.raises(UsageError, match="pass --listen HOST:PORT"):
        MORALIS.plan([], [])
    # The CLI's defaults arrive whatever the venue: they do not matter here.
    assert MORALIS.plan(["btcusdt"], ["trade"], params=VenueParams(listen="127.0.0.1:1")) == (
        MORALIS.plan([], [], params=VenueParams(listen="127.0.0.1:1"))
    )
    with pytest.raises(UsageError, match="no --endpoint"):
        MORALIS.plan([], [], "http://x", VenueParams(listen="127.0.0.1:1"))


def test_missing_secret_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MORALIS_STREAMS_SECRET")
    with pytest.raises(UsageError, match="set MORALIS_STREAMS_SECRET"):
        MORALIS.plan([], [], params=VenueParams(listen="127.0.0.1:8080"))


# -- the receiver ---------------------------------------------------------------------------


@attrs.define
class Receiver:
    url: str
    items: trio.MemoryReceiveChannel[FeedItem]
    stats: WebhookStats
    sender: MoralisSender


def local_plan(port: int = 0) -> Plan:
    return MORALIS.plan([], [], params=VenueParams(listen=f"127.0.0.1:{port}"))


@asynccontextmanager
async def receiving(
    venue: MoralisVenue | None = None, overflow: Overflow = Overflow.BLOCK, buffer: int = 16
) -> AsyncIterator[Receiver]:
    venue = venue or MoralisVenue(max_body=4096)
    send, items = trio.open_memory_channel[FeedItem](buffer)
    stats: list[Any] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(
            venue.subscribe, local_plan(), send, FeedOptions(overflow=overflow), stats
        )
        (feed,) = stats
        url = f"http://{feed.address}/moralis"
        yield Receiver(url, items, feed, MoralisSender(url, EXAMPLE_SECRET))
        nursery.cancel_scope.cancel()


def pending(items: trio.MemoryReceiveChannel[FeedItem]) -> list[FeedItem]:
    got = []
    while True:
        try:
            got.append(items.receive_nowait())
        except trio.WouldBlock:
            return got


async def test_a_signed_body_goes_into_the_feed_as_one_frame() -> None:
    with trio.fail_after(10):
        async with receiving() as r:
            assert await r.sender.post(EXAMPLE_UNCONFIRMED_ERC20) == 200
            (item,) = pending(r.items)
    assert isinstance(item, Frames)
    assert item.venue == "moralis"
    assert item.frames == [EXAMPLE_UNCONFIRMED_ERC20]  # the exact bytes, for recordings
    assert (r.stats.frames_in, r.stats.requests, r.stats.bad_signatures) == (1, 1, 0)


async def test_bad_signatures_get_401_are_counted_and_go_nowhere() -> None:
    with trio.fail_after(10):
        async with receiving() as r:
            assert await r.sender.post_bad_signature(EXAMPLE_UNCONFIRMED_ERC20) == 401
            assert await r.sender.post_nist_signature(EXAMPLE_UNCONFIRMED_ERC20) == 401
            assert await r.sender.post_unsigned(EXAMPLE_UNCONFIRMED_ERC20) == 401
            assert pending(r.items) == []
    assert r.stats.bad_signatures == 3
    assert r.stats.frames_in == 0
    assert "bad or missing x-signature" in r.stats.last_error


async def test_the_empty_test_webhook_gets_200() -> None:
    with trio.fail_after(10):
        async with receiving() as r:
            assert await r.sender.post_test_webhook() == 200
            (item,) = pending(r.items)
    assert item.frames == [EXAMPLE_TEST_WEBHOOK]  # type: ignore[union-attr]


async def test_oversize_bodies_get_413() -> None:
    with trio.fail_after(10):
        async with receiving(MoralisVenue(max_body=4096)) as r:
            assert await r.sender.post_oversize(4096) == 200  # exactly the limit
            assert await r.sender.post_oversize(5000) == 413  # told by Content-Length
            assert await r.sender.post_oversize(9000, chunked=True) == 413  # counted as it came
            assert len(pending(r.items)) == 1
    assert r.stats.too_large == 2


async def test_only_post_is_served() -> None:
    with trio.fail_after(10):
        async with receiving() as r, httpx.AsyncClient() as client:
            response = await client.get(r.url)
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert r.stats.bad_requests == 1


async def test_keep_alive_serves_several_requests_on_one_connection() -> None:
    with trio.fail_after(10):
        async with receiving() as r, httpx.AsyncClient() as client:
            for confirmed in (False, True):
                body = encode_body(payment_body(confirmed))
                headers = {"x-signature": keccak_signature(body, EXAMPLE_SECRET)}
                response = await client.post(r.url, content=body, headers=headers)
                assert response.status_code == 200
            assert len(pending(r.items)) == 2


async def test_full_pipeline_with_drop_answers_503() -> None:
    with trio.fail_after(10):
        async with receiving(overflow=Overflow.DROP, buffer=1) as r:
            assert await r.sender.post(payment_body(False, 1)) == 200
            assert await r.sender.post(payment_body(False, 2)) == 503  # Moralis retries it
            assert len(pending(r.items)) == 1
    assert (r.stats.busy, r.stats.dropped) == (1, 1)


async def test_a_stuck_pipeline_answers_503_after_the_request_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    autojump_clock.autojump_threshold = 0.02
    with trio.fail_after(60):
        async with receiving(MoralisVenue(request_timeout=5), buffer=0) as r:
            assert await r.sender.post(payment_body(False)) == 503
    assert r.stats.busy == 1


async def test_a_port_in_use_is_a_clear_error() -> None:
    holder = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = holder.socket.getsockname()[1]
    send, _ = trio.open_memory_channel[FeedItem](1)
    with trio.fail_after(10), pytest.raises(UsageError, match="already in use"):
        await MORALIS.subscribe(local_plan(port), send, FeedOptions(), [])
    await holder.aclose()


# -- end to end through the runner ------------------------------------------------------------


async def listening(runner: Runner) -> str:
    while not runner.status.feeds or not getattr(runner.status.feeds[0], "address", ""):
        await trio.testing.wait_all_tasks_blocked()
    return f"http://{runner.status.feeds[0].address}/"  # type: ignore[attr-defined]


@pytest.mark.parametrize("confirmed_first", [False, True])
async def test_pairs_in_either_order_are_never_new_twice(confirmed_first: bool) -> None:
    with trio.fail_after(20):
        sink = ListSink()
        runner = Runner(Pipeline(), sinks=[sink])
        async with trio.open_nursery() as nursery:
            done = trio.Event()

            async def go() -> None:
                await runner.watch([local_plan()], FeedOptions())
                done.set()

            nursery.start_soon(go)
            sender = MoralisSender(await listening(runner), EXAMPLE_SECRET)
            assert await sender.post_pair(
                payment_body(False, 1), confirmed_first=confirmed_first
            ) == (200, 200)
            assert await sender.post(payment_body(True, 1)) == 200  # a retry
            assert await sender.post_bad_signature(payment_body(True, 9)) == 401
            assert await sender.post(payment_body(False, 2)) == 200  # a marker
            expected = 4 if confirmed_first else 6
            await sink.wait_for(expected)
            runner.stop()
            await done.wait()
    seen = [
        (e.kind, getattr(e, "confirmed", None), getattr(e, "tx_hash", None)) for e in sink.events
    ]
    if confirmed_first:
        assert seen == [
            ("block", True, None),
            ("transaction", True, h(1)),
            ("block", False, None),
            ("transaction", False, h(2)),
        ]
    else:
        assert seen == [
            ("block", False, None),
            ("transaction", False, h(1)),
            ("confirmation", None, None),
            ("confirmation", None, h(1)),
            ("block", False, None),
            ("transaction", False, h(2)),
        ]
    assert runner.status.feeds[0].bad_signatures == 1  # type: ignore[attr-defined]


async def test_record_and_replay_give_the_same_events(tmp_path: Path) -> None:
    recording = tmp_path / "moralis.jsonl"
    with trio.fail_after(20):
        sink = ListSink()
        runner = Runner(Pipeline(), sinks=[sink], record=recording)
        async with trio.open_nursery() as nursery:
            done = trio.Event()

            async def go() -> None:
                await runner.watch([local_plan()], FeedOptions())
                done.set()

            nursery.start_soon(go)
            sender = MoralisSender(await listening(runner), EXAMPLE_SECRET)
            pretty = json.dumps(orjson.loads(EXAMPLE_UNCONFIRMED_ERC20), indent=1).encode()
            assert await sender.post(pretty) == 200
            assert await sender.post_nist_signature(payment_body(True)) == 401  # not recorded
            assert await sender.post_pair(payment_body(False)) == (200, 200)
            await sink.wait_for(7)
            runner.stop()
            await done.wait()
        replayed = ListSink()
        await Runner(Pipeline(), sinks=[replayed]).replay(recording)
    assert [e.kind for e in sink.events] == [
        "block",
        "log",
        "token_transfer",
        "block",
        "transaction",
        "confirmation",
        "confirmation",
    ]
    assert replayed.events == sink.events
    assert EXAMPLE_SECRET not in recording.read_text()


async def test_newer_arrays_end_to_end_through_the_receiver() -> None:
    with trio.fail_after(20):
        sink = ListSink()
        runner = Runner(Pipeline(), sinks=[sink])
        async with trio.open_nursery() as nursery:
            done = trio.Event()

            async def go() -> None:
                await runner.watch([local_plan()], FeedOptions())
                done.set()

            nursery.start_soon(go)
            sender = MoralisSender(await listening(runner), EXAMPLE_SECRET)
            assert await sender.post_pair(newer_body(False)) == (200, 200)
            await sink.wait_for(7 + 6)
            runner.stop()
            await done.wait()
    kinds = [e.kind for e in sink.events]
    assert kinds == [
        "block", "internal_tx", "internal_tx", "approval", "nft_transfer", "nft_transfer",
        "nft_transfer", *["confirmation"] * 6,
    ]  # fmt: skip
    assert keys(sink.events[7:]) == NEWER_KEYS
