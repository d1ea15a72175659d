"""Kraken v2: decoder (venues.md §6.2 example), checksum, plan, and FakeKraken sessions."""

from __future__ import annotations

import json
import zlib
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

import irisflow.venues.kraken  # noqa: F401  (registers the venue until venues/__init__ does)
from irisflow._cli import app
from irisflow._errors import DecodeError, UsageError, VenueError
from irisflow._events import Book, BookUpdate, Candle, Event, Gap, Ticker, Trade
from irisflow._pipeline import Pipeline
from irisflow._run import Runner
from irisflow._venue import FeedOptions, Plan, get_venue
from irisflow.testing import _kraken as kraken_fake
from irisflow.testing._kraken import EXAMPLE_TRADE_UPDATE, FakeKraken, dumps, kraken_trade
from irisflow.testing._sinks import ListSink
from irisflow.venues.kraken import KRAKEN, KrakenDecoder, book_checksum

RECV = 1767225602000000000
FAST = FeedOptions(backoff_initial=0.01, backoff_cap=0.05, stale_timeout=30, ack_timeout=5)


def decode(
    *frames: bytes, decoder: KrakenDecoder | None = None
) -> tuple[list[Event], list[tuple[int, DecodeError]]]:
    out: list[Event] = []
    errors: list[tuple[int, DecodeError]] = []
    (decoder or KrakenDecoder()).decode_batch(list(frames), RECV, out, errors)
    return out, errors


def trades_frame(kind: str, *ids: int) -> bytes:
    data = [kraken_trade("BTC/USD", n, f"9424{n}.5", "0.10000000") for n in ids]
    return dumps({"channel": "trade", "type": kind, "data": data}).encode()


# -- decoding -------------------------------------------------------------------------------


def test_trade_from_the_constructed_example() -> None:
    (event,), errors = decode(EXAMPLE_TRADE_UPDATE)
    assert errors == []
    assert event == Trade(
        venue="kraken",
        symbol="BTC/USD",
        ts=1767225601_204519000,
        recv_ts=RECV,
        price=Decimal("94248.9"),
        qty=Decimal("0.0125"),
        side="sell",  # Kraken's side is the taker's
        trade_id=81234567,
    )


def test_ticker_derives_open_and_quote_volume() -> None:
    frame = (
        b'{"channel":"ticker","type":"snapshot","data":[{"symbol":"BTC/USD","bid":94250.0,'
        b'"bid_qty":1.5,"ask":94250.1,"ask_qty":0.25,"last":94250.1,"volume":1200.5,'
        b'"vwap":94000.25,"low":93000.0,"high":95000.0,"change":1250.1,"change_pct":1.34,'
        b'"timestamp":"2026-01-01T00:00:01.000000Z"}]}'
    )
    (event,), errors = decode(frame)
    assert errors == []
    assert event == Ticker(
        venue="kraken",
        symbol="BTC/USD",
        ts=1767225601 * 10**9,
        recv_ts=RECV,
        window="24h",
        last=Decimal("94250.1"),
        open=Decimal("93000.0"),
        high=Decimal("95000"),
        low=Decimal("93000"),
        volume=Decimal("1200.5"),
        quote_volume=Decimal("112847300.125"),
        change=Decimal("1250.1"),
        change_pct=Decimal("1.34"),
        vwap=Decimal("94000.25"),
        bid_price=Decimal("94250"),
        bid_qty=Decimal("1.5"),
        ask_price=Decimal("94250.1"),
        ask_qty=Decimal("0.25"),
    )


def test_ohlc_becomes_a_running_candle() -> None:
    frame = (
        b'{"channel":"ohlc","type":"update","timestamp":"2026-01-01T00:05:30.100000000Z",'
        b'"data":[{"symbol":"ETH/USD","open":3301.15,"high":3302.9,"low":3300.8,"close":3302.4,'
        b'"trades":188,"volume":41.7721,"vwap":3301.9,'
        b'"interval_begin":"2026-01-01T00:05:00.000000000Z","interval":5,'
        b'"timestamp":"2026-01-01T00:10:00.000000Z"}]}'
    )
    (event,), errors = decode(frame)
    assert errors == []
    assert event == Candle(
        venue="kraken",
        symbol="ETH/USD",
        ts=(1767225600 + 330) * 10**9 + 100_000_000,
        recv_ts=RECV,
        interval="5m",
        start=(1767225600 + 300) * 10**9,
        end=(1767225600 + 600) * 10**9,
        open=Decimal("3301.15"),
        high=Decimal("3302.9"),
        low=Decimal("3300.8"),
        close=Decimal("3302.4"),
        volume=Decimal("41.7721"),
        trades=188,
        closed=False,
    )


