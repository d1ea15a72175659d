"""Chain event kinds, Keccak-256, exact scaling and the shared ABI decoding."""

from __future__ import annotations

import hashlib
from decimal import Decimal

import orjson
import pytest

from irisflow._chain import (
    APPROVAL_TOPIC,
    KNOWN_TOKENS,
    TRANSFER_TOPIC,
    UNISWAP_V2_SWAP_TOPIC,
    UNISWAP_V2_SYNC_TOPIC,
    UNISWAP_V3_SWAP_TOPIC,
    Block,
    Confirmation,
    InternalTransaction,
    Log,
    NftTransfer,
    RawLog,
    Retraction,
    Swap,
    TokenApproval,
    TokenTransfer,
    Transaction,
    decode_log,
    keccak256,
    natural_key,
    scale,
)
from irisflow._events import KINDS
from irisflow._jsonl import make_converter
from irisflow.testing._alchemy_frames import EXAMPLE_V2_SWAP_DATA, address_topic, encode_uint

USDC = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"
ALICE = "0x28c6c06298d514db089934071355e5743bf21d60"
BOB = "0x5041ed759dd4afc3a72b8192c143f72f4724081a"
TX = "0x" + "ab" * 32


def test_keccak_is_not_nist_sha3() -> None:
    empty = "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
    assert keccak256(b"").hex() == empty
    assert hashlib.sha3_256(b"").hexdigest() != empty


@pytest.mark.parametrize(
    ("signature", "topic"),
    [
        ("Transfer(address,address,uint256)", TRANSFER_TOPIC),
        ("Approval(address,address,uint256)", APPROVAL_TOPIC),
        ("Swap(address,uint256,uint256,uint256,uint256,address)", UNISWAP_V2_SWAP_TOPIC),
        ("Sync(uint112,uint112)", UNISWAP_V2_SYNC_TOPIC),
        ("Swap(address,address,int256,int256,uint160,uint128,int24)", UNISWAP_V3_SWAP_TOPIC),
    ],
)
def test_topic_hashes_are_keccak_of_the_signatures(signature: str, topic: str) -> None:
    assert "0x" + keccak256(signature.encode()).hex() == topic


def test_transfer_selector() -> None:
    assert keccak256(b"transfer(address,uint256)")[:4].hex() == "a9059cbb"


@pytest.mark.parametrize(
    ("raw", "decimals", "expected"),
    [
        (2_500_000_000, 6, "2500"),
        (1, 18, "0.000000000000000001"),
        (10**18, 18, "1"),
        (1_500_000_000_000_000_000, 18, "1.5"),
        (10**30 + 1, 18, "1000000000000.000000000000000001"),  # past 28 digits: still exact
        (-3_000_000_000, 6, "-3000"),
        (0, 18, "0"),
        (42, 0, "42"),
    ],
)
def test_scale_is_exact(raw: int, decimals: int, expected: str) -> None:
    assert scale(raw, decimals) == Decimal(expected)
    assert scale(raw, decimals).as_tuple() == Decimal(expected).as_tuple()  # no trailing zeros


def test_kinds_are_registered() -> None:
    for cls in (Block, Log, TokenTransfer, Swap, Transaction, Retraction, Confirmation):
        assert KINDS[cls.kind] is cls
    assert KINDS["internal_tx"] is InternalTransaction
    assert KINDS["approval"] is TokenApproval
    assert KINDS["nft_transfer"] is NftTransfer


def test_known_tokens_include_the_required_ones() -> None:
    by_symbol = {info.symbol: (addr, info.decimals) for addr, info in KNOWN_TOKENS.items()}
    assert by_symbol["USDC"] == (USDC, 6)
    assert by_symbol["USDT"][1] == 6
    assert by_symbol["WETH"] == ("0xc02aaa39b223fe8d0a0e5c4f27ead9083c756cc2", 18)
    assert by_symbol["DAI"][1] == 18
    assert by_symbol["WBTC"][1] == 8
    assert {"LINK", "UNI"} <= set(by_symbol)
    assert all(addr == addr.lower() and len(addr) == 42 for addr in KNOWN_TOKENS)


def raw_log(address: str, topics: tuple[str, ...], data: str) -> RawLog:
    return RawLog(address, topics, data, TX, 7, 100, "0x" + "cd" * 32, 3)


def test_erc20_transfer_of_a_known_token() -> None:
    log = raw_log(
        USDC,
        (TRANSFER_TOPIC, address_topic(ALICE), address_topic(BOB)),
        "0x" + encode_uint(2_500_000_000),
    )
    plain, transfer = decode_log(log, 11, 12, "x")
    assert isinstance(plain, Log)
    assert plain.symbol == USDC
    assert isinstance(transfer, TokenTransfer)
    assert (transfer.symbol, transfer.token, transfer.from_address, transfer.to_address) == (
        "USDC",
        USDC,
        ALICE,
        BOB,
    )
    assert (transfer.raw_amount, transfer.decimals, transfer.amount) == (
        2_500_000_000,
        6,
        Decimal(2500),
    )
    assert (transfer.tx_hash, transfer.log_index, transfer.block_number) == (TX, 7, 100)
    assert (transfer.ts, transfer.recv_ts) == (11, 12)


