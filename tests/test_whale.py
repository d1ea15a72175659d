"""The whale tracker step, with hand-computed expectations."""

from __future__ import annotations

from decimal import Decimal

import pytest

from irisflow._chain import (
    Block,
    Confirmation,
    InternalTransaction,
    NftTransfer,
    Retraction,
    TokenApproval,
    TokenTransfer,
    Transaction,
    scale,
)
from irisflow._errors import UsageError
from irisflow._events import Event, Gap
from irisflow._pipeline import Pipeline
from irisflow._whale import WhaleStep

USDC = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"
DAI = "0x6b175474e89094c44da98b954eedeac495271d0f"
WBTC = "0x2260fac5e5542a773aa44fbcfedf7c193bc2c599"
ODD = "0x" + "77" * 20  # a token nobody knows
A = "0x" + "0a" * 20
B = "0x" + "0b" * 20


def tx(n: int, wei: int, to: str | None = B) -> Transaction:
    return Transaction(
        venue="alchemy",
        symbol="ETH",
        ts=0,
        recv_ts=0,
        tx_hash=f"0x{n:064x}",
        from_address=A,
        to_address=to,
        value_wei=wei,
        value_eth=scale(wei, 18),
        gas=21_000,
        nonce=n,
        input="0x",
        pending=False,
    )


def transfer(
    n: int,
    token: str,
    raw: int,
    decimals: int | None,
    symbol: str | None = None,
    spam: bool | None = None,
) -> TokenTransfer:
    return TokenTransfer(
        venue="moralis",
        symbol=symbol or token,
        ts=0,
        recv_ts=0,
        token=token,
        from_address=A,
        to_address=B,
        raw_amount=raw,
        tx_hash=f"0x{n:064x}",
        log_index=n,
        decimals=decimals,
        amount=None if decimals is None else scale(raw, decimals),
        possible_spam=spam,
    )


def hashes(events: list[Event]) -> list[str]:
    return [e.tx_hash for e in events]  # type: ignore[attr-defined]


def test_native_threshold_is_inclusive_and_exact() -> None:
    step = WhaleStep(min_eth=Decimal(100))
    events: list[Event] = [
        tx(1, 100 * 10**18),  # exactly 100 ETH: passes
        tx(2, 100 * 10**18 - 1),  # 99.999999999999999999 ETH: does not
        tx(3, 250 * 10**18 + 1),  # 250.000000000000000001 ETH
        tx(4, 5 * 10**17),  # 0.5 ETH
    ]
    out = step.process(events)
    assert hashes(out) == [f"0x{1:064x}", f"0x{3:064x}"]
    assert out[1].value_eth == Decimal("250.000000000000000001")  # type: ignore[attr-defined]


def internal(n: int, index: int, wei: int) -> InternalTransaction:
    return InternalTransaction(
        venue="moralis",
        symbol="ETH",
        ts=0,
        recv_ts=0,
        tx_hash=f"0x{n:064x}",
        internal_index=index,
        from_address=A,
        to_address=B,
        value_wei=wei,
        value_eth=scale(wei, 18),
    )


def test_internal_transactions_are_whales_like_transactions() -> None:
    step = WhaleStep(min_eth=Decimal(100))
    events: list[Event] = [
        internal(1, 0, 100 * 10**18),  # exactly 100 ETH moved by a contract call
        internal(1, 1, 100 * 10**18 - 1),
        tx(2, 0),  # the outer transaction itself moved nothing
        internal(2, 0, 500 * 10**18),
    ]
    out = step.process(events)
    assert [(e.tx_hash, e.internal_index) for e in out] == [  # type: ignore[attr-defined]
        (f"0x{1:064x}", 0),
        (f"0x{2:064x}", 0),
    ]
    assert all(isinstance(e, InternalTransaction) for e in out)
    assert WhaleStep(min_tokens=Decimal(0)).process(events) == []  # no ETH threshold: none pass
    # Confirmations name them by internal_index (in log_index): only the passed one follows.
    later: list[Event] = [
        Confirmation("moralis", "ETH", 0, 0, "internal_tx", f"0x{1:064x}", 0),
        Confirmation("moralis", "ETH", 0, 0, "internal_tx", f"0x{1:064x}", 1),
        Confirmation("moralis", "ETH", 0, 0, "transaction", f"0x{1:064x}"),
    ]
    assert step.process(later) == [later[0]]