BOOK_SNAPSHOT = (
    b'{"channel":"book","type":"snapshot","data":[{"symbol":"BTC/USD",'
    b'"bids":[{"price":94249.5,"qty":0.75000000},{"price":94250.0,"qty":1.50000000}],'
    b'"asks":[{"price":94250.1,"qty":0.25000000}],"checksum":123}]}'
)


def test_book_snapshot_and_update() -> None:
    update = (
        b'{"channel":"book","type":"update","data":[{"symbol":"BTC/USD",'
        b'"bids":[{"price":94250.0,"qty":0.00000000}],"asks":[{"price":94250.2,"qty":3.0}],'
        b'"checksum":456,"timestamp":"2026-01-01T00:00:01.500000Z"}]}'
    )
    (book, diff), errors = decode(BOOK_SNAPSHOT, update)
    assert errors == []
    assert book == Book(
        venue="kraken",
        symbol="BTC/USD",
        ts=RECV,  # snapshots carry no time
        recv_ts=RECV,
        update_id=None,
        bids=((Decimal("94250.0"), Decimal("1.5")), (Decimal("94249.5"), Decimal("0.75"))),
        asks=((Decimal("94250.1"), Decimal("0.25")),),
    )
    assert diff == BookUpdate(
        venue="kraken",
        symbol="BTC/USD",
        ts=1767225601_500000000,
        recv_ts=RECV,
        first_update_id=None,
        last_update_id=None,
        bids=((Decimal("94250"), Decimal("0")),),
        asks=((Decimal("94250.2"), Decimal("3")),),
    )


def test_control_messages_decode_to_nothing() -> None:
    decoder = KrakenDecoder()
    events, errors = decode(
        b'{"channel":"status","type":"update","data":[{"api_version":"v2",'
        b'"connection_id":123456789012345678901,"system":"online","version":"2.0.10"}]}',
        b'{"channel":"heartbeat"}',
        b'{"method":"subscribe","result":{"channel":"trade","snapshot":true,"symbol":"BTC/USD"},'
        b'"success":true,"time_in":"x","time_out":"y","req_id":1}',
        b'{"method":"pong","req_id":2,"time_in":"x","time_out":"y"}',
        b'{"channel":"instrument","type":"snapshot","data":{}}',
        decoder=decoder,
    )
    assert (events, errors) == ([], [])
    assert decoder.skipped == {"instrument": 1}


def test_trade_snapshot_is_emitted_once() -> None:
    decoder = KrakenDecoder()
    first, _ = decode(trades_frame("snapshot", 1, 2), trades_frame("update", 3), decoder=decoder)
    again, _ = decode(trades_frame("snapshot", 1, 2, 3, 4), decoder=decoder)
    assert [t.trade_id for t in first] == [1, 2, 3]  # type: ignore[attr-defined]
    assert [t.trade_id for t in again] == [4]  # type: ignore[attr-defined]


def test_numbers_keep_their_precision() -> None:
    frame = trades_frame("update", 1).replace(b"0.10000000", b"12345678.123456789012")
    (event,), _ = decode(frame)
    assert event.qty == Decimal("12345678.123456789012")  # type: ignore[attr-defined]