def test_transfer_of_an_unknown_token_stays_raw() -> None:
    token = "0x" + "12" * 20
    log = raw_log(
        token,
        (TRANSFER_TOPIC, address_topic(ALICE), address_topic(BOB)),
        "0x" + encode_uint(10**30),
    )
    _, transfer = decode_log(log, 0, 0, "x")
    assert isinstance(transfer, TokenTransfer)
    assert transfer.symbol == token
    assert (transfer.raw_amount, transfer.decimals, transfer.amount) == (10**30, None, None)


def test_erc721_transfer_is_an_nft_transfer() -> None:
    token_id = 2**200 + 42  # ids are uint256
    log = raw_log(
        "0x" + "bc" * 20,
        (TRANSFER_TOPIC, address_topic(ALICE), address_topic(BOB), "0x" + encode_uint(token_id)),
        "0x",
    )
    collection = "0x" + "bc" * 20
    plain, nft = decode_log(log, 11, 12, "x", confirmed=True)
    assert isinstance(plain, Log)
    assert len(plain.topics) == 4
    assert isinstance(nft, NftTransfer)
    assert (nft.contract, nft.symbol, nft.standard) == (collection, collection, "erc721")
    assert (nft.from_address, nft.to_address, nft.token_id, nft.amount) == (
        ALICE,
        BOB,
        token_id,
        1,
    )
    assert (nft.operator, nft.token_name, nft.token_symbol) == (None, None, None)
    assert (nft.tx_hash, nft.log_index, nft.block_number, nft.confirmed) == (TX, 7, 100, True)
    assert (nft.ts, nft.recv_ts) == (11, 12)


@pytest.mark.parametrize(
    ("topics", "data"),
    [
        # An ERC-20-shaped transfer with a fourth topic, or an ERC-721 one with data: neither.
        ((TRANSFER_TOPIC, address_topic(ALICE), address_topic(BOB), TX), "0x" + encode_uint(1)),
        # ERC-721 Approval(owner, approved, tokenId): 4 topics, no data; not an ERC-20 approval.
        ((APPROVAL_TOPIC, address_topic(ALICE), address_topic(BOB), TX), "0x"),
        # An approval with no amount word.
        ((APPROVAL_TOPIC, address_topic(ALICE), address_topic(BOB)), "0x"),
        # Too few topics for either.
        ((TRANSFER_TOPIC, address_topic(ALICE)), "0x" + encode_uint(1)),
        ((), "0x"),
    ],
)
def test_logs_of_other_shapes_stay_plain_logs(topics: tuple[str, ...], data: str) -> None:
    assert [e.kind for e in decode_log(raw_log(USDC, topics, data), 0, 0, "x")] == ["log"]


def test_erc20_approval_of_a_known_and_an_unknown_token() -> None:
    unlimited = 2**256 - 1
    topics = (APPROVAL_TOPIC, address_topic(ALICE), address_topic(BOB))
    _, usdc = decode_log(raw_log(USDC, topics, "0x" + encode_uint(unlimited)), 11, 12, "x")
    assert isinstance(usdc, TokenApproval)
    assert (usdc.symbol, usdc.token, usdc.owner, usdc.spender) == ("USDC", USDC, ALICE, BOB)
    assert (usdc.raw_amount, usdc.decimals) == (unlimited, 6)
    assert usdc.amount == scale(unlimited, 6)
    assert str(usdc.amount).startswith("115792089237316195423570985008687907853269984665640564")
    assert (usdc.tx_hash, usdc.log_index, usdc.block_number, usdc.ts) == (TX, 7, 100, 11)
    token = "0x" + "12" * 20
    _, odd = decode_log(raw_log(token, topics, "0x" + encode_uint(5)), 0, 0, "x")
    assert isinstance(odd, TokenApproval)
    assert (odd.symbol, odd.raw_amount, odd.decimals, odd.amount) == (token, 5, None, None)


def test_already_decoded_keys_are_skipped() -> None:
    topics = (APPROVAL_TOPIC, address_topic(ALICE), address_topic(BOB))
    log = raw_log(USDC, topics, "0x" + encode_uint(5))
    assert [e.kind for e in decode_log(log, 0, 0, "x", skip={("approval", TX, 7)})] == ["log"]
    # Another key (a transfer of this log, another log index) skips nothing.
    skip = {("token_transfer", TX, 7), ("approval", TX, 8)}
    assert [e.kind for e in decode_log(log, 0, 0, "x", skip=skip)] == ["log", "approval"]


