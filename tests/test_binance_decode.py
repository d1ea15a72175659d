"""Binance frames -> events, from the constructed examples in shared/venues.md §1.8 and §1.6."""

from __future__ import annotations

from decimal import Decimal

import attrs
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from irisflow._errors import DecodeError, UsageError
from irisflow._events import Book, BookUpdate, Candle, Event, Quote, Ticker, Trade
from irisflow.venues._binance_decode import _trade
from irisflow.venues.binance import BINANCE, BinanceDecoder

RECV = 1767225600200000000
INT64 = st.integers(-(2**63), 2**63 - 1)

# venues.md §1.8, verbatim.
TRADE = (
    b'{"stream":"btcusdt@trade","data":{"e":"trade","E":1767225600123,"s":"BTCUSDT",'
    b'"t":5123456789,"p":"94250.01000000","q":"0.00530000","T":1767225600122,"m":false,"M":true}}'
)
DEPTH_UPDATE_RAW = (
    b'{"e":"depthUpdate","E":1767225600450,"s":"BTCUSDT","U":71234567890,"u":71234567902,'
    b'"b":[["94249.99000000","1.20450000"],["94249.50000000","0.00000000"]],'
    b'"a":[["94250.01000000","0.33100000"]]}'
)
KLINE_RAW = (
    b'{"e":"kline","E":1767225602000,"s":"ETHUSDT","k":{"t":1767225600000,"T":1767225659999,'
    b'"s":"ETHUSDT","i":"1m","f":2911000001,"L":2911000188,"o":"3301.15000000",'
    b'"c":"3302.40000000","h":"3302.90000000","l":"3300.80000000","v":"41.77210000","n":188,'
    b'"x":false,"q":"137910.55310000","V":"25.10000000","Q":"82866.10300000","B":"0"}}'
)
# Built from the field tables of §1.6.
AGG_TRADE = (
    b'{"stream":"ethusdt@aggTrade","data":{"e":"aggTrade","E":1767225600300,"s":"ETHUSDT",'
    b'"a":26129,"p":"3301.10000000","q":"2.50000000","f":100,"l":105,"T":1767225600299,'
    b'"m":true,"M":true}}'
)
MINI_TICKER = (
    b'{"stream":"btcusdt@miniTicker","data":{"e":"24hrMiniTicker","E":1767225601000,'
    b'"s":"BTCUSDT","c":"94250.01","o":"93000.00","h":"95000.00","l":"92500.00",'
    b'"v":"12345.6","q":"1160000000.5"}}'
)
TICKER = (
    b'{"stream":"btcusdt@ticker","data":{"e":"24hrTicker","E":1767225601000,"s":"BTCUSDT",'
    b'"p":"1250.01","P":"1.344","w":"93800.5","x":"92999.99","c":"94250.01","Q":"0.01",'
    b'"b":"94250.00","B":"1.5","a":"94250.02","A":"0.7","o":"93000.00","h":"95000.00",'
    b'"l":"92500.00","v":"12345.6","q":"1160000000.5","O":1767139201000,"C":1767225601000,'
    b'"F":5100000000,"L":5123456789,"n":23456789}}'
)
BOOK_TICKER = (
    b'{"stream":"btcusdt@bookTicker","data":{"u":400900217,"s":"BTCUSDT","b":"94250.00",'
    b'"B":"1.5","a":"94250.02","A":"0.7"}}'
)
DEPTH5 = (
    b'{"stream":"ethusdt@depth5@100ms","data":{"lastUpdateId":160,'
    b'"bids":[["3301.10","2.0"],["3301.00","1.5"]],"asks":[["3301.20","0.5"]]}}'
)


def decode(*frames: bytes) -> tuple[list[Event], list[tuple[int, DecodeError]]]:
    out: list[Event] = []
    errors: list[tuple[int, DecodeError]] = []
    BinanceDecoder().decode_batch(list(frames), RECV, out, errors)
    return out, errors


def test_trade_from_the_constructed_example() -> None:
    (event,), errors = decode(TRADE)
    assert errors == []
    assert event == Trade(
        venue="binance",
        symbol="BTCUSDT",
        ts=1767225600122_000_000,
        recv_ts=RECV,
        price=Decimal("94250.01000000"),
        qty=Decimal("0.00530000"),
        side="buy",  # m=false: the buyer was the taker
        trade_id=5123456789,
    )


