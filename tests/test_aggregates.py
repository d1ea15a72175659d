"""Aggregates against hand-computed values, exact decimals, and Hypothesis properties."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pipeline_helpers import T0, S, feed, quote, trade

from irisflow import Pipeline, Quote, Trade
from irisflow._aggregates import DIVISION, Agg, parse_aggregates
from irisflow._steps import PipelineError

# Four trades in the minute [T0, T0 + 60 s), one in the next (it closes the first).
TRADES = [
    trade(1, "100", "1"),
    trade(2, "102", "3"),
    trade(3, "99", "2"),
    trade(4, "101", "4"),
    trade(61, "500", "1"),
]


def window(*aggs: str, events: list[Trade] | None = None) -> object:
    pipeline = Pipeline(kinds={Trade}).window(tumbling="1m").agg(*aggs)
    out = feed(pipeline, events or TRADES)
    assert len(out) == 1, out
    return out[0]


def test_count_sum_mean_min_max_first_last() -> None:
    w = window("count, sum(qty), mean(price), min(price), max(price), first(price), last(price)")
    assert w.count == 4  # type: ignore[attr-defined]
    assert w.sum_qty == Decimal(10)  # type: ignore[attr-defined]
    assert w.mean_price == Decimal("100.5")  # type: ignore[attr-defined]  # 402 / 4
    assert (w.min_price, w.max_price) == (Decimal(99), Decimal(102))  # type: ignore[attr-defined]
    assert (w.first_price, w.last_price) == (Decimal(100), Decimal(101))  # type: ignore[attr-defined]


def test_vwap_and_ohlcv() -> None:
    w = window("vwap, ohlcv")
    # (100·1 + 102·3 + 99·2 + 101·4) / (1 + 3 + 2 + 4) = 1008 / 10
    assert w.vwap == Decimal("100.8")  # type: ignore[attr-defined]
    assert (w.open, w.high, w.low, w.close, w.volume) == (  # type: ignore[attr-defined]
        Decimal(100),
        Decimal(102),
        Decimal(99),
        Decimal(101),
        Decimal(10),
    )


def test_stddev_is_the_sample_deviation() -> None:
    w = window("stddev(price)")
    # mean 100.5; squared deviations 0.25 + 2.25 + 2.25 + 0.25 = 5; 5 / (4 - 1) = 5/3
    assert w.stddev_price == DIVISION.sqrt(DIVISION.divide(Decimal(5), 3))  # type: ignore[attr-defined]
    assert str(w.stddev_price).startswith("1.290994448735805")  # type: ignore[attr-defined]


def test_pct_change_and_rate() -> None:
    w = window("pct_change(price), rate, rate(qty)")
    assert w.pct_change_price == Decimal(1)  # type: ignore[attr-defined]  # 100 -> 101
    # 4 events, 10 qty in a 60 s window
    assert w.rate == DIVISION.divide(4, 60)  # type: ignore[attr-defined]
    assert w.rate_qty == DIVISION.divide(10, 60)  # type: ignore[attr-defined]


def test_first_and_last_follow_event_time_not_arrival() -> None:
    shuffled = [trade(3, "99"), trade(1, "100"), trade(4, "101"), trade(2, "102"), trade(61, "1")]
    w = window("ohlc, first(price), last(price)", events=shuffled)
    assert (w.open, w.close) == (Decimal(100), Decimal(101))  # type: ignore[attr-defined]
    assert (w.first_price, w.last_price) == (Decimal(100), Decimal(101))  # type: ignore[attr-defined]


def test_sums_are_exact_beyond_the_default_context() -> None:
    # 30 significant digits: the default context (28) would round this sum.
    a, b = "12345678901234.1234567890123456", "0.0000000000000000000000000001"
    w = window("sum(price)", events=[trade(1, a), trade(2, b), trade(61, "1")])
    assert str(w.sum_price) == "12345678901234.1234567890123456000000000001"  # type: ignore[attr-defined]


def test_division_uses_28_digits_half_even() -> None:
    w = window("mean(price)", events=[trade(1, "1"), trade(2, "1"), trade(3, "0"), trade(61, "1")])
    assert str(w.mean_price) == "0.6666666666666666666666666667"  # type: ignore[attr-defined]


def test_values_missing_in_some_events_are_skipped() -> None:
    events: list[Trade | Quote] = [trade(1, "100", "2"), quote(2, "1", "2"), trade(61, "1")]
    pipeline = Pipeline(kinds={Trade, Quote}).window(tumbling="1m").agg("vwap, count(price)")
    (w,) = feed(pipeline, events)
    assert w.count == 2  # type: ignore[attr-defined]  # both events
    assert w.count_price == 1  # type: ignore[attr-defined]  # only the trade has a price
    assert w.vwap == Decimal(100)  # type: ignore[attr-defined]


def test_empty_values_give_none() -> None:
    events = [quote(1, "1", "2"), quote(61, "1", "2")]
    pipeline = Pipeline(kinds={Trade, Quote}).window(tumbling="1m").agg("vwap, sum(price)")
    (w,) = feed(pipeline, events)
    assert (w.count, w.vwap, w.sum_price) == (1, None, None)  # type: ignore[attr-defined]


def test_names_and_prefixes() -> None:
    w = window("notional = sum(price * qty), bid = ohlc(price), n = count")
    assert w.notional == Decimal(1008)  # type: ignore[attr-defined]
    assert w.bid_open == Decimal(100)  # type: ignore[attr-defined]
    assert w.n == 4  # type: ignore[attr-defined]


def test_python_api_matches_the_text_form() -> None:
    windowed = Pipeline(kinds={Trade}).window(tumbling="1m")
    by_api = windowed.agg(Agg.vwap(), Agg.ohlc(), Agg.sum("qty"), Agg.count())
    by_text = windowed.agg("vwap, ohlc, sum(qty), count")
    assert feed(by_api, TRADES) == feed(by_text, TRADES)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("vwapp", "unknown aggregate 'vwapp' (did you mean 'vwap'?)"),
        ("sum", "sum takes 1 argument, got 0 (e.g. sum(qty))"),
        ("sum(price * qty)", "name the value of 'sum(price * qty)'"),
        ("min(price), min(price)", "field name 'min_price' of 'min(price)' is taken"),
        ("end = max(price)", "field name 'end' of 'end = max(price)' is a window result's own"),
        ("sum(side)", "'side' is a string, but a number is needed here"),
    ],
)
def test_mistakes(text: str, message: str) -> None:
    with pytest.raises(PipelineError) as info:
        Pipeline(kinds={Trade}).window(tumbling="1m").agg(text)
    assert message in str(info.value)


def test_parse_aggregates_keeps_commas_inside_brackets() -> None:
    aggs = parse_aggregates("vwap(price, qty), n = count(price), ohlc")
    assert [(a.func, a.args, a.name) for a in aggs] == [
        ("vwap", ("price", "qty"), None),
        ("count", ("price",), "n"),
        ("ohlc", (), None),
    ]


prices = st.decimals(min_value=Decimal("0.01"), max_value=Decimal(10**6), places=8)
qtys = st.decimals(min_value=Decimal("0.00000001"), max_value=Decimal(1000), places=8)


@given(st.lists(st.tuples(prices, qtys), min_size=1, max_size=40))
def test_vwap_lies_between_min_and_max_price(rows: list[tuple[Decimal, Decimal]]) -> None:
    events = [trade(i * 0.5, str(p), str(q)) for i, (p, q) in enumerate(rows)]
    pipeline = Pipeline(kinds={Trade}).window(tumbling="1h").agg("vwap, min(price), max(price)")
    (w,) = pipeline.process(events) + pipeline.flush()
    assert w.min_price <= w.vwap <= w.max_price  # type: ignore[attr-defined]
    assert w.min_price == min(p for p, _ in rows)  # type: ignore[attr-defined]


@given(st.lists(st.tuples(prices, qtys), min_size=2, max_size=30), st.randoms())
def test_every_aggregate_ignores_arrival_order(
    rows: list[tuple[Decimal, Decimal]], rnd: object
) -> None:
    events = [trade(i, str(p), str(q)) for i, (p, q) in enumerate(rows)]
    aggs = "vwap, ohlcv, mean(price), stddev(price), pct_change(price), first(qty), last(qty)"
    in_order = Pipeline(kinds={Trade}).window(tumbling="1h").agg(aggs)
    shuffled = Pipeline(kinds={Trade}).window(tumbling="1h").agg(aggs)
    mixed = list(events)
    rnd.shuffle(mixed)  # type: ignore[attr-defined]
    a = in_order.process(events) + in_order.flush()
    b = shuffled.process(mixed) + shuffled.flush()
    assert [x.__class__ for x in a] == [x.__class__ for x in b]
    fields = ("count", "vwap", "open", "high", "low", "close", "volume", "mean_price")
    fields += ("stddev_price", "pct_change_price", "first_qty", "last_qty")
    for name in fields:
        assert getattr(a[0], name) == getattr(b[0], name), name
    assert a[0].end == T0 + 3600 * S  # type: ignore[attr-defined]
