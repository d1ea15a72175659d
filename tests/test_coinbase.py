"""Coinbase Advanced Trade: decoder (venues.md §6.1 example), plan, and FakeCoinbase sessions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import orjson
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

import irisflow.venues.coinbase  # noqa: F401  (registers the venue until venues/__init__ does)
from irisflow._cli import app
from irisflow._errors import DecodeError, UsageError, VenueError
from irisflow._events import Book, BookUpdate, Candle, Event, Gap, Quote, Trade
from irisflow._pipeline import Pipeline
from irisflow._run import Runner
from irisflow._venue import FeedOptions, Plan, get_venue
from irisflow.testing._coinbase import EXAMPLE_MARKET_TRADES, FakeCoinbase, market_trade
from irisflow.testing._sinks import ListSink
from irisflow.venues.coinbase import COINBASE, CoinbaseDecoder

RECV = 1767225601000000000
T0 = 1767225600_812345000  # 2026-01-01T00:00:00.812345Z
FAST = FeedOptions(backoff_initial=0.01, backoff_cap=0.05, stale_timeout=30, ack_timeout=5)


def envelope(channel: str, events: list[object], seq: int = 1) -> bytes:
    return orjson.dumps(
        {
            "channel": channel,
            "client_id": "",
            "timestamp": "2026-01-01T00:00:00.812345Z",
            "sequence_num": seq,
            "events": events,
        }
    )


def trades_frame(kind: str, *ids: int) -> bytes:
    trades = [market_trade("BTC-USD", n, f"9425{n}.5", "0.1", "SELL") for n in ids]
    return envelope("market_trades", [{"type": kind, "trades": trades}])


def decode(
    *frames: bytes, decoder: CoinbaseDecoder | None = None
) -> tuple[list[Event], list[tuple[int, DecodeError]]]:
    out: list[Event] = []
    errors: list[tuple[int, DecodeError]] = []
    (decoder or CoinbaseDecoder()).decode_batch(list(frames), RECV, out, errors)
    return out, errors


# -- decoding -------------------------------------------------------------------------------


def test_market_trade_from_the_constructed_example_takes_the_taker_side() -> None:
    (event,), errors = decode(EXAMPLE_MARKET_TRADES)
    assert errors == []
    assert event == Trade(
        venue="coinbase",
        symbol="BTC-USD",
        ts=1767225600_801122000,
        recv_ts=RECV,
        price=Decimal("94251.37"),
        qty=Decimal("0.00184"),
        side="sell",  # "BUY" is the maker's side: the taker sold
        trade_id=902314557,
    )


def test_ticker_becomes_a_quote() -> None:
    ticker = {
        "type": "ticker",
        "product_id": "BTC-USD",
        "price": "94251.37",
        "volume_24_h": "15328.12345678",
        "low_24_h": "92500.00",
        "high_24_h": "95000.00",
        "low_52_w": "25000.00",
        "high_52_w": "108000.00",
        "price_percent_chg_24_h": "1.85",
        "best_bid": "94250.12",
        "best_bid_quantity": "0.35000000",
        "best_ask": "94251.40",
        "best_ask_quantity": "1.20400000",
    }
    (event,), errors = decode(envelope("ticker", [{"type": "update", "tickers": [ticker]}]))
    assert errors == []
    assert event == Quote(
        venue="coinbase",
        symbol="BTC-USD",
        ts=T0,
        recv_ts=RECV,
        bid_price=Decimal("94250.12"),
        bid_qty=Decimal("0.35"),
        ask_price=Decimal("94251.4"),
        ask_qty=Decimal("1.204"),
    )


def test_candles_are_five_minute_bars_never_marked_final() -> None:
    candle = {
        "start": "1767225600",
        "high": "94300.00",
        "low": "94200.00",
        "open": "94210.50",
        "close": "94251.37",
        "volume": "42.15000000",
        "product_id": "BTC-USD",
    }
    (event,), errors = decode(envelope("candles", [{"type": "snapshot", "candles": [candle]}]))
    assert errors == []
    assert event == Candle(
        venue="coinbase",
        symbol="BTC-USD",
        ts=T0,
        recv_ts=RECV,
        interval="5m",
        start=1767225600 * 10**9,
        end=(1767225600 + 300) * 10**9,
        open=Decimal("94210.50"),
        high=Decimal("94300"),
        low=Decimal("94200"),
        close=Decimal("94251.37"),
        volume=Decimal("42.15"),
        closed=False,
    )


def l2(side: str, price: str, qty: str) -> dict[str, str]:
    return {
        "side": side,
        "event_time": "2026-01-01T00:00:00.800000Z",
        "price_level": price,
        "new_quantity": qty,
    }


def test_level2_snapshot_and_update() -> None:
    snapshot = envelope(
        "l2_data",
        [
            {
                "type": "snapshot",
                "product_id": "BTC-USD",
                "updates": [
                    l2("bid", "94249.50", "0.75"),
                    l2("bid", "94250.00", "1.5"),
                    l2("offer", "94251.00", "0.5"),
                    l2("offer", "94250.50", "0.25"),
                ],
            }
        ],
        seq=7,
    )
    update = envelope(
        "l2_data",
        [
            {
                "type": "update",
                "product_id": "BTC-USD",
                "updates": [l2("bid", "94250.00", "0"), l2("offer", "94250.75", "2")],
            }
        ],
        seq=8,
    )
    (book, diff), errors = decode(snapshot, update)
    assert errors == []
    assert book == Book(
        venue="coinbase",
        symbol="BTC-USD",
        ts=T0,
        recv_ts=RECV,
        update_id=7,
        bids=((Decimal("94250.00"), Decimal("1.5")), (Decimal("94249.50"), Decimal("0.75"))),
        asks=((Decimal("94250.50"), Decimal("0.25")), (Decimal("94251.00"), Decimal("0.5"))),
    )
    assert diff == BookUpdate(
        venue="coinbase",
        symbol="BTC-USD",
        ts=T0,
        recv_ts=RECV,
        first_update_id=8,
        last_update_id=8,
        bids=((Decimal("94250"), Decimal("0")),),
        asks=((Decimal("94250.75"), Decimal("2")),),
    )


def test_control_channels_decode_to_nothing_and_unknown_channels_are_counted() -> None:
    decoder = CoinbaseDecoder()
    events, errors = decode(
        envelope(
            "heartbeats", [{"current_time": "2026-01-01 00:00:00+00:00", "heartbeat_counter": 3}]
        ),
        envelope("subscriptions", [{"subscriptions": {"market_trades": ["BTC-USD"]}}]),
        b'{"type":"error","message":"Failed to subscribe","reason":"BAD-USD is not a product"}',
        envelope("ticker_batch", []),
        envelope("status", [{"type": "snapshot", "products": []}]),
        decoder=decoder,
    )
    assert (events, errors) == ([], [])
    assert decoder.skipped == {"ticker_batch": 1}


def test_snapshot_trades_are_emitted_once_across_snapshots_and_updates() -> None:
    decoder = CoinbaseDecoder()
    first, _ = decode(trades_frame("snapshot", 2, 1), trades_frame("update", 3), decoder=decoder)
    again, _ = decode(trades_frame("snapshot", 4, 3, 2, 1), decoder=decoder)  # after a reconnect
    assert [t.trade_id for t in first] == [2, 1, 3]  # type: ignore[attr-defined]
    assert [t.trade_id for t in again] == [4]  # type: ignore[attr-defined]


def test_a_bad_frame_does_not_hide_its_trades_later() -> None:
    decoder = CoinbaseDecoder()
    bad = trades_frame("update", 5, 6).replace(b'"trade_id":"6"', b'"trade_id":"x6"')
    events, errors = decode(bad, decoder=decoder)
    assert events == []
    assert "numeric trade id" in str(errors[0][1])
    events, _ = decode(trades_frame("update", 5), decoder=decoder)
    assert [t.trade_id for t in events] == [5]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (b"{not json", "invalid JSON"),
        (b"[1]", "expected an object @ $"),
        (b'{"events":[]}', "missing field @ $.channel"),
        (
            EXAMPLE_MARKET_TRADES.replace(b'"price":"94251.37",', b""),
            "missing field @ $.events[0].trades[0].price",
        ),
        (
            EXAMPLE_MARKET_TRADES.replace(b'"94251.37"', b"94251.37"),
            "expected a string, got 94251.37 @ $.events[0].trades[0].price",
        ),
        (EXAMPLE_MARKET_TRADES.replace(b'"BUY"', b'"UP"'), "bad value in market_trades message"),
        (EXAMPLE_MARKET_TRADES.replace(b'"94251.37"', b'"NaN"'), "not a decimal number"),
        (
            EXAMPLE_MARKET_TRADES.replace(b"00.801122Z", b"00.801122"),
            "not an RFC 3339 time",
        ),
        (envelope("l2_data", [{"type": "update", "updates": []}]), "bad value in l2_data"),
    ],
)
def test_bad_frames_become_decode_errors_with_a_path(frame: bytes, message: str) -> None:
    events, errors = decode(trades_frame("update", 1), frame, trades_frame("update", 2))
    assert len(events) == 2
    ((index, error),) = errors
    assert index == 1
    assert message in str(error)


@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_arbitrary_bytes_never_raise(frame: bytes) -> None:
    decode(frame)


_LEAF = st.none() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=6) | st.booleans()


@given(
    st.sampled_from(["market_trades", "ticker", "candles", "l2_data", "heartbeats", "x"]),
    st.lists(
        st.dictionaries(
            st.sampled_from(["type", "trades", "tickers", "candles", "updates", "product_id"]),
            _LEAF
            | st.lists(
                st.dictionaries(
                    st.sampled_from(
                        [
                            "trade_id",
                            "product_id",
                            "price",
                            "size",
                            "side",
                            "time",
                            "start",
                            "open",
                            "high",
                            "low",
                            "close",
                            "volume",
                            "price_level",
                            "new_quantity",
                            "best_bid",
                            "best_ask",
                        ]
                    ),
                    _LEAF,
                ),
                max_size=3,
            ),
        ),
        max_size=3,
    ),
)
def test_arbitrary_payload_shapes_decode_or_fail_whole(channel: str, events: list[object]) -> None:
    out, errors = decode(envelope(channel, events))
    assert (out == [] and len(errors) == 1) or errors == []


# -- planning -------------------------------------------------------------------------------


def test_plan_streams_aliases_and_kinds() -> None:
    plan = get_venue("coinbase").plan(["btc-usd", "ETH/USD"], ["trades", "book", "heartbeats"])
    assert plan.endpoint == "wss://advanced-trade-ws.coinbase.com"
    assert plan.channels == ("market_trades", "level2")
    assert plan.streams == (
        "market_trades:BTC-USD",
        "market_trades:ETH-USD",
        "level2:BTC-USD",
        "level2:ETH-USD",
    )
    assert plan.kinds == {Trade, Book, BookUpdate}


@pytest.mark.parametrize(
    ("symbols", "channels", "message"),
    [
        (["BTC-USD"], ["level3"], "unknown coinbase channel 'level3' (did you mean 'level2'?)"),
        (["BTC-USD"], ["heartbeats"], "no channels given"),
        (["BTCUSD"], ["ticker"], "bad coinbase product 'BTCUSD': use the venue's spelling"),
        ([], ["ticker"], "no products given"),
    ],
)
def test_plan_errors(symbols: list[str], channels: list[str], message: str) -> None:
    with pytest.raises(UsageError) as info:
        COINBASE.plan(symbols, channels)
    assert message in str(info.value)


def test_channel_info() -> None:
    assert [c.name for c in COINBASE.channel_info()] == [
        "market_trades",
        "ticker",
        "candles",
        "level2",
    ]
    assert COINBASE.credentials == ()


def test_irisflow_venues_lists_channels_kinds_and_credentials() -> None:
    result = CliRunner().invoke(app, ["venues", "coinbase"])
    assert result.exit_code == 0, result.output
    for name in ("market_trades", "candles", "level2"):
        assert name in result.output
    assert "credentials: none" in result.output


# -- sessions against the fake --------------------------------------------------------------


@pytest.fixture
async def fake() -> AsyncIterator[FakeCoinbase]:
    server = FakeCoinbase()
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        yield server
        nursery.cancel_scope.cancel()


def plan_for(fake: FakeCoinbase, *channels: str) -> Plan:
    return COINBASE.plan(["BTC-USD"], list(channels) or ["market_trades"], fake.url)


async def start_watch(nursery: trio.Nursery, runner: Runner, plan: Plan) -> trio.Event:
    done = trio.Event()

    async def go() -> None:
        await runner.watch([plan], FAST)
        done.set()

    nursery.start_soon(go)
    return done


def a_trade(n: int) -> dict[str, str]:
    return market_trade("BTC-USD", n, f"{94250 + n}", "0.5", "BUY")


async def test_subscribes_one_channel_per_message_with_heartbeats(fake: FakeCoinbase) -> None:
    fake.books["BTC-USD"] = {"bid": {"94250.00": "1"}, "offer": {"94251.00": "2"}}
    with trio.fail_after(10):
        sink = ListSink()
        runner = Runner(Pipeline(), sinks=[sink])
        async with trio.open_nursery() as nursery:
            done = await start_watch(nursery, runner, plan_for(fake, "market_trades", "level2"))
            await fake.wait_subscribed("level2", "BTC-USD")
            await sink.wait_for(1)  # the book snapshot
            await fake.publish_trades([a_trade(1)])
            await fake.publish_book("BTC-USD", [("bid", "94250.00", "0")])
            await sink.wait_for(3)
            runner.stop()
            await done.wait()
    assert fake.requests == [
        {"type": "subscribe", "product_ids": ["BTC-USD"], "channel": "heartbeats"},
        {"type": "subscribe", "product_ids": ["BTC-USD"], "channel": "market_trades"},
        {"type": "subscribe", "product_ids": ["BTC-USD"], "channel": "level2"},
    ]
    book, trade, update = sink.events
    assert isinstance(book, Book)
    assert book.bids == ((Decimal("94250"), Decimal("1")),)
    assert isinstance(trade, Trade)
    assert (trade.trade_id, trade.side) == (1, "sell")
    assert isinstance(update, BookUpdate)
    assert update.bids == ((Decimal("94250"), Decimal("0")),)


async def test_heartbeats_keep_a_quiet_connection_alive(
    fake: FakeCoinbase, autojump_clock: trio.testing.MockClock
) -> None:
    autojump_clock.autojump_threshold = 0.02
    with trio.fail_after(300):  # virtual seconds
        sink = ListSink()
        runner = Runner(Pipeline(), sinks=[sink])
        async with trio.open_nursery() as nursery:
            done = await start_watch(nursery, runner, plan_for(fake))
            await fake.wait_subscribed("market_trades", "BTC-USD")
            await trio.sleep(65)  # virtual: two stale timeouts without data, but heartbeats
            assert runner.status.feeds[0].reconnects == 0
            fake.stall()  # now nothing at all arrives: the connection goes stale
            await fake.wait_until(lambda: fake.connections_total >= 2)
            fake.unstall()
            await sink.wait_for(1)
            runner.stop()
            await done.wait()
    (gap,) = sink.events
    assert isinstance(gap, Gap)
    assert gap.cause == "stale: no data for 30s"


async def test_error_reply_is_fatal_and_not_retried(fake: FakeCoinbase) -> None:
    fake.products = frozenset({"ETH-USD"})
    with trio.fail_after(10), pytest.raises(VenueError) as info:
        await Runner(Pipeline()).watch([plan_for(fake)], FAST)
    assert (
        "coinbase refused the subscription: Failed to subscribe; BTC-USD is not a valid product"
        in str(info.value)
    )
    assert fake.connections_total == 1


async def test_reconnect_resubscribes_and_snapshot_trades_are_not_duplicated(
    fake: FakeCoinbase,
) -> None:
    fake.add_recent_trades([a_trade(1), a_trade(2)])
    with trio.fail_after(10):
        sink = ListSink()
        runner = Runner(Pipeline(), sinks=[sink])
        async with trio.open_nursery() as nursery:
            done = await start_watch(nursery, runner, plan_for(fake))
            await sink.wait_for(2)  # the snapshot's two trades
            await fake.publish_trades([a_trade(3)])
            await sink.wait_for(3)
            await fake.drop_all()
            fake.add_recent_trades([a_trade(4)])  # traded while irisflow was away
            await fake.wait_subscribed("market_trades", "BTC-USD")
            await sink.wait_for(5)
            await fake.publish_trades([a_trade(5)])
            await sink.wait_for(6)
            runner.stop()
            await done.wait()
    kinds = [e.trade_id if isinstance(e, Trade) else "gap" for e in sink.events]
    assert kinds == [2, 1, 3, "gap", 4, 5]
    assert fake.connections_total == 2


async def test_sequence_gap_resyncs_the_book_and_emits_a_gap(fake: FakeCoinbase) -> None:
    fake.books["BTC-USD"] = {"bid": {"94250.00": "1"}, "offer": {"94251.00": "2"}}
    with trio.fail_after(10):
        sink = ListSink()
        runner = Runner(Pipeline(), sinks=[sink])
        async with trio.open_nursery() as nursery:
            done = await start_watch(nursery, runner, plan_for(fake, "level2"))
            await sink.wait_for(1)
            fake.skip_sequence()  # a message was lost
            await fake.publish_book("BTC-USD", [("bid", "94249.00", "3")])
            await sink.wait_for(3)
            runner.stop()
            await done.wait()
    snapshot, gap, resync = sink.events
    assert isinstance(snapshot, Book)
    assert isinstance(gap, Gap)
    assert gap.cause.startswith("sequence gap: expected sequence_num")
    assert isinstance(resync, Book)  # the lost update is in the new snapshot
    assert resync.bids == ((Decimal("94250"), Decimal("1")), (Decimal("94249"), Decimal("3")))
    assert fake.connections_total == 2


def test_snapshot_trades_come_out_oldest_first() -> None:
    newest_first = [
        market_trade("BTC-USD", 3, "94003", "1", "BUY", time="2026-01-01T00:03:10Z"),
        market_trade("BTC-USD", 2, "94002", "1", "BUY", time="2026-01-01T00:02:10Z"),
        market_trade("BTC-USD", 1, "94001", "1", "BUY", time="2026-01-01T00:01:10Z"),
    ]
    frame = envelope("market_trades", [{"type": "snapshot", "trades": newest_first}])
    events, errors = decode(frame)
    assert errors == []
    assert [e.trade_id for e in events] == [1, 2, 3]  # type: ignore[attr-defined]