def test_trade_built_in_place_is_a_whole_frozen_trade() -> None:
    """The trade route fills the instance itself: it must come out as Trade(...) would."""
    (event,), _ = decode(TRADE.replace(b'"m":false', b'"m":true'))
    assert type(event) is Trade
    assert attrs.asdict(event) == attrs.asdict(
        Trade("binance", "BTCUSDT", 1767225600122_000_000, RECV, event.price, event.qty, "sell",
              5123456789)
    )  # fmt: skip
    assert hash(event) == hash(attrs.evolve(event))
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        event.price = Decimal(1)  # type: ignore[misc]


def test_agg_trade_taker_sold_when_buyer_was_maker() -> None:
    (event,), _ = decode(AGG_TRADE)
    assert isinstance(event, Trade)
    assert (event.symbol, event.side, event.trade_id) == ("ETHUSDT", "sell", 26129)
    assert (event.aggregate, event.ts) == (True, 1767225600299 * 1_000_000)
    assert event.price == Decimal("3301.1")
    assert event.qty == Decimal("2.5")


def test_kline_raw_frame_routed_by_event_type() -> None:
    (event,), errors = decode(KLINE_RAW)
    assert errors == []
    assert event == Candle(
        venue="binance",
        symbol="ETHUSDT",
        ts=1767225602000_000_000,
        recv_ts=RECV,
        interval="1m",
        start=1767225600000_000_000,
        end=1767225659999_000_000,
        open=Decimal("3301.15"),
        high=Decimal("3302.90"),
        low=Decimal("3300.80"),
        close=Decimal("3302.40"),
        volume=Decimal("41.7721"),
        quote_volume=Decimal("137910.5531"),
        trades=188,
        closed=False,
    )


def test_depth_update_raw_frame() -> None:
    (event,), _ = decode(DEPTH_UPDATE_RAW)
    assert isinstance(event, BookUpdate)
    assert (event.first_update_id, event.last_update_id) == (71234567890, 71234567902)
    assert event.bids == (
        (Decimal("94249.99"), Decimal("1.2045")),
        (Decimal("94249.50"), Decimal("0")),
    )
    assert event.asks == ((Decimal("94250.01"), Decimal("0.331")),)


def test_tickers_full_and_mini() -> None:
    (mini, full), _ = decode(MINI_TICKER, TICKER)
    assert isinstance(mini, Ticker)
    assert isinstance(full, Ticker)
    assert mini.last == Decimal("94250.01")
    assert mini.vwap is None
    assert mini.trades is None
    assert full.change_pct == Decimal("1.344")
    assert full.vwap == Decimal("93800.5")
    assert (full.bid_price, full.ask_price, full.trades) == (
        Decimal("94250.00"),
        Decimal("94250.02"),
        23456789,
    )


def test_book_ticker_without_event_time_uses_receive_time() -> None:
    (event,), _ = decode(BOOK_TICKER)
    assert event == Quote(
        "binance",
        "BTCUSDT",
        RECV,
        RECV,
        Decimal("94250.00"),
        Decimal("1.5"),
        Decimal("94250.02"),
        Decimal("0.7"),
        400900217,
    )


def test_partial_depth_takes_symbol_from_stream_name() -> None:
    (event,), _ = decode(DEPTH5)
    assert isinstance(event, Book)
    assert (event.symbol, event.update_id, len(event.bids), len(event.asks)) == (
        "ETHUSDT",
        160,
        2,
        1,
    )


def test_control_replies_and_notices_decode_to_nothing() -> None:
    events, errors = decode(
        b'{"result":null,"id":7}',
        b'{"code":2,"msg":"Invalid request","id":8}',
        b'{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1767225600000}}',
    )
    assert (events, errors) == ([], [])