def test_v2_swap_from_the_venue_notes() -> None:
    data = EXAMPLE_V2_SWAP_DATA.split('"')[3]
    pair = "0xb4e16d0168e52d35cacd2c6185b44281ec28c9dc"
    log = raw_log(pair, (UNISWAP_V2_SWAP_TOPIC, address_topic(ALICE), address_topic(BOB)), data)
    _, swap = decode_log(log, 0, 0, "x")
    assert isinstance(swap, Swap)
    assert swap.protocol == "uniswap_v2"
    assert (swap.amount0_in, swap.amount1_in) == (0, 500_000_000_000_000_000)  # 0.5 WETH in
    assert (swap.amount0_out, swap.amount1_out) == (1_490_000_000, 0)  # 1 490 USDC out
    assert (swap.amount0, swap.amount1) == (-1_490_000_000, 500_000_000_000_000_000)
    assert (swap.sender, swap.recipient, swap.pool, swap.symbol) == (ALICE, BOB, pair, pair)
    assert swap.sqrt_price_x96 is None
    assert swap.tick is None


def test_a_swap_with_the_wrong_data_length_stays_a_log() -> None:
    log = raw_log(
        USDC,
        (UNISWAP_V3_SWAP_TOPIC, address_topic(ALICE), address_topic(BOB)),
        "0x" + encode_uint(1),
    )
    assert [e.kind for e in decode_log(log, 0, 0, "x")] == ["log"]


def test_natural_keys() -> None:
    log = raw_log(
        USDC, (TRANSFER_TOPIC, address_topic(ALICE), address_topic(BOB)), "0x" + encode_uint(5)
    )
    plain, transfer = decode_log(log, 0, 0, "x")
    assert natural_key(plain) == ("log", TX, 7)
    assert natural_key(transfer) == ("token_transfer", TX, 7)
    retraction = Retraction("x", "USDC", 0, 0, "token_transfer", TX, 7)
    assert natural_key(retraction) == natural_key(transfer)
    block = Block("x", "ETH", 0, 0, 5, "0x" + "11" * 32)
    confirmation = Confirmation("x", "ETH", 0, 0, "block", block_hash="0x" + "11" * 32)
    assert natural_key(block) == natural_key(confirmation) == ("block", "0x" + "11" * 32, None)


def test_natural_keys_of_the_newer_kinds() -> None:
    approval = TokenApproval("x", "USDC", 0, 0, USDC, ALICE, BOB, 1, TX, 9)
    assert natural_key(approval) == ("approval", TX, 9)
    nft = NftTransfer("x", "C", 0, 0, USDC, "erc1155", ALICE, BOB, 77, 3, TX, 4)
    other_id = NftTransfer("x", "C", 0, 0, USDC, "erc1155", ALICE, BOB, 78, 1, TX, 4)
    # The ids of one ERC-1155 batch log share its key: a mark names them all.
    assert natural_key(nft) == natural_key(other_id) == ("nft_transfer", TX, 4)
    first = InternalTransaction("x", "ETH", 0, 0, TX, 0, ALICE, BOB, 5, scale(5, 18))
    second = InternalTransaction("x", "ETH", 0, 0, TX, 1, ALICE, None, 5, scale(5, 18))
    assert natural_key(first) == ("internal_tx", TX, 0)
    assert natural_key(second) == ("internal_tx", TX, 1)
    confirmed = Confirmation("x", "ETH", 0, 0, "internal_tx", TX, 1)
    assert natural_key(confirmed) == natural_key(second)


def test_big_ints_are_marked_for_output_formats() -> None:
    import attrs

    big = {f.name for f in attrs.fields(Swap) if f.metadata.get("bigint")}
    assert {"amount0", "amount1", "sqrt_price_x96", "liquidity"} <= big
    assert attrs.fields_dict(TokenTransfer)["raw_amount"].metadata["bigint"]
    assert attrs.fields_dict(Transaction)["value_wei"].metadata["bigint"]
    for cls, names in (
        (InternalTransaction, {"value_wei"}),
        (TokenApproval, {"raw_amount"}),
        (NftTransfer, {"token_id", "amount"}),
    ):
        assert {f.name for f in attrs.fields(cls) if f.metadata.get("bigint")} == names, cls
    # The JSON lines converter unstructures them as plain ints (the writer decides the rest).
    data = make_converter().unstructure(
        Retraction("alchemy", "USDC", 1, 2, "token_transfer", TX, 7), Retraction
    )
    assert data["target"] == "token_transfer"


def test_newer_kinds_as_json_lines_and_in_the_table() -> None:
    from irisflow._jsonl import dumps_event
    from irisflow._render import _details

    token_id = 2**255 + 1  # past 64 bits: JSON lines write it as text
    nft = NftTransfer("moralis", "PUNK", 0, 0, USDC, "erc721", ALICE, BOB, token_id, 1, TX, 4)
    line = orjson.loads(dumps_event(nft))
    assert line["kind"] == "nft_transfer"
    assert (line["token_id"], line["amount"]) == (str(token_id), "1")
    assert f"token_id {token_id}" in _details(nft)
    internal = InternalTransaction(
        "moralis", "ETH", 0, 0, TX, 2, ALICE, None, 10**18 + 1, scale(10**18 + 1, 18)
    )
    line = orjson.loads(dumps_event(internal))
    assert (line["internal_index"], line["value_wei"], line["value_eth"]) == (
        2,
        str(10**18 + 1),
        "1.000000000000000001",
    )
    assert line["to_address"] is None
    assert "value_eth 1.000000000000000001" in _details(internal)