def test_checksum_follows_krakens_recipe() -> None:
    # asks low to high, then bids high to low; '.' removed, leading zeros stripped.
    bids = [("94250.0", "1.50000000"), ("94249.5", "0.75000000")]
    asks = [("94250.1", "0.00100000"), ("94251.0", "2.00000000")]
    text = (
        "942501"
        + "100000"
        + "942510"
        + "200000000"
        + "942500"
        + "150000000"
        + "942495"
        + "75000000"
    )
    assert book_checksum(bids, asks) == zlib.crc32(text.encode())
    many = [(f"{100 + i}.0", "1.0") for i in range(15)]
    assert book_checksum(many, []) == book_checksum(many[:10], [])


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (b"{not json", "invalid JSON"),
        (b"[" * 5000 + b"12345678901234567890" + b"]" * 5000, "invalid JSON"),
        (b'{"data":[]}', "missing field @ $.channel"),
        (EXAMPLE_TRADE_UPDATE.replace(b'"price":94248.9,', b""), "missing field @ $.data[0].price"),
        (
            EXAMPLE_TRADE_UPDATE.replace(b"94248.9", b'"94248.9"'),
            "expected a number, got '94248.9' @ $.data[0].price",
        ),
        (
            EXAMPLE_TRADE_UPDATE.replace(b"81234567", b'"81234567"'),
            "expected an integer, got '81234567' @ $.data[0].trade_id",
        ),
        (EXAMPLE_TRADE_UPDATE.replace(b'"sell"', b'"short"'), "bad value in trade message"),
        (BOOK_SNAPSHOT.replace(b'"snapshot"', b'"delta"'), "unknown book message type"),
        (b'{"channel":"trade","type":"update","data":{}}', "expected a list @ $.data"),
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


_LEAF = (
    st.none()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6)
    | st.booleans()
)
_KEYS = [
    *("symbol", "side", "price", "qty", "trade_id", "timestamp", "bid", "bid_qty", "ask"),
    *("ask_qty", "last", "volume", "vwap", "low", "high", "change", "change_pct", "open"),
    *("close", "interval", "interval_begin", "bids", "asks", "checksum"),
]


@given(
    st.sampled_from(["trade", "ticker", "ohlc", "book", "heartbeat", "x"]),
    st.sampled_from(["snapshot", "update", "?"]),
    st.lists(
        st.dictionaries(
            st.sampled_from(_KEYS),
            _LEAF | st.lists(st.dictionaries(st.sampled_from(["price", "qty"]), _LEAF), max_size=2),
        ),
        max_size=3,
    ),
)
def test_arbitrary_payload_shapes_decode_or_fail_whole(
    channel: str, kind: str, data: list[object]
) -> None:
    frame = json.dumps({"channel": channel, "type": kind, "data": data}).encode()
    events, errors = decode(frame)
    assert (events == [] and len(errors) == 1) or errors == []


# -- planning -------------------------------------------------------------------------------


def test_plan_spells_symbols_and_channels() -> None:
    plan = get_venue("kraken").plan(["btc-usd", "ETH/USD"], ["trades", "ohlc_1h", "book", "ticker"])
    assert plan.endpoint == "wss://ws.kraken.com/v2"
    assert plan.symbols == ("BTC/USD", "ETH/USD")
    assert plan.channels == ("trade", "ohlc_60", "book_10", "ticker")
    assert plan.streams[:3] == ("trade:BTC/USD", "trade:ETH/USD", "ohlc_60:BTC/USD")
    assert plan.kinds == {Trade, Candle, Book, BookUpdate, Ticker}
    assert KRAKEN.plan(["BTC/USD"], ["ohlc", "ohlc_5", "book_25"], "ws://127.0.0.1:9").endpoint == (
        "ws://127.0.0.1:9/v2"
    )


@pytest.mark.parametrize(
    ("symbols", "channels", "message"),
    [
        (["BTC/USD"], ["ohlc_2m"], "unknown ohlc interval '2m' in kraken channel 'ohlc_2m'"),
        (
            ["BTC/USD"],
            ["book_20"],
            "unknown book depth '20' in kraken channel 'book_20'; depths: 10, 25, 100, 500, 1000",
        ),
        (["BTC/USD"], ["book", "book_25"], "pick one kraken book depth"),
        (["BTC/USD"], ["spread"], "unknown kraken channel 'spread'"),
        (["BTCUSD"], ["trade"], "bad kraken symbol 'BTCUSD': use BASE/QUOTE"),
        ([], ["trade"], "no symbols given"),
        (["BTC/USD"], [], "no channels given"),
    ],
)
def test_plan_errors(symbols: list[str], channels: list[str], message: str) -> None:
    with pytest.raises(UsageError) as info:
        KRAKEN.plan(symbols, channels)
    assert message in str(info.value)


