"""Every event kind irisflow produces, through PostgresSink into the real PostgreSQL and back.

Window and other pipeline results, chain events with reorgs and confirmations, book depths,
alerts next to the outbox, and the migrations that made room for them. These tests wait on
real database I/O, always under a ``trio.fail_after`` deadline.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import attrs
import pytest
import trio
from fix_db import fetch, fetch_one

from irisflow._alert import Alert
from irisflow._alerting import AlertSink
from irisflow._chain import (
    TRANSFER_TOPIC,
    Block,
    Confirmation,
    InternalTransaction,
    Log,
    NftTransfer,
    Retraction,
    Swap,
    TokenApproval,
    TokenTransfer,
    Transaction,
    scale,
)
from irisflow._errors import UsageError
from irisflow._events import Book, BookUpdate, Candle, Event, Gap, Quote, Ticker, Trade, to_datetime
from irisflow._join import joined_class
from irisflow._jsonl import iso_time
from irisflow._migrate import migrate
from irisflow._pipe import build_pipeline
from irisflow._trackers import Rsi, Spike
from irisflow._windows import Late, Window, window_class
from irisflow.sinks.postgres import PostgresSink
from irisflow.testing._alchemy_frames import (
    approval_log,
    erc721_transfer_log,
    notification,
    transaction,
    transfer_log,
)
from irisflow.testing._moralis import (
    encode_body,
    moralis_erc20_approval,
    moralis_erc20_transfer,
    moralis_internal_tx,
    moralis_nft_transfer,
    moralis_tx,
    webhook_body,
)
from irisflow.venues.alchemy import AlchemyDecoder
from irisflow.venues.moralis import MoralisDecoder

pytestmark = pytest.mark.postgres

S = 1_000_000_000
T0 = 1_767_225_600 * S  # 2026-01-01T00:00:00Z
DEADLINE = 30
FAST = {"backoff_initial": 0.01, "backoff_max": 0.05, "connect_timeout": 2}
CHAIN = "eth-mainnet"
USDC = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"
POOL = "0x88e6a0c2ddd26feeb64f039a2c41296fcb3f5640"
ALICE = "0x28c6c06298d514db089934071355e5743bf21d60"
BOB = "0x5041ed759dd4afc3a72b8192c143f72f4724081a"


def h(n: int) -> str:
    """A 32-byte hash."""
    return f"0x{n:064x}"


async def feed(
    send: trio.MemorySendChannel[Sequence[Event]], batches: Sequence[Sequence[Event]]
) -> None:
    async with send:
        for batch in batches:
            await send.send(batch)


async def run_sink(dsn: str, batches: Sequence[Sequence[Event]], **options: Any) -> PostgresSink:
    """Run a sink over ``batches`` until it returns; return it for its statistics."""
    sink = PostgresSink(dsn, **{**FAST, "chain": CHAIN, **options})
    send, receive = trio.open_memory_channel[Sequence[Event]](4)
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            await nursery.start(sink.run, receive)
            nursery.start_soon(feed, send, batches)
    return sink


def count(dsn: str, table: str) -> int:
    return int(fetch_one(dsn, f"SELECT count(*) FROM irisflow.{table}"))


def trade(t: float, price: str, *, trade_id: int, symbol: str = "BTCUSDT") -> Trade:
    ts = T0 + round(t * S)
    return Trade("binance", symbol, ts, ts + 1000, Decimal(price), Decimal("0.5"), "buy", trade_id)


def json_value(value: Any, *, time: bool = False) -> Any:
    """What a field value becomes in the ``values`` column."""
    if time and isinstance(value, int):
        return iso_time(value)
    return str(value) if isinstance(value, Decimal) else value


# --------------------------------------------------------------------------- window results

WINDOW_SELECT = (
    "SELECT kind, venue, symbol, key, spec, window_start, window_end, ts, recv_ts, count,"
    ' "values", incomplete FROM irisflow.window_results'
)


def window_row(w: Window) -> tuple[Any, ...]:
    """The row a window result should have, built from the event itself."""
    own = set(attrs.fields_dict(Window))
    values = {f.name: json_value(getattr(w, f.name)) for f in attrs.fields(type(w))}
    values = {k: v for k, v in values.items() if k not in own}
    return (
        "window", w.venue, w.symbol, w.key, w.spec, to_datetime(w.start), to_datetime(w.end),
        to_datetime(w.ts), to_datetime(w.recv_ts), w.count, values, not w.complete,
    )  # fmt: skip


async def test_window_results_round_trip_and_replay_stores_nothing_twice(migrated_db: str) -> None:
    pipeline = build_pipeline(
        [], ["by symbol | window 1m | agg vwap, ohlc(price), n = count, sum(qty)"], {Trade}
    )
    trades = [
        trade(t, f"{45000 + t}.25", trade_id=t, symbol=s)
        for t in range(0, 150, 7)
        for s in ("BTCUSDT", "ETHUSDT")
    ]
    results = pipeline.process(trades) + pipeline.flush()
    windows = [e for e in results if isinstance(e, Window)]
    assert len(windows) == 6
    assert [w.complete for w in windows].count(False) == 2  # the last minute, cut by the flush

    first = await run_sink(migrated_db, [results[:3], results[3:]])
    assert first.statistics().rows_written == 6
    stored = fetch(migrated_db, WINDOW_SELECT + " ORDER BY symbol, window_start")
    expected = sorted((window_row(w) for w in windows), key=lambda r: (r[2], r[5]))
    assert stored == expected
    vwap = stored[0][10]["vwap"]
    assert isinstance(vwap, str)
    assert Decimal(vwap) == windows[0].vwap  # type: ignore[attr-defined]

    second = await run_sink(migrated_db, [results])
    assert count(migrated_db, "window_results") == 6
    assert (second.statistics().rows_written, second.statistics().rows_duplicate) == (6, 6)
    assert fetch(migrated_db, WINDOW_SELECT + " ORDER BY symbol, window_start") == expected


VwapWindow = window_class([("vwap", "number", "volume-weighted average price")])


def vwap_window(
    vwap: str, *, complete: bool, n: int, recv: int = 0, spec: str = "tumbling 1m"
) -> Window:
    return VwapWindow(
        "binance", "BTCUSDT", T0 + 60 * S, T0 + 60 * S + recv, "BTCUSDT", T0, T0 + 60 * S, n,
        complete, spec, vwap=Decimal(vwap),
    )  # type: ignore[call-arg]  # fmt: skip


async def test_a_complete_window_wins_over_an_incomplete_one(migrated_db: str) -> None:
    def stored() -> list[tuple[Any, ...]]:
        return fetch(
            migrated_db,
            "SELECT spec, count, \"values\"->>'vwap', incomplete FROM irisflow.window_results"
            " ORDER BY spec",
        )

    # A run that ended inside the window stored it incomplete; a later replay completes it.
    await run_sink(migrated_db, [[vwap_window("100", complete=False, n=3)]])
    await run_sink(migrated_db, [[vwap_window("101", complete=True, n=5)]])
    assert stored() == [("tumbling 1m", 5, "101", False)]
    # Replaying the first run again does not make it incomplete.
    sink = await run_sink(migrated_db, [[vwap_window("100", complete=False, n=3)]])
    assert stored() == [("tumbling 1m", 5, "101", False)]
    assert sink.statistics().rows_duplicate == 1
    # A complete recomputation (late data) replaces a complete result.
    await run_sink(migrated_db, [[vwap_window("102", complete=True, n=6)]])
    assert stored() == [("tumbling 1m", 6, "102", False)]
    # Within one chunk: complete wins whatever the order; then the latest.
    await run_sink(
        migrated_db,
        [
            [
                vwap_window("1", complete=True, n=1, recv=1000, spec="sliding 1m/10s"),
                vwap_window("2", complete=True, n=2, recv=2000, spec="sliding 1m/10s"),
                vwap_window("3", complete=False, n=3, recv=3000, spec="sliding 1m/10s"),
            ]
        ],
    )
    # Same span, another spec: its own row.
    assert stored() == [("sliding 1m/10s", 2, "2", False), ("tumbling 1m", 6, "102", False)]


async def test_rsi_spike_join_and_late_round_trip(migrated_db: str) -> None:
    d = Decimal
    rsi = Rsi("binance", "BTCUSDT", T0, T0 + 5, "binance/BTCUSDT/1m", 14, d("71.5"), d("45000.5"),
              d("12.25"), d("4.875"))  # fmt: skip
    spike = Spike("binance", "BTCUSDT", T0 + 60 * S, T0 + 60 * S + 5, "binance/BTCUSDT", "up",
                  d("2.5"), d("46125"), d("45000"), T0, d("2"), "1m")  # fmt: skip
    Joined = joined_class([Trade], [Book])
    left = trade(1, "45000.5", trade_id=7)
    joined = [
        Joined(  # type: ignore[call-arg]
            left.venue, left.symbol, left.ts, left.recv_ts, "BTCUSDT", 250_000_000,
            left_price=left.price, left_trade_id=tid, left_ts=left.ts,
            right_ts=left.ts - 250_000_000, right_update_id=None,
        )
        for tid in (7, 8)  # two left events of one key at one instant: two rows
    ]  # fmt: skip
    late_trade = trade(2, "44999", trade_id=9)
    late = Late("binance", "BTCUSDT", late_trade.ts, late_trade.recv_ts, "BTCUSDT", T0 + 90 * S,
                late_trade)  # fmt: skip
    await run_sink(migrated_db, [[rsi, spike, *joined, late]])

    rows = fetch(
        migrated_db,
        'SELECT kind, key, spec, window_start, window_end, count, "values", incomplete'
        " FROM irisflow.window_results ORDER BY kind, spec",
    )
    assert [r[:3] for r in rows] == [
        ("join", "BTCUSDT", "join trade_id=7"),
        ("join", "BTCUSDT", "join trade_id=8"),
        ("late", "BTCUSDT", "late trade trade_id=9"),
        ("rsi", "binance/BTCUSDT/1m", "rsi 14"),
        ("spike", "binance/BTCUSDT", "spike 2% in 1m"),
    ]
    assert all(r[5] is None and r[7] is False for r in rows)
    by_kind = {r[0]: r for r in rows}
    assert by_kind["rsi"][3:5] == (to_datetime(T0), to_datetime(T0))
    assert by_kind["rsi"][6] == {
        "period": 14, "rsi": "71.5", "close": "45000.5", "avg_gain": "12.25", "avg_loss": "4.875",
    }  # fmt: skip
    assert by_kind["spike"][3:5] == (to_datetime(T0), to_datetime(T0 + 60 * S))
    assert by_kind["spike"][6] == {
        "direction": "up", "change_pct": "2.5", "value": "46125", "base": "45000",
        "base_ts": "2026-01-01T00:00:00Z", "threshold": "2", "window": "1m",
    }  # fmt: skip
    join_values = rows[0][6]
    assert join_values["lag"] == 250_000_000
    assert join_values["left_price"] == "45000.5"
    assert join_values["left_ts"] == iso_time(left.ts)
    assert join_values["right_ts"] == iso_time(left.ts - 250_000_000)
    assert join_values["right_bids"] is None
    assert by_kind["late"][6] == {
        "watermark": "2026-01-01T00:01:30Z",
        "event": {
            "kind": "trade",
            # Every field of the event, whatever fields Trade has.
            **{
                f.name: json_value(getattr(late_trade, f.name), time=bool(f.metadata.get("time")))
                for f in attrs.fields(Trade)
            },
        },
    }
    assert by_kind["late"][6]["event"]["price"] == "44999"
    assert by_kind["late"][6]["event"]["trade_id"] == 9

    again = await run_sink(migrated_db, [[rsi, spike, *joined, late]])
    assert count(migrated_db, "window_results") == 5
    assert again.statistics().rows_duplicate == 5


# --------------------------------------------------------------------------- chain events

BIG = 2**255 + 7  # a uint256 no int8 can hold


def chain_events(*, confirmed: bool | None = None) -> list[Event]:
    """One event of each chain kind (and a second swap and transaction flavour)."""
    ts, recv = T0, T0 + 250_000_000
    common: dict[str, Any] = {"venue": "alchemy", "ts": ts, "recv_ts": recv, "confirmed": confirmed}
    mined: dict[str, Any] = {**common, "block_number": 100, "block_hash": h(100)}
    return [
        Block(symbol="ETH", number=100, hash=h(100), parent_hash=h(99), gas_used=15_000_000,
              gas_limit=30_000_000, base_fee=7_000_000_001, miner=ALICE, **common),
        Transaction(symbol="ETH", tx_hash=h(1), from_address=ALICE, to_address=None,
                    value_wei=BIG, value_eth=scale(BIG, 18), gas=21_000, nonce=5,
                    input="0xabcdef", pending=False, gas_price=30_000_000_000, tx_type=2,
                    tx_index=3, contract_address=BOB, status=1, **mined),
        Transaction(symbol="ETH", tx_hash=h(2), from_address=ALICE, to_address=BOB, value_wei=1,
                    value_eth=Decimal("1E-18"), gas=21_000, nonce=6, input="0x", pending=True,
                    max_fee_per_gas=BIG, max_priority_fee_per_gas=1, **common),
        Log(symbol=USDC, address=USDC, topics=(TRANSFER_TOPIC, h(5), h(6)), data="0x" + "00" * 32,
            tx_hash=h(1), log_index=7, tx_index=3, **mined),
        TokenTransfer(symbol="USDC", token=USDC, from_address=ALICE, to_address=BOB,
                      raw_amount=BIG, tx_hash=h(1), log_index=7, decimals=6,
                      amount=scale(BIG, 6), possible_spam=False, **mined),
        Swap(symbol=POOL, pool=POOL, protocol="uniswap_v3", sender=ALICE, recipient=BOB,
             amount0=-(2**200), amount1=BIG, tx_hash=h(1), log_index=8, sqrt_price_x96=2**159,
             liquidity=2**127, tick=-887_272, **mined),
        Swap(symbol=POOL, pool=POOL, protocol="uniswap_v2", sender=ALICE, recipient=BOB,
             amount0=-5, amount1=10, tx_hash=h(1), log_index=9, amount0_in=0, amount1_in=10,
             amount0_out=5, amount1_out=0, **mined),
    ]  # fmt: skip


CHAIN_QUERIES = {
    "blocks": "SELECT venue, chain, number, hash, parent_hash, ts, recv_ts, miner, gas_used,"
    " gas_limit, base_fee_per_gas, confirmed, removed FROM irisflow.blocks ORDER BY number",
    "transactions": "SELECT hash, status, block_number, block_hash, tx_index, from_address,"
    " to_address, value, value_eth, gas, gas_price, max_fee_per_gas, max_priority_fee_per_gas,"
    " nonce, tx_type, input, contract_address, receipt_status, confirmed, removed"
    " FROM irisflow.transactions ORDER BY hash",
    "logs": "SELECT chain, address, topics, data, tx_hash, log_index, block_number, block_hash,"
    " tx_index, ts, confirmed, removed FROM irisflow.logs",
    "token_transfers": "SELECT token, token_symbol, from_address, to_address, value, decimals,"
    " amount, possible_spam, block_number, block_hash, tx_hash, log_index, removed"
    " FROM irisflow.token_transfers",
    "swaps": "SELECT protocol, pool, sender, recipient, amount0, amount1, amount0_in, amount1_in,"
    " amount0_out, amount1_out, sqrt_price_x96, liquidity, tick, price, log_index, removed"
    " FROM irisflow.swaps ORDER BY log_index",
}


def chain_tables(dsn: str) -> dict[str, list[tuple[Any, ...]]]:
    return {name: fetch(dsn, query) for name, query in CHAIN_QUERIES.items()}


async def test_chain_kinds_round_trip_exactly(migrated_db: str) -> None:
    sink = await run_sink(migrated_db, [chain_events()])
    assert sink.statistics().rows_written == 7
    t, r = to_datetime(T0), to_datetime(T0 + 250_000_000)
    big = Decimal(BIG)
    assert chain_tables(migrated_db) == {
        "blocks": [
            ("alchemy", CHAIN, 100, h(100), h(99), t, r, ALICE, 15_000_000, 30_000_000,
             7_000_000_001, None, False),
        ],
        "transactions": [
            (h(1), "mined", 100, h(100), 3, ALICE, None, big, scale(BIG, 18), 21_000,
             30_000_000_000, None, None, 5, 2, "0xabcdef", BOB, 1, None, False),
            (h(2), "pending", None, None, None, ALICE, BOB, 1, Decimal("1E-18"), 21_000, None,
             big, 1, 6, None, "0x", None, None, None, False),
        ],
        "logs": [
            (CHAIN, USDC, [TRANSFER_TOPIC, h(5), h(6)], "0x" + "00" * 32, h(1), 7, 100, h(100),
             3, t, None, False),
        ],
        "token_transfers": [
            (USDC, "USDC", ALICE, BOB, big, 6, scale(BIG, 6), False, 100, h(100), h(1), 7,
             False),
        ],
        "swaps": [
            ("uniswap_v3", POOL, ALICE, BOB, -(2**200), big, None, None, None, None, 2**159,
             2**127, -887_272, None, 8, False),
            ("uniswap_v2", POOL, ALICE, BOB, -5, 10, 0, 10, 5, 0, None, None, None, None, 9,
             False),
        ],
    }  # fmt: skip


def retraction(e: Any, **changes: Any) -> Retraction:
    """The retraction an Alchemy reorg sends for ``e``."""
    fields = {
        "venue": e.venue, "symbol": e.symbol, "ts": T0 + 9 * S, "recv_ts": T0 + 9 * S,
        "target": e.kind, "tx_hash": e.tx_hash, "log_index": getattr(e, "log_index", None),
        "block_number": e.block_number, "block_hash": e.block_hash,
    }  # fmt: skip
    return Retraction(**{**fields, **changes})


def removed(dsn: str) -> dict[str, list[bool]]:
    return {
        table: [r[0] for r in fetch(dsn, f"SELECT removed FROM irisflow.{table} ORDER BY 1")]
        for table in ("logs", "token_transfers", "swaps", "transactions")
    }


async def test_a_retraction_after_its_row_in_the_same_batch_marks_it(migrated_db: str) -> None:
    events = chain_events()
    _, mined_tx, _, log, transfer, v3, _ = events
    marks = [retraction(e) for e in (log, transfer, v3, mined_tx)]
    # batch_rows=2: the rows before the marks go over several chunks, the marks only after.
    sink = await run_sink(migrated_db, [[*events, *marks]], batch_rows=2, max_buffered_rows=100)
    stats = sink.statistics()
    assert (stats.rows_written, stats.marks, stats.marks_unmatched) == (7, 4, 0)
    assert removed(migrated_db) == {
        "logs": [True],
        "token_transfers": [True],
        "swaps": [False, True],
        "transactions": [False, True],  # the pending one stays
    }


async def test_order_of_the_stream_decides(migrated_db: str) -> None:
    log = chain_events()[3]
    gone = retraction(log)
    # A retraction before its event matches nothing: the event that follows is live.
    sink = await run_sink(migrated_db, [[gone, log]])
    assert (sink.statistics().marks, sink.statistics().marks_unmatched) == (1, 1)
    assert removed(migrated_db)["logs"] == [False]
    # The reorg: removed. Its block canonical again (the same log comes again): live again.
    await run_sink(migrated_db, [[gone]])
    assert removed(migrated_db)["logs"] == [True]
    await run_sink(migrated_db, [[log], [gone], [log]], batch_rows=1)
    assert removed(migrated_db)["logs"] == [False]
    # A retraction naming another block leaves this row alone.
    other = retraction(log, block_hash=h(101))
    sink = await run_sink(migrated_db, [[other]])
    assert removed(migrated_db)["logs"] == [False]
    assert sink.statistics().marks_unmatched == 1


async def test_chain_replay_twice_stores_nothing_twice(migrated_db: str) -> None:
    events = chain_events(confirmed=False)
    marks = [retraction(events[3]), retraction(events[4])]
    batches = [events[:4], [*events[4:], *marks]]
    await run_sink(migrated_db, batches)
    after_first = chain_tables(migrated_db)
    second = await run_sink(migrated_db, batches)
    assert chain_tables(migrated_db) == after_first
    stats = second.statistics()
    # The replay lives the history again: the two retracted rows are unmarked by their events,
    # then marked by their retractions; everything else was already stored.
    assert (stats.rows_written, stats.rows_duplicate, stats.marks_unmatched) == (7, 5, 0)


async def test_alchemy_reorg_frames_end_to_end(migrated_db: str) -> None:
    decoder = AlchemyDecoder()
    tx = transaction(h(77), ALICE, BOB, 10**18, block_number=5, block_hash=h(5), tx_index=0)
    live = transfer_log(USDC, ALICE, BOB, 2_500_000, log_index=3, block_number=5)
    frames = [
        notification("0xaa", live),
        notification("0xbb", {"removed": False, "transaction": tx}),
        notification("0xaa", {**live, "removed": True}),
        notification("0xbb", {"removed": True, "transaction": tx}),
    ]
    events: list[Event] = []
    decoder.decode_batch([f.encode() for f in frames], T0, events, [])
    assert [e.kind for e in events] == [
        "log", "token_transfer", "transaction", "retraction", "retraction", "retraction",
    ]  # fmt: skip
    sink = await run_sink(migrated_db, [events])
    assert (sink.statistics().marks, sink.statistics().marks_unmatched) == (3, 0)
    assert removed(migrated_db) == {
        "logs": [True], "token_transfers": [True], "swaps": [], "transactions": [True],
    }  # fmt: skip


def confirmed(dsn: str) -> dict[str, list[Any]]:
    return {
        table: [r[0] for r in fetch(dsn, f"SELECT confirmed FROM irisflow.{table}")]
        for table in ("blocks", "transactions", "token_transfers")
    }


async def test_moralis_confirmation_end_to_end(migrated_db: str) -> None:
    def body(is_confirmed: bool) -> bytes:
        return encode_body(
            webhook_body(
                confirmed=is_confirmed,
                block_number=1001,
                timestamp=T0 // S,
                txs=[moralis_tx(h(1), ALICE, BOB, 10**18)],
                erc20_transfers=[
                    moralis_erc20_transfer(USDC, ALICE, BOB, 2_500_000, tx_hash=h(1), log_index=4)
                ],
            )
        )

    decoder = MoralisDecoder()
    first: list[Event] = []
    decoder.decode_batch([body(False)], T0 + 1, first, [])
    later: list[Event] = []
    decoder.decode_batch([body(True)], T0 + 2, later, [])
    assert [e.kind for e in first] == ["block", "transaction", "token_transfer"]
    assert len(later) == 3
    assert all(isinstance(e, Confirmation) for e in later)

    await run_sink(migrated_db, [first])
    assert confirmed(migrated_db) == {
        "blocks": [False], "transactions": [False], "token_transfers": [False],
    }  # fmt: skip
    sink = await run_sink(migrated_db, [later])
    assert (sink.statistics().marks, sink.statistics().marks_unmatched) == (3, 0)
    assert confirmed(migrated_db) == {
        "blocks": [True], "transactions": [True], "token_transfers": [True],
    }  # fmt: skip
    # Replaying the recording (unconfirmed copies, then the confirmations) changes nothing,
    # and an unconfirmed copy never takes a confirmation back.
    again = await run_sink(migrated_db, [first, later])
    assert confirmed(migrated_db)["transactions"] == [True]
    assert (count(migrated_db, "blocks"), count(migrated_db, "transactions")) == (1, 1)
    assert again.statistics().rows_duplicate == 3


# --------------------------------------------------------------------------- internal txs,
# approvals, NFT transfers (0012)

GAME = "0x" + "e1" * 20


def newer_events(*, confirmed: bool | None = None) -> list[Event]:
    """Two internal transactions of one transaction, two approvals, an ERC-721 transfer and
    an ERC-1155 batch of two ids under one log index."""
    ts, recv = T0, T0 + 250_000_000
    common: dict[str, Any] = {"venue": "moralis", "ts": ts, "recv_ts": recv, "confirmed": confirmed}
    mined: dict[str, Any] = {**common, "block_number": 200, "block_hash": h(200)}
    return [
        InternalTransaction(symbol="ETH", tx_hash=h(1), internal_index=0, from_address=POOL,
                            to_address=ALICE, value_wei=BIG, value_eth=scale(BIG, 18), gas=2300,
                            **mined),
        InternalTransaction(symbol="ETH", tx_hash=h(1), internal_index=1, from_address=POOL,
                            to_address=None, value_wei=1, value_eth=Decimal("1E-18"), **mined),
        TokenApproval(symbol="USDC", token=USDC, owner=ALICE, spender=POOL, raw_amount=2**256 - 1,
                      tx_hash=h(1), log_index=3, decimals=6, amount=scale(2**256 - 1, 6),
                      possible_spam=False, **mined),
        TokenApproval(symbol=GAME, token=GAME, owner=BOB, spender=POOL, raw_amount=0,
                      tx_hash=h(2), log_index=4, **mined),
        NftTransfer(symbol="PUNK", contract=GAME, standard="erc721", from_address=ALICE,
                    to_address=BOB, token_id=BIG, amount=1, tx_hash=h(2), log_index=5,
                    token_name="Punks", token_symbol="punk", **mined),
        *(
            NftTransfer(symbol=GAME, contract=GAME, standard="erc1155", from_address=ALICE,
                        to_address=BOB, token_id=token_id, amount=amount, tx_hash=h(2),
                        log_index=6, operator=POOL, **mined)
            for token_id, amount in ((10, 5), (11, 2**70))
        ),
    ]  # fmt: skip


NEWER_QUERIES = {
    "internal_transactions": "SELECT venue, chain, tx_hash, internal_index, block_number,"
    " block_hash, ts, recv_ts, from_address, to_address, value, value_eth, gas, confirmed,"
    " removed FROM irisflow.internal_transactions ORDER BY internal_index",
    "token_approvals": "SELECT token, token_symbol, owner, spender, value, decimals, amount,"
    " possible_spam, block_number, block_hash, tx_hash, log_index, ts, confirmed, removed"
    " FROM irisflow.token_approvals ORDER BY log_index",
    "nft_transfers": "SELECT contract, standard, operator, from_address, to_address, token_id,"
    " amount, token_name, token_symbol, block_number, block_hash, tx_hash, log_index, ts,"
    " confirmed, removed FROM irisflow.nft_transfers ORDER BY log_index, token_id",
}


def newer_tables(dsn: str) -> dict[str, list[tuple[Any, ...]]]:
    return {name: fetch(dsn, query) for name, query in NEWER_QUERIES.items()}


async def test_newer_chain_kinds_round_trip_exactly(migrated_db: str) -> None:
    events = newer_events(confirmed=False)
    sink = await run_sink(migrated_db, [events])
    assert sink.statistics().rows_written == 7
    t, r = to_datetime(T0), to_datetime(T0 + 250_000_000)
    big, unlimited = Decimal(BIG), Decimal(2**256 - 1)
    assert newer_tables(migrated_db) == {
        "internal_transactions": [
            ("moralis", CHAIN, h(1), 0, 200, h(200), t, r, POOL, ALICE, big, scale(BIG, 18),
             2300, False, False),
            ("moralis", CHAIN, h(1), 1, 200, h(200), t, r, POOL, None, 1, Decimal("1E-18"),
             None, False, False),
        ],
        "token_approvals": [
            (USDC, "USDC", ALICE, POOL, unlimited, 6, scale(2**256 - 1, 6), False, 200, h(200),
             h(1), 3, t, False, False),
            (GAME, GAME, BOB, POOL, 0, None, None, None, 200, h(200), h(2), 4, t, False, False),
        ],
        "nft_transfers": [
            (GAME, "erc721", None, ALICE, BOB, big, 1, "Punks", "punk", 200, h(200), h(2), 5, t,
             False, False),
            (GAME, "erc1155", POOL, ALICE, BOB, 10, 5, None, None, 200, h(200), h(2), 6, t,
             False, False),
            (GAME, "erc1155", POOL, ALICE, BOB, 11, 2**70, None, None, 200, h(200), h(2), 6, t,
             False, False),
        ],
    }  # fmt: skip
    # Stored exactly: 2**256 - 1 scaled by 6 keeps every digit.
    assert str(newer_tables(migrated_db)["token_approvals"][0][6]).endswith("129.639935")
    # A replay stores nothing twice; a confirmed copy only sets confirmed.
    again = await run_sink(migrated_db, [events])
    assert again.statistics().rows_duplicate == 7
    await run_sink(migrated_db, [newer_events(confirmed=True)])
    tables = newer_tables(migrated_db)
    assert sum(len(rows) for rows in tables.values()) == 7
    assert {row[-2] for rows in tables.values() for row in rows} == {True}


def newer_removed(dsn: str) -> dict[str, list[tuple[Any, ...]]]:
    return {
        "internal_transactions": fetch(
            dsn, "SELECT internal_index, removed FROM irisflow.internal_transactions ORDER BY 1"
        ),
        "token_approvals": fetch(
            dsn, "SELECT log_index, removed FROM irisflow.token_approvals ORDER BY 1"
        ),
        "nft_transfers": fetch(
            dsn, "SELECT log_index, token_id, removed FROM irisflow.nft_transfers ORDER BY 1, 2"
        ),
    }


async def test_retractions_mark_the_newer_kinds_by_natural_key(migrated_db: str) -> None:
    events = newer_events()
    second_internal, usdc_approval, batch = events[1], events[2], events[5]
    marks = [
        retraction(second_internal, log_index=1),  # names internal_index 1 alone
        retraction(usdc_approval),
        retraction(batch),  # the batch log: both of its token ids
        retraction(events[4], block_hash=h(201)),  # another block: nothing
    ]
    sink = await run_sink(migrated_db, [[*events, *marks]], batch_rows=3, max_buffered_rows=100)
    stats = sink.statistics()
    assert (stats.rows_written, stats.marks, stats.marks_unmatched) == (7, 4, 1)
    assert newer_removed(migrated_db) == {
        "internal_transactions": [(0, False), (1, True)],
        "token_approvals": [(3, True), (4, False)],
        "nft_transfers": [(5, BIG, False), (6, 10, True), (6, 11, True)],
    }
    # The events again (their block canonical again): live again.
    await run_sink(migrated_db, [events])
    assert all(not row[-1] for rows in newer_removed(migrated_db).values() for row in rows)


async def test_alchemy_approval_and_erc721_reorg_end_to_end(migrated_db: str) -> None:
    decoder = AlchemyDecoder()
    approval = approval_log(USDC, ALICE, POOL, 10**6, log_index=1, block_number=8)
    nft = erc721_transfer_log(GAME, ALICE, BOB, 77, log_index=2, block_number=8)
    frames = [
        notification("0xaa", approval),
        notification("0xaa", nft),
        notification("0xaa", {**approval, "removed": True}),
    ]
    events: list[Event] = []
    decoder.decode_batch([f.encode() for f in frames], T0, events, [])
    assert [e.kind for e in events] == [
        "log", "approval", "log", "nft_transfer", "retraction", "retraction",
    ]  # fmt: skip
    sink = await run_sink(migrated_db, [events])
    assert (sink.statistics().marks, sink.statistics().marks_unmatched) == (2, 0)
    assert newer_removed(migrated_db) == {
        "internal_transactions": [],
        "token_approvals": [(1, True)],
        "nft_transfers": [(2, 77, False)],
    }
    assert fetch(migrated_db, "SELECT confirmed FROM irisflow.nft_transfers") == [(None,)]


async def test_moralis_confirmations_of_the_newer_kinds_end_to_end(migrated_db: str) -> None:
    def body(is_confirmed: bool) -> bytes:
        return encode_body(
            webhook_body(
                confirmed=is_confirmed,
                block_number=3000,
                timestamp=T0 // S,
                txs_internal=[
                    moralis_internal_tx(h(1), POOL, ALICE, 10**18),
                    moralis_internal_tx(h(1), POOL, BOB, 10**18),
                ],
                erc20_approvals=[
                    moralis_erc20_approval(USDC, ALICE, POOL, 1, tx_hash=h(1), log_index=2)
                ],
                nft_transfers=[
                    moralis_nft_transfer(GAME, ALICE, BOB, i, tx_hash=h(1), log_index=3,
                                         standard="ERC1155", amount=2, operator=ALICE)
                    for i in (1, 2)
                ],
            )
        )  # fmt: skip

    decoder = MoralisDecoder()
    first: list[Event] = []
    decoder.decode_batch([body(False)], T0 + 1, first, [])
    later: list[Event] = []
    decoder.decode_batch([body(True)], T0 + 2, later, [])
    assert [e.kind for e in first] == [
        "block", "internal_tx", "internal_tx", "approval", "nft_transfer", "nft_transfer",
    ]  # fmt: skip
    assert [(e.target, e.log_index) for e in later] == [  # type: ignore[attr-defined]
        ("block", None), ("internal_tx", 0), ("internal_tx", 1), ("approval", 2),
        ("nft_transfer", 3),
    ]  # fmt: skip

    await run_sink(migrated_db, [first])
    assert all(row[-2] is False for rows in newer_tables(migrated_db).values() for row in rows)
    sink = await run_sink(migrated_db, [later])
    assert (sink.statistics().marks, sink.statistics().marks_unmatched) == (5, 0)
    tables = newer_tables(migrated_db)
    assert [len(rows) for rows in tables.values()] == [2, 1, 2]
    assert all(row[-2] is True for rows in tables.values() for row in rows)


# --------------------------------------------------------------------------- books, alerts


def book(depth: int, update_id: int | None = 71234560060) -> Book:
    levels = tuple((Decimal(94000 - i), Decimal(i + 1)) for i in range(depth))
    return Book("binance", "BTCUSDT", T0, T0 + 5, update_id, levels, levels)


async def test_book_depths_of_one_update_are_both_kept(migrated_db: str) -> None:
    batches = [[book(5), book(10)], [book(10, update_id=None), book(10)]]
    sink = await run_sink(migrated_db, batches)
    assert sink.statistics().rows_duplicate == 1
    rows = fetch(
        migrated_db,
        "SELECT update_id, depth, cardinality(bid_prices), ask_qtys[10] FROM irisflow.books"
        " ORDER BY depth, update_id",
    )
    assert rows == [
        (71234560060, 5, 5, None),
        (71234560060, 10, 10, Decimal(10)),
        (None, 10, 10, Decimal(10)),  # Kraken and Polygon books have no update id
    ]
    await run_sink(migrated_db, batches)
    assert count(migrated_db, "books") == 3


def alert(n: int) -> Alert:
    return Alert("binance", "BTCUSDT", T0 + n, T0 + n + 1, "whale", "warning", f"whale {n}",
                 f"whale:{n:024x}")  # fmt: skip


async def test_alerts_stay_the_outboxs_one_row_per_alert_and_chat(migrated_db: str) -> None:
    # --db --store output with an alert rule: the run has both sinks, on the same output.
    batch: list[Event] = [alert(1), alert(2), trade(0, "1", trade_id=1)]
    pg = PostgresSink(migrated_db, **FAST)
    alerts = AlertSink(None, dsn=migrated_db)  # no Telegram: the outbox stores them
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            channels = []
            for sink in (pg, alerts):
                send, receive = trio.open_memory_channel[list[Event]](4)
                await nursery.start(sink.run, receive)
                channels.append(send)
            for send in channels:
                async with send:
                    await send.send(batch)
                    await send.send(batch)  # a replay
    assert pg.statistics().events_skipped == 4
    assert pg.statistics().rows_written == 2
    ids = [r[0] for r in fetch(migrated_db, "SELECT id FROM irisflow.alerts ORDER BY id")]
    assert ids == [f"{alert(1).key}|", f"{alert(2).key}|"]


# --------------------------------------------------------------------------- migrations


@pytest.mark.parametrize("applied", [6, 11, 12])
async def test_an_outdated_schema_is_a_usage_error(empty_db: str, applied: int) -> None:
    await trio.to_thread.run_sync(lambda: migrate(empty_db, to=applied))
    sink = PostgresSink(empty_db, **FAST)
    _, receive = trio.open_memory_channel[Sequence[Event]](0)
    with (
        trio.fail_after(DEADLINE),
        pytest.raises(UsageError, match=r"lacks migrations up to 0013.*run `irisflow migrate`"),
    ):
        await sink.run(receive)


def test_rows_stored_before_the_new_keys_are_kept(empty_db: str) -> None:
    migrate(empty_db, to=6)
    fetch(
        empty_db,
        "INSERT INTO irisflow.books VALUES ('binance', 'BTCUSDT', '2026-01-01Z', '2026-01-01Z',"
        " 5, '{3,2,1}', '{1,1,1}', '{4,5}', '{1,1}');"
        " INSERT INTO irisflow.window_results (kind, venue, key, window_start, window_end, ts,"
        " \"values\") VALUES ('ohlc', 'binance', 'BTCUSDT', '2026-01-01Z', '2026-01-01 00:01Z',"
        " '2026-01-01 00:01Z', '{\"open\": \"1\"}');"
        " INSERT INTO irisflow.blocks (venue, chain, number, hash, parent_hash, ts, recv_ts)"
        " VALUES ('alchemy', 'eth', 7, '0x07', '0x06', '2026-01-01Z', '2026-01-01Z')",
    )
    migrate(empty_db)
    assert fetch(empty_db, "SELECT update_id, depth, bid_prices FROM irisflow.books") == [
        (5, 3, [Decimal(3), Decimal(2), Decimal(1)])
    ]
    assert fetch(
        empty_db, 'SELECT kind, symbol, key, spec, "values" FROM irisflow.window_results'
    ) == [("ohlc", "", "BTCUSDT", "", {"open": "1"})]
    assert fetch(
        empty_db, "SELECT number, hash, parent_hash, confirmed, removed FROM irisflow.blocks"
    ) == [(7, "0x07", "0x06", None, False)]
    # The old tables stay, renamed, for an operator to drop once satisfied.
    assert fetch_one(empty_db, "SELECT count(*) FROM irisflow.books_0001") == 1


# --------------------------------------------------------------------------- optional ids (0010)

MARKET = ["trades", "quotes", "candles", "tickers", "books", "book_updates", "gaps"]


def market_counts(dsn: str) -> dict[str, int]:
    return {table: count(dsn, table) for table in MARKET}


def id_less_events() -> list[Event]:
    """One of every market kind with every optional field None, as venues emit them."""
    d = Decimal
    head: dict[str, Any] = {"venue": "polygon", "symbol": "X:BTCUSD", "ts": T0, "recv_ts": T0 + 5}
    kraken: dict[str, Any] = {**head, "venue": "kraken", "symbol": "BTC/USD"}
    level = ((d("94000.1"), d("0.5")),)
    return [
        # Polygon crypto trades without an id: two trades of one instant are two rows.
        Trade(**head, price=d("94000"), qty=d("0.1"), side="buy", trade_id=None),
        Trade(**head, price=d("94000.5"), qty=d("0.1"), side="buy", trade_id=None),
        # Polygon forex quotes carry no sizes.
        Quote(**{**head, "symbol": "EUR/USD"}, bid_price=d("1.1"), bid_qty=None,
              ask_price=d("1.2"), ask_qty=None),
        Candle(**head, interval="1m", start=T0 - 60 * S, end=T0, open=d(1), high=d(2),
               low=d(1), close=d(2), volume=d(3), quote_volume=None, trades=None),
        # Binance: a mini ticker and a full ticker of the same second.
        Ticker("binance", "BTCUSDT", T0, T0 + 5, "24h", d("94000"), d("93000"), d("95000"),
               d("92000"), d("100"), d("9400000")),
        Ticker("binance", "BTCUSDT", T0, T0 + 6, "24h", d("94000"), d("93000"), d("95000"),
               d("92000"), d("100"), d("9400000"), d("1000"), d("1.07"), d("93900"),
               d("93999"), d("1"), d("94001"), d("2"), 12345),
        # Kraken books and diffs have no update ids; two diffs of one instant are two rows.
        Book(**kraken, update_id=None, bids=level, asks=level),
        BookUpdate(**kraken, first_update_id=None, last_update_id=None, bids=level, asks=()),
        BookUpdate(**kraken, first_update_id=None, last_update_id=None, bids=(), asks=level),
        Gap(venue="kraken", symbol="*", ts=T0, recv_ts=T0, streams=("book",), start=T0 - S,
            end=T0, cause="connection closed (1006)"),
    ]  # fmt: skip


async def test_every_kind_with_its_optional_fields_missing_is_stored_once(
    migrated_db: str,
) -> None:
    events = id_less_events()
    first = await run_sink(migrated_db, [events])
    stats = first.statistics()
    assert (stats.rows_written, stats.rows_rejected, stats.last_error) == (len(events), 0, None)
    assert market_counts(migrated_db) == {
        "trades": 2, "quotes": 1, "candles": 1, "tickers": 2, "books": 1, "book_updates": 2,
        "gaps": 1,
    }  # fmt: skip
    assert fetch(migrated_db, "SELECT trade_id FROM irisflow.trades") == [(None,), (None,)]
    assert fetch(migrated_db, "SELECT bid_qty, ask_qty FROM irisflow.quotes") == [(None, None)]
    assert fetch(migrated_db, "SELECT vwap IS NULL, trades FROM irisflow.tickers ORDER BY 1") == [
        (False, 12345),
        (True, None),
    ]
    # Replayed (one by one, so each goes through its own chunk): every row is a duplicate.
    second = await run_sink(migrated_db, [[e] for e in reversed(events)], batch_rows=1)
    assert market_counts(migrated_db)["trades"] == 2
    assert sum(market_counts(migrated_db).values()) == len(events)
    assert second.statistics().rows_duplicate == len(events)
    assert second.statistics().rows_rejected == 0


async def test_kraken_book_updates_without_ids_are_stored_not_bisected(migrated_db: str) -> None:
    # Before 0010 every one of them was refused: each chunk bisected down to single rows.
    updates = [
        BookUpdate("kraken", "BTC/USD", T0 + i * 1000, T0 + i * 1000, None, None,
                   ((Decimal(94000 + i % 50), Decimal(i % 7)),), ())
        for i in range(5000)
    ]  # fmt: skip
    updates += updates[:100]  # a reconnect's overlap
    sink = await run_sink(migrated_db, [updates[i : i + 1000] for i in range(0, 5100, 1000)])
    stats = sink.statistics()
    assert (stats.rows_written, stats.rows_duplicate, stats.rows_rejected) == (5100, 100, 0)
    assert count(migrated_db, "book_updates") == 5000


async def test_a_trade_and_an_aggtrade_with_one_number_are_two_rows(migrated_db: str) -> None:
    fill = trade(1, "94000", trade_id=77)
    agg = attrs.evolve(fill, aggregate=True)  # Binance aggTrade: its id is an aggregate id
    await run_sink(migrated_db, [[fill, agg]])
    again = await run_sink(migrated_db, [[agg], [fill]], batch_rows=1)
    assert fetch(migrated_db, "SELECT trade_id, aggregate FROM irisflow.trades ORDER BY 2") == [
        (77, False),
        (77, True),
    ]
    assert again.statistics().rows_duplicate == 2
