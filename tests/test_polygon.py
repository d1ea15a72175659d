"""Polygon/Massive: decoder (venues.md §2.5 examples), plan, and sessions against FakePolygon."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

import irisflow.venues.polygon  # noqa: F401  (registers the venue until venues/__init__ does)
from irisflow._cli import app
from irisflow._errors import DecodeError, UsageError, VenueError
from irisflow._events import Book, Candle, Event, Gap, Quote, Trade
from irisflow._pipeline import Pipeline
from irisflow._run import Runner
from irisflow._venue import FeedOptions, Plan, VenueParams, get_venue
from irisflow.testing._polygon import (
    EXAMPLE_CRYPTO_FRAME,
    EXAMPLE_FOREX_FRAME,
    EXAMPLE_STOCKS_FRAME,
    FakePolygon,
    crypto_trade,
)
from irisflow.testing._sinks import ListSink
from irisflow.venues.polygon import POLYGON, PolygonDecoder

KEY = "TEST_KEY_123"
RECV = 1767225600500000000
MS = 1_000_000
FAST = FeedOptions(backoff_initial=0.01, backoff_cap=0.05, stale_timeout=30, ack_timeout=5)
CRYPTO = VenueParams(market="crypto")


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MASSIVE_API_KEY", raising=False)
    monkeypatch.setenv("POLYGON_API_KEY", KEY)


def decode(
    *frames: bytes, decoder: PolygonDecoder | None = None
) -> tuple[list[Event], list[tuple[int, DecodeError]]]:
    out: list[Event] = []
    errors: list[tuple[int, DecodeError]] = []
    (decoder or PolygonDecoder()).decode_batch(list(frames), RECV, out, errors)
    return out, errors


# -- decoding -------------------------------------------------------------------------------


def test_crypto_trade_and_quote_from_the_constructed_example() -> None:
    events, errors = decode(EXAMPLE_CRYPTO_FRAME)
    assert errors == []
    assert events == [
        Trade(
            venue="polygon",
            symbol="BTC-USD",
            ts=1767225600412 * MS,
            recv_ts=RECV,
            price=Decimal("94251.37"),
            qty=Decimal("0.01842"),
            side="buy",  # c [2]: buy side
            trade_id=582211934,
        ),
        Quote(
            venue="polygon",
            symbol="BTC-USD",
            ts=1767225600415 * MS,
            recv_ts=RECV,
            bid_price=Decimal("94250.12"),
            bid_qty=Decimal("0.35"),
            ask_price=Decimal("94251.4"),
            ask_qty=Decimal("1.204"),
        ),
    ]
    assert str(events[0].price) == "94251.37"  # type: ignore[attr-defined]


def test_stocks_minute_aggregate_and_trade_from_the_constructed_example() -> None:
    (candle, trade), errors = decode(EXAMPLE_STOCKS_FRAME)
    assert errors == []
    assert candle == Candle(
        venue="polygon",
        symbol="AAPL",
        ts=1767278580000 * MS,
        recv_ts=RECV,
        interval="1m",
        start=1767278520000 * MS,
        end=1767278580000 * MS,
        open=Decimal("242.85"),
        high=Decimal("242.97"),
        low=Decimal("242.8"),
        close=Decimal("242.93"),
        volume=Decimal("18342"),
    )
    assert trade == Trade(
        venue="polygon",
        symbol="AAPL",
        ts=1767278580012 * MS,
        recv_ts=RECV,
        price=Decimal("242.935"),
        qty=Decimal("100"),
        side="unknown",  # SIP trades do not name the aggressor
        trade_id=71675,
    )


def test_forex_quote_and_aggregate_from_the_constructed_example() -> None:
    (quote, candle), errors = decode(EXAMPLE_FOREX_FRAME)
    assert errors == []
    assert quote == Quote(
        venue="polygon",
        symbol="EUR/USD",  # from "p" on C events
        ts=1767225600123 * MS,
        recv_ts=RECV,
        bid_price=Decimal("1.08649"),
        bid_qty=None,
        ask_price=Decimal("1.08652"),
        ask_qty=None,
    )
    assert isinstance(candle, Candle)
    assert (candle.symbol, candle.interval, candle.start, candle.end) == (
        "EUR/USD",
        "1m",
        1767225540000 * MS,
        1767225600000 * MS,
    )
    assert (candle.open, candle.close, candle.volume) == (
        Decimal("1.0864"),
        Decimal("1.08651"),
        Decimal("412"),
    )


def test_crypto_aggregates_book_and_sell_side() -> None:
    frame = (
        b'[{"ev":"XA","pair":"ETH-USD","o":3301.1,"c":3302.4,"h":3302.9,"l":3300.8,'
        b'"v":951.6112,"vw":3301.9,"s":1767225540000,"e":1767225600000,"z":3},'
        b'{"ev":"XAS","pair":"ETH-USD","o":3302,"c":3302.5,"h":3302.5,"l":3302,"v":0.5,'
        b'"vw":3302.2,"s":1767225600000,"e":1767225601000,"z":1},'
        b'{"ev":"XL2","pair":"BTC-USD","b":[[94250.1,0.5],[94250.5,1.25]],'
        b'"a":[[94251.0,0.1]],"t":1767225600200,"x":1,"r":1767225600210},'
        b'{"ev":"XT","pair":"BTC-USD","p":94250.1,"t":1767225600300,"s":2,"c":[1],"x":1}]'
    )
    (minute, second, book, trade), errors = decode(frame)
    assert errors == []
    assert isinstance(minute, Candle)
    assert isinstance(second, Candle)
    assert (minute.interval, minute.volume, second.interval) == ("1m", Decimal("951.6112"), "1s")
    assert book == Book(
        venue="polygon",
        symbol="BTC-USD",
        ts=1767225600200 * MS,
        recv_ts=RECV,
        update_id=None,
        bids=((Decimal("94250.5"), Decimal("1.25")), (Decimal("94250.1"), Decimal("0.5"))),
        asks=((Decimal("94251.0"), Decimal("0.1")),),
    )
    assert isinstance(trade, Trade)
    assert (trade.side, trade.trade_id, trade.qty) == ("sell", None, Decimal("2"))


def test_stock_quote_second_aggregate_and_forex_second_aggregate() -> None:
    frame = (
        b'[{"ev":"Q","sym":"MSFT","bx":4,"bp":414.1,"bs":3,"ax":7,"ap":414.12,"as":5,"c":0,'
        b'"i":[604],"t":1767278580100,"q":50385480,"z":3},'
        b'{"ev":"A","sym":"MSFT","v":200,"av":8000,"op":413,"vw":414.11,"o":414.1,"c":414.12,'
        b'"h":414.12,"l":414.1,"a":413.9,"z":100,"s":1767278580000,"e":1767278581000},'
        b'{"ev":"CAS","pair":"USD/JPY","o":157.1,"c":157.11,"h":157.12,"l":157.09,"v":33,'
        b'"s":1767225600000}]'
    )
    (quote, agg, fx), errors = decode(frame)
    assert errors == []
    assert quote == Quote(
        "polygon",
        "MSFT",
        1767278580100 * MS,
        RECV,
        Decimal("414.1"),
        Decimal("3"),
        Decimal("414.12"),
        Decimal("5"),
    )
    assert isinstance(agg, Candle)
    assert (agg.interval, agg.end) == ("1s", 1767278581000 * MS)
    assert isinstance(fx, Candle)
    assert fx.end == (1767225600000 + 1000) * MS


def test_status_frames_decode_to_nothing_and_unknown_events_are_counted() -> None:
    decoder = PolygonDecoder()
    events, errors = decode(
        b'[{"ev":"status","status":"connected","message":"Connected Successfully"}]',
        b'[{"ev":"FMV","fmv":1.5,"sym":"AAPL","t":1},{"ev":"XT","pair":"BTC-USD","p":1,"s":1,"t":1}]',
        b'[{"ev":"LULD","T":"AAPL"},{"ev":"FMV","fmv":1,"sym":"X","t":2}]',
        decoder=decoder,
    )
    assert errors == []
    assert len(events) == 1
    assert isinstance(events[0], Trade)
    assert decoder.skipped == {"FMV": 2, "LULD": 1}


def test_numbers_a_double_cannot_hold_stay_exact() -> None:
    frame = b'[{"ev":"XT","pair":"BTC-USD","p":0.10000000000000001,"s":12345678.123456789,"t":1}]'
    (trade,), _ = decode(frame)
    assert isinstance(trade, Trade)
    assert trade.price == Decimal("0.10000000000000001")
    assert trade.qty == Decimal("12345678.123456789")


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (b"[{not json", "invalid JSON"),
        (b"[" * 5000 + b"12345678901234567890" + b"]" * 5000, "invalid JSON"),
        (b'{"ev":"XT"}', "expected an array of events @ $"),
        (b'[{"ev":"XT","pair":"BTC-USD","s":1,"t":1}]', "missing field @ $[0].p"),
        (
            b'[{"ev":"XT","pair":"BTC-USD","p":"1","s":1,"t":1}]',
            "expected a number, got '1' @ $[0].p",
        ),
        (b'[{"ev":"T","sym":"AAPL","p":1,"s":1,"t":1.5}]', "expected an integer, got 1.5 @ $[0].t"),
        (b'[{"ev":"status"},{"pair":"X"}]', "missing field @ $[1].ev"),
        (b'[{"ev":"XL2","pair":"X","b":[[1]],"a":[],"t":1}]', "@ $[0].b"),
        (b"[7]", "expected an object @ $[0]"),
    ],
)
def test_bad_frames_become_decode_errors_with_a_path(frame: bytes, message: str) -> None:
    events, errors = decode(EXAMPLE_CRYPTO_FRAME, frame, EXAMPLE_CRYPTO_FRAME)
    assert len(events) == 4  # the good frames around it still decode
    ((index, error),) = errors
    assert index == 1
    assert message in str(error)


@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_arbitrary_bytes_never_raise(frame: bytes) -> None:
    decode(frame)


_VALUES = (
    st.none()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5)
    | st.booleans()
)
_KEYS = (
    "pair",
    "sym",
    "p",
    "s",
    "t",
    "bp",
    "bs",
    "ap",
    "as",
    "o",
    "h",
    "l",
    "c",
    "v",
    "e",
    "b",
    "a",
    "i",
)
_EVS = ["XT", "XQ", "XA", "XAS", "XL2", "T", "Q", "A", "AM", "C", "CA", "status", "??"]


@given(
    st.lists(
        st.fixed_dictionaries(
            {"ev": st.sampled_from(_EVS)},
            optional={
                k: _VALUES | st.lists(st.lists(_VALUES, max_size=3), max_size=3) for k in _KEYS
            },
        ),
        max_size=4,
    )
)
def test_arbitrary_event_shapes_decode_or_fail_whole(items: list[dict[str, object]]) -> None:
    frame = json.dumps(items).encode()  # stdlib: orjson refuses ints past 64 bits
    events, errors = decode(frame)
    assert (events == [] and len(errors) == 1) or errors == []


# -- planning -------------------------------------------------------------------------------


def test_plan_defaults_to_crypto_trades_on_massive() -> None:
    plan = get_venue("polygon").plan(["btc-usd", "ETH/USD"], ["trade", "trades", "XQ"])
    assert plan.endpoint == "wss://socket.massive.com/crypto"
    assert plan.symbols == ("BTC-USD", "ETH-USD")
    assert plan.streams == ("XT.BTC-USD", "XT.ETH-USD", "XQ.BTC-USD", "XQ.ETH-USD")
    assert plan.kinds == {Trade, Quote}


def test_plan_maps_channels_per_market_and_spells_symbols() -> None:
    stocks = POLYGON.plan(
        ["aapl", "*"],
        ["trades", "quotes", "aggs", "aggs_second"],
        None,
        VenueParams(market="stocks"),
    )
    assert stocks.streams[::2] == ("T.AAPL", "Q.AAPL", "AM.AAPL", "A.AAPL")
    assert stocks.streams[1] == "T.*"
    forex = POLYGON.plan(["eur-usd", "GBPUSD"], ["quotes", "CA"], None, VenueParams(market="forex"))
    assert forex.streams == ("C.EUR/USD", "C.GBP/USD", "CA.EUR/USD", "CA.GBP/USD")
    options = POLYGON.plan(["AMC210827C00037000"], ["T"], None, VenueParams(market="options"))
    assert options.streams == ("T.O:AMC210827C00037000",)
    assert options.endpoint.endswith("/options")


def test_plan_old_polygon_host_and_delayed_feed() -> None:
    old = POLYGON.plan(["AAPL"], ["T"], "wss://socket.polygon.io", VenueParams(market="stocks"))
    assert old.endpoint == "wss://socket.polygon.io/stocks"
    delayed = POLYGON.plan(
        ["AAPL"], ["trades", "aggs"], None, VenueParams(market="stocks", delayed=True)
    )
    assert delayed.endpoint == "wss://delayed.massive.com/stocks"


@pytest.mark.parametrize(
    ("symbols", "channels", "params", "message"),
    [
        (
            ["AAPL"],
            ["book"],
            VenueParams(market="stocks"),
            "polygon channel 'book' is not offered on stocks; valid: trades, quotes, aggs,"
            " aggs_second, T, Q, AM, A",
        ),
        (["BTC-USD"], ["XT"], VenueParams(market="stocks"), "not offered on stocks"),
        (["EUR/USD"], ["trades"], VenueParams(market="forex"), "not offered on forex"),
        (["BTC-USD"], ["trdes"], CRYPTO, "unknown polygon channel 'trdes' for crypto"),
        (
            ["BTC-USD"],
            ["trades"],
            VenueParams(market="indices"),
            "unknown polygon market 'indices'; markets: crypto, stocks, options, forex",
        ),
        (["BTCUSD"], ["trades"], CRYPTO, "bad polygon crypto symbol 'BTCUSD': use e.g. BTC-USD"),
        (["EUR"], ["quotes"], VenueParams(market="forex"), "bad polygon forex symbol"),
        (
            ["BTC-USD"],
            ["trades"],
            VenueParams(market="crypto", delayed=True),
            "the delayed feed does not carry XT",
        ),
        (["AAPL"], ["quotes"], VenueParams(market="stocks", delayed=True), "does not carry Q"),
        ([], ["trades"], CRYPTO, "no symbols given"),
        (["BTC-USD"], [], CRYPTO, "no channels given"),
    ],
)
def test_plan_errors(
    symbols: list[str], channels: list[str], params: VenueParams, message: str
) -> None:
    with pytest.raises(UsageError) as info:
        POLYGON.plan(symbols, channels, None, params)
    assert message in str(info.value)


def test_missing_key_names_both_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POLYGON_API_KEY")
    with pytest.raises(UsageError, match="set POLYGON_API_KEY \\(or MASSIVE_API_KEY\\)"):
        POLYGON.plan(["BTC-USD"], ["trades"])
    monkeypatch.setenv("MASSIVE_API_KEY", "other")
    assert POLYGON.plan(["BTC-USD"], ["trades"]).streams == ("XT.BTC-USD",)


def test_channel_info_lists_every_channel_and_the_credentials() -> None:
    names = [info.name for info in POLYGON.channel_info()]
    assert names[:5] == ["trades", "quotes", "aggs", "aggs_second", "book"]
    assert "POLYGON_API_KEY" in POLYGON.credentials[0]


def test_irisflow_venues_lists_channels_kinds_and_credentials() -> None:
    result = CliRunner().invoke(app, ["venues", "polygon"])
    assert result.exit_code == 0, result.output
    for name in ("trades", "aggs_second", "<prefix>"):
        assert name in result.output
    assert "POLYGON_API_KEY" in result.output


# -- sessions against the fake --------------------------------------------------------------


@pytest.fixture
async def fake() -> AsyncIterator[FakePolygon]:
    server = FakePolygon()
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        yield server
        nursery.cancel_scope.cancel()


def plan_for(
    fake: FakePolygon,
    channels: tuple[str, ...] = ("trades",),
    symbols: tuple[str, ...] = ("BTC-USD",),
) -> Plan:
    return POLYGON.plan(symbols, channels, fake.url, CRYPTO)


async def start_watch(
    nursery: trio.Nursery, runner: Runner, plan: Plan, options: FeedOptions = FAST
) -> trio.Event:
    done = trio.Event()

    async def go() -> None:
        await runner.watch([plan], options)
        done.set()

    nursery.start_soon(go)
    return done


def a_trade(n: int) -> dict[str, object]:
    return crypto_trade(
        "BTC-USD", 94250 + n, 0.5, time_ms=1767225600000 + n, conditions=[2], trade_id=str(n)
    )


async def test_session_authenticates_subscribes_and_streams(fake: FakePolygon) -> None:
    with trio.fail_after(10):
        sink = ListSink()
        runner = Runner(Pipeline(), sinks=[sink])
        plan = plan_for(
            fake,
            (
                "trades",
                "quotes",
            ),
            (
                "BTC-USD",
                "ETH-USD",
            ),
        )
        async with trio.open_nursery() as nursery:
            done = await start_watch(nursery, runner, plan)
            await fake.wait_subscribed("XQ.ETH-USD")
            await fake.publish(
                [a_trade(1), {"ev": "XT", "pair": "DOGE-USD", "p": 1, "s": 1, "t": 1}]
            )
            await fake.publish([a_trade(2)])
            await sink.wait_for(2)
            runner.stop()
            await done.wait()
    assert [e.trade_id for e in sink.events] == [1, 2]  # type: ignore[attr-defined]
    assert fake.handshakes == ["/crypto"]
    assert fake.requests == [
        {"action": "auth", "params": KEY},
        {"action": "subscribe", "params": "XT.BTC-USD,XT.ETH-USD,XQ.BTC-USD,XQ.ETH-USD"},
    ]


async def test_acks_in_one_frame_and_wildcards(fake: FakePolygon) -> None:
    fake.acks_in_one_frame = True
    with trio.fail_after(10):
        sink = ListSink()
        runner = Runner(Pipeline(), sinks=[sink])
        async with trio.open_nursery() as nursery:
            done = await start_watch(
                nursery,
                runner,
                plan_for(
                    fake,
                    (
                        "XT",
                        "XQ",
                    ),
                    ("*",),
                ),
            )
            await fake.wait_subscribed("XQ.*")
            await fake.publish([a_trade(1), crypto_trade("SOL-USD", 150, 2, time_ms=5)])
            await sink.wait_for(2)
            runner.stop()
            await done.wait()
    assert [e.symbol for e in sink.events] == ["BTC-USD", "SOL-USD"]


async def test_bad_key_is_fatal_and_never_retried(
    fake: FakePolygon, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POLYGON_API_KEY", "WRONG_SECRET_KEY")
    runner = Runner(Pipeline(), sinks=[ListSink()])
    with trio.fail_after(10), pytest.raises(VenueError) as info:
        await runner.watch([plan_for(fake)], FAST)
    assert "polygon rejected the API key (auth_failed: authentication failed)" in str(info.value)
    assert "WRONG_SECRET_KEY" not in str(info.value)
    assert fake.connections_total == 1
    assert [r["action"] for r in fake.requests] == ["auth"]


async def test_auth_timeout_is_a_clear_error(autojump_clock: trio.testing.MockClock) -> None:
    autojump_clock.autojump_threshold = 0.02
    fake = FakePolygon(auth_timeout=2.0, answer_auth=False)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(fake.serve)
            with pytest.raises(VenueError, match="auth_timeout"):
                await Runner(Pipeline()).watch([plan_for(fake)], FAST)
            nursery.cancel_scope.cancel()
    assert fake.connections_total == 1


async def test_max_connections_at_start_is_fatal(fake: FakePolygon) -> None:
    fake.max_connections = 0
    with trio.fail_after(10), pytest.raises(VenueError) as info:
        await Runner(Pipeline()).watch([plan_for(fake)], FAST)
    assert "(max_connections)" in str(info.value)
    assert "one connection per market" in str(info.value)
    assert fake.connections_total == 1


async def test_max_connections_on_a_reconnect_is_retried(fake: FakePolygon) -> None:
    with trio.fail_after(10):
        sink = ListSink()
        runner = Runner(Pipeline(), sinks=[sink])
        async with trio.open_nursery() as nursery:
            done = await start_watch(nursery, runner, plan_for(fake))
            await fake.wait_subscribed("XT.BTC-USD")
            fake.max_connections = 0  # the venue still counts the old connection
            await fake.drop_all()
            await fake.wait_until(lambda: fake.connections_total >= 3)
            fake.max_connections = 1
            await fake.wait_subscribed("XT.BTC-USD")
            await fake.publish([a_trade(7)])
            await sink.wait_for(2)
            runner.stop()
            await done.wait()
    gap, trade = sink.events
    assert isinstance(gap, Gap)
    assert isinstance(trade, Trade)
    assert runner.status.feeds[0].reconnects >= 2


async def test_refused_subscription_is_fatal_with_the_venue_message(fake: FakePolygon) -> None:
    fake.refuse["XL2.BTC-USD"] = "not authorized: XL2.BTC-USD"
    with trio.fail_after(10), pytest.raises(VenueError) as info:
        await Runner(Pipeline()).watch([plan_for(fake, ("book",))], FAST)
    assert "polygon refused the subscription: not authorized: XL2.BTC-USD (error)" in str(
        info.value
    )
    assert fake.connections_total == 1


async def test_drop_reconnects_reauthenticates_resubscribes_and_emits_a_gap(
    fake: FakePolygon,
) -> None:
    with trio.fail_after(10):
        sink = ListSink()
        runner = Runner(Pipeline(), sinks=[sink])
        async with trio.open_nursery() as nursery:
            done = await start_watch(nursery, runner, plan_for(fake))
            await fake.wait_subscribed("XT.BTC-USD")
            await fake.publish([a_trade(1)])
            await sink.wait_for(1)
            await fake.drop_all()
            await fake.wait_subscribed("XT.BTC-USD")
            await fake.publish([a_trade(2)])
            await sink.wait_for(3)
            runner.stop()
            await done.wait()
    first, gap, second = sink.events
    assert isinstance(gap, Gap)
    assert gap.streams == ("XT.BTC-USD",)
    assert (first.trade_id, second.trade_id) == (1, 2)  # type: ignore[attr-defined]
    assert fake.connections_total == 2
    assert [r["action"] for r in fake.requests] == ["auth", "subscribe", "auth", "subscribe"]


async def test_close_code_reconnects(fake: FakePolygon) -> None:
    with trio.fail_after(10):
        sink = ListSink()
        runner = Runner(Pipeline(), sinks=[sink])
        async with trio.open_nursery() as nursery:
            done = await start_watch(nursery, runner, plan_for(fake))
            await fake.wait_subscribed("XT.BTC-USD")
            await fake.close_all(1011, "internal error")
            await fake.wait_subscribed("XT.BTC-USD")
            await sink.wait_for(1)
            runner.stop()
            await done.wait()
    (gap,) = sink.events
    assert isinstance(gap, Gap)
    assert "1011" in gap.cause


async def test_the_key_is_never_recorded_or_shown(
    fake: FakePolygon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "S3CRET-KEY-must-not-leak"
    fake.api_keys = frozenset({secret})
    monkeypatch.setenv("POLYGON_API_KEY", secret)
    recording = tmp_path / "rec.jsonl"
    plan = plan_for(fake)
    with trio.fail_after(10):
        runner = Runner(Pipeline(), sinks=[ListSink()], record=recording)
        async with trio.open_nursery() as nursery:
            done = await start_watch(nursery, runner, plan)
            await fake.wait_subscribed("XT.BTC-USD")
            await fake.publish([a_trade(1)])
            await fake.drop_all()
            await fake.wait_subscribed("XT.BTC-USD")
            runner.stop()
            await done.wait()
    assert fake.requests[0] == {"action": "auth", "params": secret}  # it was sent...
    text = recording.read_text()
    assert "auth_success" in text
    assert "XT" in text
    assert secret not in text  # ...but never recorded
    assert secret not in repr(plan)
    assert secret not in "".join(str(f.statistics()) for f in runner.status.feeds)


async def test_a_quiet_market_is_pinged_not_reconnected(
    fake: FakePolygon, autojump_clock: trio.testing.MockClock
) -> None:
    # Polygon sends no heartbeats: silence past the stale timeout earns a ping, and the pong
    # keeps the connection; no gap, no second connection.
    autojump_clock.autojump_threshold = 0.02
    with trio.fail_after(600):
        sink = ListSink()
        runner = Runner(Pipeline(), sinks=[sink])
        options = FeedOptions(backoff_initial=0.01, backoff_cap=0.05, stale_timeout=30)
        async with trio.open_nursery() as nursery:
            done = await start_watch(nursery, runner, plan_for(fake), options)
            await fake.wait_subscribed("XT.BTC-USD")
            await trio.sleep(200)  # virtual time: several stale periods of silence
            await fake.publish([a_trade(1)])
            await sink.wait_for(1)
            runner.stop()
            await done.wait()
    assert [e.kind for e in sink.events] == ["trade"]
    assert runner.status.feeds[0].reconnects == 0