def test_irisflow_venues_lists_channels_kinds_and_credentials() -> None:
    result = CliRunner().invoke(app, ["venues", "kraken"])
    assert result.exit_code == 0, result.output
    for name in ("ohlc[_<interval>]", "book[_<depth>]"):
        assert name in result.output
    assert "credentials: none" in result.output


# -- sessions against the fake --------------------------------------------------------------


@pytest.fixture
async def fake() -> AsyncIterator[FakeKraken]:
    server = FakeKraken()
    server.set_book(
        "BTC/USD",
        bids=[(f"{94250 - i}.0", "1.00000000") for i in range(12)],
        asks=[(f"{94251 + i}.0", "0.50000000") for i in range(12)],
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        yield server
        nursery.cancel_scope.cancel()


def plan_for(fake: FakeKraken, *channels: str) -> Plan:
    return KRAKEN.plan(["BTC/USD"], list(channels), fake.url)


async def start_watch(nursery: trio.Nursery, runner: Runner, plan: Plan) -> trio.Event:
    done = trio.Event()

    async def go() -> None:
        await runner.watch([plan], FAST)
        done.set()

    nursery.start_soon(go)
    return done


async def test_subscribes_per_channel_and_streams(fake: FakeKraken) -> None:
    with trio.fail_after(10):
        sink = ListSink()
        runner = Runner(Pipeline(), sinks=[sink])
        async with trio.open_nursery() as nursery:
            done = await start_watch(nursery, runner, plan_for(fake, "trade", "book"))
            await fake.wait_subscribed("book", "BTC/USD")
            await sink.wait_for(1)  # the book snapshot
            await fake.publish_trades([kraken_trade("BTC/USD", 1, "94250.5", "0.1")])
            await fake.publish_book("BTC/USD", bids=[("94250.0", "0")])  # the 11th bid moves up
            await fake.publish_book("BTC/USD", asks=[("94250.5", "0.20000000")])
            await sink.wait_for(4)
            runner.stop()
            await done.wait()
    assert fake.requests == [
        {
            "method": "subscribe",
            "params": {"channel": "trade", "symbol": ["BTC/USD"], "snapshot": True},
            "req_id": 1,
        },
        {
            "method": "subscribe",
            "params": {"channel": "book", "symbol": ["BTC/USD"], "depth": 10},
            "req_id": 2,
        },
    ]
    book, new_trade, removal, insert = sink.events
    assert isinstance(book, Book)
    assert len(book.bids) == 10
    assert isinstance(new_trade, Trade)
    assert isinstance(removal, BookUpdate)
    assert removal.bids == ((Decimal("94240"), Decimal("1")), (Decimal("94250"), Decimal("0")))
    assert isinstance(insert, BookUpdate)
    assert runner.status.feeds[0].reconnects == 0  # every checksum matched
    assert runner.status.feeds[0].last_error == ""  # and verification stayed on


async def test_refused_symbol_is_fatal_and_not_retried(fake: FakeKraken) -> None:
    fake.symbols = frozenset({"ETH/USD"})
    with trio.fail_after(10), pytest.raises(VenueError) as info:
        await Runner(Pipeline()).watch([plan_for(fake, "ticker")], FAST)
    assert "kraken refused ticker for BTC/USD: Currency pair not supported BTC/USD" in str(
        info.value
    )
    assert fake.connections_total == 1


async def test_checksum_mismatch_resyncs_and_emits_a_gap(fake: FakeKraken) -> None:
    with trio.fail_after(10):
        sink = ListSink()
        runner = Runner(Pipeline(), sinks=[sink])
        async with trio.open_nursery() as nursery:
            done = await start_watch(nursery, runner, plan_for(fake, "book"))
            await sink.wait_for(1)
            await fake.publish_book("BTC/USD", bids=[("94249.0", "2.00000000")], bad_checksum=True)
            await sink.wait_for(3)
            runner.stop()
            await done.wait()
    snapshot, gap, again = sink.events
    assert isinstance(snapshot, Book)
    assert isinstance(gap, Gap)
    assert gap.cause.startswith("kraken book checksum mismatch for BTC/USD")
    assert gap.streams == ("book_10:BTC/USD",)
    assert isinstance(again, Book)
    assert (Decimal("94249"), Decimal("2")) in again.bids
    assert fake.connections_total == 2


async def test_unreproducible_snapshot_checksum_turns_verification_off(
    fake: FakeKraken, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A venue that drops trailing zeros on the wire: the snapshot's checksum cannot match.
    fake.set_book("BTC/USD", bids=[("94250.0", "1.5")], asks=[("94251.0", "0.5")])
    real_checksum = kraken_fake._checksum_of
    monkeypatch.setattr(kraken_fake, "_checksum_of", lambda b, a: real_checksum(b, a) ^ 7)
    with trio.fail_after(10):
        sink = ListSink()
        runner = Runner(Pipeline(), sinks=[sink])
        async with trio.open_nursery() as nursery:
            done = await start_watch(nursery, runner, plan_for(fake, "book"))
            await sink.wait_for(1)
            await fake.publish_book("BTC/USD", bids=[("94249.0", "2")])
            await sink.wait_for(2)
            runner.stop()
            await done.wait()
    assert [type(e) for e in sink.events] == [Book, BookUpdate]
    assert fake.connections_total == 1
    assert "verification is off" in runner.status.feeds[0].last_error


async def test_reconnect_resubscribes_and_snapshot_trades_are_not_duplicated(
    fake: FakeKraken,
) -> None:
    fake.add_recent_trades(
        [kraken_trade("BTC/USD", 1, "94250.1", "0.1"), kraken_trade("BTC/USD", 2, "94250.2", "0.1")]
    )
    with trio.fail_after(10):
        sink = ListSink()
        runner = Runner(Pipeline(), sinks=[sink])
        async with trio.open_nursery() as nursery:
            done = await start_watch(nursery, runner, plan_for(fake, "trade"))
            await sink.wait_for(2)
            await fake.publish_trades([kraken_trade("BTC/USD", 3, "94250.3", "0.1")])
            await sink.wait_for(3)
            await fake.drop_all()
            fake.add_recent_trades([kraken_trade("BTC/USD", 4, "94250.4", "0.1")])
            await fake.wait_subscribed("trade", "BTC/USD")
            await sink.wait_for(5)
            runner.stop()
            await done.wait()
    assert [e.trade_id if isinstance(e, Trade) else "gap" for e in sink.events] == [
        1,
        2,
        3,
        "gap",
        4,
    ]
    assert fake.connections_total == 2


async def test_heartbeats_keep_the_connection_and_silence_replaces_it(
    fake: FakeKraken, autojump_clock: trio.testing.MockClock
) -> None:
    autojump_clock.autojump_threshold = 0.02
    with trio.fail_after(300):  # virtual seconds
        sink = ListSink()
        runner = Runner(Pipeline(), sinks=[sink])
        async with trio.open_nursery() as nursery:
            done = await start_watch(nursery, runner, plan_for(fake, "trade"))
            await fake.wait_subscribed("trade", "BTC/USD")
            await trio.sleep(65)
            assert runner.status.feeds[0].reconnects == 0
            fake.stall()
            await fake.wait_until(lambda: fake.connections_total >= 2)
            fake.unstall()
            await sink.wait_for(1)
            runner.stop()
            await done.wait()
    (gap,) = sink.events
    assert isinstance(gap, Gap)
    assert gap.cause == "stale: no data for 30s"


async def test_close_code_reconnects_with_a_gap(fake: FakeKraken) -> None:
    with trio.fail_after(10):
        sink = ListSink()
        runner = Runner(Pipeline(), sinks=[sink])
        async with trio.open_nursery() as nursery:
            done = await start_watch(nursery, runner, plan_for(fake, "ticker"))
            await fake.wait_subscribed("ticker", "BTC/USD")
            await fake.close_all(1001, "going away")
            await fake.wait_subscribed("ticker", "BTC/USD")
            await sink.wait_for(1)
            runner.stop()
            await done.wait()
    (gap,) = sink.events
    assert isinstance(gap, Gap)
    assert "1001" in gap.cause
