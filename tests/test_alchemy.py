"""Alchemy: decoding the venue notes' examples, planning, and the subscriber against FakeAlchemy."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from irisflow._chain import (
    APPROVAL_TOPIC,
    TRANSFER_TOPIC,
    UNISWAP_V2_SWAP_TOPIC,
    UNISWAP_V3_SWAP_TOPIC,
    Block,
    Log,
    NftTransfer,
    Retraction,
    Swap,
    TokenApproval,
    TokenTransfer,
    Transaction,
)
from irisflow._errors import ConnectError, DecodeError, UsageError, VenueError
from irisflow._events import Event, Gap
from irisflow._pipeline import Pipeline
from irisflow._run import Runner
from irisflow._venue import FeedOptions, Plan, VenueParams, get_venue
from irisflow.testing._alchemy import FakeAlchemy
from irisflow.testing._alchemy_frames import (
    EXAMPLE_LOGS_SUBSCRIBE_REQUEST,
    EXAMPLE_LOGS_SUBSCRIBE_RESPONSE,
    EXAMPLE_MINED_TX_NOTIFICATION,
    EXAMPLE_USDC_TRANSFER_NOTIFICATION,
    EXAMPLE_V3_SWAP_LOG,
    address_topic,
    approval_log,
    encode_uint,
    erc721_transfer_log,
    new_head,
    notification,
    transaction,
    transfer_log,
    v2_swap_log,
    v3_swap_log,
)
from irisflow.testing._sinks import ListSink
from irisflow.venues.alchemy import ALCHEMY, ID_BASE, AlchemyDecoder  # registers the venue

FAST = FeedOptions(backoff_initial=0.01, backoff_cap=0.05, stale_timeout=30, ack_timeout=5)
USDC = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"
WETH = "0xc02aaa39b223fe8d0a0e5c4f27ead9083c756cc2"
POOL = "0x88e6a0c2ddd26feeb64f039a2c41296fcb3f5640"
ALICE = "0x28c6c06298d514db089934071355e5743bf21d60"
BOB = "0x5041ed759dd4afc3a72b8192c143f72f4724081a"
USDC_TX = "0x3f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"
BLOCK_HASH = "0x7c9a1e0f5b2d4c6e8a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f"
RECV = 1_767_225_600_123_456_789
KEY = "test-key-0123"


def decode(*frames: str | bytes) -> tuple[list[Event], list[tuple[int, DecodeError]]]:
    decoder = AlchemyDecoder()
    out: list[Event] = []
    errors: list[tuple[int, DecodeError]] = []
    data = [f.encode() if isinstance(f, str) else f for f in frames]
    decoder.decode_batch(data, RECV, out, errors)
    return out, errors


def response(code: int, sub: str, seq: int = 1) -> str:
    """The answer to an irisflow request of type ``code`` (1 heads, 2 logs, 3 mined, 4 pending)."""
    return orjson.dumps({"jsonrpc": "2.0", "id": ID_BASE + seq * 10 + code, "result": sub}).decode()


# -- decoding the constructed examples of venues.md §3.5 -------------------------------------


def test_usdc_transfer_notification() -> None:
    (log, transfer), errors = decode(
        EXAMPLE_LOGS_SUBSCRIBE_RESPONSE, EXAMPLE_USDC_TRANSFER_NOTIFICATION
    )
    assert errors == []
    assert isinstance(log, Log)
    assert log.address == USDC
    assert log.symbol == USDC
    assert log.topics[0] == TRANSFER_TOPIC
    assert log.data == "0x000000000000000000000000000000000000000000000000000000009502f900"
    assert log.block_number == 0x1588A3C == 22_579_772
    assert log.block_hash == BLOCK_HASH
    assert log.tx_hash == USDC_TX
    assert log.tx_index == 42
    assert log.log_index == 156
    assert (log.ts, log.recv_ts) == (RECV, RECV)  # logs carry no time
    assert log.confirmed is None
    assert isinstance(transfer, TokenTransfer)
    assert transfer.symbol == "USDC"
    assert transfer.token == USDC
    assert transfer.from_address == ALICE
    assert transfer.to_address == BOB
    assert transfer.raw_amount == 2_500_000_000
    assert transfer.decimals == 6
    assert transfer.amount == Decimal(2500)
    assert (transfer.tx_hash, transfer.log_index, transfer.block_number) == (
        USDC_TX,
        156,
        22_579_772,
    )


def test_the_example_request_is_what_irisflow_would_send() -> None:
    plan = ALCHEMY.plan([USDC], ["logs:transfer"], "ws://127.0.0.1:1")
    (stream,) = plan.streams
    example = orjson.loads(EXAMPLE_LOGS_SUBSCRIBE_REQUEST)["params"]
    ours = orjson.loads(stream)
    assert ours[0] == example[0] == "logs"
    assert ours[1]["address"] == [example[1]["address"]]
    assert ours[1]["topics"] == example[1]["topics"]


def test_v3_swap_with_signed_amounts() -> None:
    (log, swap), errors = decode(notification("0x01", orjson.loads(EXAMPLE_V3_SWAP_LOG)))
    assert errors == []
    assert isinstance(log, Log)
    assert isinstance(swap, Swap)
    assert swap.protocol == "uniswap_v3"
    assert swap.pool == swap.symbol == POOL
    assert swap.sender == swap.recipient == "0x3fc91a3afd70395cd496c647d5a6cc9d4b2b7fad"
    assert swap.amount0 == -3_000_000_000  # the pool paid out 3 000 USDC
    assert swap.amount1 == 1_000_000_000_000_000_000  # and received 1 WETH
    assert swap.sqrt_price_x96 == 1_446_501_726_624_926_496_477_173_928_870_634
    assert swap.liquidity == 15_000_000_000_000_000_000
    assert swap.tick == 196_256
    assert (swap.tx_hash, swap.log_index, swap.block_number) == (
        "0x9a8b7c6d5e4f30211203f4e5d6c7b8a99a8b7c6d5e4f30211203f4e5d6c7b8a9",
        31,
        0x1588A3D,
    )
    assert swap.amount0_in is None


def test_v3_swap_with_a_negative_tick_and_positive_amount0() -> None:
    log = v3_swap_log(POOL, ALICE, BOB, 5_000_000, -(10**15), 2**96, 10**12, -887_272, log_index=4)
    (_, swap), _ = decode(notification("0x01", log))
    assert isinstance(swap, Swap)
    assert (swap.amount0, swap.amount1, swap.tick) == (5_000_000, -(10**15), -887_272)
    assert swap.sqrt_price_x96 == 2**96


def test_v2_swap_log() -> None:
    log = v2_swap_log(POOL, ALICE, BOB, (0, 5 * 10**17, 1_490_000_000, 0), log_index=9)
    (_, swap), _ = decode(notification("0x01", log))
    assert isinstance(swap, Swap)
    assert swap.protocol == "uniswap_v2"
    assert (swap.amount0_in, swap.amount1_in, swap.amount0_out, swap.amount1_out) == (
        0,
        5 * 10**17,
        1_490_000_000,
        0,
    )
    assert (swap.amount0, swap.amount1) == (-1_490_000_000, 5 * 10**17)
    assert swap.log_index == 9


def test_approval_log() -> None:
    log = approval_log(USDC, ALICE, BOB, 2**256 - 1, log_index=12, block_number=50)
    (plain, approval), errors = decode(response(2, "0x01"), notification("0x01", log))
    assert errors == []
    assert isinstance(plain, Log)
    assert plain.topics[0] == APPROVAL_TOPIC
    assert isinstance(approval, TokenApproval)
    assert (approval.symbol, approval.token, approval.owner, approval.spender) == (
        "USDC",
        USDC,
        ALICE,
        BOB,
    )
    assert (approval.raw_amount, approval.decimals) == (2**256 - 1, 6)
    assert (approval.log_index, approval.block_number, approval.confirmed) == (12, 50, None)
    assert (approval.ts, approval.recv_ts) == (RECV, RECV)


def test_erc721_transfer_log_is_an_nft_transfer_not_a_token_transfer() -> None:
    apes = "0xbc4ca0eda7647a8ab7c2061c2e118a18a936f13d"
    log = erc721_transfer_log(apes, ALICE, BOB, 8_817, log_index=3)
    (plain, nft), errors = decode(notification("0x01", log))
    assert errors == []
    assert isinstance(plain, Log)
    assert len(plain.topics) == 4
    assert plain.data == "0x"
    assert isinstance(nft, NftTransfer)
    assert (nft.contract, nft.symbol, nft.standard, nft.token_id, nft.amount) == (
        apes,
        apes,
        "erc721",
        8_817,
        1,
    )
    assert (nft.from_address, nft.to_address, nft.operator) == (ALICE, BOB, None)
    # Removed in a reorg: the log and the NFT transfer are retracted.
    gone, _ = decode(notification("0x01", {**log, "removed": True}))
    assert [(r.target, r.log_index) for r in gone] == [  # type: ignore[attr-defined]
        ("log", 3),
        ("nft_transfer", 3),
    ]


def test_mined_transaction_notification() -> None:
    (tx,), errors = decode(EXAMPLE_MINED_TX_NOTIFICATION)
    assert errors == []
    assert isinstance(tx, Transaction)
    assert tx.symbol == "ETH"
    assert tx.tx_hash == USDC_TX
    assert tx.from_address == ALICE
    assert tx.to_address == USDC
    assert (tx.value_wei, tx.value_eth) == (0, Decimal(0))
    assert tx.gas == 100_000
    assert tx.gas_price == 1_000_000_000
    assert tx.max_fee_per_gas == 30_000_000_000
    assert tx.max_priority_fee_per_gas == 1_000_000_000
    assert tx.nonce == 1490
    assert tx.tx_type == 2
    assert (tx.block_number, tx.block_hash, tx.tx_index) == (22_579_772, BLOCK_HASH, 42)
    assert tx.input.startswith("0xa9059cbb")
    assert tx.pending is False


def test_new_heads() -> None:
    head = new_head(22_579_772, timestamp=1_767_225_599, base_fee=7_123_456_789, gas_used=12_345)
    (block,), errors = decode(response(1, "0xaa"), notification("0xaa", head))
    assert errors == []
    assert isinstance(block, Block)
    assert block.number == 22_579_772
    assert block.ts == 1_767_225_599_000_000_000
    assert block.recv_ts == RECV
    assert block.hash == "0x" + f"{22_579_772:064x}"
    assert block.parent_hash == "0x" + f"{22_579_771:064x}"
    assert (block.base_fee, block.gas_used, block.gas_limit) == (7_123_456_789, 12_345, 30_000_000)
    assert block.miner == "0x95222290dd7278aa3ddd389cc1e1d165cc4bafe5"


def test_a_minimal_header_as_documented_decodes() -> None:
    # The documented newHeads field list has no hash and no baseFeePerGas.
    head = {"number": "0x10", "parentHash": "0x" + "01" * 32, "timestamp": "0x5"}
    (block,), _ = decode(response(1, "0xaa"), notification("0xaa", head))
    assert isinstance(block, Block)
    assert (block.number, block.hash, block.base_fee, block.ts) == (16, None, None, 5 * 10**9)


def test_contract_creation_and_exact_value() -> None:
    wei = 123_456_789_012_345_678_901_234_567  # 27 digits of wei
    creation = transaction("0x" + "cc" * 32, ALICE, None, wei)
    (tx,), errors = decode(response(4, "0xbb"), notification("0xbb", creation))
    assert errors == []
    assert isinstance(tx, Transaction)
    assert tx.to_address is None
    assert tx.value_eth == Decimal("123456789.012345678901234567")
    assert tx.pending is True
    assert tx.block_number is None


def test_removed_log_becomes_retractions() -> None:
    removed = transfer_log(USDC, ALICE, BOB, 7, log_index=5, removed=True, block_number=99)
    retractions, errors = decode(notification("0x01", removed))
    assert errors == []
    assert [(r.target, r.symbol) for r in retractions] == [  # type: ignore[attr-defined]
        ("log", USDC),
        ("token_transfer", "USDC"),
    ]
    for r in retractions:
        assert isinstance(r, Retraction)
        assert (r.tx_hash, r.log_index, r.block_number) == (removed["transactionHash"], 5, 99)


def test_removed_mined_transaction_becomes_a_retraction() -> None:
    tx = transaction("0x" + "dd" * 32, ALICE, BOB, 10**18, block_number=5)
    frame = notification("0xcc", {"removed": True, "transaction": tx})
    (retraction,), _ = decode(response(3, "0xcc"), frame)
    assert isinstance(retraction, Retraction)
    assert (retraction.target, retraction.tx_hash, retraction.log_index) == (
        "transaction",
        "0x" + "dd" * 32,
        None,
    )


def test_notifications_are_routed_by_subscription_id() -> None:
    mined_tx = transaction("0x" + "ee" * 32, ALICE, BOB, 1, block_number=7)
    # Unknown subscription: the shape decides (a tx object with a block is a mined one).
    (tx,), _ = decode(notification("0x99", mined_tx))
    assert tx.pending is False  # type: ignore[attr-defined]
    # A subscription answered as alchemy_pendingTransactions: its type decides.
    (tx,), _ = decode(response(4, "0x99"), notification("0x99", mined_tx))
    assert tx.pending is True  # type: ignore[attr-defined]
    # A newHeads subscription carrying a log is an error, not a log.
    log = transfer_log(USDC, ALICE, BOB, 1)
    events, errors = decode(response(1, "0x98"), notification("0x98", log))
    assert events == []
    assert "missing field @ $.params.result.timestamp" in str(errors[0][1])


def test_foreign_request_ids_teach_no_routes() -> None:
    # venues.md's example uses id 11 for a logs subscription; 11 % 10 == 1 would say newHeads.
    events, errors = decode(EXAMPLE_LOGS_SUBSCRIBE_RESPONSE, EXAMPLE_USDC_TRANSFER_NOTIFICATION)
    assert errors == []
    assert [e.kind for e in events] == ["log", "token_transfer"]


def test_responses_and_errors_decode_to_nothing() -> None:
    events, errors = decode(
        '{"jsonrpc":"2.0","id":1000000019,"result":"1"}',
        '{"jsonrpc":"2.0","error":{"code":429,"message":"slow down"}}',
        '[{"jsonrpc":"2.0","id":1000000012,"result":"0x1"}]',
    )
    assert (events, errors) == ([], [])


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (b"{not json", "invalid JSON"),
        (b"[1]", "expected a JSON-RPC response object @ $"),
        (b'"x"', "expected a JSON-RPC object @ $"),
        (
            b'{"method":"eth_subscription","params":{"result":{}}}',
            "missing field @ $.params.subscription",
        ),
        (
            notification("0x1", {**transfer_log(USDC, ALICE, BOB, 1), "logIndex": "12"}),
            "expected a hex quantity, got '12' @ $.params.result.logIndex",
        ),
        (
            notification("0x1", {**transfer_log(USDC, ALICE, BOB, 1), "address": "0x12"}),
            "expected a 20-byte 0x address, got '0x12' @ $.params.result.address",
        ),
        (
            notification("0x1", {"removed": "no", "transaction": {}}),
            "expected a bool, got 'no' @ $.params.result.removed",
        ),
        (notification("0x1", "0x" + "ab" * 32), "hash-only notification"),
        (notification("0x1", [1, 2]), "unknown notification payload"),
        (b'{"jsonrpc":"2.0"}', "neither a JSON-RPC response nor a notification"),
    ],
)
def test_bad_frames_say_where(frame: str | bytes, message: str) -> None:
    events, errors = decode(frame)
    assert events == []
    ((index, error),) = errors
    assert index == 0
    assert message in str(error)
    assert str(error).startswith("alchemy: ")


def test_one_bad_frame_does_not_spoil_the_batch() -> None:
    good = EXAMPLE_USDC_TRANSFER_NOTIFICATION
    bad = notification("0x1", {**transfer_log(USDC, ALICE, BOB, 1), "data": "0x1"})
    events, errors = decode(good, bad, good)
    assert len(events) == 4
    assert [i for i, _ in errors] == [1]


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.text(max_size=8)
    | st.sampled_from(["0x", "0x1", "0x" + "a" * 40, "0x" + "b" * 64]),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=20,
)
KEYS = [
    "address",
    "topics",
    "data",
    "transactionHash",
    "logIndex",
    "removed",
    "transaction",
    "number",
    "parentHash",
    "timestamp",
    "hash",
    "from",
    "to",
    "value",
    "gas",
    "nonce",
    "input",
    "blockHash",
]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_only_give_decode_errors(frame: bytes) -> None:
    events, errors = decode(frame)
    assert len(errors) <= 1
    assert all(isinstance(e, DecodeError) for _, e in errors)
    if errors:
        assert events == []


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from([1, 2, 3, 4, None]),
    st.sampled_from(
        [
            orjson.loads(EXAMPLE_V3_SWAP_LOG),
            transfer_log(USDC, ALICE, BOB, 10**30),
            approval_log(USDC, ALICE, BOB, 2**256 - 1),
            erc721_transfer_log(USDC, ALICE, BOB, 2**256 - 1),
            new_head(5, timestamp=6),
            {"removed": False, "transaction": transaction("0x" + "ab" * 32, ALICE, None, 5)},
            transaction("0x" + "ab" * 32, ALICE, BOB, 5),
        ]
    ),
    st.dictionaries(st.sampled_from(KEYS), JSON, max_size=3),
)
def test_mutated_notifications_only_give_decode_errors(
    code: int | None, payload: dict[str, Any], changes: dict[str, Any]
) -> None:
    frames: list[str | bytes] = [] if code is None else [response(code, "0x77")]
    frames.append(notification("0x77", {**payload, **changes}))
    _, errors = decode(*frames)
    assert all(isinstance(e, DecodeError) for _, e in errors)
    assert len(errors) <= 1


# -- planning ---------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALCHEMY_API_KEY", KEY)


def test_registered() -> None:
    assert get_venue("Alchemy") is ALCHEMY


def test_missing_key_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ALCHEMY_API_KEY")
    with pytest.raises(UsageError, match="set ALCHEMY_API_KEY"):
        ALCHEMY.plan([], ["newHeads"])


def test_a_whole_url_in_the_key_is_refused_without_showing_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ALCHEMY_API_KEY", "wss://eth-mainnet.g.alchemy.com/v2/secret123")
    with pytest.raises(UsageError) as info:
        ALCHEMY.plan([], ["newHeads"])
    assert "secret123" not in str(info.value)


def test_default_endpoint_and_network() -> None:
    plan = ALCHEMY.plan([], ["newHeads"])
    assert plan.endpoint == "wss://eth-mainnet.g.alchemy.com/v2"
    assert plan.streams == ('["newHeads"]',)
    assert plan.kinds == frozenset({Block})
    other = ALCHEMY.plan([], ["newheads"], params=VenueParams(network="Polygon-Mainnet"))
    assert other.endpoint == "wss://polygon-mainnet.g.alchemy.com/v2"
    assert KEY not in repr(plan)


def test_bad_network_suggests() -> None:
    with pytest.raises(
        UsageError, match=r"unknown alchemy network 'eth-mainet' \(did you mean 'eth-mainnet'\?\)"
    ):
        ALCHEMY.plan([], ["newHeads"], params=VenueParams(network="eth-mainet"))


def test_endpoint_must_not_hold_the_key() -> None:
    with pytest.raises(UsageError, match="must not contain the API key"):
        ALCHEMY.plan([], ["newHeads"], "wss://eth-mainnet.g.alchemy.com/v2/abc")
    assert ALCHEMY.plan([], ["newHeads"], "ws://127.0.0.1:9/").endpoint == "ws://127.0.0.1:9/v2"
    with pytest.raises(UsageError, match="bad alchemy --endpoint"):
        ALCHEMY.plan([], ["newHeads"], "https://example.com")


def test_symbols_are_addresses_or_known_tokens() -> None:
    plan = ALCHEMY.plan(["usdc", WETH.upper().replace("0X", "0x"), USDC], ["logs"])
    assert plan.symbols == (USDC, WETH)
    assert orjson.loads(plan.streams[0]) == ["logs", {"address": [USDC, WETH]}]
    assert plan.kinds == frozenset(
        {Log, TokenTransfer, TokenApproval, NftTransfer, Swap, Retraction}
    )
    with pytest.raises(UsageError, match=r"bad alchemy symbol 'btcusdt'.*0x addresses"):
        ALCHEMY.plan(["btcusdt"], ["logs"])
    with pytest.raises(UsageError, match=r"did you mean 'USDC'"):
        ALCHEMY.plan(["USDCC"], ["logs"])
    with pytest.raises(UsageError, match="known only on eth-mainnet"):
        ALCHEMY.plan(["USDC"], ["logs"], params=VenueParams(network="base-mainnet"))


def test_new_heads_alone_ignores_symbols() -> None:
    assert ALCHEMY.plan(["btcusdt"], ["newHeads"]).symbols == ()


def test_log_selectors_and_whole_chain_guard() -> None:
    plan = ALCHEMY.plan([], ["logs:transfer", "logs:swaps"])
    (stream,) = plan.streams
    assert orjson.loads(stream) == [
        "logs",
        {"topics": [[TRANSFER_TOPIC, UNISWAP_V2_SWAP_TOPIC, UNISWAP_V3_SWAP_TOPIC]]},
    ]
    topic = "0x" + "ab" * 32
    assert orjson.loads(ALCHEMY.plan([USDC], [f"logs:{topic}"]).streams[0])[1]["topics"] == [topic]
    with pytest.raises(UsageError, match="every log on the chain"):
        ALCHEMY.plan([], ["logs"])
    with pytest.raises(UsageError, match="every log on the chain"):
        ALCHEMY.plan([], ["logs:*/*"])  # any topic at all is plain logs
    with pytest.raises(UsageError, match=r"unknown log selector 'aproval' \(did you mean"):
        ALCHEMY.plan([USDC], ["logs:aproval"])


def test_approval_selector() -> None:
    plan = ALCHEMY.plan([USDC], ["logs:approvals"])
    assert plan.channels == ("logs:approval",)
    assert orjson.loads(plan.streams[0]) == [
        "logs",
        {"address": [USDC], "topics": [APPROVAL_TOPIC]},
    ]
    assert plan.kinds == frozenset({Log, TokenApproval, Retraction})
    transfers = ALCHEMY.plan([], ["logs:transfer"])
    assert transfers.kinds == frozenset({Log, TokenTransfer, NftTransfer, Retraction})


BOB_WORD = address_topic(BOB)
ALICE_WORD = address_topic(ALICE)
WORD = "0x" + "ab" * 32


@pytest.mark.parametrize(
    ("channels", "topics"),
    [
        # topic1 is `from`, topic2 `to`: transfers *to* Bob.
        (["logs:transfer/*/" + BOB], [[TRANSFER_TOPIC, None, BOB_WORD]]),
        (["logs:transfer//" + BOB.upper().replace("0X", "0x")], [[TRANSFER_TOPIC, None, BOB_WORD]]),
        (["logs:transfer/" + ALICE], [[TRANSFER_TOPIC, ALICE_WORD]]),
        # Trailing wildcards are left out (a node skips logs with fewer topics).
        (["logs:transfer/*/*/*"], [[TRANSFER_TOPIC]]),
        (["logs:*/*/" + BOB], [[None, None, BOB_WORD]]),
        ([f"logs:approval/{ALICE}/{BOB}"], [[APPROVAL_TOPIC, ALICE_WORD, BOB_WORD]]),
        ([f"logs:transfer/*/*/{WORD}"], [[TRANSFER_TOPIC, None, None, WORD]]),
        # Alternatives in one position are an array (OR).
        ([f"logs:transfer/{ALICE}|{BOB}"], [[TRANSFER_TOPIC, [ALICE_WORD, BOB_WORD]]]),
        ([f"logs:swap|{WORD}/{ALICE}"], [
            [[UNISWAP_V2_SWAP_TOPIC, UNISWAP_V3_SWAP_TOPIC, WORD], ALICE_WORD]
        ]),
        # Channels that differ in one position share a subscription...
        (["logs:transfer/*/" + BOB, "logs:approval/*/" + BOB],
         [[[TRANSFER_TOPIC, APPROVAL_TOPIC], None, BOB_WORD]]),
        (["logs:transfer/*/" + BOB, "logs:transfer/*/" + ALICE],
         [[TRANSFER_TOPIC, None, [BOB_WORD, ALICE_WORD]]]),
        # ... a covered one adds none...
        (["logs:transfer/*/" + BOB, "logs:transfer"], [[TRANSFER_TOPIC]]),
        (["logs:transfer/*/" + BOB, f"logs:transfer|approval/*/{BOB}"],
         [[[TRANSFER_TOPIC, APPROVAL_TOPIC], None, BOB_WORD]]),
        # ... and others get their own.
        (["logs:transfer/" + ALICE, "logs:approval/*/" + BOB],
         [[TRANSFER_TOPIC, ALICE_WORD], [APPROVAL_TOPIC, None, BOB_WORD]]),
    ],
)  # fmt: skip
def test_topic_filters_map_onto_the_topics_array(
    channels: list[str], topics: list[list[Any]]
) -> None:
    plan = ALCHEMY.plan([], channels)
    sent = [orjson.loads(s) for s in plan.streams]
    assert [s[0] for s in sent] == ["logs"] * len(topics)
    assert [s[1] for s in sent] == [{"topics": t} for t in topics]


def test_topic_filter_channels_are_spelled_canonically() -> None:
    plan = ALCHEMY.plan(["USDC"], [f"LOGS:Transfers/*/{BOB.upper().replace('0X', '0x')}/"])
    assert plan.channels == (f"logs:transfer/*/{BOB}",)
    assert ALCHEMY.plan([USDC], ["logs:*"]).channels == ("logs",)
    assert orjson.loads(ALCHEMY.plan([USDC], ["logs:*/*"]).streams[0]) == [
        "logs",
        {"address": [USDC]},
    ]
    # A topic0 that is Transfer's hash selects what logs:transfer does.
    by_hash = ALCHEMY.plan([], [f"logs:{TRANSFER_TOPIC}/*/{BOB}"])
    assert by_hash.kinds == frozenset({Log, TokenTransfer, NftTransfer, Retraction})


@pytest.mark.parametrize(
    ("channel", "message"),
    [
        (f"logs:transfer/*/*/*/{BOB}", r"too many topic positions \(5; a log has at most 4\)"),
        (f"logs:{BOB}", f"topic0 '{BOB}' is not a 32-byte word in"),  # an address
        ("logs:transfer/0x1234", "topic1 '0x1234' is not a 32-byte word or an address"),
        ("logs:transfer/alice", "topic1 'alice' is not"),
        (f"logs:transfer/{BOB}|*", "'\\*' or an empty alternative"),
        (f"logs:transfer/{BOB}||{ALICE}", "an empty alternative"),
        ("logs:mint", "unknown log selector 'mint'"),
    ],
)
def test_bad_topic_filters_show_the_syntax(channel: str, message: str) -> None:
    with pytest.raises(UsageError, match=message) as info:
        ALCHEMY.plan([USDC], [channel])
    text = str(info.value)
    assert f"in alchemy channel {channel!r}" in text
    assert "logs:<topic0>/<topic1>/<topic2>/<topic3>" in text


def test_transaction_filters() -> None:
    addresses = [f"0x{i:040x}" for i in range(1, 61)]
    plan = ALCHEMY.plan(addresses, ["minedTransactions", "alchemy_pendingTransactions"])
    mined = [orjson.loads(s) for s in plan.streams if "mined" in s]
    assert [len(m[1]["addresses"]) for m in mined] == [100, 20]  # 60 x (to, from)
    assert mined[0][1]["addresses"][:2] == [{"to": addresses[0]}, {"from": addresses[0]}]
    assert mined[0][1]["includeRemoved"] is True
    (pending,) = [orjson.loads(s) for s in plan.streams if "pending" in s]
    assert pending[1] == {"fromAddress": addresses, "toAddress": addresses, "hashesOnly": False}
    everything = ALCHEMY.plan([], ["minedTransactions"])
    assert orjson.loads(everything.streams[0]) == [
        "alchemy_minedTransactions",
        {"includeRemoved": True, "hashesOnly": False},
    ]


def test_bad_channels() -> None:
    with pytest.raises(
        UsageError, match=r"unknown alchemy channel 'newHead' \(did you mean 'newHeads'\?\)"
    ):
        ALCHEMY.plan([], ["newHead"])
    with pytest.raises(UsageError, match="no channels given"):
        ALCHEMY.plan([], [])


# -- the subscriber against the fake --------------------------------------------------------


@pytest.fixture
async def fake() -> AsyncIterator[FakeAlchemy]:
    server = FakeAlchemy(api_key=KEY)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        yield server
        nursery.cancel_scope.cancel()


async def start_watch(
    nursery: trio.Nursery, runner: Runner, plan: Plan, options: FeedOptions = FAST
) -> trio.Event:
    done = trio.Event()

    async def go() -> None:
        await runner.watch([plan], options)
        done.set()

    nursery.start_soon(go)
    return done


async def test_subscribes_and_decodes_every_channel(fake: FakeAlchemy) -> None:
    with trio.fail_after(10):
        sink = ListSink()
        runner = Runner(Pipeline(), sinks=[sink])
        plan = ALCHEMY.plan(
            ["USDC", ALICE], ["newHeads", "logs:transfer", "minedTransactions"], fake.url
        )
        async with trio.open_nursery() as nursery:
            done = await start_watch(nursery, runner, plan)
            await fake.wait_subscribed("alchemy_minedTransactions")
            await fake.wait_subscribed("logs")
            await fake.wait_subscribed("newHeads")
            assert await fake.publish_head(new_head(100, timestamp=1_767_225_600)) == 1
            assert await fake.publish_log(transfer_log(USDC, ALICE, BOB, 2_500_000_000)) == 1
            # Filters are the fake's, as Alchemy's: other tokens' transfers do not come.
            assert await fake.publish_log(transfer_log(WETH, ALICE, BOB, 1)) == 0
            payment = transaction("0x" + "01" * 32, BOB, ALICE, 3 * 10**18, block_number=100)
            assert await fake.publish_mined(payment) == 1
            await sink.wait_for(4)
            runner.stop()
            await done.wait()
    kinds = [e.kind for e in sink.events]
    assert kinds == ["block", "log", "token_transfer", "transaction"]
    block, _, transfer, tx = sink.events
    assert isinstance(block, Block)
    assert block.number == 100
    assert isinstance(transfer, TokenTransfer)
    assert transfer.amount == Decimal(2500)
    assert isinstance(tx, Transaction)
    assert tx.value_eth == Decimal(3)
    subscribes = [r for r in fake.requests if r["method"] == "eth_subscribe"]
    ids = [r["id"] for r in subscribes]
    assert len(set(ids)) == 3
    assert all(ID_BASE <= i < ID_BASE + 10**8 for i in ids)
    assert [i % 10 for i in ids] == [1, 2, 3]


async def test_topic_filters_end_to_end(fake: FakeAlchemy) -> None:
    apes = "0xbc4ca0eda7647a8ab7c2061c2e118a18a936f13d"
    with trio.fail_after(10):
        sink = ListSink()
        runner = Runner(Pipeline(), sinks=[sink])
        # Transfers (ERC-20 and ERC-721) to Bob, and Alice's approvals: two subscriptions.
        plan = ALCHEMY.plan([], [f"logs:transfer/*/{BOB}", f"logs:approval/{ALICE}"], fake.url)
        async with trio.open_nursery() as nursery:
            done = await start_watch(nursery, runner, plan)
            subs = await fake.wait_subscribed("logs", 2)
            assert sorted(str(s.params["topics"]) for s in subs) == sorted(
                [
                    str([TRANSFER_TOPIC, None, address_topic(BOB)]),
                    str([APPROVAL_TOPIC, address_topic(ALICE)]),
                ]
            )
            # The fake filters topics 1-3 as a node does: only the matching logs come.
            assert await fake.publish_log(transfer_log(USDC, ALICE, BOB, 10**6, log_index=1)) == 1
            assert await fake.publish_log(transfer_log(USDC, BOB, ALICE, 10**6, log_index=2)) == 0
            assert (
                await fake.publish_log(erc721_transfer_log(apes, ALICE, BOB, 7, log_index=3)) == 1
            )
            assert (
                await fake.publish_log(erc721_transfer_log(apes, BOB, ALICE, 7, log_index=4)) == 0
            )
            assert await fake.publish_log(approval_log(USDC, ALICE, BOB, 5, log_index=5)) == 1
            assert await fake.publish_log(approval_log(USDC, BOB, ALICE, 5, log_index=6)) == 0
            await sink.wait_for(6)
            runner.stop()
            await done.wait()
    got = [(e.kind, e.log_index) for e in sink.events]  # type: ignore[attr-defined]
    assert got == [
        ("log", 1), ("token_transfer", 1), ("log", 3), ("nft_transfer", 3), ("log", 5),
        ("approval", 5),
    ]  # fmt: skip
    nft = sink.events[3]
    assert isinstance(nft, NftTransfer)
    assert (nft.to_address, nft.token_id) == (BOB, 7)


async def test_the_fake_matches_topics_as_a_node_does(fake: FakeAlchemy) -> None:
    import trio_websocket

    apes = "0xbc4ca0eda7647a8ab7c2061c2e118a18a936f13d"
    erc20 = transfer_log(USDC, ALICE, BOB, 1)
    erc721 = erc721_transfer_log(apes, ALICE, BOB, 7)
    cases = [
        ([TRANSFER_TOPIC], 2),
        ([TRANSFER_TOPIC, None, address_topic(BOB)], 2),
        ([TRANSFER_TOPIC, None, [address_topic(ALICE), address_topic(BOB)]], 2),
        ([TRANSFER_TOPIC, [], address_topic(BOB)], 2),  # [] is any value too
        ([TRANSFER_TOPIC, address_topic(BOB)], 0),
        # A fourth position, even a wildcard, skips the 3-topic ERC-20 log.
        ([TRANSFER_TOPIC, None, None, None], 1),
        ([None, None, None, "0x" + encode_uint(7)], 1),
        ([None, None, None, "0x" + encode_uint(8)], 0),
    ]
    with trio.fail_after(10):
        async with trio_websocket.open_websocket_url(f"{fake.url}/{KEY}") as ws:
            for i, (topics, _) in enumerate(cases):
                request = {"jsonrpc": "2.0", "id": i, "method": "eth_subscribe"}
                await ws.send_message(
                    orjson.dumps({**request, "params": ["logs", {"topics": topics}]}).decode()
                )
                assert "result" in orjson.loads(await ws.get_message())
            sent = await fake.publish_log(erc20) + await fake.publish_log(erc721)
            assert sent == sum(n for _, n in cases)
            subs = {s.id: i for i, s in enumerate(fake.subscriptions("logs"))}
            got = [0] * len(cases)
            for _ in range(sent):
                note = orjson.loads(await ws.get_message())
                got[subs[note["params"]["subscription"]]] += 1
    assert got == [n for _, n in cases]


async def test_subscription_error_is_fatal_and_named(fake: FakeAlchemy) -> None:
    fake.fail_next_subscribe(-32602, "invalid params: bad address")
    plan = ALCHEMY.plan([USDC], ["logs"], fake.url)
    with trio.fail_after(10), pytest.raises(VenueError) as info:
        await Runner(Pipeline(), sinks=[ListSink()]).watch([plan], FAST)
    text = str(info.value)
    assert "alchemy refused the subscription logs" in text
    assert "invalid params: bad address (code -32602)" in text


async def test_pending_refused_hints_at_networks(fake: FakeAlchemy) -> None:
    fake.fail_next_subscribe(-32601, "Method not found")
    plan = ALCHEMY.plan([], ["pendingTransactions"], fake.url)
    with trio.fail_after(10), pytest.raises(VenueError, match="documented only on eth-mainnet"):
        await Runner(Pipeline()).watch([plan], FAST)


async def test_rate_limit_reconnects_and_resubscribes(fake: FakeAlchemy) -> None:
    fake.rate_limit_next_subscribe()
    with trio.fail_after(10):
        sink = ListSink()
        runner = Runner(Pipeline(), sinks=[sink])
        plan = ALCHEMY.plan([], ["newHeads"], fake.url)
        async with trio.open_nursery() as nursery:
            done = await start_watch(nursery, runner, plan)
            await fake.wait_subscribed("newHeads")
            await fake.publish_head(new_head(7, timestamp=1))
            await sink.wait_for(2)
            runner.stop()
            await done.wait()
    assert fake.connections_total == 2
    assert runner.status.feeds[0].reconnects == 1
    assert "code 429" in runner.status.feeds[0].last_error
    assert [e.kind for e in sink.events] == ["gap", "block"]


async def test_drop_reconnects_with_new_ids_and_a_gap(fake: FakeAlchemy) -> None:
    with trio.fail_after(10):
        sink = ListSink()
        runner = Runner(Pipeline(), sinks=[sink])
        plan = ALCHEMY.plan(["USDC"], ["logs"], fake.url)
        async with trio.open_nursery() as nursery:
            done = await start_watch(nursery, runner, plan)
            (first,) = await fake.wait_subscribed("logs")
            await fake.publish_log(transfer_log(USDC, ALICE, BOB, 1, log_index=1))
            await sink.wait_for(2)
            await fake.drop_all()
            await fake.wait_connections(2)
            (second,) = await fake.wait_subscribed("logs")
            await fake.publish_log(transfer_log(USDC, ALICE, BOB, 2, log_index=2))
            await sink.wait_for(5)
            runner.stop()
            await done.wait()
    assert first.id != second.id
    assert second.params == first.params
    kinds = [e.kind for e in sink.events]
    assert kinds == ["log", "token_transfer", "gap", "log", "token_transfer"]
    gap = sink.events[2]
    assert isinstance(gap, Gap)
    assert gap.streams == plan.streams
    assert "lost" in gap.cause
    assert KEY not in gap.cause
    assert [e.log_index for e in sink.events if isinstance(e, TokenTransfer)] == [1, 2]


async def test_heartbeat_keeps_a_quiet_connection(
    fake: FakeAlchemy, autojump_clock: trio.testing.MockClock
) -> None:
    autojump_clock.autojump_threshold = 0.02
    with trio.fail_after(300):
        runner = Runner(Pipeline(), tick=60)  # few idle wake-ups: few clock jumps
        plan = ALCHEMY.plan(["USDC"], ["logs"], fake.url)
        async with trio.open_nursery() as nursery:
            done = await start_watch(nursery, runner, plan)
            await fake.wait_subscribed("logs")
            await trio.sleep(100)  # virtual: silence but for net_version replies
            runner.stop()
            await done.wait()
    assert fake.net_version_requests >= 5  # every 15 s (half the 30 s stale timeout)
    assert fake.connections_total == 1
    assert runner.status.feeds[0].reconnects == 0


async def test_unanswered_heartbeat_reconnects(
    fake: FakeAlchemy, autojump_clock: trio.testing.MockClock
) -> None:
    autojump_clock.autojump_threshold = 0.02
    fake.answer_net_version = False
    with trio.fail_after(300):
        sink = ListSink()
        runner = Runner(Pipeline(), sinks=[sink], tick=60)
        plan = ALCHEMY.plan([], ["newHeads"], fake.url)
        async with trio.open_nursery() as nursery:
            done = await start_watch(nursery, runner, plan)
            await fake.wait_connections(2)
            fake.answer_net_version = True
            await sink.wait_for(1)
            runner.stop()
            await done.wait()
    (gap,) = sink.events
    assert isinstance(gap, Gap)
    assert gap.cause == "no answer to net_version within 10s"


async def test_wrong_key_is_reported_without_the_key(fake: FakeAlchemy) -> None:
    fake.api_key = "another-key"
    plan = ALCHEMY.plan([], ["newHeads"], fake.url)
    with trio.fail_after(10), pytest.raises(ConnectError) as info:
        await Runner(Pipeline()).watch([plan], FAST)
    text = str(info.value)
    assert "HTTP 401" in text
    assert "<ALCHEMY_API_KEY>" in text
    assert KEY not in text


async def test_record_and_replay_give_the_same_events(fake: FakeAlchemy, tmp_path: Path) -> None:
    recording = tmp_path / "alchemy.jsonl"
    with trio.fail_after(10):
        sink = ListSink()
        runner = Runner(Pipeline(), sinks=[sink], record=recording)
        plan = ALCHEMY.plan([], ["newHeads", "pendingTransactions"], fake.url)
        async with trio.open_nursery() as nursery:
            done = await start_watch(nursery, runner, plan)
            await fake.wait_subscribed("alchemy_pendingTransactions")
            await fake.wait_subscribed("newHeads")
            # A pending tx that already names a block: only the route says "pending".
            odd = transaction("0x" + "02" * 32, ALICE, None, 10**18, block_number=3)
            await fake.publish_pending(odd)
            await fake.publish_head(new_head(3, timestamp=2))
            await sink.wait_for(2)
            runner.stop()
            await done.wait()
        replayed = ListSink()
        await Runner(Pipeline(), sinks=[replayed]).replay(recording)
    assert replayed.events == sink.events
    assert sink.events[0].pending is True  # type: ignore[attr-defined]
    assert KEY not in recording.read_text()


async def test_connection_limit_close_is_retried_with_backoff(fake: FakeAlchemy) -> None:
    fake.max_connections = 0  # every connection is closed with 1008 right away
    with trio.fail_after(10):
        sink = ListSink()
        runner = Runner(Pipeline(), sinks=[sink])
        plan = ALCHEMY.plan([], ["newHeads"], fake.url)
        async with trio.open_nursery() as nursery:
            done = await start_watch(nursery, runner, plan)
            await fake.wait_limit_closes(2)
            fake.max_connections = 100
            await fake.wait_subscribed("newHeads")
            await sink.wait_for(1)
            runner.stop()
            await done.wait()
    (gap,) = sink.events
    assert isinstance(gap, Gap)
    assert "1008 WebSocket connection limit reached" in gap.cause
    assert runner.status.feeds[0].reconnects >= 2


async def test_the_fake_speaks_json_rpc(fake: FakeAlchemy) -> None:
    import trio_websocket

    async def ask(ws: Any, request: object) -> Any:
        await ws.send_message(orjson.dumps(request).decode())
        return orjson.loads(await ws.get_message())

    with trio.fail_after(10):
        async with trio_websocket.open_websocket_url(f"{fake.url}/{KEY}") as ws:
            assert await ask(ws, {"jsonrpc": "2.0", "id": 2, "method": "net_version"}) == {
                "jsonrpc": "2.0",
                "id": 2,
                "result": "1",
            }
            sub = await ask(
                ws, {"jsonrpc": "2.0", "id": 3, "method": "eth_subscribe", "params": ["newHeads"]}
            )
            assert sub["id"] == 3
            assert len(sub["result"]) == 34  # 0x + 32 hex digits
            bad = await ask(
                ws,
                {
                    "jsonrpc": "2.0",
                    "id": 4,
                    "method": "eth_subscribe",
                    "params": ["logs", {"adddress": USDC}],  # the docs' typo
                },
            )
            assert bad["error"]["code"] == -32602
            assert (await ask(ws, {"jsonrpc": "2.0", "id": 5, "method": "eth_foo"}))["error"][
                "code"
            ] == -32601
            await ws.send_message("{oops")
            assert orjson.loads(await ws.get_message())["error"]["code"] == -32700
            batch = [{"jsonrpc": "2.0", "id": i, "method": "net_version"} for i in range(21)]
            assert (await ask(ws, batch))["error"]["code"] == -32600
            assert len(await ask(ws, batch[:3])) == 3
            await fake.publish_head(new_head(1, timestamp=1))
            note = orjson.loads(await ws.get_message())
            assert "id" not in note
            assert note["params"]["subscription"] == sub["result"]
            unsub = {"jsonrpc": "2.0", "id": 6, "method": "eth_unsubscribe"}
            assert (await ask(ws, {**unsub, "params": [sub["result"]]}))["result"] is True
            assert (await ask(ws, {**unsub, "params": [sub["result"]]}))["result"] is False


def test_irisflow_venues_shows_the_topic_syntax(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from irisflow._render import show_venues

    monkeypatch.setenv("COLUMNS", "240")
    show_venues([ALCHEMY], detail=True)  # brackets in channel names are not Rich markup
    out = capsys.readouterr().out
    assert "logs[:<topic0>[/<topic1>/<topic2>/<topic3>]]" in out
    assert "log, token_transfer, approval, nft_transfer, swap, retraction" in out
    assert "nft_transfer events" in out
    assert "token_id" in out