@settings(max_examples=300, deadline=None)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "e": st.sampled_from(["trade", "aggTrade", "other"]),
            "s": st.sampled_from(["BTCUSDT", "ETHUSDT"]) | st.integers(0, 9),
            "T": st.integers(0, 2**64 - 1) | st.floats(0, 1e13) | st.just("soon"),
            "p": st.sampled_from(["94250.01000000", "1e3", "NaN", "lots"]) | st.integers(0, 9),
            "q": st.sampled_from(["0.00530000", "2"]) | st.integers(0, 9),
            "m": st.booleans() | st.integers(0, 1) | st.none(),
            "t": st.integers(-(2**63), 2**64 - 1) | st.just("id"),
            "M": st.booleans(),
        },
    )
)
def test_trade_frames_decode_as_the_dict_route_decodes_their_payload(
    payload: dict[str, object],
) -> None:
    """Trade frames take msgspec's typed path; any frame it refuses takes the dict route, so
    every payload decodes (or fails) exactly as the dict route alone decodes it."""
    events, errors = decode(orjson.dumps({"stream": "btcusdt@trade", "data": payload}))
    try:
        expected = [_trade(payload, RECV)]
    except Exception:
        expected = []
    # As tuples: a NaN price is the same cached Decimal on both sides, but NaN != NaN.
    assert [attrs.astuple(e) for e in events] == [attrs.astuple(e) for e in expected]
    assert len(errors) == 1 - len(expected)


def test_reads_of_trades_then_of_mixed_kinds_decode_in_order() -> None:
    """Trades only (msgspec first), a switch to other kinds halfway through a read (the rest
    of it takes the dict path), then mixed reads: every frame decodes in order, and bad
    frames are reported at their places."""
    decoder = BinanceDecoder()
    bad = TRADE.replace(b'"p":"94250.01000000",', b"")
    ack = b'{"result":null,"id":1}'
    reads = [
        ([ack, TRADE, bad, TRADE], ["trade", "trade"], [2]),
        (
            [TRADE, BOOK_TICKER, bad, TRADE, AGG_TRADE, b"{not json"],
            ["trade", "quote", "trade", "trade"],
            [2, 5],
        ),
        ([BOOK_TICKER, TRADE, bad], ["quote", "trade"], [2]),
    ]
    for number, (frames, kinds, bad_at) in enumerate(reads):
        out: list[Event] = []
        errors: list[tuple[int, DecodeError]] = []
        decoder.decode_batch(frames, RECV, out, errors)
        assert [e.kind for e in out] == kinds, number
        assert [i for i, _ in errors] == bad_at, number
        # A control reply is no payload: only the bookTicker ends the trades-only path.
        assert decoder._trades_only is (number == 0)


def test_array_and_notice_streams_decode_on_every_frame() -> None:
    """Streams whose data is an array, or no market data, stay off the fast path's table:
    every frame of them still decodes (or decodes to nothing), however many come."""
    ticker = orjson.loads(MINI_TICKER)["data"]
    array = orjson.dumps(
        {"stream": "!miniTicker@arr", "data": [ticker, {**ticker, "s": "ETHUSDT"}]}
    )
    notice = b'{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1767225600000}}'
    decoder = BinanceDecoder()
    for _ in range(3):
        out: list[Event] = []
        errors: list[tuple[int, DecodeError]] = []
        decoder.decode_batch([array, notice, TRADE, array], RECV, out, errors)
        assert errors == []
        assert [(e.kind, e.symbol) for e in out] == [
            ("ticker", "BTCUSDT"),
            ("ticker", "ETHUSDT"),
            ("trade", "BTCUSDT"),
            ("ticker", "BTCUSDT"),
            ("ticker", "ETHUSDT"),
        ]