def test_approvals_and_nft_transfers_are_not_whales() -> None:
    huge = 2**256 - 1
    approval = TokenApproval(
        "alchemy", "USDC", 0, 0, USDC, A, B, huge, f"0x{1:064x}", 1, 6, scale(huge, 6)
    )
    nft = NftTransfer("alchemy", ODD, 0, 0, ODD, "erc1155", A, B, 1, 10**30, f"0x{2:064x}", 2)
    step = WhaleStep(min_eth=Decimal(0), min_tokens=Decimal(0), min_raw=0)
    assert step.process([approval, nft]) == []
    assert step.process([transfer(3, USDC, 1, 6)]) != []  # the same step passes a transfer


def test_a_contract_creation_is_just_a_transaction() -> None:
    # The seed's tracker unwrapped `to` and crashed here.
    (out,) = WhaleStep(min_eth=Decimal(100)).process([tx(1, 150 * 10**18, to=None)])
    assert isinstance(out, Transaction)
    assert out.to_address is None


def test_token_amounts_use_the_tokens_decimals() -> None:
    step = WhaleStep(min_tokens=Decimal(1_000_000))
    events: list[Event] = [
        # 5 000 000 USDC = 5e12 raw: under the seed's raw 100e18 test, yet a whale.
        transfer(1, USDC, 5_000_000 * 10**6, 6),
        # 150 DAI = 150e18 raw: over the seed's raw test, yet small.
        transfer(2, DAI, 150 * 10**18, 18),
        # exactly 1 000 000 DAI: passes
        transfer(3, DAI, 10**6 * 10**18, 18),
    ]
    out = step.process(events)
    assert hashes(out) == [f"0x{1:064x}", f"0x{3:064x}"]
    assert out[0].amount == Decimal(5_000_000)  # type: ignore[attr-defined]


def test_per_token_thresholds_by_symbol_or_address() -> None:
    step = WhaleStep(min_tokens=Decimal(10**9), per_token={"wbtc": Decimal(10), DAI: Decimal(500)})
    events: list[Event] = [
        transfer(1, WBTC, 1_250_000_000, 8),  # 12.5 WBTC
        transfer(2, WBTC, 999_999_999, 8),  # 9.99999999 WBTC
        transfer(3, DAI, 501 * 10**18, 18),  # 501 DAI
        transfer(4, USDC, 2_000_000 * 10**6, 6),  # 2 000 000 USDC, under the 1e9 default
    ]
    assert hashes(step.process(events)) == [f"0x{1:064x}", f"0x{3:064x}"]


def test_the_table_wins_over_what_a_venue_says() -> None:
    # A body claiming USDC has 18 decimals: the table's 6 decide, so 2 000 000 USDC pass.
    lying = transfer(1, USDC, 2_000_000 * 10**6, 18, symbol="USDC")
    (out,) = WhaleStep(min_tokens=Decimal(1_000_000)).process([lying])
    assert isinstance(out, TokenTransfer)
    assert (out.decimals, out.amount, out.symbol) == (6, Decimal(2_000_000), "USDC")


def test_a_spoofed_symbol_does_not_get_the_real_tokens_threshold() -> None:
    fake_usdc = transfer(1, ODD, 50 * 10**6, 6, symbol="USDC")  # 50 "USDC" of another token
    step = WhaleStep(per_token={"USDC": Decimal(10)})
    assert step.process([fake_usdc]) == []


def test_unknown_decimals_pass_only_a_raw_threshold_and_stay_raw() -> None:
    big = transfer(1, ODD, 10**24, None)
    small = transfer(2, ODD, 10**24 - 1, None)
    assert WhaleStep(min_tokens=Decimal(1)).process([big]) == []
    (out,) = WhaleStep(min_tokens=Decimal(1), min_raw=10**24).process([big, small])
    assert isinstance(out, TokenTransfer)
    assert (out.raw_amount, out.decimals, out.amount, out.symbol) == (10**24, None, None, ODD)


def test_decimals_from_the_venue_count_for_unknown_tokens() -> None:
    # 5 000 000 tokens of a 9-decimal token the venue described.
    described = transfer(1, ODD, 5 * 10**15, 9, symbol="ODD")
    (out,) = WhaleStep(min_tokens=Decimal(1_000_000)).process([described])
    assert out.amount == Decimal(5_000_000)  # type: ignore[attr-defined]


def test_possible_spam_is_dropped_unless_asked_for() -> None:
    spam = transfer(1, ODD, 10**30, 18, spam=True)
    assert WhaleStep(min_tokens=Decimal(1)).process([spam]) == []
    assert len(WhaleStep(min_tokens=Decimal(1), include_spam=True).process([spam])) == 1


def test_retractions_and_confirmations_follow_what_passed() -> None:
    step = WhaleStep(min_eth=Decimal(10), min_tokens=Decimal(10))
    whale, minnow = tx(1, 20 * 10**18), tx(2, 10**18)
    usdc = transfer(3, USDC, 20 * 10**6, 6)
    assert len(step.process([whale, minnow, usdc])) == 2
    later: list[Event] = [
        Confirmation("moralis", "ETH", 0, 0, "transaction", whale.tx_hash),
        Confirmation("moralis", "ETH", 0, 0, "transaction", minnow.tx_hash),
        Retraction("alchemy", "USDC", 0, 0, "token_transfer", usdc.tx_hash, 3),
        Retraction("alchemy", "USDC", 0, 0, "log", usdc.tx_hash, 3),  # a log never passed
    ]
    out = step.process(later)
    assert out == [later[0], later[2]]
    assert step.process([later[2]]) == []  # a retracted key is forgotten


def test_memory_is_bounded() -> None:
    step = WhaleStep(min_eth=Decimal(0), memory=2)
    step.process([tx(1, 1), tx(2, 1), tx(3, 1)])
    confirm = [Confirmation("moralis", "ETH", 0, 0, "transaction", f"0x{n:064x}") for n in (1, 3)]
    assert step.process(confirm) == [confirm[1]]


def test_gaps_pass_and_other_kinds_do_not() -> None:
    gap = Gap("alchemy", "*", 1, 1, ("newHeads",), 0, 1, "lost")
    block = Block("alchemy", "ETH", 0, 0, 1)
    assert WhaleStep(min_eth=Decimal(0)).process([block, gap]) == [gap]


def test_runs_in_a_pipeline() -> None:
    pipeline = Pipeline([WhaleStep(min_eth=Decimal(1))])
    assert hashes(pipeline.process([tx(1, 10**18), tx(2, 10**17)])) == [f"0x{1:064x}"]
    assert pipeline.advance(10**18) == []


def test_bad_settings_are_usage_errors() -> None:
    with pytest.raises(UsageError, match=r"unknown token 'USDCC'.*did you mean 'USDC'"):
        WhaleStep(per_token={"USDCC": Decimal(1)})
    with pytest.raises(UsageError, match="min_eth must be at least 0"):
        WhaleStep(min_eth=Decimal(-1))
    with pytest.raises(UsageError, match="memory"):
        WhaleStep(memory=0)


def test_the_whale_step_from_pipe_text() -> None:
    pipeline = Pipeline().pipe("whale eth=100 USDC=1000000")
    events: list[Event] = [
        tx(1, 150 * 10**18),  # 150 ETH
        tx(2, 99 * 10**18),  # 99 ETH
        transfer(3, USDC, 2_000_000 * 10**6, 6),  # 2 000 000 USDC
        transfer(4, USDC, 150 * 10**6, 6),  # 150 USDC
    ]
    assert hashes(pipeline.process(events)) == [f"0x{1:064x}", f"0x{3:064x}"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("whale", "whale takes thresholds"),
        ("whale eth=lots", "bad whale threshold 'eth=lots'"),
        ("whale eth=-1", "bad whale threshold 'eth=-1'"),
        ("whale NOPE=5", "NOPE"),
    ],
)
def test_bad_whale_text(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        Pipeline().pipe(text)


def test_a_retraction_takes_the_event_out_of_the_window_that_counted_it() -> None:
    from irisflow._chain import Retraction
    from irisflow._windows import Window

    kinds = {TokenTransfer, Retraction}
    pipeline = Pipeline(kinds=kinds).pipe("window 1m | agg count")
    kept, voided = transfer(1, USDC, 10**6, 6), transfer(2, USDC, 2 * 10**6, 6)
    retraction = Retraction(
        venue="alchemy",
        symbol=voided.symbol,
        ts=1,
        recv_ts=1,
        target="token_transfer",
        tx_hash=voided.tx_hash,
        log_index=voided.log_index,
    )
    out = pipeline.process([kept, voided, retraction])
    out += pipeline.advance(120 * 10**9)  # the receive clock closes the minute
    assert retraction in out  # passed on, for sinks
    (window,) = [e for e in out if isinstance(e, Window)]
    assert window.count == 1  # the voided transfer is out; the retraction is not counted
    assert window.complete is True
    assert pipeline.steps[-1].retracted == 1  # type: ignore[attr-defined]

    # The same without the retraction: both transfers count.
    again = Pipeline(kinds=kinds).pipe("window 1m | agg count")
    out = again.process([kept, voided]) + again.advance(120 * 10**9)
    (window,) = [e for e in out if isinstance(e, Window)]
    assert window.count == 2
    assert window.complete is True