def test_a_stream_is_learnt_from_its_first_good_frame() -> None:
    """A bad first frame of a new stream is reported; the next good one decodes, and a bad
    frame after that is still reported with its path."""
    decoder = BinanceDecoder()
    bad = TRADE.replace(b'"p":"94250.01000000",', b"")
    listed = TRADE.replace(b'"data":{', b'"data":[{').replace(b"}}", b"}]}")
    for frames, kinds, where in [
        ([bad], [], [(0, "missing field @ $.data.p")]),
        ([TRADE, bad, TRADE], ["trade", "trade"], [(1, "missing field @ $.data.p")]),
        ([listed, TRADE], ["trade", "trade"], []),  # an array payload: item by item
    ]:
        out: list[Event] = []
        errors: list[tuple[int, DecodeError]] = []
        decoder.decode_batch(frames, RECV, out, errors)
        assert [e.kind for e in out] == kinds
        assert [i for i, _ in errors] == [i for i, _ in where]
        for (_, error), (_, message) in zip(errors, where, strict=True):
            assert message in str(error), (str(error), message)


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (b"{not json", "invalid JSON"),
        (TRADE.replace(b'"p":"94250.01000000",', b""), "missing field @ $.data.p"),
        (
            TRADE.replace(b'"T":1767225600122', b'"T":"soon"'),
            "expected an integer, got 'soon' @ $.data.T",
        ),
        (TRADE.replace(b'"94250.01000000"', b'"lots"'), "bad value in trade payload"),
        (b'{"e":"mystery","E":1}', "unknown payload type"),
        (KLINE_RAW.replace(b'"o":"3301.15000000",', b""), "missing field @ $.k.o"),
    ],
)
def test_bad_frames_become_decode_errors_with_a_path(frame: bytes, message: str) -> None:
    events, errors = decode(TRADE, frame, TRADE)
    assert len(events) == 2  # the good frames around it still decode
    ((index, error),) = errors
    assert index == 1
    assert message in str(error)


def test_errors_name_the_place_of_each_bad_frame_in_the_read() -> None:
    bad = b"{not json"
    events, errors = decode(bad, TRADE, bad, TRADE, TRADE, b"[1]", bad)
    assert len(events) == 3
    assert [index for index, _ in errors] == [0, 2, 5, 6]
    _, errors = decode(*(TRADE,) * 40, bad)
    assert [index for index, _ in errors] == [40]


@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_arbitrary_bytes_never_raise(frame: bytes) -> None:
    events, errors = decode(frame)
    assert len(events) + len(errors) <= 1 or isinstance(orjson.loads(frame), list)


@given(
    st.dictionaries(
        st.sampled_from(["e", "E", "s", "t", "p", "q", "T", "m", "a", "k", "u", "b", "B", "A"]),
        st.none() | INT64 | st.text(max_size=5) | st.booleans() | st.lists(INT64),
    )
)
def test_arbitrary_payload_shapes_never_raise(payload: dict[str, object]) -> None:
    frame = orjson.dumps({"stream": "btcusdt@trade", "data": payload})
    events, errors = decode(frame)
    assert len(events) + len(errors) == 1


def test_plan_lower_cases_streams_and_validates() -> None:
    plan = BINANCE.plan(["BTCUSDT", "ethusdt"], ["trade", "aggtrade", "kline_1m", "DEPTH5@100ms"])
    assert plan.streams[:4] == (
        "btcusdt@trade",
        "btcusdt@aggTrade",
        "btcusdt@kline_1m",
        "btcusdt@depth5@100ms",
    )
    assert plan.symbols == ("BTCUSDT", "ETHUSDT")
    assert plan.kinds == {Trade, Candle, Book}


def test_plan_rejects_bad_kline_interval_with_the_valid_list() -> None:
    with pytest.raises(UsageError) as info:
        BINANCE.plan(["btcusdt"], ["kline_1min"])
    assert "unknown kline interval '1min'" in str(info.value)
    assert "1s, 1m, 3m" in str(info.value)


@pytest.mark.parametrize(
    ("channel", "hint"),
    [("trdae", "did you mean 'trade'?"), ("bookticker@1s", "@100ms"), ("depth7", "channels:")],
)
def test_plan_rejects_unknown_channels(channel: str, hint: str) -> None:
    with pytest.raises(UsageError, match="binance") as info:
        BINANCE.plan(["btcusdt"], [channel])
    assert hint in str(info.value)


def test_plan_rejects_bad_symbols() -> None:
    with pytest.raises(UsageError, match="bad binance symbol 'btc_usdt'"):
        BINANCE.plan(["btc_usdt"], ["trade"])


@pytest.mark.parametrize(
    ("typed", "native"),
    [
        ("btcusdt", "BTCUSDT"),
        ("BTC-USDT", "BTCUSDT"),
        ("eth/btc", "ETHBTC"),
        ("BTC-USD", "BTCUSDT"),
    ],
)
def test_plan_maps_pair_spellings_to_binance_symbols(typed: str, native: str) -> None:
    plan = BINANCE.plan([typed], ["trade"])
    assert plan.symbols == (native,)
    assert plan.streams == (f"{native.lower()}@trade",)
